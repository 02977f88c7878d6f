"""pytest plugin: real Linux users for the tenant-isolation tests, removed afterwards.

`useradd` makes each (with a home), `userdel -r` removes it with every process it still
runs and its tmux folder. Tests that need them skip with the reason where they cannot
run: not root, no useradd, or this checkout not readable by other users (a clone under
/root: tenant users must be able to run the installed fleet, as on a real host).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from reconciler.drivers import users

ROOT = Path(__file__).resolve().parents[2]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "tenant users need root (useradd, and root reconciling them)"
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        return "useradd/runuser not installed"
    return None


def as_user(user: str, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user`, the way a tenant's own login would (clean environment)."""
    account = users.lookup(user)
    assert account is not None, user
    full_env = users.environment_for(account, {})
    full_env.update(env or {})
    return subprocess.run(list(argv), user=account.uid, group=account.gid, extra_groups=[], env=full_env,
                          cwd=cwd or account.home, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


def _remove(user: str) -> None:
    account = users.lookup(user)
    if account is None:
        return
    subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True, check=False)
    subprocess.run(["userdel", "--force", "--remove", user], capture_output=True, check=False)
    shutil.rmtree(f"/tmp/tmux-{account.uid}", ignore_errors=True)


@pytest.fixture
def make_user() -> Iterator[Callable[[], str]]:
    """A factory of fresh users (`fleet-t-XXXXXXXX`); all removed after the test."""
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    made: list[str] = []

    def make() -> str:
        name = f"fleet-t-{uuid.uuid4().hex[:8]}"
        for _ in range(50):  # another worker's useradd may hold /etc/passwd's lock
            done = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 10:  # 10: cannot lock the password file
                break
            time.sleep(0.1)
        assert done.returncode == 0, done.stderr
        made.append(name)
        probe = as_user(name, [sys.executable, "-c", "import reconciler"], timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"user {name} cannot run fleet from {ROOT} ({probe.stderr.strip()[-200:]}); "
                        "clone the project where other users can read it")
        return name

    try:
        yield make
    finally:
        for name in made:
            _remove(name)
