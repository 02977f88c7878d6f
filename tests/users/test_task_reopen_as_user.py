"""`fleet task reopen` for a tenant with `user:`: run as that user, in its own state; run
by root into that user's state, the reopen is handed to the user, so its reconcile (and
its next `fleet task reopen`) can read it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from reconciler.drivers import users
from tests.plugins.linux_users import as_user


def test_a_tenant_user_reopens_and_root_reopens_for_it(make_user: Callable[[], str], fleet_python: str) -> None:
    user = make_user()
    account = users.lookup(user)
    assert account is not None
    task = [fleet_python, "-m", "reconciler", "task"]
    pane = ["--tenant", "shop", "--agent", "coder0-0", "--state-dir", f"{account.home}/.local/state/mosaic-fleet"]
    assert as_user(user, [*task, "done", "T3", *pane]).returncode == 0

    mine = as_user(user, [*task, "reopen", "T3", "--tenant", "shop", "--note", "again"])  # its default state dir
    assert mine.returncode == 0, mine.stderr
    reopens = Path(account.home) / ".local/state/mosaic-fleet/shop/reports/_reopened.json"
    assert (reopens.stat().st_uid, reopens.stat().st_mode & 0o777) == (account.uid, 0o600)
    assert f'"by": "{user}"' in reopens.read_text()

    assert as_user(user, [*task, "done", "T3", *pane]).returncode == 0
    by_root = subprocess.run([*task, "reopen", "T3", "--tenant", "shop", "--state-dir",
                              f"{account.home}/.local/state/mosaic-fleet"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert by_root.returncode == 0, by_root.stderr
    lock = reopens.parent / "._reopened.lock"
    assert (reopens.stat().st_uid, lock.stat().st_uid) == (account.uid, account.uid), "handed to the tenant's user"
    again = as_user(user, [*task, "reopen", "T3", "--tenant", "shop"])
    assert again.returncode == 1 and "task T3 is already open: root reopened it" in again.stderr, again.stderr
