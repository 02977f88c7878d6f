"""Row-level security on tenant_id in a real register: a tenant's role reads and writes only
its own rows, SQL aimed at another tenant's rows is refused or touches nothing, and the
operator's role sees every host and tenant (`fleet ps --all-hosts` included); a role
mapped to two tenants (one Linux user running both) sees and writes both, and no third."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from reconciler.drivers import register as pg
from reconciler.register.rows import Batch, Row
from tests.plugins.postgres import Cluster
from tests.register.support import fleet, query, register_repo


def agent(tenant: str, name: str) -> Row:
    return Row("agents", tenant, name, {"role": "coder", "alias": None, "lifecycle": "core", "desired_model": "m",
                                        "running_model": "m", "health": "healthy", "tokens": 0, "conditions": []})


def usage(tenant: str) -> Row:
    return Row("usage", tenant, "plan", {"runtime": "stub", "regime": "subscription", "state": "on-pace",
                                         "used_pct": 10, "allowed_pct": 20, "reset_at": None, "exhausts": None,
                                         "confidence": "user", "source": "set-usage"})


def ledger(tenant: str, key: str) -> Row:
    return Row("ledger", tenant, key, {"ts": "2026-12-01T00:00:00+00:00", "agent": "a", "role": "coder", "task": None,
                                       "account": None, "model": "m", "source": "heartbeat", "stream": "s",
                                       "tokens": 5, "dollars": None, "total_tokens": 5, "total_usd": None,
                                       "confidence": "estimated"})


def task(tenant: str, task_id: str) -> tuple[Row, Row]:
    """A lane task of `tenant` and its assignment, as a run writes them (register_sync.task_rows)."""
    return (Row("tasks", tenant, task_id, {"mission": "M1", "title": "Paginate", "lane": "api", "state": "working",
                                           "note": ""}),
            Row("assignments", tenant, task_id, {"agent": "coder0-0", "lane": "api", "state": "working",
                                                 "since": "2026-12-01T00:00:00+00:00"}))


@pytest.fixture
def register(tmp_path: Path, pg_url: str, pg_cluster: Cluster) -> dict[str, str]:
    """A migrated register with tenants alpha (host w1) and beta (host w2), and a role each
    plus an operator's; returns the URL per role."""
    assert fleet("register", "migrate", str(register_repo(tmp_path)), url=pg_url).returncode == 0
    with pg.connect(pg_url) as conn:
        for seq, (tenant, host) in enumerate((("alpha", "w1"), ("beta", "w2")), start=1):
            pg.write_batch(conn, Batch(seq, host, f"r{seq}", "2026-12-01T00:00:00+00:00", (tenant,),
                                       upserts=(agent(tenant, "a"), agent(tenant, "b"), usage(tenant),
                                                *task(tenant, "T1")),
                                       inserts=(ledger(tenant, f"k-{tenant}"),)))
    suffix = uuid.uuid4().hex[:8]
    roles = {"alpha": f"ra_{suffix}", "beta": f"rb_{suffix}", "operator": f"rop_{suffix}"}
    dbname = pg_url.split("///", 1)[1].split("?", 1)[0]
    for tenant in ("alpha", "beta"):
        pg_cluster.sql(f"CREATE ROLE {roles[tenant]} LOGIN IN ROLE fleet_tenant", dbname)
        query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, %s)", (roles[tenant], tenant))
    pg_cluster.sql(f"CREATE ROLE {roles['operator']} LOGIN IN ROLE fleet_operator", dbname)
    return {who: pg_cluster.url(dbname, role) for who, role in roles.items()}


def test_a_tenant_sees_only_its_rows(register: dict[str, str]) -> None:
    alpha = register["alpha"]
    assert {r[0] for r in query(alpha, "SELECT tenant_id FROM fleet.agents")} == {"alpha"}
    assert {r[0] for r in query(alpha, "SELECT tenant_id FROM fleet.ledger")} == {"alpha"}
    assert {r[0] for r in query(alpha, "SELECT host FROM fleet.hosts")} == {"w1"}
    assert {r[0] for r in query(register["operator"], "SELECT tenant_id FROM fleet.agents")} == {"alpha", "beta"}


def test_a_tenant_sees_only_its_tasks_and_assignments(register: dict[str, str]) -> None:
    for table in ("tasks", "assignments"):
        assert query(register["alpha"], f"SELECT tenant_id, host, task_id FROM fleet.{table}") == [("alpha", "w1", "T1")]
        assert query(register["beta"], f"SELECT tenant_id, host, task_id FROM fleet.{table}") == [("beta", "w2", "T1")]
        assert len(query(register["operator"], f"SELECT 1 FROM fleet.{table}")) == 2
    import psycopg  # noqa: PLC0415

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        query(register["alpha"], "INSERT INTO fleet.assignments (tenant_id, host, task_id, agent, state, since) "
                                 "VALUES ('beta', 'w2', 'T9', 'planted', 'working', now())")
    with psycopg.connect(register["alpha"], autocommit=True) as conn:
        assert conn.execute("UPDATE fleet.tasks SET state = 'done' WHERE tenant_id = 'beta'").rowcount == 0


def test_cross_tenant_sql_is_refused(register: dict[str, str], pg_url: str) -> None:
    import psycopg  # noqa: PLC0415

    alpha = register["alpha"]
    for statement in (
        "INSERT INTO fleet.agents (tenant_id, host, agent, role, lifecycle, desired_model, health) "
        "VALUES ('beta', 'w2', 'planted', 'coder', 'core', 'm', 'healthy')",
        "INSERT INTO fleet.ledger (tenant_id, host, idempotency_key, ts, model, source, stream, tokens, total_tokens, "
        "confidence) VALUES ('beta', 'w2', 'x', now(), 'm', 's', 's', 1, 1, 'user')",
        "UPDATE fleet.agents SET tenant_id = 'beta' WHERE tenant_id = 'alpha'",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            query(alpha, statement)
    with psycopg.connect(alpha, autocommit=True) as conn:  # beta's rows are not there to touch
        assert conn.execute("UPDATE fleet.agents SET health = 'gone' WHERE tenant_id = 'beta'").rowcount == 0
        assert conn.execute("DELETE FROM fleet.agents WHERE tenant_id = 'beta'").rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(alpha, "SELECT * FROM fleet.tenant_roles")  # who maps to whom is the operator's
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        query(pg_url, "DELETE FROM fleet.ledger")
    assert query(pg_url, "SELECT tenant_id, count(*) FROM fleet.agents GROUP BY 1 ORDER BY 1") == [("alpha", 2), ("beta", 2)]


def test_a_role_of_two_tenants_sees_both_and_no_third(register: dict[str, str], pg_url: str,
                                                      pg_cluster: Cluster) -> None:
    import psycopg  # noqa: PLC0415

    with pg.connect(pg_url) as conn:
        pg.write_batch(conn, Batch(3, "w3", "r3", "2026-12-01T00:00:00+00:00", ("gamma",),
                                   upserts=(agent("gamma", "a"), *task("gamma", "T1")),
                                   inserts=(ledger("gamma", "k-gamma"),)))
    role = f"rab_{uuid.uuid4().hex[:8]}"
    dbname = pg_url.split("///", 1)[1].split("?", 1)[0]
    pg_cluster.sql(f"CREATE ROLE {role} LOGIN IN ROLE fleet_tenant", dbname)
    query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, 'alpha'), (%s, 'beta')", (role, role))
    both = pg_cluster.url(dbname, role)
    for table in ("agents", "ledger", "hosts", "tasks", "assignments"):
        assert {r[0] for r in query(both, f"SELECT tenant_id FROM fleet.{table}")} == {"alpha", "beta"}, table
    assert {r[0] for r in query(register["operator"], "SELECT tenant_id FROM fleet.agents")} == {"alpha", "beta", "gamma"}
    assert {r[0] for r in query(register["alpha"], "SELECT tenant_id FROM fleet.agents")} == {"alpha"}
    with pg.connect(both) as conn:  # one batch of both tenants, as that user's run writes it
        assert pg.write_batch(conn, Batch(12, "w1", "r12", "2026-12-01T00:00:00+00:00", ("alpha", "beta"),
                                          upserts=(agent("alpha", "c"), agent("beta", "c"))))
    with pytest.raises(pg.RoleRefused, match="row-level security"), pg.connect(both) as conn:
        pg.write_batch(conn, Batch(13, "w1", "r13", "2026-12-01T00:00:00+00:00", ("gamma",),
                                   upserts=(agent("gamma", "c"),)))
    with psycopg.connect(both, autocommit=True) as conn:
        assert conn.execute("UPDATE fleet.agents SET health = 'gone' WHERE tenant_id = 'gamma'").rowcount == 0
    assert query(pg_url, "SELECT tenant_id, count(*) FROM fleet.agents GROUP BY 1 ORDER BY 1") == [
        ("alpha", 3), ("beta", 3), ("gamma", 1)]


def test_a_tenant_role_writes_its_own_batches(register: dict[str, str], pg_url: str) -> None:
    with pg.connect(register["alpha"]) as conn:
        assert pg.write_batch(conn, Batch(10, "w1", "r10", "2026-12-01T00:00:00+00:00", ("alpha",),
                                          upserts=(agent("alpha", "c"),)))
    with pytest.raises(pg.RoleRefused, match="row-level security"), pg.connect(register["alpha"]) as conn:
        pg.write_batch(conn, Batch(11, "w1", "r11", "2026-12-01T00:00:00+00:00", ("beta",),
                                   upserts=(agent("beta", "c"),)))
    assert query(pg_url, "SELECT count(*) FROM fleet.agents WHERE tenant_id = 'beta'") == [(2,)]


def test_ps_all_hosts_shows_what_the_role_may_see(tmp_path: Path, register: dict[str, str]) -> None:
    repo = register_repo(tmp_path / "ps")
    seen = {}
    for who in ("alpha", "operator"):
        done = fleet("ps", str(repo), "--all-hosts", "--output", "json", url=register[who])
        assert done.returncode == 0, done.stderr
        seen[who] = {(r["host"], r["tenant"], r["agent"]) for r in json.loads(done.stdout)}
    assert seen["alpha"] == {("w1", "alpha", "a"), ("w1", "alpha", "b")}
    assert seen["operator"] == seen["alpha"] | {("w2", "beta", "a"), ("w2", "beta", "b")}
    budgets = {who: {(r["host"], r["tenant"], r["ledger_tokens"]) for r in json.loads(
        fleet("budget", "show", str(repo), "--all-hosts", "--output", "json", url=register[who]).stdout)}
        for who in ("beta", "operator")}
    assert budgets["beta"] == {("w2", "beta", 0)}
    assert budgets["operator"] == {("w1", "alpha", 0), ("w2", "beta", 0)}
    text = fleet("ps", str(repo), "--all-hosts", url=register["operator"])
    assert text.returncode == 0 and text.stdout.splitlines()[0].split()[:3] == ["HOST", "TENANT", "AGENT"]
    assert len(text.stdout.splitlines()) == 5
    one = fleet("ps", str(repo), "--all-hosts", "--host", "w2", "--output", "json", url=register["operator"])
    assert {r["host"] for r in json.loads(one.stdout)} == {"w2"}


def test_a_tenant_reads_only_its_own_status_documents(register: dict[str, str], pg_url: str) -> None:
    """The documents TASKS.md is rendered from follow row-level security like every tenant
    table; the projection lease is the operator's to take, a tenant's role may only look."""
    import psycopg  # noqa: PLC0415

    from reconciler.register.rows import DOC  # noqa: PLC0415

    with pg.connect(pg_url) as conn:
        for seq, (tenant, host) in enumerate((("alpha", "w1"), ("beta", "w2")), start=20):
            pg.write_batch(conn, Batch(seq, host, f"r{seq}", "2026-12-01T00:00:00+00:00", (tenant,), upserts=(
                Row("status_docs", tenant, DOC, {"doc": {"kind": "Status", "tenant": tenant, "host": host}}),)))
    with pg.connect(register["alpha"]) as conn:
        assert [(t, h) for t, h, _ in pg.read_status_docs(conn, ["alpha", "beta"])] == [("alpha", "w1")]
    with pg.connect(register["operator"]) as conn:
        assert [(t, h) for t, h, _ in pg.read_status_docs(conn, ["alpha", "beta"])] == [("alpha", "w1"), ("beta", "w2")]
        assert pg.take_lease(conn, "fleet", pg.PROJECTIONS_LEASE, "w1", 60) == "w1"
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        query(register["alpha"], "INSERT INTO fleet.status_docs (tenant_id, host, doc) VALUES ('beta', 'w9', '{}')")
    with pytest.raises(pg.RegisterError, match="permission denied"), pg.connect(register["alpha"]) as conn:
        pg.take_lease(conn, "fleet", pg.PROJECTIONS_LEASE, "w1", 60)
    assert query(register["beta"], "SELECT holder FROM fleet.leases") == [("w1",)]
