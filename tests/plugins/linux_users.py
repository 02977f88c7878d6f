"""pytest plugin: real Linux users for the tenant-isolation tests, removed afterwards.

`useradd` makes each (with a home), `userdel -r` removes it with every process it still
runs and its tmux folder. Tests that need them skip with the reason where they cannot
run: not root, or no useradd.

Tenant users must be able to run the installed fleet, as on a real host. Where this
checkout's venv is not readable by other users (a clone under /root), `fleet_python`
installs the checkout once per worker the way `./dev install-host` does, into a
world-readable venv under /tmp, and the tests run fleet from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


def _useradd(prefix: str, flags: Sequence[str] = ("--create-home",)) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    for _ in range(50):  # another worker's useradd may hold /etc/passwd's lock
        done = subprocess.run(["useradd", *flags, "--shell", "/bin/sh", name],
                              capture_output=True, text=True, check=False)
        if done.returncode != 10:  # 10: cannot lock the password file
            break
        time.sleep(0.1)
    assert done.returncode == 0, done.stderr
    return name


def _runnable_by_others(python: str) -> bool:
    probe_user = _useradd("fleet-p")
    try:
        return as_user(probe_user, [python, "-c", "import reconciler.cli"], timeout=60).returncode == 0
    except PermissionError:  # the interpreter itself is out of the user's reach
        return False
    finally:
        _remove(probe_user)


@pytest.fixture(scope="session")
def fleet_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Python that has fleet and that every user can run: this venv's, or a host-style
    install of this checkout (non-editable, world-readable) made for the session."""
    if (reason := _skip_reason()) is not None:
        pytest.skip(reason)
    if _runnable_by_others(sys.executable):
        yield sys.executable
        return
    prefix = Path(tempfile.mkdtemp(prefix="fleet-host-", dir="/tmp"))
    try:
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(prefix)], check=True, capture_output=True)
        subprocess.run([str(prefix / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"{ROOT}[register]"], check=True, capture_output=True, timeout=600)
        subprocess.run(["chmod", "-R", "a+rX", str(prefix)], check=True)
        yield str(prefix / "bin" / "python")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def make_user(fleet_python: str) -> Iterator[Callable[..., str]]:
    """A factory of fresh users (`fleet-t-XXXXXXXX`; `useradd` flags, default
    --create-home); all removed after the test."""
    made: list[str] = []

    def make(*flags: str) -> str:
        name = _useradd("fleet-t", flags or ("--create-home",))
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            _remove(name)
