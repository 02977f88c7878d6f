"""What each applying run writes to a real register: the host's rows after a run with
stub agents on a private tmux socket, nothing on a no-op tick, and nothing lost or
doubled when Postgres is stopped and started between runs (docs/register.md)."""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.drivers import register as pg
from reconciler.drivers.ledger import render_entry
from reconciler.engine.run import RunResult, request_for, run
from reconciler.model.layout import StateLayout
from reconciler.model.ledger import LedgerEntry
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo, write
from tests.plugins.postgres import Cluster
from tests.plugins.tmux_server import retry_until
from tests.register.support import REGISTER_BLOCK, URL_ENV, fleet, query

pytestmark = pytest.mark.tmux


@pytest.fixture
def repo(tmp_path: Path, tmux_socket: SocketKey, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The minimal example on a private socket, with a register at `pg_url`, migrated."""
    assert tmux_socket.name
    root = example_repo(tmp_path, "minimal", tmux_socket.name)
    (root / "fleet.yaml").write_text((root / "fleet.yaml").read_text() + REGISTER_BLOCK)
    monkeypatch.setenv(URL_ENV, pg_url)
    done = fleet("register", "migrate", str(root), url=pg_url)
    assert done.returncode == 0, done.stderr
    return root


def reconcile(repo: Path, state: Path) -> RunResult:
    result = run(request_for(repo, "demo", None, state, use_git=False))
    assert result.exit_code == 0, (result.warnings, result.errors)
    return result


def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every kept row with its xmin: a row rewritten (even to the same values) shows a new xmin."""
    return {table: query(url, f"SELECT xmin::text, * FROM fleet.{table} ORDER BY 2, 3, 4")
            for table in ("agents", "heartbeats", "usage", "runs", "ledger")}


def healthy(repo: Path, state: Path) -> bool:
    return all((StateLayout(state).heartbeat("demo", a)).exists() for a in ("orchestrator", "enhancer"))


def test_runs_write_the_hosts_rows_and_a_noop_tick_writes_none(repo: Path, tmp_path: Path, pg_url: str) -> None:
    state = tmp_path / "state"
    first = reconcile(repo, state)
    assert not [w for w in first.warnings if "register" in w], first.warnings
    agents = query(pg_url, "SELECT tenant_id, host, agent, role, lifecycle FROM fleet.agents ORDER BY agent")
    assert agents == [("demo", "demo", "enhancer", "enhancer", "core"), ("demo", "demo", "orchestrator", "orchestrator", "core")]
    runs = query(pg_url, "SELECT tenant_id, host, actions FROM fleet.runs")
    assert runs == [("demo", "demo", ["spawn enhancer", "spawn orchestrator"])]
    assert retry_until(lambda: healthy(repo, state), 15), "the stub agents never beat"
    reconcile(repo, state)  # heartbeats and health arrive
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.heartbeats")} == {"enhancer", "orchestrator"}
    assert query(pg_url, "SELECT count(*) FROM fleet.runs") == [(1,)], "a run that changed nothing is no run"

    before = snapshot(pg_url)
    last_batch = query(pg_url, "SELECT last_batch FROM fleet.hosts")
    reconcile(repo, state)  # a no-op tick
    assert snapshot(pg_url) == before, "a no-op tick rewrote rows"
    assert query(pg_url, "SELECT last_batch FROM fleet.hosts") != last_batch, "the host's touch is the one write"

    # the roster shrinks: the register follows, exactly
    roster = (repo / "tenants/demo/roster.yaml").read_text()
    write(repo, "tenants/demo/roster.yaml", roster + "  - name: coder\n    role: coder\n    lifecycle: core\n")
    reconcile(repo, state)
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.agents")} == {"coder", "enhancer", "orchestrator"}
    write(repo, "tenants/demo/roster.yaml", roster)
    reconcile(repo, state)
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.agents")} == {"enhancer", "orchestrator"}
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.heartbeats")} <= {"enhancer", "orchestrator"}
    assert query(pg_url, "SELECT count(*) FROM fleet.runs") == [(3,)]


def test_a_lost_digest_writes_everything_and_prunes(repo: Path, tmp_path: Path, pg_url: str) -> None:
    state = tmp_path / "state"
    reconcile(repo, state)
    query(pg_url, "INSERT INTO fleet.agents (tenant_id, host, agent, role, lifecycle, desired_model, health) "
                  "VALUES ('demo', 'demo', 'ghost', 'coder', 'core', 'm', 'healthy')")
    StateLayout(state).register_digest().unlink()
    reconcile(repo, state)
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.agents")} == {"enhancer", "orchestrator"}


def ledger_lines(state: Path, start: int, count: int) -> None:
    """`count` ledger entries, as the ingesters append them."""
    path = StateLayout(state).ledger("demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime(2026, 12, 1, tzinfo=UTC)
    with path.open("a") as handle:
        for n in range(start, start + count):
            handle.write(render_entry(LedgerEntry(at + timedelta(minutes=n), "demo", "demo", "orchestrator", "orchestrator",
                                                  None, None, "stub-large", "heartbeat", "orchestrator@1", 10,
                                                  None, 10 * (n + 1), None, "estimated")))


def test_postgres_stopped_then_started_loses_and_doubles_nothing(repo: Path, tmp_path: Path, pg_url: str,
                                                                  pg_cluster: Cluster) -> None:
    state = tmp_path / "state"
    layout = StateLayout(state)
    written = 0
    for round_ in range(6):
        ledger_lines(state, written, 3)
        written += 3
        if round_ == 1:
            pg_cluster.stop()
        if round_ == 3:  # a change while the register is away
            write(repo, "tenants/demo/roster.yaml", (repo / "tenants/demo/roster.yaml").read_text()
                  + "  - name: coder\n    role: coder\n    lifecycle: core\n")
        if round_ == 5:
            pg_cluster.start()
        try:
            result = reconcile(repo, state)
        except BaseException:
            if round_ in (1, 2, 3, 4):
                pg_cluster.start()
            raise
        said = [w for w in result.warnings if "register" in w]
        if round_ in (1, 2, 3, 4):
            assert len(said) == 1, result.warnings
            assert "the register is unreachable" in said[0] and "reconciled from Git" in said[0]
            assert layout.register_spool().is_file()
            assert URL_ENV not in said[0] and "postgresql://" not in said[0]
        else:
            assert said == [], said
    assert not layout.register_spool().exists(), "the spool is replayed and removed"
    lines = layout.ledger("demo").read_text().splitlines()
    assert len(lines) == written == 18
    assert query(pg_url, "SELECT count(*), count(DISTINCT idempotency_key) FROM fleet.ledger") == [(18, 18)]
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.agents")} == {"coder", "enhancer", "orchestrator"}
    assert query(pg_url, "SELECT count(*) FROM fleet.runs") == [(2,)], "the first spawn and the coder's spawn"


def test_a_spool_replayed_twice_writes_nothing_twice(repo: Path, tmp_path: Path, pg_url: str,
                                                     pg_cluster: Cluster) -> None:
    """A commit whose spool could not be cut (a crash between the two) is replayed again: skipped whole."""
    state = tmp_path / "state"
    layout = StateLayout(state)
    reconcile(repo, state)
    pg_cluster.stop()
    try:
        ledger_lines(state, 0, 5)
        reconcile(repo, state)
    finally:
        pg_cluster.start()
    kept = tmp_path / "spool-copy"
    shutil.copy(layout.register_spool(), kept)
    reconcile(repo, state)
    counts = snapshot(pg_url)
    shutil.copy(kept, layout.register_spool())  # as if the spool had not been cut after the commit
    reconcile(repo, state)
    assert not layout.register_spool().exists()
    assert query(pg_url, "SELECT count(*) FROM fleet.ledger") == [(5,)]
    assert snapshot(pg_url) == counts


def test_schema_mismatch_stops_only_the_register(repo: Path, tmp_path: Path, pg_url: str) -> None:
    query(pg_url, "DELETE FROM fleet.schema_migrations")
    state = tmp_path / "state"
    result = reconcile(repo, state)
    said = [w for w in result.warnings if "register" in w]
    assert len(said) == 1 and "run `fleet register migrate REPO`" in said[0], said
    assert (repo / "status" / "demo" / "demo.yaml").is_file(), "the host still reconciled and wrote status"
    assert StateLayout(state).register_spool().is_file()
    for migration in pg.migrations():
        query(pg_url, "INSERT INTO fleet.schema_migrations (version, name) VALUES (%s, %s)",
              (migration.version, migration.name))
    reconcile(repo, state)
    assert {r[0] for r in query(pg_url, "SELECT agent FROM fleet.agents")} == {"enhancer", "orchestrator"}


def test_a_fleet_without_register_never_imports_psycopg(tmp_path: Path, tmux_socket: SocketKey) -> None:
    """The whole applying run in a fresh interpreter: psycopg stays out of sys.modules."""
    import subprocess  # noqa: PLC0415

    assert tmux_socket.name
    root = example_repo(tmp_path, "minimal", tmux_socket.name)
    code = ("import sys; from pathlib import Path; from reconciler.engine.run import request_for, run; "
            f"r = run(request_for(Path({str(root)!r}), 'demo', None, Path({str(tmp_path / 'state')!r}), use_git=False)); "
            "print(r.exit_code, 'psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: demo
accounts:
  - name: stub-plan
    provider: local
    runtime: stub
    regime: subscription
    window: 7d
"""


def test_usage_readings_and_spend_reach_budget_show_all_hosts(repo: Path, tmp_path: Path, pg_url: str) -> None:
    import json  # noqa: PLC0415

    state = tmp_path / "state"
    write(repo, "tenants/demo/budget.yaml", BUDGET)
    set_usage = fleet("budget", "set-usage", str(repo), "demo", "stub-plan", "--used", "0.42", "--state-dir", str(state),
                      url=pg_url)
    assert set_usage.returncode == 0, set_usage.stderr
    reconcile(repo, state)
    assert query(pg_url, "SELECT tenant_id, host, account, used_pct FROM fleet.usage") == [("demo", "demo", "stub-plan", 42)]
    shown = fleet("budget", "show", str(repo), "--all-hosts", "--output", "json", url=pg_url)
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["host"], row["tenant"], row["account"], row["used_pct"]) == ("demo", "demo", "stub-plan", 42)
    text = fleet("budget", "show", str(repo), "--all-hosts", url=pg_url)
    assert text.stdout.splitlines()[1].split()[:3] == ["demo", "demo", "stub-plan"]
