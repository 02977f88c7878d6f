"""The locks: two reconcilers never act on one tenant at once, nor run two applies at once.

flocks, which the kernel releases when the holder dies, so a crashed reconciler never
leaves a lock behind; the file's text (pid, host, since) only tells a waiting reconciler
whom it waits for. The tenant lock (`StateLayout.lock`, `<tenant>/lock`) guards one
tenant's actions (also against `fleet agent` verbs); the run lock (`StateLayout.run_lock`,
`reconcile.lock`) is held by an applying `reconcile` or `down` from its observation to
its write-back, so two runs (the timer and a person, or watch mode) never plan from the
same observation and both act on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path


class LockBusy(Exception):
    """Another reconciler held the tenant's lock for longer than we were willing to wait."""


def describe_holder(text: str) -> str:
    """Who holds a lock, from the lock file's text; tolerant of an empty or odd file.

    >>> describe_holder('{"pid": 7, "host": "h", "since": "2026-11-25T12:00:00+00:00"}')
    'pid 7 on h since 2026-11-25T12:00:00+00:00'
    >>> describe_holder("")
    'an unknown holder'
    """
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"


@contextmanager
def hold_lock(path: Path, timeout: float = 30.0, poll: float = 0.05,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the flock at `path` (a tenant's lock or the run lock), waiting at most `timeout` seconds, else raise LockBusy.
    `on_wait` hears once whom we wait for, when the lock is not free at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)  # a planted link is not followed
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace")))
                    on_wait = None
                if time.monotonic() >= deadline:
                    holder = describe_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
                    raise LockBusy(
                        f"{path} is held by {holder}; waited {timeout:.0f}s. Another reconcile is running: "
                        "let it finish, or stop it"
                    ) from None
                time.sleep(poll)
        stamp = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(stamp).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
