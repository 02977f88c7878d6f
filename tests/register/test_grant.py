"""`fleet register grant`: a LOGIN role per tenant Linux user, in fleet_tenant, mapped to its
tenant; idempotent, and every refusal a clear one-line error (exit 1, no traceback)."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.plugins.postgres import Cluster
from tests.register.support import REGISTER_BLOCK, fleet, query
from tests.spec.corpus import BASE_FLEET, BASE_ROSTER, FLEET
from tests.spec.support import build_repo


def repo_with_users(tmp_path: Path, users: dict[str, str | None]) -> Path:
    """The minimal fleet with a register and one tenant per entry (`user:` when given)."""
    files = {FLEET: BASE_FLEET + REGISTER_BLOCK}
    for tenant, user in users.items():
        roster = BASE_ROSTER.replace("tenant: demo", f"tenant: {tenant}\nsocket_name: s-{tenant}")
        files[f"tenants/{tenant}/roster.yaml"] = roster.replace("host: demo", f"host: demo\nuser: {user}") if user else roster
    root = build_repo(tmp_path, files)
    if "demo" not in users:
        for path in (root / "tenants" / "demo").iterdir():
            path.unlink()
        (root / "tenants" / "demo").rmdir()
    return root


def migrated(tmp_path: Path, pg_url: str, users: dict[str, str | None]) -> Path:
    repo = repo_with_users(tmp_path, users)
    done = fleet("register", "migrate", str(repo), url=pg_url)
    assert done.returncode == 0, done.stderr
    return repo


def test_grant_creates_maps_and_is_idempotent(tmp_path: Path, pg_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    repo = migrated(tmp_path, pg_url, {"alpha": alice, "beta": bob, "gamma": None})
    done = fleet("register", "grant", str(repo), url=pg_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"register: role {alice} for tenant alpha: created, mapped to tenant alpha",
                                        f"register: role {bob} for tenant beta: created, mapped to tenant beta"]
    assert query(pg_url, "SELECT role::text, tenant_id FROM fleet.tenant_roles ORDER BY 2") == [(alice, "alpha"),
                                                                                              (bob, "beta")]
    assert query(pg_url, "SELECT rolcanlogin, pg_has_role(oid, 'fleet_tenant', 'MEMBER') FROM pg_roles "
                         "WHERE rolname = %s", (alice,)) == [(True, True)]
    again = fleet("register", "grant", str(repo), "--tenant", "alpha", url=pg_url)
    assert again.stdout.strip() == f"register: role {alice} for tenant alpha: already in place"


def test_an_existing_role_joins_and_logs_in(tmp_path: Path, pg_url: str, pg_cluster: Cluster) -> None:
    user = f"carol-{uuid.uuid4().hex[:8]}"
    repo = migrated(tmp_path, pg_url, {"alpha": user})
    pg_cluster.sql(f'CREATE ROLE "{user}" NOLOGIN')
    done = fleet("register", "grant", str(repo), url=pg_url)
    assert done.stdout.strip() == (f"register: role {user} for tenant alpha: may log in, joined fleet_tenant, "
                                   "mapped to tenant alpha"), done.stderr


def test_a_user_of_two_tenants_is_mapped_to_both(tmp_path: Path, pg_url: str) -> None:
    """One Linux user running alpha and beta: one role, mapped to each (granted together or
    one at a time); gamma, root's, gets no mapping."""
    suffix = uuid.uuid4().hex[:8]
    dave, frank = f"dave-{suffix}", f"frank-{suffix}"
    repo = migrated(tmp_path, pg_url, {"alpha": dave, "beta": dave, "gamma": None, "delta": frank, "eps": frank})
    done = fleet("register", "grant", str(repo), url=pg_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"register: role {dave} for tenant alpha: created, mapped to tenant alpha",
                                        f"register: role {dave} for tenant beta: mapped to tenant beta",
                                        f"register: role {frank} for tenant delta: created, mapped to tenant delta",
                                        f"register: role {frank} for tenant eps: mapped to tenant eps"]
    assert query(pg_url, "SELECT role::text, tenant_id FROM fleet.tenant_roles ORDER BY 2") == [
        (dave, "alpha"), (dave, "beta"), (frank, "delta"), (frank, "eps")]
    again = fleet("register", "grant", str(repo), "--tenant", "beta", url=pg_url)
    assert again.stdout.strip() == f"register: role {dave} for tenant beta: already in place", again.stderr
    query(pg_url, "DELETE FROM fleet.tenant_roles WHERE tenant_id = 'eps'")  # granted one at a time
    one = fleet("register", "grant", str(repo), "--tenant", "eps", url=pg_url)
    assert one.stdout.strip() == f"register: role {frank} for tenant eps: mapped to tenant eps", one.stderr


def test_grant_refusals_are_clear(tmp_path: Path, pg_url: str, pg_cluster: Cluster) -> None:
    suffix = uuid.uuid4().hex[:8]
    shared, other = f"dave-{suffix}", f"erin-{suffix}"
    repo = migrated(tmp_path, pg_url, {"alpha": shared, "beta": shared, "gamma": None, "delta": other})

    def refused(*args: str, url: str = pg_url) -> str:
        done = fleet("register", "grant", str(repo), *args, url=url)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stdout + done.stderr
        return done.stderr

    assert "tenant gamma has no `user:` in its roster" in refused("--tenant", "gamma")
    assert "tenant 'nope' is not in" in refused("--tenant", "nope")
    (repo / "tenants" / "gamma" / "roster.yaml").write_text("kind: Roster\n")
    assert "tenants/gamma/roster.yaml:1:1:" in refused() and "fleet validate" in refused()
    dbname = pg_url.split("///", 1)[1].split("?", 1)[0]
    weak = f"weak_{suffix}"
    pg_cluster.sql(f"CREATE ROLE {weak} LOGIN IN ROLE fleet_operator", dbname)
    said = refused("--tenant", "delta", url=pg_cluster.url(dbname, weak))
    assert "permission denied to create role" in said and "needs a role with CREATEROLE" in said
    query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, 'alpha')", (other,))
    said = refused("--tenant", "delta")
    assert f"role {other} already acts for tenant alpha (fleet.tenant_roles), whose roster does not name" in said
    assert f"DELETE FROM fleet.tenant_roles WHERE role = '{other}' AND tenant_id = 'alpha'" in said
    assert query(pg_url, "SELECT count(*) FROM pg_roles WHERE rolname = %s", (other,)) == [(0,)]  # rolled back
