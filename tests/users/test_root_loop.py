"""Root's reconcile loop on its systemd --user timer, with a tenant that runs as its own
user: the tenant's agents must outlive each timer run (a oneshot service's end stops
every process left in its cgroup)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.engine import install
from tests.e2e.repos import example_repo, write
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import retry_until
from tests.users.test_tenants_as_users import ROSTER, SOCKET, sessions_as

pytestmark = pytest.mark.systemd


@pytest.fixture
def root_loop(systemd_user: SystemdUser) -> Iterator[SystemdUser]:
    try:
        yield systemd_user
    finally:
        install.uninstall_loop(systemd_user.unit_dir)


def panes(user: str) -> dict[str, int]:
    try:
        return sessions_as(user)
    except AssertionError:
        return {}


def test_a_tenant_users_agents_outlive_roots_timer_runs(root_loop: SystemdUser, make_user: Callable[[], str],
                                                        fleet_python: str, tmp_path: Path) -> None:
    alpha = make_user()
    repo = example_repo(tmp_path, "minimal", SOCKET)
    write(repo, "tenants/demo/roster.yaml", ROSTER.format(tenant="demo", user=alpha, socket=SOCKET))
    done = subprocess.run([fleet_python, "-m", "reconciler", "install", str(repo), "--host", "demo", "--interval", "2s",
                           "--no-git"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert retry_until(lambda: set(panes(alpha)) == {"orchestrator", "enhancer"}, 30), panes(alpha)
    first = panes(alpha)
    # Several runs later, the same processes: nothing killed them at the end of a run.
    invocations = set()
    def runs() -> int:
        invocations.add(root_loop.systemctl("show", "-p", "InvocationID", "--value", install.SERVICE).stdout.strip())
        return len(invocations - {""})
    assert retry_until(lambda: runs() >= 3, 30)
    assert panes(alpha) == first
