"""Ingest end to end below the CLI: real files in the runtimes' formats, a real repository,
real usage records and ledger in a temporary state directory; then observe() reads them.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.drivers.ledger import ledger_path, read_ledger
from reconciler.drivers.usage import parse_usage, usage_path, write_usage
from reconciler.engine.ingest import (
    AgentInfo,
    Homes,
    IngestReport,
    SpendCounter,
    ingest_all,
    ledger_deltas,
)
from reconciler.engine.observe import observe
from reconciler.hooks import claude_statusline
from reconciler.model.layout import StateLayout
from reconciler.model.ledger import LedgerEntry, learned_spend
from reconciler.model.usage import UsageSignal
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo
from tests.engine import usage_samples as samples
from tests.engine.usage_samples import NOW, TENANT


class World(NamedTuple):
    repo: FleetRepo
    state: Path
    homes: dict[str, Homes]


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The sample repository, a Codex and a Claude Code home, a saved status line and two
    agents' heartbeats: every source the ingesters read."""
    repo = load_repo(samples.write_repo(tmp_path / "repo"))
    assert repo.ok, repo.errors
    state = tmp_path / "state"
    homes = {TENANT: Homes(codex=samples.write_codex_home(tmp_path / "codex"),
                           claude=samples.write_claude_home(tmp_path / "claude"))}
    saved = claude_statusline.saved_record(samples.statusline_input(), TENANT, "orchestrator", NOW - timedelta(minutes=2))
    assert saved is not None
    claude_statusline.save(saved, state / TENANT / "statusline" / "orchestrator.json", NOW)
    samples.write_heartbeat(state, "coder0-0", (40000, 10000))
    samples.write_heartbeat(state, "enhancer", (0, 0), model="gpt-5.5")  # nothing spent: no entry
    return World(repo, state, homes)


def ingest(world: World, now: datetime = NOW) -> IngestReport:
    return ingest_all(world.repo, world.state, world.homes, now, host="w-jarvis")


def record_of(world: World, account: str) -> UsageSignal:
    return parse_usage(usage_path(world.state, TENANT, account).read_text())


def test_provider_readings_become_usage_records(world: World) -> None:
    report = ingest(world)
    (result,) = report.tenants
    assert sorted((o.signal.account, o.status) for o in result.signals) == [
        ("claude-max-1", "written"), ("codex-pro", "written")]
    codex = record_of(world, "codex-pro")
    assert codex == UsageSignal(TENANT, "codex-pro", 0.385, None, datetime(2026, 11, 30, tzinfo=UTC),
                                timedelta(days=7), "provider", "codex-rollout",
                                datetime(2026, 11, 25, 11, 30, tzinfo=UTC)), \
        "today's rollout (not yesterday's), its weekly (secondary) window"
    claude = record_of(world, "claude-max-1")
    assert (claude.used_fraction, claude.window, claude.source, claude.confidence) == (
        0.412, timedelta(days=7), "claude-statusline", "provider"), "the seven_day window of the status line"
    assert claude.observed_at == NOW - timedelta(minutes=2)
    assert not (world.state / TENANT / "usage" / "stub-api.json").exists(), "no provider reports on it"


def test_corrupt_lines_are_reported_once_per_file_and_ingest_goes_on(world: World) -> None:
    problems = ingest(world).problems
    assert len(problems) == 2, problems
    (codex,) = [p for p in problems if "rollout-" in p]
    (claude,) = [p for p in problems if "projects" in p]
    assert "rollout-2026-11-25" in codex and "skipped 1 unreadable line(s): line 6: not JSON" in codex
    assert f"{samples.CLAUDE_SESSION}.jsonl: skipped 1 unreadable line(s): line 6" in claude


def test_ledger_books_each_counter_with_attribution(world: World) -> None:
    (result,) = ingest(world).tenants
    rows = {(e.source, e.model): e for e in result.ledger}
    assert set(rows) == {
        ("codex-rollout", "gpt-5.5"), ("codex-rollout", "gpt-5.5-mini"),
        ("claude-transcript", "claude-opus-4-1-20250805"), ("claude-transcript", "claude-sonnet-4-5-20250929"),
        ("heartbeat", "stub-large"),
    }
    codex = rows[("codex-rollout", "gpt-5.5")]
    assert (codex.tokens, codex.agent, codex.role, codex.account, codex.stream) == (
        50100, "enhancer", "enhancer", "codex-pro", samples.CODEX_SESSION), "cwd is the enhancer's workdir"
    assert rows[("codex-rollout", "gpt-5.5-mini")].agent is None, "a session elsewhere is not attributed"
    opus = rows[("claude-transcript", "claude-opus-4-1-20250805")]
    assert (opus.tokens, opus.agent, opus.account) == (samples.CLAUDE_OPUS_TOKENS, "orchestrator", "claude-max-1")
    sonnet = rows[("claude-transcript", "claude-sonnet-4-5-20250929")]
    assert sonnet.tokens == samples.CLAUDE_SONNET_TOKENS and sonnet.stream == samples.CLAUDE_SESSION, \
        "the subagent's spend joins its parent session"
    stub = rows[("heartbeat", "stub-large")]
    assert (stub.tokens, stub.agent, stub.role, stub.task, stub.account, stub.confidence, stub.stream) == (
        50000, "coder0-0", "coder", "T1", "stub-api", "estimated", "coder0-0@4242")
    assert all(e.host == "w-jarvis" and e.tenant == TENANT for e in result.ledger)
    assert read_ledger(ledger_path(world.state, TENANT)) == (list(result.ledger), [])


def test_ingesting_twice_appends_nothing_and_rewrites_nothing(world: World) -> None:
    ingest(world)
    ledger_before = ledger_path(world.state, TENANT).read_bytes()
    record = usage_path(world.state, TENANT, "codex-pro")
    mtime = record.stat().st_mtime_ns
    (again,) = ingest(world, NOW + timedelta(minutes=5)).tenants
    assert again.ledger == ()
    assert {o.status for o in again.signals} == {"unchanged"}
    assert ledger_path(world.state, TENANT).read_bytes() == ledger_before
    assert record.stat().st_mtime_ns == mtime


class GrowthCase(NamedTuple):
    test_id: str
    beat: tuple[int, int]
    pid: int
    expected_tokens: list[int]


GROWTH = [
    GrowthCase("same-process-grows", (45000, 11000), 4242, [6000]),
    GrowthCase("same-process-unchanged", (40000, 10000), 4242, []),
    GrowthCase("restarted-process-counts-from-zero", (3000, 1000), 5151, [4000]),
    GrowthCase("counter-reset-under-same-pid", (3000, 1000), 4242, [4000]),
]


@pytest.mark.parametrize("case", GROWTH, ids=lambda c: c.test_id)
def test_heartbeat_deltas(world: World, case: GrowthCase) -> None:
    ingest(world)
    samples.write_heartbeat(world.state, "coder0-0", case.beat, pid=case.pid, ts="2026-11-25T12:04:00Z")
    (result,) = ingest(world, NOW + timedelta(minutes=5)).tenants
    assert [e.tokens for e in result.ledger] == case.expected_tokens
    assert ingest(world, NOW + timedelta(minutes=6)).tenants[0].ledger == (), "and then nothing more"


def test_a_grown_codex_session_books_only_the_growth(world: World, tmp_path: Path) -> None:
    """Codex appends a later `token_count`: only the appended line is read (the cursor)."""
    ingest(world)
    rollout = next((tmp_path / "codex" / "sessions").rglob(f"*{samples.CODEX_SESSION}.jsonl"))
    grown = samples.current_rollout((60000, 30000, 3000, 900)).splitlines()[4]
    with rollout.open("a") as handle:
        handle.write(grown + "\n")
    (result,) = ingest(world).tenants
    assert [(e.source, e.tokens, e.total_tokens) for e in result.ledger] == [("codex-rollout", 12900, 63000)]


def test_resumed_session_copying_old_lines_adds_nothing(world: World, tmp_path: Path) -> None:
    """`claude --resume` writes a new file that repeats earlier messages: same ids, no new spend."""
    ingest(world)
    project = tmp_path / "claude" / "projects" / "-srv-fleet-orchestrator"
    original = (project / f"{samples.CLAUDE_SESSION}.jsonl").read_text()
    (project / "0a-resumed-session.jsonl").write_text(original)
    assert ingest(world).tenants[0].ledger == ()


class HandCase(NamedTuple):
    test_id: str
    minutes_old: int
    reset_passed: bool
    status: str


HAND = [
    HandCase("fresh-user-figure-is-kept", 10, False, "kept"),
    HandCase("hour-old-user-figure-ties-and-the-fresher-reading-wins", 61, False, "written"),
    HandCase("stale-user-figure-is-replaced", 180, False, "written"),
    HandCase("user-figure-of-a-reset-window-is-replaced", 10, True, "written"),
]


@pytest.mark.parametrize("case", HAND, ids=lambda c: c.test_id)
def test_a_hand_set_record_against_the_provider(world: World, case: HandCase) -> None:
    """The Codex reading is 30 minutes old (`provider`); the hand-set figure competes with it."""
    reset = NOW - timedelta(minutes=1) if case.reset_passed else None
    mine = UsageSignal(TENANT, "codex-pro", 0.5, None, reset, timedelta(days=7), "user", "user",
                       NOW - timedelta(minutes=case.minutes_old))
    write_usage(world.state, mine)
    (result,) = ingest(world).tenants
    assert {o.signal.account: o.status for o in result.signals}["codex-pro"] == case.status
    assert (record_of(world, "codex-pro") == mine) is (case.status == "kept")


def test_two_accounts_on_one_runtime_are_ambiguous(tmp_path: Path) -> None:
    budget = samples.BUDGET.replace("concurrency: 4\n", """\
  - name: codex-pro-2
    provider: openai
    runtime: openai
    regime: subscription
    window: 7d
""")
    repo = load_repo(samples.write_repo(tmp_path / "repo", budget=budget))
    assert repo.ok, repo.errors
    homes = {TENANT: Homes(codex=samples.write_codex_home(tmp_path / "codex"))}
    (result,) = ingest_all(repo, tmp_path / "state", homes, NOW, host="h").tenants
    assert result.signals == ()
    assert any("accounts codex-pro, codex-pro-2 all run codex" in p for p in result.problems)
    assert {e.account for e in result.ledger} == {None}, "spend is not booked to either account"


def test_a_monthly_account_matches_no_provider_window(tmp_path: Path) -> None:
    budget = samples.BUDGET.replace("  - name: codex-pro\n    provider: openai\n    runtime: openai\n"
                                    "    regime: subscription\n    window: 7d\n",
                                    "  - name: codex-pro\n    provider: openai\n    runtime: openai\n"
                                    "    regime: subscription\n    window: 30d\n")
    repo = load_repo(samples.write_repo(tmp_path / "repo", budget=budget))
    homes = {TENANT: Homes(codex=samples.write_codex_home(tmp_path / "codex"))}
    (result,) = ingest_all(repo, tmp_path / "state", homes, NOW, host="h").tenants
    assert result.signals == ()
    assert any("no codex-rollout window matches its 30d window (offered: primary 5h, secondary 7d)" in n
               for n in result.notes)


def test_tenant_without_homes_reads_the_state_dir_only(world: World) -> None:
    (result,) = ingest_all(world.repo, world.state, {}, NOW, host="w-jarvis").tenants
    assert [o.signal.source for o in result.signals] == ["claude-statusline"]
    assert {e.source for e in result.ledger} == {"heartbeat"}


def test_concurrent_ingests_book_each_increase_once(world: World) -> None:
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        ingest(world)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries, problems = read_ledger(ledger_path(world.state, TENANT))
    assert problems == [] and len(entries) == 5
    assert len({e.counter for e in entries}) == 5


def test_learned_spend_from_an_ingested_ledger(world: World) -> None:
    ingest(world)
    entries, _ = read_ledger(ledger_path(world.state, TENANT))
    assert learned_spend(entries) == {("coder", "stub-large"): (50000, 50000)}, \
        "only coder0-0 has a single task (T1) to book spend to"


# --- the pure delta rule ----------------------------------------------------------------------


def counter(total: int, *, usd: float | None = None, restarts: bool = False, model: str = "m") -> SpendCounter:
    return SpendCounter("heartbeat", "a@1", model, total, usd, NOW, "a", None, "estimated", restarts)


def booked(total: int, usd: float | None = None, tenant: str = TENANT) -> LedgerEntry:
    return LedgerEntry(NOW, tenant, "h", "a", "coder", None, None, "m", "heartbeat", "a@1", total, None, total,
                       usd, "estimated")


class DeltaCase(NamedTuple):
    test_id: str
    old: list[LedgerEntry]
    counter: SpendCounter
    tokens: list[int]
    dollars: list[float | None]


DELTAS = [
    DeltaCase("first-sight-books-everything", [], counter(500), [500], [None]),
    DeltaCase("growth", [booked(500)], counter(800), [300], [None]),
    DeltaCase("unchanged", [booked(500)], counter(500), [], []),
    DeltaCase("files-went-away", [booked(500)], counter(200), [], []),
    DeltaCase("restart-counts-from-zero", [booked(500)], counter(200, restarts=True), [200], [None]),
    DeltaCase("dollars-grow", [booked(500, usd=1.5)], counter(600, usd=2.0), [100], [0.5]),
    DeltaCase("dollars-only", [booked(500, usd=1.5)], counter(500, usd=2.25), [0], [0.75]),
    DeltaCase("other-tenant-ignored", [booked(500, tenant="other")], counter(500), [500], [None]),
    DeltaCase("other-model-other-counter", [booked(500)], counter(500, model="m2"), [500], [None]),
]


@pytest.mark.parametrize("case", DELTAS, ids=lambda c: c.test_id)
def test_ledger_deltas(case: DeltaCase) -> None:
    agents = {"a": AgentInfo("a", "coder", "stub", "stub", None, "T9")}
    entries = ledger_deltas(case.old, [case.counter], tenant=TENANT, host="h", agents=agents)
    assert [e.tokens for e in entries] == case.tokens
    assert [e.dollars for e in entries] == case.dollars
    assert all((e.role, e.task, e.total_tokens) == ("coder", "T9", case.counter.total_tokens) for e in entries)


# --- observe reads what ingest wrote ----------------------------------------------------------


def test_observe_reads_usage_with_aged_confidence(world: World) -> None:
    ingest(world)
    state = StateLayout(world.state)
    fresh = observe([], [], state, [TENANT], NOW)
    assert set(fresh.usage) == {(TENANT, "claude-max-1"), (TENANT, "codex-pro")}
    assert fresh.usage[(TENANT, "codex-pro")].confidence == "provider", "30 minutes old"
    later = observe([], [], state, [TENANT], NOW + timedelta(hours=1))
    assert later.usage[(TENANT, "codex-pro")].confidence == "estimated", "90 minutes old: one step down"
    assert later.usage[(TENANT, "codex-pro")].observed_at == datetime(2026, 11, 25, 11, 30, tzinfo=UTC)


def test_observe_reports_bad_usage_records_without_failing(world: World) -> None:
    folder = world.state / TENANT / "usage"
    folder.mkdir(parents=True)
    (folder / "claude-max-1.json").write_text('{"tenant": "jarvis", "acc')
    other = {
        "tenant": "someone-else", "account": "codex-pro", "used_fraction": 0.1, "confidence": "user",
        "source": "user", "observed_at": "2026-11-25T11:00:00Z"}
    (folder / "codex-pro.json").write_text(json.dumps(other))
    observed = observe([], [], StateLayout(world.state), [TENANT], NOW)
    assert observed.usage == {}
    assert len(observed.problems) == 2
    assert "invalid JSON" in observed.problems[0]
    assert "tenant 'someone-else' does not match the folder's tenant 'jarvis'" in observed.problems[1]
