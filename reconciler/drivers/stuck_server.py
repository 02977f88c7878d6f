"""A tmux server stuck in its own exit: how to tell it from one that is leaving, and end it.

tmux 3.3a can wedge. Its exit (`kill-server`, SIGTERM) destroys every session and then
waits until none is left; but commands that run after that (a client that had connected
just before and whose chained `new-session`s are read afterwards, or a `session-closed`
hook) create new sessions. The server then closes every new client at once, which tmux
reports as "server exited unexpectedly", and never exits, because it still has sessions.
Its agents run on, unreachable: nobody can list, attach to or kill them through tmux.
Only a signal ends it; SIGTERM makes it run its exit again, which now destroys those
sessions too (SIGKILL if it wedges once more). Found by tests/resilience (kill-server while one apply spawns 120 agents).

Observation tells the cases apart without acting (dry-run stays honest): a server that
is leaving stops listening within milliseconds; one that still accepts connections after
`SETTLE_S` is stuck. Only the apply step ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

#: What a tmux client says when its server hangs up on it.
LEAVING = ("server exited unexpectedly", "lost server")
#: How long a server that is leaving may keep listening before we call it stuck.
SETTLE_S = 1.0
#: How long a stuck server may take to exit after SIGTERM.
END_S = 3.0
#: /proc/net/unix's flag for a listening socket (__SO_ACCEPTCON).
_LISTENING = 0x10000


def leaving(message: str) -> bool:
    """True when tmux's error means the server hung up (it is exiting, or stuck doing so).

    >>> leaving("server exited unexpectedly")
    True
    >>> leaving("no server running on /tmp/tmux-0/x")
    False
    """
    return message.strip() in LEAVING


def listening_inode(proc_net_unix: str, path: str) -> int | None:
    """The inode of the listening socket bound at `path`, read from /proc/net/unix's text.

    >>> text = ("Num       RefCount Protocol Flags    Type St Inode Path\\n"
    ...         "0000: 00000002 00000000 00010000 0001 01 8262105 /tmp/tmux-0/fleet\\n"
    ...         "0000: 00000003 00000000 00000000 0001 03 8262107 /tmp/tmux-0/fleet\\n")
    >>> listening_inode(text, "/tmp/tmux-0/fleet")
    8262105
    >>> listening_inode(text, "/tmp/tmux-0/other") is None
    True
    """
    for line in proc_net_unix.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == path and int(fields[3], 16) & _LISTENING:
            return int(fields[6])
    return None


def accepts(path: Path) -> bool:
    """True while something accepts connections on the socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def settle(path: Path, seconds: float = SETTLE_S) -> bool:
    """Wait until nothing listens at `path`; False if something still does after `seconds`."""
    deadline = time.monotonic() + seconds
    while accepts(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def server_pid(path: Path) -> int | None:
    """The pid of our own tmux process that listens at `path`, if there is one.

    Only this user's processes named tmux are looked at, so a signal can never reach
    another user's process or something that is not a tmux server.
    """
    try:
        inode = listening_inode(Path("/proc/net/unix").read_text(errors="replace"), str(path))
    except OSError:
        return None
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _holds(entry, target):
            return int(entry.name)
    return None


def _holds(proc: Path, target: str) -> bool:
    """True when the process at `proc` is our own tmux and has `target` among its fds."""
    try:
        if proc.stat().st_uid != os.geteuid() or not (proc / "comm").read_text().startswith("tmux"):
            return False
        return any(str(fd.readlink()) == target for fd in (proc / "fd").iterdir())
    except OSError:  # it exited meanwhile, or is not ours to read
        return False


def end(pid: int, path: Path, seconds: float = END_S) -> str:
    """SIGTERM the stuck server `pid` and wait for its socket to close; says what happened.

    A server that wedges again on the way out (a hook that starts a session whenever
    one closes) gets SIGKILL: its panes' processes then see their terminal hang up.
    Raises OSError when a signal cannot be sent or the server still listens after both.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        os.kill(pid, sig)
        if settle(path, seconds):
            return f"ended the stuck tmux server (pid {pid}) on {path} with {sig.name}"
    raise OSError(f"the stuck tmux server (pid {pid}) still listens on {path} after SIGTERM and SIGKILL")
