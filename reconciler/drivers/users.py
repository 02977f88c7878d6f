"""Linux users: who runs this process, who a tenant's `user:` is, and running as them.

A tenant with `user:` runs under that user's uid, on a tmux socket in that user's own
0700 folder, with its `systemd --user` and its state under its home. Root reconciles
such a tenant by running `fleet` as the user (`run_as`): root never starts a tmux server
or writes a state file for another user, so nothing the tenant owns is root's, and
nothing of one tenant is reachable from another's uid.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.drivers.audit import RUN_BY

#: A PATH a tenant user can use: fleet's own scripts first (the agent launchers), then
#: the system's. The caller's PATH may name folders of root's that the user cannot read.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Variables root hands to a tenant's run; everything else of root's environment stays.
PASSED_THROUGH = ("MOSAIC_AGENT_COMMAND", "LANG", "LC_ALL", "TZ", RUN_BY)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def is_me(user: str | None) -> bool:
    """True when `user` is this process's user (or no user: the reconciler's own)."""
    return user is None or user == current_user()


def is_root() -> bool:
    return os.geteuid() == 0


def lookup(user: str) -> Account | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def runtime_dir(account: Account) -> str | None:
    """`/run/user/UID` when it exists and is the user's: where its systemd --user listens."""
    path = Path(f"/run/user/{account.uid}")
    try:
        info = path.stat()
    except OSError:
        return None
    return str(path) if info.st_uid == account.uid else None


def environment_for(account: Account, passed: Mapping[str, str]) -> dict[str, str]:
    """A clean login-like environment for `account`: none of root's variables but the
    few in PASSED_THROUGH, so no secret of root's and no TMUX_TMPDIR or FLEET_STATE_DIR
    of root's reaches the tenant (its state is under its own home)."""
    env = {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": account.shell or "/bin/sh",
        "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "LANG": "C.UTF-8",
    }
    env.update({k: v for k, v in passed.items() if k in PASSED_THROUGH and v})
    if (run := runtime_dir(account)) is not None:
        env["XDG_RUNTIME_DIR"] = run
        if Path(run, "bus").exists():
            env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={run}/bus"
    return env


def run_as(account: Account, argv: Sequence[str], *, cwd: str, passed: Mapping[str, str],
           timeout: float | None, capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `argv` under `account`'s uid, gid and groups, in a clean environment.

    Python sets the groups, gid and uid in the child before exec (in that order), so
    the program never runs with root's privileges. umask 077: everything the run creates
    (state, the tmux socket folder, agents' files) is the tenant's alone, even in a home
    that useradd made world-readable. `capture=False` hands over this terminal (an
    interactive verb)."""
    groups = os.getgrouplist(account.name, account.gid)
    passed = {**passed, RUN_BY: f"{current_user()} pid {os.getpid()}"}
    return subprocess.run(
        list(argv),
        user=account.uid,
        group=account.gid,
        extra_groups=groups,
        env=environment_for(account, passed),
        cwd=cwd,
        capture_output=capture,
        text=True,
        encoding="utf-8",
        errors="replace",
        stdin=subprocess.DEVNULL if capture else None,
        timeout=timeout,
        check=False,
        umask=0o077,
    )
