"""What the apply step needs to start one agent: argv, environment, workdir and marks.

Built by the pure core from the specs, executed by the tmux driver; it is plain data so
a dry-run can print exactly what an apply would run. The facts of the host that shape
it (where a program is, whether a workdir exists) are read by the observe step into a
`Resolved` and applied by the core, never at apply time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from reconciler.model.observed import SocketKey

#: The launcher that reads `env_from:` values in the pane (reconciler/launcher.py).
ENV_EXEC = "fleet-env-exec"


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
    #: An event-driven runtime's adapter (`claude`, `codex`; reconciler/runtimes/): apply
    #: writes what it prepares (settings, the user's runtime config) before the spawn.
    adapter: str | None = None
    persona: str | None = None  # the role's persona, written beside the settings by `prepare`
    trust_workdir: bool = True  # pre-accept the runtime's folder-trust dialog for the workdir
    hook: str = "fleet-hook"  # the hook program the runtime calls, resolved while observing
    session_id: str = ""  # the conversation id the runtime is started on (kept in the state dir by `prepare`)

    def env_sources(self) -> tuple[str, ...]:
        """The variables its launcher reads in the pane (`env_from: [{env: VAR}]`): the only
        ones of the reconciler's environment an agent is meant to get (drivers/tmux.py).

        >>> LaunchSpec("t", "a", "h", SocketKey(None, "s"), ("fleet-env-exec", "--file", "K=~/k",
        ...            "--env", "GH=GH_TOKEN", "--", "claude", "--env", "X=Y"), (), None, "m", "x").env_sources()
        ('GH_TOKEN',)
        """
        if not self.argv or PurePath(self.argv[0]).name != ENV_EXEC:
            return ()
        refs = self.argv[1 : self.argv.index("--")] if "--" in self.argv else ()
        return tuple(ref.split("=", 1)[1] for flag, ref in zip(refs[::2], refs[1::2], strict=False) if flag == "--env")

