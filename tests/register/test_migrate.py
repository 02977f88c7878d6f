"""`fleet register migrate` against a real Postgres (tests/plugins/postgres.py): from an
empty database, from each earlier version (0001 to 0003 with rows in them), again
(nothing changes), and a register newer than the code refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.drivers import register as pg
from tests.register.support import fleet, query, register_repo

TABLES = {"schema_migrations", "tenant_roles", "hosts", "agents", "heartbeats", "runs", "tasks", "assignments",
          "usage", "ledger", "status_docs", "leases"}
#: Tables that are not any tenant's rows, so without row-level security.
UNTENANTED = {"schema_migrations", "tenant_roles", "leases"}


def test_migrate_from_empty_then_again(tmp_path: Path, pg_url: str) -> None:
    repo = register_repo(tmp_path)
    first = fleet("register", "migrate", str(repo), url=pg_url)
    assert first.returncode == 0, first.stderr
    latest = pg.migrations()[-1].version
    assert f"schema 0 -> {latest}" in first.stdout
    tables = {r[0] for r in query(pg_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'fleet'")}
    assert tables == TABLES
    rls = {r[0] for r in query(pg_url, "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                       "WHERE n.nspname = 'fleet' AND c.relrowsecurity")}
    assert rls == TABLES - UNTENANTED, "every tenant table has row-level security"
    again = fleet("register", "migrate", str(repo), url=pg_url)
    assert again.returncode == 0, again.stderr
    assert f"schema at version {latest}, up to date" in again.stdout
    assert query(pg_url, "SELECT version FROM fleet.schema_migrations") == [(v,) for v in range(1, latest + 1)]


def test_every_migration_applies_in_order(pg_url: str) -> None:
    """From each earlier version to the latest (one step at a time, as hosts upgrade)."""
    shipped = pg.migrations()
    with pg.connect(pg_url) as conn:
        for upto in range(1, len(shipped) + 1):
            found, applied = pg.migrate(conn, shipped[:upto])
            assert (found, [m.version for m in applied]) == (upto - 1, [upto])
        assert pg.schema_version(conn) == len(shipped)


def test_migrate_from_0001_keeps_its_rows(tmp_path: Path, pg_url: str) -> None:
    """A register at version 1 holding a host's rows: `fleet register migrate` brings it to the
    latest, the rows stay, and a batch with a status document is then written."""
    from reconciler.register.rows import DOC, Batch, Row  # noqa: PLC0415

    shipped = pg.migrations()
    assert [m.name for m in shipped[:2]] == ["initial", "projections"]
    with pg.connect(pg_url) as conn:
        pg.migrate(conn, shipped[:1])
        pg.write_batch(conn, Batch(1, "w1", "r1", "2026-12-01T00:00:00+00:00", ("alpha",), upserts=(
            Row("heartbeats", "alpha", "a", {"seq": 1, "ts": "2026-12-01T00:00:00+00:00", "state": "idle", "model": "m",
                                             "pid": 1, "ack": None}),)))
    done = fleet("register", "migrate", str(register_repo(tmp_path)), url=pg_url)
    assert done.returncode == 0, done.stderr
    assert f"schema 1 -> {shipped[-1].version}" in done.stdout
    assert query(pg_url, "SELECT host, agent, state FROM fleet.heartbeats") == [("w1", "a", "idle")]
    with pg.connect(pg_url) as conn:
        pg.check_schema(conn, shipped[-1].version)
        assert pg.write_batch(conn, Batch(2, "w1", "r2", "2026-12-01T00:01:00+00:00", ("alpha",), upserts=(
            Row("status_docs", "alpha", DOC, {"doc": {"kind": "Status", "tenant": "alpha", "host": "w1"}}),)))
        assert pg.read_status_docs(conn, ["alpha"]) == [("alpha", "w1", {"kind": "Status", "tenant": "alpha", "host": "w1"})]
        assert pg.take_lease(conn, "fleet", pg.PROJECTIONS_LEASE, "w1", 60) == "w1"


def test_newer_schema_is_refused(tmp_path: Path, pg_url: str) -> None:
    repo = register_repo(tmp_path)
    assert fleet("register", "migrate", str(repo), url=pg_url).returncode == 0
    query(pg_url, "INSERT INTO fleet.schema_migrations (version, name) VALUES (999, 'from_the_future')")
    done = fleet("register", "migrate", str(repo), url=pg_url)
    assert done.returncode == 1
    assert "the register's schema is at version 999, newer than this fleet knows" in done.stderr
    assert "Traceback" not in done.stderr
    assert query(pg_url, "SELECT max(version) FROM fleet.schema_migrations") == [(999,)]


def test_migrate_without_register_or_url(tmp_path: Path, pg_url: str) -> None:
    from tests.spec.support import build_repo  # noqa: PLC0415

    plain = build_repo(tmp_path / "plain")
    done = fleet("register", "migrate", str(plain), url=pg_url)
    assert done.returncode == 1 and "has no `register:`" in done.stderr
    unset = fleet("register", "migrate", str(register_repo(tmp_path / "r")), url=None)
    assert unset.returncode == 1 and "$FLEET_REGISTER_URL is not set" in unset.stderr


def test_unreachable_register_names_no_password(tmp_path: Path) -> None:
    url = f"postgresql://ops:hunter2@/fleet?host={tmp_path}/nowhere"
    done = fleet("register", "migrate", str(register_repo(tmp_path)), url=url)
    assert done.returncode == 1, done.stdout
    assert "register:" in done.stderr and "hunter2" not in done.stderr + done.stdout


def test_migrate_from_0001_and_0002_keys_task_rows_per_host(pg_url: str) -> None:
    """Tasks and assignments written at version 1 or 2 (by hand: no run wrote them then) stay,
    keyed per host from 0003 on: two hosts may then hold the same task id, a task keeps one
    assignment per host (the latest of those written before), and row-level security stays."""
    shipped = pg.migrations()
    assert [m.name for m in shipped[:3]] == ["initial", "projections", "task_rows"]
    for before in (1, 2):
        query(pg_url, "DROP SCHEMA IF EXISTS fleet CASCADE")
        with pg.connect(pg_url) as conn:
            pg.migrate(conn, shipped[:before])
        query(pg_url, "INSERT INTO fleet.tasks (tenant_id, host, task_id, mission, title, lane, state) "
                      "VALUES ('alpha', 'w1', 'T1', 'M1', 'Paginate', 'api', 'working')")
        query(pg_url, "INSERT INTO fleet.assignments (tenant_id, host, task_id, agent, lane, state, since) VALUES "
                      "('alpha', 'w1', 'T1', 'coder0-0', 'api', 'assigned', '2026-12-01T00:00:00Z'), "
                      "('alpha', 'w1', 'T1', 'coder0-1', 'api', 'working', '2026-12-01T01:00:00Z')")
        with pg.connect(pg_url) as conn:
            found, applied = pg.migrate(conn, shipped)
            assert found == before and "task_rows" in [m.name for m in applied]
        assert query(pg_url, "SELECT host, task_id, title, state, note FROM fleet.tasks") == [
            ("w1", "T1", "Paginate", "working", "")]
        assert query(pg_url, "SELECT host, task_id, agent, state FROM fleet.assignments") == [
            ("w1", "T1", "coder0-1", "working")], "the latest assignment of the task is kept"
        query(pg_url, "INSERT INTO fleet.tasks (tenant_id, host, task_id, title, state) "
                      "VALUES ('alpha', 'w2', 'T1', 'Paginate', 'queued')")  # another host's T1: no conflict
        keys = query(pg_url, "SELECT c.relname, array_agg(a.attname::text ORDER BY k.n) FROM pg_constraint p "
                             "JOIN pg_class c ON c.oid = p.conrelid "
                             "CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, n) "
                             "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum "
                             "WHERE p.contype = 'p' AND c.relname IN ('tasks', 'assignments') "
                             "GROUP BY c.relname ORDER BY 1")
        assert keys == [("assignments", ["tenant_id", "host", "task_id"]), ("tasks", ["tenant_id", "host", "task_id"])]
        rls = {r[0] for r in query(pg_url, "SELECT relname FROM pg_class WHERE relname IN ('tasks', 'assignments') "
                                           "AND relrowsecurity")}
        assert rls == {"tasks", "assignments"}


def primary_key(pg_url: str, table: str) -> list[str]:
    return [r[0] for r in query(pg_url, "SELECT a.attname::text FROM pg_constraint p "
                                        "CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY AS k(attnum, n) "
                                        "JOIN pg_attribute a ON a.attrelid = p.conrelid AND a.attnum = k.attnum "
                                        "WHERE p.contype = 'p' AND p.conrelid = %s::regclass ORDER BY k.n",
                                (f"fleet.{table}",))]


def test_migrate_from_0001_to_0003_keys_tenant_roles_per_tenant(pg_url: str) -> None:
    """Roles mapped at version 1, 2 or 3 (one tenant each: the key was the role) stay mapped;
    from 0004 on a role may be mapped to a second tenant, and the same pair twice is refused."""
    import psycopg  # noqa: PLC0415

    shipped = pg.migrations()
    assert [m.name for m in shipped[:4]] == ["initial", "projections", "task_rows", "roles_of_many_tenants"]
    for before in (1, 2, 3):
        query(pg_url, "DROP SCHEMA IF EXISTS fleet CASCADE")
        with pg.connect(pg_url) as conn:
            pg.migrate(conn, shipped[:before])
        assert primary_key(pg_url, "tenant_roles") == ["role"]
        query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES ('dave', 'alpha'), ('erin', 'beta')")
        with pg.connect(pg_url) as conn:
            found, applied = pg.migrate(conn, shipped)
            assert found == before and [m.name for m in applied][-1] == shipped[-1].name
        assert primary_key(pg_url, "tenant_roles") == ["role", "tenant_id"]
        query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES ('dave', 'beta')")
        assert query(pg_url, "SELECT role::text, tenant_id FROM fleet.tenant_roles ORDER BY 1, 2") == [
            ("dave", "alpha"), ("dave", "beta"), ("erin", "beta")]
        with pytest.raises(psycopg.errors.UniqueViolation):
            query(pg_url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES ('dave', 'alpha')")
