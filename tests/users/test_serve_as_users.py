"""`fleet serve` and tenants that run as their own Linux users (`user:` in the roster).

Two tenants as two real users, reconciled by root. A tenant's user that runs `fleet
serve` itself sees its own tenant only: the scope rule every verb follows
(core/scope.py) leaves the other user's tenant out of the observation, and the other
user's socket and state are out of its reach anyway. Root's `fleet serve` observes only
the tenants without `user:` (docs/surfaces.md says so): this test pins that too, so a
change to it is a decision, not an accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from reconciler.drivers import users
from tests.plugins.tmux_server import retry_until
from tests.users.test_tenants_as_users import Fleet
from tests.users.test_tenants_as_users import fleet as fleet  # noqa: PLC0414  (the fixture)
from tests.users.test_tenants_as_users import pair as pair  # noqa: PLC0414  (the fixture)
from tests.web.serving import printed_url


@contextmanager
def serving(argv: list[str], user: str | None) -> Iterator[str]:
    """`fleet serve ... --port 0` as `user` (None: as root); yields the URL it prints."""
    kwargs: dict[str, object] = {}
    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_AGENT_COMMAND"}
    if user is not None:
        account = users.lookup(user)
        assert account is not None
        env = users.environment_for(account, {})
        kwargs = {"user": account.uid, "group": account.gid, "extra_groups": [], "cwd": account.home}
    proc = subprocess.Popen([*argv, "--port", "0", "--interval", "0.3"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]
    with printed_url(proc) as url:
        yield url


def _rows(url: str) -> dict[str, str]:
    doc = httpx.get(url + "/api/fleet", timeout=60).json()
    return {f"{r['tenant']}/{r['agent']}": r["health"] for r in doc["rows"]}


def test_a_tenant_users_server_shows_only_its_tenant(pair: tuple[Path, str, str], fleet: Fleet,
                                                       fleet_python: str) -> None:
    repo, alpha, beta = pair
    done = fleet("reconcile", str(repo), "--host", "demo", "--no-git")
    assert done.returncode == 0, done.stdout + done.stderr
    account = users.lookup(alpha)
    assert account is not None
    mine = Path(account.home) / "fleet"  # the tenant's own clone of the fleet repository
    shutil.copytree(repo, mine)
    for path in [mine, *mine.rglob("*")]:
        os.chown(path, account.uid, account.gid)

    with serving([fleet_python, "-m", "reconciler", "serve", str(mine), "--host", "demo"], alpha) as url:
        healthy = {"alpha/orchestrator": "healthy", "alpha/enhancer": "healthy"}
        assert retry_until(lambda: _rows(url) == healthy, 30), _rows(url)
        for path in ("/", "/api/fleet", "/tasks", "/budget", "/agents/alpha/orchestrator"):
            text = httpx.get(url + path, timeout=60).text
            assert "beta" not in text and beta not in text, path
        assert httpx.get(url + "/agents/beta/orchestrator", timeout=60).status_code == 404
        screen = httpx.get(url + "/agents/alpha/orchestrator", timeout=60)
        assert screen.status_code == 200 and "Healthy" in screen.text

    # Root's server holds only tenants without `user:`, and says where the others are.
    with serving([fleet_python, "-m", "reconciler", "serve", str(repo), "--host", "demo"], None) as url:
        assert _rows(url) == {}
        page = httpx.get(url + "/", timeout=60).text
        assert f"tenant alpha runs as user {alpha}: not in this view" in page
        assert f"run fleet serve as {beta} to see it" in page
