"""Usage records, the merge and aging rules, and the parsers of what runtimes write.

Everything here is pure or touches only a temporary folder: the record format of
docs/reference.md ("Usage signals"), `merge_signals`, the Codex rollout, Claude Code transcript and
status-line parsers, and the ledger file.
"""

from __future__ import annotations

import doctest
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

from reconciler.drivers import ledger as ledger_driver
from reconciler.drivers import runtime_usage, usage
from reconciler.drivers.ledger import parse_ledger, read_ledger, render_entry, update_ledger
from reconciler.drivers.runtime_usage import (
    RateWindow,
    best_window,
    dedupe_claude,
    parse_claude_transcript,
    parse_codex_rollout,
    parse_statusline_record,
)
from reconciler.drivers.usage import (
    aged_confidence,
    merge_signals,
    parse_usage,
    render_usage,
    scan_usage,
    usage_path,
    write_usage,
)
from reconciler.hooks import claude_statusline
from reconciler.model import ledger as ledger_model
from reconciler.model.ledger import LearnedSpend, LedgerEntry, learned_spend
from reconciler.model.usage import UsageSignal
from tests.engine import usage_samples as samples

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def signal(confidence: str = "provider", *, minutes_old: float = 0, source: str = "codex-rollout",
           used: float | None = 0.42, reset_at: datetime | None = None, account: str = "claude-max-1") -> UsageSignal:
    return UsageSignal("jarvis", account, used, None if used is not None else 61.5, reset_at,
                       timedelta(days=7), confidence, source, T0 - timedelta(minutes=minutes_old))


@pytest.mark.parametrize("module", [usage, runtime_usage, ledger_driver, ledger_model, claude_statusline],
                         ids=lambda m: m.__name__)
def test_doctests_pass(module: ModuleType) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0


# --- the record ------------------------------------------------------------------------------

SPEC_EXAMPLE = ('{"tenant": "jarvis", "account": "claude-max-1", "used_fraction": 0.42,\n'
                ' "spent_usd": null, "reset_at": "2026-11-30T00:00:00Z", "window": "7d",\n'
                ' "confidence": "provider", "source": "codex-rollout", "observed_at": "2026-11-25T12:00:00Z"}')


class GoodCase(NamedTuple):
    test_id: str
    text: str
    expected: UsageSignal


GOOD = [
    GoodCase("spec-example", SPEC_EXAMPLE,
             UsageSignal("jarvis", "claude-max-1", 0.42, None, datetime(2026, 11, 30, tzinfo=UTC),
                         timedelta(days=7), "provider", "codex-rollout", T0)),
    GoodCase("api-account-offset-zone-unknown-key",
             '{"tenant": "jarvis", "account": "openai-api", "spent_usd": 61, "observed_at": "2026-11-25T13:00:00+01:00",'
             ' "confidence": "user", "source": "user", "note": "from the invoice"}',
             UsageSignal("jarvis", "openai-api", None, 61.0, None, None, "user", "user", T0)),
    GoodCase("fraction-bounds-inclusive",
             '{"tenant": "j", "account": "a", "used_fraction": 1, "spent_usd": 0, "window": "5h",'
             ' "confidence": "unknown", "source": "x", "observed_at": "2026-11-25T12:00:00Z"}',
             UsageSignal("j", "a", 1.0, 0.0, None, timedelta(hours=5), "unknown", "x", T0)),
]


@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.test_id)
def test_parse_usage_reads_valid_records(case: GoodCase) -> None:
    parsed = parse_usage(case.text)
    assert parsed == case.expected
    assert parse_usage(render_usage(parsed)) == parsed, "render and parse round-trip"


class BadCase(NamedTuple):
    test_id: str
    text: str
    message: str


def record(**changes: object) -> str:
    doc: dict[str, object] = json.loads(SPEC_EXAMPLE)
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v != "<drop>"})


BAD = [
    BadCase("empty", "  \n", "empty file"),
    BadCase("cut-off", SPEC_EXAMPLE[:60], "invalid JSON"),
    BadCase("array", "[1, 2]", "expected a JSON object"),
    BadCase("naive-time", record(observed_at="2026-11-25T12:00:00"), "'observed_at' has no time zone"),
    BadCase("missing-observed", record(observed_at="<drop>"), "missing field 'observed_at'"),
    BadCase("fraction-over-1", record(used_fraction=42), "'used_fraction' must be a number from 0 to 1, got 42"),
    BadCase("fraction-bool", record(used_fraction=True), "'used_fraction' must be a number from 0 to 1, got true"),
    BadCase("negative-dollars", record(used_fraction=None, spent_usd=-1), "'spent_usd' must be a number of at least 0"),
    BadCase("neither", record(used_fraction=None), "neither 'used_fraction' nor 'spent_usd' is set"),
    BadCase("confidence", record(confidence="sure"), "'confidence' must be one of user|provider|estimated|unknown"),
    BadCase("window", record(window="a week"), "'window' must be a duration such as 7d or 5h"),
    BadCase("reset-not-time", record(reset_at="soon"), "'reset_at' is not an ISO 8601 time"),
    BadCase("path-in-name", record(account="../../etc"), "'account' must be a fleet name"),
    BadCase("empty-source", record(source=""), "'source' must be a non-empty string"),
]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.test_id)
def test_parse_usage_says_what_is_wrong(case: BadCase) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_usage(case.text)
    assert case.message in str(info.value)


def test_scan_reads_good_records_and_reports_bad_ones(tmp_path: Path) -> None:
    folder = tmp_path / "jarvis" / "usage"
    folder.mkdir(parents=True)
    (folder / "claude-max-1.json").write_text(SPEC_EXAMPLE)
    (folder / "openai-api.json").write_text(SPEC_EXAMPLE[:50])  # a non-atomic writer, cut off
    (folder / "renamed.json").write_text(SPEC_EXAMPLE)  # says claude-max-1 inside
    (folder / ".claude-max-1.json.x1.tmp").write_text("half")  # write_atomic's temporary file
    (folder / "README.txt").write_text("not a record")
    found, problems = scan_usage(folder)
    assert list(found) == ["claude-max-1"]
    assert len(problems) == 2
    assert problems[0].startswith(f"{folder / 'openai-api.json'}: invalid JSON")
    assert "fleet budget set-usage" in problems[0], "a problem says how to fix it"
    assert "does not match the file name 'renamed'" in problems[1]
    assert scan_usage(tmp_path / "nobody" / "usage") == ({}, [])


def test_write_usage_is_atomic_and_refuses_unsafe_names(tmp_path: Path) -> None:
    path = write_usage(tmp_path, signal())
    assert path == tmp_path / "jarvis" / "usage" / "claude-max-1.json"
    assert parse_usage(path.read_text()) == signal()
    assert sorted(p.name for p in path.parent.iterdir()) == ["claude-max-1.json"], "no temporary file left"
    with pytest.raises(ValueError, match="not a fleet name"):
        usage_path(tmp_path, "jarvis", "../escape")
    with pytest.raises(ValueError, match="used_fraction"):
        write_usage(tmp_path, signal(account="claude-max-2", used=1.5))
    assert not (tmp_path / "jarvis" / "usage" / "claude-max-2.json").exists()


# --- aging and merging ------------------------------------------------------------------------


class AgingCase(NamedTuple):
    test_id: str
    confidence: str
    minutes_old: float
    reset_in_minutes: float | None
    expected: str


AGING = [
    AgingCase("fresh-user", "user", 0, None, "user"),
    AgingCase("user-59m", "user", 59, None, "user"),
    AgingCase("user-1h", "user", 60, None, "provider"),
    AgingCase("user-2h", "user", 120, None, "estimated"),
    AgingCase("user-a-day", "user", 1440, None, "estimated"),
    AgingCase("provider-30m", "provider", 30, None, "provider"),
    AgingCase("provider-1h", "provider", 61, None, "estimated"),
    AgingCase("estimated-stays", "estimated", 600, None, "estimated"),
    AgingCase("unknown-stays-unknown", "unknown", 600, None, "unknown"),
    AgingCase("future-reading-is-fresh", "user", -30, None, "user"),
    AgingCase("window-reset-since", "user", 5, -1, "estimated"),
    AgingCase("window-resets-later", "user", 5, 60, "user"),
]


@pytest.mark.parametrize("case", AGING, ids=lambda c: c.test_id)
def test_aging(case: AgingCase) -> None:
    reset = None if case.reset_in_minutes is None else T0 + timedelta(minutes=case.reset_in_minutes)
    observed = T0 - timedelta(minutes=case.minutes_old)
    assert aged_confidence(case.confidence, observed, T0, reset) == case.expected


class MergeCase(NamedTuple):
    test_id: str
    signals: list[UsageSignal]
    winner: int  # index into signals


MERGE = [
    MergeCase("only-one", [signal("estimated")], 0),
    MergeCase("authoritative-beats-fresher", [signal("estimated"), signal("provider", minutes_old=30)], 1),
    MergeCase("fresh-user-beats-fresh-provider", [signal("provider"), signal("user", minutes_old=10, source="user")], 1),
    MergeCase("stale-user-loses-to-fresh-provider", [signal("user", minutes_old=90, source="user"), signal("provider")], 1),
    MergeCase("equal-confidence-fresher-wins", [signal("provider", minutes_old=20), signal("provider", minutes_old=5)], 1),
    MergeCase("aged-tie-fresher-wins", [signal("provider", minutes_old=180), signal("estimated", minutes_old=1)], 1),
    MergeCase("reset-window-loses", [signal("user", minutes_old=1, source="user", reset_at=T0 - timedelta(minutes=1)),
                                     signal("estimated", minutes_old=50)], 1),
    MergeCase("tie-broken-by-source-name", [signal("provider", source="codex-rollout"),
                                            signal("provider", source="claude-statusline")], 1),
]


@pytest.mark.parametrize("case", MERGE, ids=lambda c: c.test_id)
def test_merge_signals(case: MergeCase) -> None:
    assert merge_signals(case.signals, T0) is case.signals[case.winner]
    assert merge_signals(list(reversed(case.signals)), T0) is case.signals[case.winner], "order does not matter"


def test_merge_refuses_two_accounts_and_nothing_is_none() -> None:
    assert merge_signals([], T0) is None
    with pytest.raises(ValueError, match="one account"):
        merge_signals([signal(), signal(account="other")], T0)


# --- provider windows -------------------------------------------------------------------------


class WindowCase(NamedTuple):
    test_id: str
    windows: list[tuple[str, timedelta | None]]
    account: timedelta
    expected: str | None


H5, D7 = timedelta(hours=5), timedelta(days=7)
WINDOWS = [
    WindowCase("weekly-account-takes-weekly", [("primary", H5), ("secondary", D7)], D7, "secondary"),
    WindowCase("five-hour-account-takes-primary", [("primary", H5), ("secondary", D7)], H5, "primary"),
    WindowCase("old-build-minute-short", [("primary", timedelta(minutes=299)), ("secondary", timedelta(minutes=10079))], D7, "secondary"),
    WindowCase("monthly-account-matches-nothing", [("primary", H5), ("secondary", D7)], timedelta(days=30), None),
    WindowCase("within-factor-two", [("secondary", D7)], timedelta(days=10), "secondary"),
    WindowCase("unknown-length-skipped", [("primary", None)], D7, None),
    WindowCase("tie-goes-longer", [("a", timedelta(hours=2)), ("b", timedelta(hours=8))], timedelta(hours=4), "b"),
]


@pytest.mark.parametrize("case", WINDOWS, ids=lambda c: c.test_id)
def test_best_window(case: WindowCase) -> None:
    windows = [RateWindow(name, 0.5, length, None) for name, length in case.windows]
    found = best_window(windows, case.account)
    assert (found.name if found else None) == case.expected


# --- Codex rollouts ---------------------------------------------------------------------------


def test_codex_current_rollout() -> None:
    session, problems = parse_codex_rollout(samples.current_rollout(), "stem")
    assert (session.session, session.cwd, session.model) == (samples.CODEX_SESSION, samples.ENH_DIR, "gpt-5.5")
    assert session.total_tokens == 48000 + 2100
    assert session.usage["cached_input_tokens"] == 30000
    assert session.limits is not None
    assert session.limits.observed_at == datetime(2026, 11, 25, 11, 30, tzinfo=UTC)
    assert session.limits.plan == "pro"
    primary, secondary = session.limits.windows
    assert (primary.used_fraction, primary.window, primary.reset_at) == (
        0.12, H5, datetime(2026, 11, 25, 15, tzinfo=UTC))
    assert (secondary.used_fraction, secondary.window, secondary.reset_at) == (
        0.385, D7, datetime(2026, 11, 30, tzinfo=UTC))
    assert problems == ["line 6: not JSON (Unterminated string starting at, column 100)"]


def test_codex_old_build_resets_in_seconds() -> None:
    session, problems = parse_codex_rollout(samples.old_rollout(), "stem")
    assert problems == []
    assert session.model == "gpt-5.5-mini" and session.total_tokens == 9700
    assert session.limits is not None
    primary, secondary = session.limits.windows
    assert primary.reset_at == datetime(2026, 11, 24, 11, tzinfo=UTC), "event time + resets_in_seconds"
    assert secondary.window == timedelta(minutes=10079)


class CodexCase(NamedTuple):
    test_id: str
    lines: list[dict[str, object] | str]
    total: int
    used: list[float] | None
    problems: int


CODEX = [
    CodexCase("null-info-keeps-limits",
              [samples.token_count("2026-11-25T11:00:00Z", None, {"primary": {"used_percent": 7.0}})],
              0, [0.07], 0),
    CodexCase("null-limits-keeps-totals",
              [samples.token_count("2026-11-25T11:00:00Z", samples.total_usage(10, 0, 5, 0), None)], 15, None, 0),
    CodexCase("latest-event-wins",
              [samples.token_count("2026-11-25T11:00:00Z", samples.total_usage(10, 0, 5, 0), {"primary": {"used_percent": 7.0}}),
               samples.token_count("2026-11-25T11:05:00Z", samples.total_usage(20, 0, 5, 0), {"primary": {"used_percent": 9.0}})],
              25, [0.09], 0),
    CodexCase("over-limit-reads-full",
              [samples.token_count("2026-11-25T11:00:00Z", None, {"secondary": {"used_percent": 104.0}})], 0, [1.0], 0),
    CodexCase("bad-percent-is-a-problem-not-a-crash",
              [samples.token_count("2026-11-25T11:00:00Z", None, {"primary": {"used_percent": "high"}})], 0, None, 1),
    CodexCase("naive-timestamp-is-a-problem",
              [samples.token_count("2026-11-25T11:00:00", None, {"primary": {"used_percent": 1.0}})], 0, None, 1),
    CodexCase("other-events-ignored",
              [{"timestamp": "2026-11-25T11:00:00Z", "type": "event_msg", "payload": {"type": "agent_message"}},
               "[1, 2]", ""], 0, None, 1),
]


@pytest.mark.parametrize("case", CODEX, ids=lambda c: c.test_id)
def test_codex_token_count_events(case: CodexCase) -> None:
    session, problems = parse_codex_rollout(samples.jsonl(case.lines), "stem")
    assert session.session == "stem" and session.total_tokens == case.total
    assert ([w.used_fraction for w in session.limits.windows] if session.limits else None) == case.used
    assert len(problems) == case.problems


# --- Claude Code transcripts ------------------------------------------------------------------


def test_claude_transcript_dedupes_streamed_lines(tmp_path: Path) -> None:
    home = samples.write_claude_home(tmp_path)
    text = (home / "projects" / "-srv-fleet-orchestrator" / f"{samples.CLAUDE_SESSION}.jsonl").read_text()
    usages, problems = parse_claude_transcript(text, "stem")
    assert [u.message_id for u in usages] == ["msg_01A", "msg_01A", "msg_01B"], "user and synthetic lines skipped"
    assert len(problems) == 1 and problems[0].startswith("line 6: not JSON")
    unique = dedupe_claude(usages)
    assert [(u.key, u.output_tokens) for u in unique] == [(("msg_01A", "req_011A"), 250), (("msg_01B", "req_011B"), 100)]
    assert sum(u.total_tokens for u in unique) == samples.CLAUDE_OPUS_TOKENS
    assert unique[0].ts == datetime(2026, 11, 25, 11, 0, 3, tzinfo=UTC), "first copy's time"


class ClaudeCase(NamedTuple):
    test_id: str
    lines: list[dict[str, object] | str]
    keys: list[tuple[str, str]]
    problems: int


def _line(msg_id: str, request: str, usage: object, **extra: object) -> dict[str, object]:
    return {"sessionId": "s", "requestId": request, "timestamp": "2026-11-25T11:00:00Z",
            "message": {"id": msg_id, "model": "claude-sonnet-4-5", "usage": usage}, **extra}


CLAUDE = [
    ClaudeCase("same-id-other-request-counts-twice",
               [_line("m1", "r1", {"input_tokens": 1}), _line("m1", "r2", {"input_tokens": 1})],
               [("m1", "r1"), ("m1", "r2")], 0),
    ClaudeCase("negative-count-is-a-problem", [_line("m1", "r1", {"input_tokens": -5})], [], 1),
    ClaudeCase("usage-not-an-object-is-skipped", [_line("m1", "r1", "lots")], [], 0),
    ClaudeCase("no-request-id-still-counted", [_line("m1", "", {"output_tokens": 3})], [("m1", "")], 0),
    ClaudeCase("summary-lines-skipped", [{"type": "summary", "summary": "Fleet ps", "leafUuid": "x"}], [], 0),
]


@pytest.mark.parametrize("case", CLAUDE, ids=lambda c: c.test_id)
def test_claude_lines(case: ClaudeCase) -> None:
    usages, problems = parse_claude_transcript(samples.jsonl(case.lines), "stem")
    assert [u.key for u in dedupe_claude(usages)] == case.keys
    assert len(problems) == case.problems


# --- the status-line record -------------------------------------------------------------------


def test_statusline_record_round_trip_with_the_hook() -> None:
    saved = claude_statusline.saved_record(samples.statusline_input(), "jarvis", "orchestrator", T0)
    assert saved is not None
    parsed = parse_statusline_record(json.dumps(saved))
    assert (parsed.tenant, parsed.agent, parsed.model) == ("jarvis", "orchestrator", "claude-opus-4-1-20250805")
    assert parsed.reading.observed_at == T0
    assert [(w.name, w.used_fraction, w.window, w.reset_at) for w in parsed.reading.windows] == [
        ("five_hour", 0.235, H5, datetime(2026, 11, 25, 15, tzinfo=UTC)),
        ("seven_day", 0.412, D7, datetime(2026, 11, 30, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(("test_id", "text", "message"), [
    ("not-json", "{", "invalid JSON"),
    ("no-tenant", '{"agent": "a", "rate_limits": {}}', "'tenant' and 'agent'"),
    ("no-limits", '{"tenant": "t", "agent": "a", "received_at": "2026-11-25T12:00:00Z"}', "'rate_limits'"),
    ("naive-time", '{"tenant": "t", "agent": "a", "received_at": "2026-11-25T12:00:00", "rate_limits": {}}', "no time zone"),
])
def test_statusline_record_errors(test_id: str, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_statusline_record(text)


# --- the ledger --------------------------------------------------------------------------------


def entry(tokens: int, *, task: str | None = "T1", role: str | None = "coder", model: str = "opus",
          stream: str = "coder0-0@1") -> LedgerEntry:
    return LedgerEntry(T0, "jarvis", "w-jarvis", "coder0-0", role, task, None, model, "heartbeat", stream,
                       tokens, None, tokens, None, "estimated")


class SpendCase(NamedTuple):
    test_id: str
    entries: list[LedgerEntry]
    expected: dict[tuple[str, str], LearnedSpend]


SPEND = [
    SpendCase("nothing", [], {}),
    SpendCase("one-task", [entry(100), entry(50)], {("coder", "opus"): LearnedSpend(150, 150)}),
    SpendCase("p90-is-nearest-rank",
              [entry(n * 100, task=f"T{n}") for n in range(1, 11)],
              {("coder", "opus"): LearnedSpend(550.0, 900)}),
    SpendCase("downgraded-task-counts-per-model",
              [entry(300), entry(100, model="sonnet")],
              {("coder", "opus"): LearnedSpend(300, 300), ("coder", "sonnet"): LearnedSpend(100, 100)}),
    SpendCase("unattributed-left-out", [entry(100, task=None), entry(100, role=None)], {}),
]


@pytest.mark.parametrize("case", SPEND, ids=lambda c: c.test_id)
def test_learned_spend(case: SpendCase) -> None:
    assert learned_spend(case.entries) == case.expected


def test_ledger_survives_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "jarvis" / "ledger.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(render_entry(entry(10)) + render_entry(entry(20))[:40])  # killed mid-append
    appended, problems = update_ledger(path, lambda old: [entry(len(old) * 1000)])
    assert [e.tokens for e in appended] == [1000]
    entries, problems = read_ledger(path)
    assert [e.tokens for e in entries] == [10, 1000], "the next entry starts on its own line"
    assert len(problems) == 1 and ":2: unreadable ledger line" in problems[0]
    assert parse_ledger("") == ([], [])


def test_ledger_updates_are_serialized(tmp_path: Path) -> None:
    """Eight writers that each append only when the ledger is still empty: the flock
    around read-compute-append lets exactly one of them do it."""
    path = tmp_path / "ledger.jsonl"
    barrier = threading.Barrier(8)

    def writer() -> None:
        barrier.wait()
        update_ledger(path, lambda old: [] if old else [entry(1)])

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_ledger(path)[0]) == 1
