"""What the apply step needs to start one agent: argv, environment, workdir and marks.

Built by the pure core from the specs, executed by the tmux driver; it is plain data so
a dry-run can print exactly what an apply would run.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model.observed import SocketKey


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """One agent's process, ready to hand to tmux as an argument list (never a shell line)."""

    tenant: str
    agent: str
    host: str
    socket: SocketKey
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str | None
    model: str
    spec_hash: str
