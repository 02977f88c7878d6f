"""Run `fleet` itself as a child process: how the TUI hands over to the existing verbs.

`fleet top` never types into a pane or attaches on its own; it runs `fleet agent watch`,
`attach` or `send` exactly as a person would, so their checks, refusals and audit
records apply unchanged (and a tenant user's agent is reached as that user).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def argv(args: Sequence[str]) -> list[str]:
    """The command line of `fleet ARGS` with this same Python and package."""
    return [sys.executable, "-m", "reconciler.cli", *args]


def run_interactive(args: Sequence[str]) -> int:
    """`fleet ARGS` on this terminal (watch, attach); its exit status."""
    return subprocess.run(argv(args), check=False).returncode


def run_captured(args: Sequence[str], timeout: float = 120.0) -> tuple[int, str]:
    """`fleet ARGS` with no terminal (send); its exit status and what it printed."""
    try:
        done = subprocess.run(argv(args), capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 1, f"fleet {' '.join(args[:2])} did not answer within {timeout:.0f} s"
    return done.returncode, (done.stdout + done.stderr).strip()
