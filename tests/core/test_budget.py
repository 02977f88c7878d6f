"""The budget policy, rule by rule (table-driven), and the planner acting on its decisions.

Everything here is pure: usage signals and memory are built by hand, as the engine would
hand them over from `$state/<tenant>/usage/*.json` and `$state/<tenant>/budget.json`.
"""

from __future__ import annotations

import doctest
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest

from reconciler.cli import simulate as cli_simulate
from reconciler.core import budget as budget_module
from reconciler.core import budget_memory as budget_memory_module
from reconciler.core import pace as pace_module
from reconciler.core.budget import decide_tenant
from reconciler.core.budget_memory import memory_json, parse_memory
from reconciler.core.budget_types import (
    AgentMemory,
    BudgetPlan,
    Change,
    Decision,
    State,
    TenantBudget,
    TenantInputs,
    agent_rungs,
)
from reconciler.core.desired import DesiredAgent, DesiredFleet, DesiredTenant, build_launch, desired_agent
from reconciler.core.pace import PaceState, Tuning, account_pace
from reconciler.core.plan import ActionKind, plan_json
from reconciler.core.planner import PlanOptions, plan
from reconciler.model.observed import (
    Heartbeat,
    Marks,
    ObservedFleet,
    ObservedSession,
    SocketKey,
    SocketSnapshot,
)
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Agent, Budget, Fleet, Tasks

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
RESET = NOW + timedelta(days=3, hours=12)  # half of claude-max-1's 7d window has elapsed
API_RESET = NOW + timedelta(days=15)  # half of openai-api's 30d period has elapsed
H = Tuning().hysteresis
SOCKET = SocketKey(None, "fleet-budget-test")
HOST = "build-1"

FLEET = Fleet.model_validate({
    "apiVersion": "fleet.mosaicstack.dev/v1", "kind": "Fleet", "name": "budget",
    "defaults": {"runtime": "claude", "model": "opus", "socket_name": SOCKET.name},
    "runtimes": {
        "claude": {"command": "claude --model {model}", "ladder": ["opus", "sonnet", "haiku"]},
        "codex": {"command": "codex --model {model}", "ladder": ["gpt-5.5", "gpt-5.5-mini"]},
        "stub": {"command": "fleet-stub-agent --model {model}", "ladder": ["stub-large", "stub-small"]},
    },
    "downgrade": ["claude", "codex"],
})
ROSTER = [
    Agent(name="orchestrator", role="orchestrator", runtime="claude", model="opus", lifecycle="core"),
    Agent(name="enhancer", role="enhancer", runtime="codex", model="gpt-5.5", lifecycle="core"),
    Agent(name="coder-a", role="coder", runtime="claude", model="opus", lifecycle="ephemeral", lane="a"),
    Agent(name="coder-b", role="coder", runtime="claude", model="sonnet", lifecycle="ephemeral", lane="b"),
    Agent(name="coder-c", role="coder", runtime="stub", model="stub-large", lifecycle="ephemeral", lane="c"),
]


def make_agents(roster: list[Agent] = ROSTER, fleet: Fleet = FLEET) -> tuple[DesiredAgent, ...]:
    return tuple(desired_agent("acme", a, HOST, SOCKET, fleet, {}, "/state", None) for a in roster)


AGENTS = make_agents()


def make_budget(**over: Any) -> Budget:
    doc: dict[str, Any] = {
        "apiVersion": "fleet.mosaicstack.dev/v1", "kind": "Budget", "tenant": "acme",
        "accounts": [
            {"name": "claude-max-1", "provider": "anthropic", "runtime": "claude", "regime": "subscription",
             "window": "7d", "reset_at": RESET.isoformat()},
            {"name": "openai-api", "provider": "openai", "runtime": "codex", "regime": "api",
             "hard_cap_usd": 200, "period": "30d", "reset_at": API_RESET.isoformat()},
        ],
    }
    doc.update(over)
    return Budget.model_validate(doc)


def make_tasks(*tasks: tuple[str, str, str]) -> Tasks:
    """(id, agent, urgency) each."""
    return Tasks.model_validate({
        "apiVersion": "fleet.mosaicstack.dev/v1", "kind": "Tasks", "tenant": "acme",
        "missions": [{"id": "M1", "title": "m", "tasks": [{"id": i, "title": i, "agent": a, "urgency": u} for i, a, u in tasks]}],
    })


def sig(account: str, used: float | None = None, *, spent: float | None = None, reset: datetime | None = RESET,
        window: timedelta | None = WEEK, observed: datetime = NOW) -> UsageSignal:
    return UsageSignal("acme", account, used, spent, reset, window, "provider", "test", observed)


def api(spent: float) -> UsageSignal:
    return sig("openai-api", spent=spent, reset=API_RESET, window=timedelta(days=30))


def mem(runtime: str, model: str, *, account: str | None = None, ago: timedelta | None = None,
        state: State = State.RUN, cause: str = "", until: datetime | None = None) -> AgentMemory:
    return AgentMemory(runtime, model, account, None if ago is None else NOW - ago, state, cause, until)


def decide_budget(usage: Sequence[UsageSignal] = (), memory: dict[str, AgentMemory] | None = None, *,
                  budget: Budget | None = None, tasks: Tasks | None = None, agents: tuple[DesiredAgent, ...] = AGENTS,
                  now: datetime = NOW) -> TenantBudget:
    inputs = TenantInputs("acme", agents, budget or make_budget(), FLEET, tasks, {s.account: s for s in usage}, memory or {})
    return decide_tenant(inputs, now)


def decide(usage: Sequence[UsageSignal] = (), memory: dict[str, AgentMemory] | None = None, **kw: Any) -> dict[str, Decision]:
    return {d.agent: d for d in decide_budget(usage, memory, **kw).decisions}


# --- pace -------------------------------------------------------------------------------


def test_doctests_pass() -> None:
    for module in (budget_module, budget_memory_module, pace_module, cli_simulate):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__


class PaceCase(NamedTuple):
    test_id: str
    signal: UsageSignal | None
    state: PaceState
    allowed: float | None
    words: tuple[str, ...]


PACE_CASES = [
    PaceCase("no-signal", None, PaceState.NO_SIGNAL, None, ("no usage signal",)),
    PaceCase("under", sig("claude-max-1", 0.30), PaceState.UNDER, 0.55,
             ("used 30.0%", "allowed 55.0%", "50.0% of the 7d window elapsed + 5.0% tolerance",
              f"resets {RESET.isoformat()}", "confidence provider", "source test")),
    PaceCase("dead-band", sig("claude-max-1", 0.52), PaceState.ON, 0.55, ("used 52.0%",)),
    PaceCase("just-over", sig("claude-max-1", 0.56), PaceState.OVER, 0.55, ("used 56.0%",)),
    PaceCase("spent", sig("claude-max-1", 0.985), PaceState.SPENT, 0.55, ("used 98.5%",)),
    PaceCase("earlier-window", sig("claude-max-1", 0.9, reset=NOW - timedelta(hours=1), observed=NOW - timedelta(hours=2)),
             PaceState.UNDER, None, ("used 0.0% (the recorded usage is from an earlier window)",)),
    PaceCase("reset-unknown", sig("claude-max-1", 0.5, reset=None, window=None), PaceState.UNDER, None,
             ("reset unknown: only the cap counts",)),
]


@pytest.mark.parametrize("case", PACE_CASES, ids=[c.test_id for c in PACE_CASES])
def test_account_pace(case: PaceCase) -> None:
    account = make_budget().accounts[0]
    if case.test_id == "reset-unknown":
        account = account.model_copy(update={"reset_at": None})
    pace = account_pace(account, case.signal, NOW, Tuning())
    assert pace.state is case.state
    if case.allowed is not None:
        assert pace.allowed == pytest.approx(case.allowed)
    for words in case.words:
        assert words in pace.evidence


def test_pace_near_the_reset_is_capped_by_the_reserve_and_a_past_reset_rolls_forward() -> None:
    account = make_budget().accounts[0]
    late = account_pace(account, sig("claude-max-1", 0.97), RESET - timedelta(hours=1), Tuning())
    assert late.allowed == pytest.approx(0.98) and late.state is PaceState.ON
    assert "capped by the 2.0% reserve" in late.evidence
    next_week = RESET + timedelta(days=1)
    rolled = account_pace(account, sig("claude-max-1", 0.10, reset=None, observed=next_week), next_week, Tuning())
    assert rolled.reset == RESET + WEEK
    assert rolled.elapsed == pytest.approx(1 / 7)


def test_api_accounts_pace_dollars_against_the_hard_cap() -> None:
    pace = account_pace(make_budget().accounts[1], api(150.0), NOW, Tuning())
    assert pace.used == pytest.approx(0.75) and pace.state is PaceState.OVER and not pace.over_cap
    assert "spent $150.00 of the $200.00 cap (75.0%)" in pace.evidence
    assert account_pace(make_budget().accounts[1], api(201.0), NOW, Tuning()).over_cap


def test_rungs_follow_the_runtime_ladder_then_the_downgrade_order() -> None:
    assert [r.label() for r in agent_rungs("claude", "sonnet", FLEET)] == [
        "sonnet (claude)", "haiku (claude)", "gpt-5.5 (codex)", "gpt-5.5-mini (codex)"]
    assert [r.model for r in agent_rungs("codex", "gpt-5.5", FLEET)] == ["gpt-5.5", "gpt-5.5-mini"]
    assert [r.model for r in agent_rungs("stub", "stub-large", FLEET)] == ["stub-large", "stub-small"]


# --- decisions, table-driven ------------------------------------------------------------


NOTHING: Mapping[str, Any] = MappingProxyType({})


class Case(NamedTuple):
    test_id: str
    usage: list[UsageSignal]
    memory: dict[str, AgentMemory]
    expect: dict[str, tuple[State, Change, str, str]]  # agent -> (state, change, model, rule)
    words: Mapping[str, str] = NOTHING  # agent -> a phrase its reason must contain
    budget: Mapping[str, Any] = NOTHING  # budget.yaml keys to override
    tasks: tuple[tuple[str, str, str], ...] = ()


RUN, QUEUED, REFUSED = State.RUN, State.QUEUED, State.REFUSED
NONE, DOWN, UP, QUEUE, RELEASE, REFUSE = Change.NONE, Change.DOWN, Change.UP, Change.QUEUE, Change.RELEASE, Change.REFUSE
CASES = [
    Case("no-signal-no-throttling", [], {},
         {"orchestrator": (RUN, NONE, "opus", "no-usage-signal"), "coder-a": (RUN, NONE, "opus", "no-usage-signal"),
          "enhancer": (RUN, NONE, "gpt-5.5", "no-usage-signal"), "coder-c": (RUN, NONE, "stub-large", "no-account")},
         {"coder-a": "no usage signal", "coder-c": "no account in budget.yaml serves runtime stub"}),
    Case("under-pace", [sig("claude-max-1", 0.2)], {},
         {"coder-a": (RUN, NONE, "opus", "under-pace")}, {"coder-a": "used 20.0%, allowed 55.0%"}),
    Case("over-pace-workers-step-core-waits", [sig("claude-max-1", 0.6)], {},
         {"coder-a": (RUN, DOWN, "sonnet", "over-pace"), "coder-b": (RUN, DOWN, "haiku", "over-pace"),
          "orchestrator": (RUN, NONE, "opus", "workers-first"), "enhancer": (RUN, NONE, "gpt-5.5", "no-usage-signal")},
         {"coder-a": "opus (claude) -> sonnet (claude); over pace: claude-max-1: used 60.0%, allowed 55.0%"}),
    Case("hysteresis-holds-a-second-step", [sig("claude-max-1", 0.6)],
         {"coder-a": mem("claude", "sonnet", account="claude-max-1", ago=timedelta(minutes=10))},
         {"coder-a": (RUN, NONE, "sonnet", "hysteresis")}, {"coder-a": "the next step waits until"}),
    Case("floor-then-queue-then-core", [sig("claude-max-1", 0.6)],
         {"coder-a": mem("claude", "haiku", ago=2 * H), "coder-b": mem("claude", "haiku", ago=2 * H)},
         {"coder-a": (QUEUED, QUEUE, "haiku", "floor-over-pace"), "coder-b": (QUEUED, QUEUE, "haiku", "floor-over-pace"),
          "orchestrator": (RUN, DOWN, "sonnet", "over-pace")},
         {"coder-a": f"queued until {RESET.isoformat()}: at its cheapest rung haiku (claude) and still over pace"}),
    Case("cross-runtime-when-the-next-account-has-room", [sig("claude-max-1", 0.6), api(20.0)],
         {"coder-a": mem("claude", "haiku", ago=2 * H)},
         {"coder-a": (RUN, DOWN, "gpt-5.5", "over-pace")},
         {"coder-a": "haiku (claude) -> gpt-5.5 (codex) on account openai-api"}),
    Case("spent-queues-every-worker-at-once", [sig("claude-max-1", 0.99)],
         {"coder-a": mem("claude", "sonnet", ago=timedelta(minutes=1))},
         {"coder-a": (QUEUED, QUEUE, "sonnet", "window-spent"), "coder-b": (QUEUED, QUEUE, "sonnet", "window-spent"),
          "orchestrator": (RUN, DOWN, "sonnet", "over-pace"), "coder-c": (RUN, NONE, "stub-large", "no-account")}),
    Case("restore-after-hysteresis-only", [sig("claude-max-1", 0.2)],
         {"coder-a": mem("claude", "sonnet", ago=H + timedelta(seconds=1)),
          "coder-b": mem("claude", "haiku", ago=timedelta(minutes=5))},
         {"coder-a": (RUN, UP, "opus", "budget-restore"), "coder-b": (RUN, NONE, "haiku", "hysteresis")},
         {"coder-a": "sonnet (claude) -> opus (claude); back under pace", "coder-b": "it may return from"}),
    Case("dead-band-holds-down", [sig("claude-max-1", 0.52)],
         {"coder-a": mem("claude", "sonnet", ago=2 * H)},
         {"coder-a": (RUN, NONE, "sonnet", "held-down")}, {"coder-a": "not under pace by the 5.0% margin"}),
    Case("queue-holds-until-the-reset", [sig("claude-max-1", 0.1)],
         {"coder-a": mem("claude", "haiku", account="claude-max-1", ago=2 * H, state=QUEUED,
                         cause="floor-over-pace", until=NOW + timedelta(hours=1))},
         {"coder-a": (QUEUED, NONE, "haiku", "floor-over-pace")}),
    Case("queue-released-at-the-reset-climbs-one-rung", [sig("claude-max-1", 0.1)],
         {"coder-a": mem("claude", "haiku", account="claude-max-1", ago=2 * H, state=QUEUED,
                         cause="floor-over-pace", until=NOW - timedelta(minutes=1))},
         {"coder-a": (RUN, UP, "sonnet", "budget-restore")}),
    Case("hard-cap-steps-down-while-a-cheaper-rung-exists", [api(201.0)], {},
         {"enhancer": (RUN, DOWN, "gpt-5.5-mini", "over-pace")}),
    Case("hard-cap-at-the-floor-refuses-a-core-agent", [api(201.0)],
         {"enhancer": mem("codex", "gpt-5.5-mini", ago=2 * H)},
         {"enhancer": (REFUSED, REFUSE, "gpt-5.5-mini", "hard-cap")}, {"enhancer": "spent $201.00 of the $200.00 cap"}),
    Case("core-at-the-floor-of-a-subscription-keeps-running", [sig("claude-max-1", 0.7)],
         {"orchestrator": mem("claude", "haiku", ago=2 * H), "coder-a": mem("claude", "haiku", state=QUEUED,
          cause="floor-over-pace", until=RESET), "coder-b": mem("claude", "haiku", state=QUEUED, cause="floor-over-pace", until=RESET)},
         {"orchestrator": (RUN, NONE, "haiku", "no-room"), "coder-a": (QUEUED, NONE, "haiku", "floor-over-pace")}),
    Case("critical-under-rapid-runs-over-pace", [sig("claude-max-1", 0.6)], {},
         {"coder-a": (RUN, NONE, "opus", "critical-rapid"), "coder-b": (RUN, DOWN, "haiku", "over-pace"),
          "orchestrator": (RUN, NONE, "opus", "workers-first")},
         {"coder-a": "critical task T1 may run over pace (pacing: rapid, authorized by cfo)"},
         {"pacing": "rapid", "authorized_by": "cfo"}, (("T1", "coder-a", "critical"),)),
    Case("critical-under-even-spread-is-paced", [sig("claude-max-1", 0.6)], {},
         {"coder-a": (RUN, DOWN, "sonnet", "over-pace")}, {}, {}, (("T1", "coder-a", "critical"),)),
    Case("critical-never-runs-past-a-spent-window", [sig("claude-max-1", 0.99)], {},
         {"coder-a": (QUEUED, QUEUE, "opus", "window-spent")}, {},
         {"pacing": "rapid", "authorized_by": "cfo"}, (("T1", "coder-a", "critical"),)),
    Case("a-runtime-without-an-account-returns-to-its-model", [],
         {"coder-c": mem("stub", "stub-small", ago=2 * H)},
         {"coder-c": (RUN, UP, "stub-large", "budget-restore")}, {"coder-c": "not throttled: no account in budget.yaml"}),
    Case("concurrency-queues-workers-by-urgency-then-roster", [], {},
         {"orchestrator": (RUN, NONE, "opus", "no-usage-signal"), "enhancer": (RUN, NONE, "gpt-5.5", "no-usage-signal"),
          "coder-b": (RUN, NONE, "sonnet", "no-usage-signal"), "coder-a": (QUEUED, QUEUE, "opus", "concurrency"),
          "coder-c": (QUEUED, QUEUE, "stub-large", "concurrency")},
         {"coder-a": "concurrency 3, with 2 core agent(s) and 1 worker(s) ahead of it"},
         {"concurrency": 3}, (("T2", "coder-b", "high"),)),
    Case("concurrency-queue-is-released-when-a-slot-frees", [],
         {"coder-a": mem("claude", "opus", state=QUEUED, cause="concurrency")},
         {"coder-a": (RUN, RELEASE, "opus", "no-usage-signal")}, {}, {"concurrency": 5}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_decisions(case: Case) -> None:
    tasks = make_tasks(*case.tasks) if case.tasks else None
    got = decide(case.usage, case.memory, budget=make_budget(**case.budget), tasks=tasks)
    for agent, (state, change, model, rule) in case.expect.items():
        d = got[agent]
        assert (d.state, d.change, d.model, d.rule) == (state, change, model, rule), d.reason
    for agent, words in case.words.items():
        assert words in got[agent].reason


def test_every_decision_on_a_signalled_account_carries_its_numbers() -> None:
    got = decide([sig("claude-max-1", 0.6), api(150.0)])
    for d in got.values():
        if d.account is None:
            continue
        for needle in ("used" if d.account == "claude-max-1" else "spent", "allowed", "resets", "confidence provider", "source test"):
            assert needle in d.reason, (d.agent, d.reason)


def test_a_downgrade_sets_the_change_time_and_the_memory_round_trips() -> None:
    got = decide([sig("claude-max-1", 0.6)])
    a = got["coder-a"]
    assert a.changed_at == NOW and a.memory() == AgentMemory("claude", "sonnet", "claude-max-1", NOW, State.RUN, "", None)
    memory = {d.agent: d.memory() for d in got.values()}
    assert parse_memory(memory_json(memory)) == memory
    assert memory_json(memory) == memory_json(dict(reversed(list(memory.items())))), "same memory, same bytes"


def test_new_work_goes_to_the_account_with_most_headroom_running_work_stays() -> None:
    two = make_budget(accounts=[
        {"name": "claude-max-1", "provider": "anthropic", "runtime": "claude", "regime": "subscription", "window": "7d",
         "reset_at": RESET.isoformat()},
        {"name": "claude-max-2", "provider": "anthropic", "runtime": "claude", "regime": "subscription", "window": "7d",
         "reset_at": RESET.isoformat()},
    ])
    usage = [sig("claude-max-1", 0.4), sig("claude-max-2", 0.1)]
    got = decide(usage, {"coder-a": mem("claude", "opus", account="claude-max-1")}, budget=two)
    assert got["coder-b"].account == "claude-max-2" and got["orchestrator"].account == "claude-max-2"
    assert got["coder-a"].account == "claude-max-1"
    assert got["coder-a"].account_env and got["coder-b"].account_env


def test_a_released_worker_is_new_work_and_may_switch_account() -> None:
    two = make_budget(accounts=[
        {"name": "claude-max-1", "provider": "anthropic", "runtime": "claude", "regime": "subscription", "window": "7d",
         "reset_at": RESET.isoformat()},
        {"name": "claude-max-2", "provider": "anthropic", "runtime": "claude", "regime": "subscription", "window": "7d",
         "reset_at": RESET.isoformat()},
    ])
    memory = {"coder-a": mem("claude", "opus", account="claude-max-1", state=QUEUED, cause="concurrency")}
    got = decide([sig("claude-max-1", 0.4), sig("claude-max-2", 0.1)], memory, budget=two)
    assert got["coder-a"].account == "claude-max-2" and got["coder-a"].change is RELEASE


def test_a_memory_rung_no_longer_on_the_ladder_starts_from_the_desired_model() -> None:
    got = decide([sig("claude-max-1", 0.2)], {"coder-b": mem("claude", "opus", ago=2 * H)})
    assert (got["coder-b"].model, got["coder-b"].change) == ("sonnet", NONE)


# --- the planner acting on decisions ----------------------------------------------------


def fleet_of(agents: tuple[DesiredAgent, ...] = AGENTS) -> DesiredFleet:
    return DesiredFleet(HOST, {"acme": DesiredTenant("acme", None, SOCKET, agents)})


def session(agent: DesiredAgent, model: str | None = None, runtime: str | None = None) -> ObservedSession:
    launch = agent.launch if model is None else build_launch(agent.recipe, runtime or agent.runtime, model)
    return ObservedSession(agent.name, "$1", NOW - timedelta(hours=1), None, 0, 4242, False, None, "x", False,
                           Marks("acme", agent.name, HOST, launch.spec_hash, launch.model))


def observed(*sessions: ObservedSession) -> ObservedFleet:
    beats = {("acme", s.name): Heartbeat("acme", HOST, s.name, 1, NOW - timedelta(seconds=5), "idle", s.marks.model)
             for s in sessions}
    return ObservedFleet(NOW, {SOCKET: SocketSnapshot(SOCKET, True, {s.name: s for s in sessions})}, heartbeats=beats)


def budget_plan(usage: list[UsageSignal], memory: dict[str, AgentMemory] | None = None) -> BudgetPlan:
    """The policy's answer for `usage` and `memory`, as the engine hands it to the planner."""
    return BudgetPlan({"acme": decide_budget(usage, memory)})


BY_NAME = {a.name: a for a in AGENTS}


def everyone(**models: str) -> ObservedFleet:
    return observed(*(session(a, models.get(a.name.replace("-", "_"))) for a in AGENTS))


def test_no_budget_means_the_same_plan_as_before() -> None:
    obs = everyone()
    assert plan(fleet_of(), obs, NOW) == plan(fleet_of(), obs, NOW, PlanOptions(budget=BudgetPlan()))


def test_running_on_a_more_expensive_rung_is_a_downgrade_with_the_launch_rebuilt() -> None:
    p = plan(fleet_of(), everyone(), NOW, PlanOptions(budget=budget_plan([sig("claude-max-1", 0.6)])))
    kinds = sorted((a.kind.value, a.agent, a.reason.rule) for a in p.actions)
    assert kinds == [("downgrade", "coder-a", "budget-downgrade"), ("downgrade", "coder-b", "budget-downgrade")]
    action = next(a for a in p.actions if a.agent == "coder-a")
    cheaper = desired_agent("acme", ROSTER[2].model_copy(update={"model": "sonnet"}), HOST, SOCKET, FLEET, {}, "/state", None)
    assert action.launch == cheaper.launch, "rebuilt through the same code as desired.py"
    assert action.launch is not None and ("FLEET_MODEL", "sonnet") in action.launch.env
    assert action.model == "sonnet" and [(d.field, d.desired, d.observed) for d in action.drift] == [("model", "sonnet", "opus")]
    assert "used 60.0%" in action.reason.message and action.reason.source == "tenants/acme/budget.yaml accounts[claude-max-1]"
    assert {d.agent for d in p.budget} == {a.name for a in AGENTS}


def test_a_converged_throttled_agent_plans_nothing_and_returning_is_a_restore() -> None:
    over = [sig("claude-max-1", 0.6)]
    settled = {"coder-a": mem("claude", "sonnet", account="claude-max-1", ago=timedelta(minutes=5)),
               "coder-b": mem("claude", "haiku", account="claude-max-1", ago=timedelta(minutes=5))}
    steady = plan(fleet_of(), everyone(coder_a="sonnet", coder_b="haiku"), NOW, PlanOptions(budget=budget_plan(over, settled)))
    assert steady.actions == ()
    back = budget_plan([sig("claude-max-1", 0.2)], {"coder-a": mem("claude", "sonnet", account="claude-max-1", ago=2 * H)})
    p = plan(fleet_of(), everyone(coder_a="sonnet"), NOW, PlanOptions(budget=back))
    assert [(a.kind.value, a.agent, a.reason.rule) for a in p.actions] == [("restart", "coder-a", "budget-restore")]
    assert p.actions[0].launch == BY_NAME["coder-a"].launch


def test_a_decision_from_an_earlier_tick_is_still_carried_out() -> None:
    """Apply failed last time: the memory says sonnet, the session still runs opus."""
    held = budget_plan([sig("claude-max-1", 0.6)], {"coder-a": mem("claude", "sonnet", ago=timedelta(minutes=5))})
    p = plan(fleet_of(), everyone(), NOW, PlanOptions(budget=held))
    action = next(a for a in p.actions if a.agent == "coder-a")
    assert action.kind is ActionKind.DOWNGRADE and "runs opus, but the budget policy has it on sonnet" in action.reason.message


def test_queue_stops_a_running_worker_and_suppresses_its_spawn_never_held_by_the_blast_radius() -> None:
    spent = budget_plan([sig("claude-max-1", 0.99)])
    p = plan(fleet_of(), everyone(), NOW, PlanOptions(budget=spent))
    queued = [(a.kind.value, a.agent, a.reason.rule) for a in p.actions if a.kind is ActionKind.QUEUE]
    assert queued == [("queue", "coder-a", "budget-queue"), ("queue", "coder-b", "budget-queue")]
    assert f"queued until {RESET.isoformat()}" in p.actions[0].reason.message
    assert p.holds == ()
    assert f"tenant acme: coder-a is queued by the budget policy (window-spent) until {RESET.isoformat()}" in p.notes
    absent = plan(fleet_of(), observed(*(session(a) for a in AGENTS if a.lifecycle == "core")), NOW, PlanOptions(budget=spent))
    assert {a.agent for a in absent.actions if a.kind is ActionKind.SPAWN} == {"coder-c"}


def test_concurrency_queue_has_its_own_rule() -> None:
    p = plan(fleet_of(), everyone(), NOW, PlanOptions(budget=BudgetPlan({"acme": decide_budget(budget=make_budget(concurrency=3))})))
    assert sorted((a.agent, a.reason.rule) for a in p.actions) == [("coder-b", "budget-concurrency"), ("coder-c", "budget-concurrency")]


def test_refuse_suppresses_a_spawn_and_is_reported_but_a_running_core_agent_is_left_alone() -> None:
    refused = budget_plan([api(201.0)], {"enhancer": mem("codex", "gpt-5.5-mini", ago=2 * H)})
    others = [session(a) for a in AGENTS if a.name != "enhancer"]
    p = plan(fleet_of(), observed(*others), NOW, PlanOptions(budget=refused))
    assert [(a.kind.value, a.agent, a.reason.rule) for a in p.actions] == [("refuse", "enhancer", "budget-refuse")]
    running = plan(fleet_of(), observed(*others, session(BY_NAME["enhancer"], "gpt-5.5-mini")), NOW, PlanOptions(budget=refused))
    assert running.actions == ()
    assert any(n.startswith("tenant acme: enhancer is refused by the budget policy (hard-cap") for n in running.notes)
    dead = replace(session(BY_NAME["enhancer"], "gpt-5.5-mini"), pane_dead=True)
    assert [a.kind for a in plan(fleet_of(), observed(*others, dead), NOW, PlanOptions(budget=refused)).actions] == [ActionKind.REFUSE]


def test_an_absent_throttled_agent_is_spawned_on_its_rung() -> None:
    p = plan(fleet_of(), observed(*(session(a) for a in AGENTS if a.name != "coder-a")), NOW,
             PlanOptions(budget=budget_plan([sig("claude-max-1", 0.6)])))
    spawn = next(a for a in p.actions if a.agent == "coder-a")
    assert spawn.kind is ActionKind.SPAWN and spawn.model == "sonnet" and spawn.launch is not None
    assert spawn.launch.argv == ("claude", "--model", "sonnet")
    assert "on a cheaper rung by budget" in spawn.reason.message


def test_cross_runtime_rung_launches_the_other_runtime() -> None:
    budget = budget_plan([sig("claude-max-1", 0.6), api(20.0)], {"coder-a": mem("claude", "haiku", ago=2 * H)})
    p = plan(fleet_of(), everyone(coder_a="haiku"), NOW, PlanOptions(budget=budget))
    action = next(a for a in p.actions if a.agent == "coder-a")
    assert action.kind is ActionKind.DOWNGRADE and action.launch is not None
    assert action.launch.argv == ("codex", "--model", "gpt-5.5")


def test_plan_json_gains_budget_only_with_decisions() -> None:
    bare = plan_json(plan(fleet_of(), everyone(), NOW))
    assert "budget" not in bare
    doc = plan_json(plan(fleet_of(), everyone(), NOW, PlanOptions(budget=budget_plan([sig("claude-max-1", 0.6)]))))
    agents = {a["agent"]: a for a in doc["budget"]["agents"]}
    assert agents["coder-a"]["change"] == "down" and agents["coder-a"]["model"] == "sonnet"
    assert agents["coder-a"]["desired_model"] == "opus" and "used 60.0%" in agents["coder-a"]["reason"]
    accounts = {a["account"]: a for a in doc["budget"]["accounts"]}
    assert accounts["claude-max-1"]["state"] == "over" and accounts["openai-api"]["state"] == "no-signal"
    assert accounts["claude-max-1"]["tenant"] == "acme" and doc["summary"]["downgrade"] == 2


def test_a_worker_session_of_an_unknown_model_is_a_spec_change() -> None:
    odd = replace(session(BY_NAME["coder-a"]), marks=Marks("acme", "coder-a", HOST, "0ld", "mystery"))
    others = [session(a) for a in AGENTS if a.name != "coder-a"]
    p = plan(fleet_of(), observed(odd, *others), NOW, PlanOptions(budget=budget_plan([sig("claude-max-1", 0.6)])))
    action = next(a for a in p.actions if a.agent == "coder-a")
    assert (action.kind, action.reason.rule, action.model) == (ActionKind.RESTART, "spec-changed", "sonnet")


def test_budget_yaml_policy_defaults_are_todays_tuning() -> None:
    from reconciler.core.pace import Tuning  # noqa: PLC0415
    from reconciler.spec.models import Policy  # noqa: PLC0415

    assert Tuning.of(Policy()) == Tuning()


def test_budget_yaml_policy_moves_the_pace() -> None:
    """Half the window gone, 58% used: over pace with the 5% tolerance, on pace with 10%."""
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from reconciler.core.pace import PaceState, Tuning, account_pace  # noqa: PLC0415
    from reconciler.model.usage import UsageSignal  # noqa: PLC0415
    from reconciler.spec.models import Account, Policy  # noqa: PLC0415

    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    account = Account(name="a", provider="p", runtime="codex", regime="subscription", window=timedelta(days=7))
    signal = UsageSignal("t", "a", 0.58, None, now + timedelta(days=3.5), timedelta(days=7), "provider", "codex-rollout", now)
    assert account_pace(account, signal, now, Tuning.of(Policy())).state is PaceState.OVER
    assert account_pace(account, signal, now, Tuning.of(Policy(tolerance="10%"))).state is PaceState.ON  # type: ignore[arg-type]
