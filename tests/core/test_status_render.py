"""Status and TASKS.md: deterministic bytes, `since` kept while a condition holds, round trip."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import NamedTuple

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from reconciler.core.budget_types import BudgetPlan
from reconciler.core.plan import Plan
from reconciler.core.planner import PlanOptions, plan
from reconciler.core.ps import ps_rows
from reconciler.core.render import parse_status, render_status, render_tasks
from reconciler.core.status import carry_since, tenant_status
from reconciler.model.ledger import LedgerEntry
from reconciler.model.observed import ObservedFleet
from reconciler.model.status import (
    AccountStatus,
    AgentStatus,
    Condition,
    LearnedHint,
    QueuedAgent,
    RunRecord,
    TaskSpend,
    TenantStatus,
)
from reconciler.spec.load import load_repo
from tests.core import test_budget as tb
from tests.core.factories import EXAMPLES, NOW, beat, desired, healthy, nothing_running, observed, running


class MarkdownSnapshot(SingleFileSnapshotExtension):
    """TASKS.md is stored as a real .md file so a reviewer reads the rendered page."""

    _write_mode = WriteMode.TEXT
    file_extension = "md"


@pytest.fixture
def snapshot_md(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(MarkdownSnapshot)


def coding_status(obs_now: datetime = NOW, previous: TenantStatus | None = None, run: RunRecord | None = None) -> TenantStatus:
    """The coding fleet, healthy at `obs_now` (heartbeats 5 s old then)."""
    fleet = desired("coding", "build-1")
    obs = healthy(fleet)
    shift = obs_now - NOW
    obs = replace(obs, heartbeats={k: replace(b, ts=b.ts + shift) for k, b in obs.heartbeats.items()})
    p = plan(fleet, obs, obs_now)
    return tenant_status(fleet.tenants["acme"], "build-1", p, obs, revision="abc1234", started={}, failed={},
                         run=run, previous=previous, now=obs_now)


def test_same_state_renders_the_same_bytes_and_keeps_since() -> None:
    first = coding_status()
    text = render_status(first)
    later = coding_status(obs_now=NOW + timedelta(minutes=5), previous=parse_status(text))
    assert render_status(later) == text
    assert all(c.since == NOW.isoformat(timespec="seconds") for a in later.agents for c in a.conditions)


def test_a_changed_condition_gets_a_new_since_and_the_others_keep_theirs() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    sock = orch.launch.socket
    good = observed({sock: [running(orch), running(enh)]}, [beat(orch), beat(enh)])
    first = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, good, NOW), good, revision="r", started={},
                          failed={}, run=None, previous=None, now=NOW)
    later_at = NOW + timedelta(minutes=10)
    # at `later_at` the orchestrator's heartbeat is fresh and the enhancer's 10 minutes old
    stale = observed({sock: [running(orch), running(enh)]}, [beat(orch, age=-timedelta(minutes=10)), beat(enh)])
    second = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, stale, later_at), stale, revision="r",
                           started={}, failed={}, run=None, previous=first, now=later_at)
    enh_healthy = next(a for a in second.agents if a.name == "enhancer").condition("Healthy")
    orch_healthy = next(a for a in second.agents if a.name == "orchestrator").condition("Healthy")
    assert enh_healthy is not None and enh_healthy.status == "False" and enh_healthy.since == later_at.isoformat(timespec="seconds")
    assert orch_healthy is not None and orch_healthy.status == "True" and orch_healthy.since == NOW.isoformat(timespec="seconds")


def test_an_unchanged_status_is_made_of_the_previous_ones_objects() -> None:
    first = coding_status()
    later = coding_status(obs_now=NOW + timedelta(minutes=5), previous=first)
    assert later == first
    assert all(a is b for a, b in zip(later.agents, first.agents, strict=True))


def test_a_condition_whose_status_holds_keeps_since_and_takes_the_new_words() -> None:
    then = NOW.isoformat(timespec="seconds")
    old = AgentStatus("a", "coder", None, "ephemeral", "m", None, "starting", 0,
                      (Condition("Ready", "False", "Starting", "started", then),
                       Condition("Healthy", "True", "Heartbeat", "answers", then)))
    later = NOW + timedelta(minutes=5)
    new = carry_since((Condition("Ready", "False", "Absent", "no session"), Condition("Healthy", "False", "Stale", "stopped")),
                      old, later)
    assert new == (Condition("Ready", "False", "Absent", "no session", then),
                   Condition("Healthy", "False", "Stale", "stopped", later.isoformat(timespec="seconds")))
    same = carry_since((Condition("Ready", "False", "Starting", "started"), Condition("Healthy", "True", "Heartbeat", "answers")),
                       old, later)
    assert same is old.conditions


def test_status_round_trips_and_runs_are_capped() -> None:
    status = coding_status()
    for i in range(7):
        run = RunRecord(f"r{i}", NOW.isoformat(), 100 + i, (f"spawn a{i}",))
        status = coding_status(previous=status, run=run)
    assert [r.revision for r in status.runs] == ["r6", "r5", "r4", "r3", "r2"]
    assert parse_status(render_status(status)) == status


def test_fresh_host_status_says_what_happens_next() -> None:
    fleet = desired("minimal", "demo")
    obs = nothing_running(fleet)
    status = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, obs, NOW), obs, revision="r",
                           started={"orchestrator": "spawn at revision r"}, failed={"enhancer": "tmux said no"},
                           run=None, previous=None, now=NOW)
    conds = {a.name: a.condition("Ready") for a in status.agents}
    assert conds["orchestrator"] is not None and conds["orchestrator"].reason == "Starting"
    assert "start-up grace" in conds["orchestrator"].message
    assert conds["enhancer"] is not None and conds["enhancer"].reason == "ApplyFailed"
    assert "the next run tries again" in conds["enhancer"].message
    assert status.systemd == "tmux-only"


def test_tasks_md_snapshot(snapshot_md: SnapshotAssertion) -> None:
    repo = load_repo(EXAMPLES / "coding")
    text = render_tasks(repo, [coding_status()], "abc1234")
    assert "Do not edit" in text and "| T1 | Pagination for list endpoints |  | open | coder0-0 |" in text
    assert text == snapshot_md


# --- budget: BudgetOK, no drift for a throttled agent, accounts and the queue ----------

RESET_ISO = "2026-11-29T00:00:00+00:00"
CLAUDE_60 = f"account claude-max-1: used 60%, allowed 55%, resets {RESET_ISO}, confidence provider, source test"
CLAUDE_99 = f"account claude-max-1: used 99%, allowed 55%, resets {RESET_ISO}, confidence provider, source test"
CLAUDE_20 = f"account claude-max-1: used 20%, allowed 55%, resets {RESET_ISO}, confidence provider, source test"
NO_ACCOUNT = ("True", "NoAccount", "no account in budget.yaml serves stub, so it is not throttled")
NO_SIGNAL = ("True", "NoSignal", "account openai-api: no usage signal, so it is not throttled")
SETTLED = {"coder-a": tb.mem("claude", "sonnet", account="claude-max-1", ago=timedelta(minutes=5)),
           "coder-b": tb.mem("claude", "haiku", account="claude-max-1", ago=timedelta(minutes=5))}


class BudgetCase(NamedTuple):
    test_id: str
    budget: BudgetPlan
    observed: ObservedFleet
    conditions: dict[str, tuple[str, str, str]]  # agent -> BudgetOK (status, reason, message)
    accounts: tuple[AccountStatus, ...]
    queue: tuple[QueuedAgent, ...] = ()


NO_SIGNAL_API = AccountStatus("openai-api", "codex", "api", "no-signal")

BUDGET_CASES = [
    BudgetCase(
        "no-budget", BudgetPlan(), tb.everyone(),
        {a.name: ("True", "NoBudget", "the tenant has no budget.yaml, so it is not throttled") for a in tb.AGENTS}, (),
    ),
    BudgetCase(
        "under-pace", tb.budget_plan([tb.sig("claude-max-1", 0.2)]), tb.everyone(),
        {"coder-a": ("True", "WithinPace", f"runs opus (claude); {CLAUDE_20}"),
         "coder-b": ("True", "WithinPace", f"runs sonnet (claude); {CLAUDE_20}"),
         "coder-c": NO_ACCOUNT, "enhancer": NO_SIGNAL,
         "orchestrator": ("True", "WithinPace", f"runs opus (claude); {CLAUDE_20}")},
        (AccountStatus("claude-max-1", "claude", "subscription", "under", 20, 55, RESET_ISO, None, "provider", "test"),
         NO_SIGNAL_API),
    ),
    BudgetCase(
        "over-pace-settled-on-cheaper-rungs", tb.budget_plan([tb.sig("claude-max-1", 0.6)], SETTLED),
        tb.everyone(coder_a="sonnet", coder_b="haiku"),
        {"coder-a": ("False", "Downgraded",
                     f"on sonnet (claude) instead of opus (claude) (hysteresis); {CLAUDE_60}; returns to opus when back under pace"),
         "coder-b": ("False", "Downgraded",
                     f"on haiku (claude) instead of sonnet (claude) (hysteresis); {CLAUDE_60}; returns to sonnet when back under pace"),
         "coder-c": NO_ACCOUNT, "enhancer": NO_SIGNAL,
         "orchestrator": ("True", "OverPaceWorkersFirst", f"runs opus (claude) although over pace (workers-first); {CLAUDE_60}")},
        # 60% used at 50% elapsed of the 7d window from 11-22: out at 11-22 + 7d * 50/60 = 11-27T20:00
        (AccountStatus("claude-max-1", "claude", "subscription", "over", 60, 55, RESET_ISO, "2026-11-27T20:00:00+00:00",
                       "provider", "test"), NO_SIGNAL_API),
    ),
    BudgetCase(
        "window-spent-queues-workers", tb.budget_plan([tb.sig("claude-max-1", 0.99)]), tb.everyone(),
        {"coder-a": ("False", "Queued", f"queued (window-spent) until {RESET_ISO}; {CLAUDE_99}; respawned after {RESET_ISO}"),
         "coder-b": ("False", "Queued", f"queued (window-spent) until {RESET_ISO}; {CLAUDE_99}; respawned after {RESET_ISO}"),
         "coder-c": NO_ACCOUNT, "enhancer": NO_SIGNAL,
         "orchestrator": ("False", "Downgraded",
                          f"on sonnet (claude) instead of opus (claude) (over-pace); {CLAUDE_99}; returns to opus when back under pace")},
        (AccountStatus("claude-max-1", "claude", "subscription", "spent", 99, 55, RESET_ISO, "2026-11-25T12:00:00+00:00",
                       "provider", "test"), NO_SIGNAL_API),
        (QueuedAgent("coder-a", "claude-max-1", "window-spent", RESET_ISO),
         QueuedAgent("coder-b", "claude-max-1", "window-spent", RESET_ISO)),
    ),
]


def budget_status(case: BudgetCase, previous: TenantStatus | None = None) -> tuple[TenantStatus, Plan]:
    fleet = tb.fleet_of()
    p = plan(fleet, case.observed, tb.NOW, PlanOptions(budget=case.budget))
    status = tenant_status(fleet.tenants["acme"], tb.HOST, p, case.observed, revision="r", started={}, failed={},
                           run=None, previous=previous, now=tb.NOW)
    return status, p


@pytest.mark.parametrize("case", BUDGET_CASES, ids=lambda c: c.test_id)
def test_budget_ok_accounts_and_queue(case: BudgetCase) -> None:
    status, _ = budget_status(case)
    got = {}
    for agent in status.agents:
        cond = agent.condition("BudgetOK")
        assert cond is not None
        got[agent.name] = (cond.status, cond.reason, cond.message)
    assert got == case.conditions
    assert status.accounts == case.accounts
    assert status.queue == case.queue
    assert parse_status(render_status(status)) == status
    # the same tick again renders the same bytes
    again, _ = budget_status(case, previous=parse_status(render_status(status)))
    assert render_status(again) == render_status(status)


def test_a_throttled_agent_is_not_drift_in_status_or_ps() -> None:
    case = BUDGET_CASES[2]
    status, p = budget_status(case)
    assert p.actions == ()
    drifted = {a.name: (a.condition("Drifted") or Condition("", "", "", "")).reason for a in status.agents}
    assert drifted == dict.fromkeys(drifted, "InSync")
    assert {a.name: a.running_model for a in status.agents}["coder-b"] == "haiku"
    rows = {r.agent: r.drift for r in ps_rows(tb.fleet_of(), case.observed, p, tb.NOW)}
    assert rows == dict.fromkeys(rows, ())
    # without the budget decision the same sessions are drift
    plain = {r.agent: [f.value for f in r.drift] for r in ps_rows(tb.fleet_of(), case.observed, plan(tb.fleet_of(), case.observed, tb.NOW), tb.NOW)}
    assert plain["coder-a"] == ["spec-hash", "model"] and plain["coder-b"] == ["spec-hash", "model"]


def test_tasks_md_shows_accounts_and_the_queue() -> None:
    repo = load_repo(EXAMPLES / "spec-reference")
    status = TenantStatus(
        "jarvis", "build-1", "r", "tmux-only",
        accounts=(AccountStatus("claude-max-1", "claude", "subscription", "over", 60, 55, RESET_ISO,
                                "2026-11-27T20:00:00+00:00", "provider", "test"),
                  AccountStatus("openai-api", "codex", "api", "under", 10, 55, RESET_ISO, None, "user", "set-usage"),
                  AccountStatus("zz-none", "codex", "api", "no-signal")),
        queue=(QueuedAgent("coder1-0", "claude-max-1", "window-spent", RESET_ISO),
               QueuedAgent("coder0-0", None, "concurrency")),
    )
    text = render_tasks(repo, [status], "abc1234")
    assert (
        "| account | runtime | pace | used | allowed | resets | projected exhaustion | signal |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| claude-max-1 | claude | over | 60% | 55% | {RESET_ISO} | 2026-11-27T20:00:00+00:00 | provider (test) |\n"
        f"| openai-api | codex | under | 10% | 55% | {RESET_ISO} | not before the reset | user (set-usage) |\n"
        "| zz-none | codex | no-signal |  |  | unknown | unknown | none |\n"
        "\n"
        "| queued agent | account | rule | until |\n"
        "|---|---|---|---|\n"
        "| coder0-0 |  | concurrency | a concurrency slot frees |\n"
        f"| coder1-0 | claude-max-1 | window-spent | {RESET_ISO} |\n"
    ) in text


def entry(agent: str | None, task: str | None, tokens: int, *, host: str = "build-1", model: str = "sonnet") -> LedgerEntry:
    return LedgerEntry(NOW, "acme", host, agent, "coder" if agent else None, task, None, model, "heartbeat",
                       f"{agent}@1", tokens, None, tokens, None, "estimated")


LEDGER = [
    entry("coder0-0", "T1", 120_400), entry("coder0-0", "T1", 30_000),
    entry("coder1-0", "T9", 400_000),  # an earlier task: teaches, is not in tasks.yaml
    entry("coder1-0", "T3", 9_000, host="build-2"),  # another host's ledger speaks in its own status
    entry(None, None, 77_000),  # unattributed: neither spend of a task nor a lesson
]


def test_spend_per_task_and_learned_spend_reach_status_and_tasks_md() -> None:
    fleet = desired("coding", "build-1")
    obs = healthy(fleet)
    status = tenant_status(fleet.tenants["acme"], "build-1", plan(fleet, obs, NOW), obs, revision="abc1234", started={},
                           failed={}, run=None, previous=None, now=NOW, ledger=LEDGER)
    assert status.spend == (TaskSpend("T1", "coder0-0", 150_000), TaskSpend("T9", "coder1-0", 400_000))
    # tasks on sonnet took 150,400 and 400,000: median 275,200, p90 (nearest rank) 400,000
    assert status.learned == (LearnedHint("coder", "sonnet", 275_000, 400_000),)
    assert parse_status(render_status(status)) == status
    other = TenantStatus("acme", "build-2", "abc1234", "tmux-only", spend=(TaskSpend("T1", "coder0-0", 50_000),),
                         learned=(LearnedHint("coder", "sonnet", 1_000, 2_000),))
    text = render_tasks(load_repo(EXAMPLES / "coding"), [status, other], "abc1234")
    # the hosts add up; nothing is finished, so nothing is learned yet (tests/core/test_task_spend.py)
    assert "| T1 | Pagination for list endpoints |  | open | coder0-0 | normal | 300,000 | 200,000 |  |  |" in text
    assert "| T2 | Review the pagination change |  | open | code-review | normal | 80,000 |  |  |  |" in text
    assert "| T3 | Settings page |  | open | coder1-0 | high | 250,000 |  |  |  |" in text


def test_render_doctests_pass() -> None:
    import doctest  # noqa: PLC0415

    from reconciler.core import render  # noqa: PLC0415

    assert doctest.testmod(render, raise_on_error=False).failed == 0
