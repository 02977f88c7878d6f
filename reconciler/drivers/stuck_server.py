"""A tmux server stuck in its own exit: how to tell it from one that is leaving, and end it.

tmux 3.3a can wedge. Its exit (`kill-server`, SIGTERM) destroys every session and then
waits until none is left; but commands that run after that (a client that had connected
just before and whose chained `new-session`s are read afterwards, or a `session-closed`
hook) create new sessions. The server then closes every new client at once, which tmux
reports as "server exited unexpectedly", and never exits, because it still has sessions.
Their agents run on, unreachable: nobody can list, attach to or kill them through tmux.
Only a signal ends it; SIGTERM makes it run its exit again, which now destroys those
sessions too (SIGKILL if it wedges once more). Every session that existed when the exit
began is already gone, so ending it takes nothing that was not being killed anyway.
Found by tests/resilience (kill-server while one apply spawns 120 agents).

Stuck, as opposed to leaving: it still hangs up on clients after `SETTLE_S`, and it still
has pane processes. A server that only waits for a client to leave (one stopped with
SIGSTOP, say) can keep listening for as long, but holds no panes; it is not signalled.
The listening process is named by the kernel (SO_PEERCRED on a fresh connection), must
be this user's and a tmux, and is signalled through a pidfd, so a reused pid is never hit.
Observation only names it (dry-run stays honest); the apply step ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

#: What a tmux client says when its server hangs up on it or exits under it.
LEAVING = ("server exited unexpectedly", "server exited", "lost server")
#: How long a server that is leaving may keep listening before we look closer.
SETTLE_S = 1.0
#: How long a stuck server may take to exit after each signal.
END_S = 3.0
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def leaving(message: str) -> bool:
    """True when tmux's error means the server hung up (it is exiting, or stuck doing so).

    >>> leaving("server exited unexpectedly\\n")
    True
    >>> leaving("no server running on /tmp/tmux-0/x")
    False
    """
    return message.strip() in LEAVING


def accepts(path: Path) -> bool:
    """True while something accepts connections on the socket at `path`."""
    return _peer(path) is not None


def _peer(path: Path) -> tuple[int, int] | None:
    """(pid, uid) of the process listening at `path`, as the kernel recorded it; None if
    nothing does."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        pid, uid, _gid = _UCRED.unpack(probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    finally:
        probe.close()
    return pid, uid


def settle(path: Path, seconds: float = SETTLE_S) -> bool:
    """Wait until nothing listens at `path`; False if something still does after `seconds`."""
    deadline = time.monotonic() + seconds
    while accepts(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stuck_pid(path: Path) -> int | None:
    """The pid of our own tmux listening at `path` if it still has panes; else None.

    Call it after tmux hung up on a client: together that is a server stuck in its exit.
    """
    peer = _peer(path)
    if peer is None or peer[1] != os.geteuid():
        return None
    pid = peer[0]
    try:
        if not Path(f"/proc/{pid}/comm").read_text().startswith("tmux"):
            return None
        panes = "".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children"))
    except OSError:  # it exited meanwhile
        return None
    return pid if panes.split() else None


def end(pid: int, path: Path, still_stuck: Callable[[], bool], seconds: float = END_S) -> str | None:
    """Signal the stuck server `pid` (SIGTERM, then SIGKILL if it wedges again) once
    `still_stuck()` confirms it, and wait for its socket to close. Says what it did; None
    when it was no longer stuck, and nothing was signalled.

    The pidfd is opened before the check, so the signals reach that process or none.
    Raises OSError when the server still listens after both signals.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        if not still_stuck():
            return None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, sig)
            except ProcessLookupError:
                return f"the stuck tmux server (pid {pid}) on {path} exited as it was being ended"
            if settle(path, seconds):
                return f"ended the stuck tmux server (pid {pid}) on {path} with {sig.name}"
    finally:
        os.close(pidfd)
    raise OSError(f"the stuck tmux server (pid {pid}) still listens on {path} after SIGTERM and SIGKILL")
