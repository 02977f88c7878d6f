"""pytest plugin: a real tmux server on a private socket per test, and `retry_until`.

There is no mock tmux: each test gets `SocketKey(None, "fleet-test-<uuid>")`, and the
finalizer kills that server whether or not the test started one, never raising over
the test's own failure (STYLE.md item 7).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.drivers import stuck_server, tmux
from reconciler.model.observed import SocketKey


def retry_until(predicate: Callable[[], bool], seconds: float = 5.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `seconds` pass; returns its last answer.

    Use it instead of `sleep` for anything tmux does asynchronously (a pane exiting).
    """
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def socket_path(name: str) -> Path:
    """Where `tmux -L name` puts its socket (tmux leaves the file behind on exit)."""
    return tmux.socket_path(SocketKey(None, name))


def server_gone(name: str) -> bool:
    """True once nothing listens on the socket: `kill-server` returns while the server is
    still exiting, and a client that connects then lands in the dying server."""
    return not stuck_server.accepts(socket_path(name))


def kill_server(name: str) -> None:
    """`tmux -L name kill-server` and remove its socket file, quietly: a server that
    never started is fine, and a failure here never hides the test's own. A server stuck
    in its own exit ignores kill-server (drivers/stuck_server.py), so it gets SIGTERM."""
    try:
        subprocess.run(
            ["tmux", "-L", name, "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        path = socket_path(name)
        if not stuck_server.settle(path) and (pid := stuck_server.stuck_pid(path)) is not None:
            stuck_server.end(pid, path, lambda: True)
        path.unlink(missing_ok=True)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"tmux_server finalizer: could not kill {name}: {exc}")


@pytest.fixture
def tmux_socket() -> Iterator[SocketKey]:
    """A private tmux socket for one test; its server (if any) is killed afterwards."""
    key = SocketKey(None, f"fleet-test-{uuid.uuid4().hex[:12]}")
    try:
        yield key
    finally:
        assert key.name is not None
        kill_server(key.name)
