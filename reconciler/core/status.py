"""Status from one tick: conditions per agent, carried over from the previous status.

Pure: the previous status document, the plan, what apply did and `now` are arguments.
A condition keeps its `since` while its status holds, so a tick that changes nothing
renders the same bytes and nothing is committed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from reconciler.core.budget_types import Decision, State, effective_agent
from reconciler.core.desired import DesiredAgent, DesiredTenant
from reconciler.core.pace import Pace, PaceState
from reconciler.core.plan import AgentHealth, Conflict, Plan, Wait
from reconciler.core.task_spend import SpendBook, book_spend
from reconciler.model.ledger import LedgerEntry, median_p90
from reconciler.model.observed import ObservedFleet
from reconciler.model.status import (
    AccountStatus,
    AgentStatus,
    Condition,
    LaneStatus,
    LearnedHint,
    QueuedAgent,
    RunRecord,
    TaskSpend,
    TaskStatus,
    TenantStatus,
)

if TYPE_CHECKING:  # only fleets with lanes have any (core/lane_plan.py)
    from reconciler.core.lanes import TenantLanes, Window

MAX_RUNS = 5


def _cond(type_: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type_, status, reason, message)


class PlanIndex:
    """The plan's verdicts, conflicts, waits and budget decisions by (tenant, agent), the
    first of each as the plan lists them: a status of 1,000 agents looks each up once
    instead of scanning the plan per agent."""

    def __init__(self, plan: Plan) -> None:
        self.health = _first_by_agent(plan.health)
        self.conflicts = _first_by_agent(plan.conflicts)
        self.waits = _first_by_agent(plan.waits)
        self.budget = _first_by_agent(plan.budget)
        self.paces = {(tenant, pace.account): pace for tenant, pace in plan.paces}


_T = TypeVar("_T", AgentHealth, Conflict, Wait, Decision)


def _first_by_agent(items: Iterable[_T]) -> dict[tuple[str, str], _T]:
    out: dict[tuple[str, str], _T] = {}
    for item in items:
        out.setdefault((item.tenant, item.agent), item)
    return out


def agent_conditions(
    agent: DesiredAgent,
    plan: Plan,
    observed: ObservedFleet,
    started: Mapping[str, str],
    failed: Mapping[str, str],
    index: PlanIndex | None = None,
) -> tuple[str, tuple[Condition, ...]]:
    """(health, conditions) of one agent after this tick's apply, each with what happens next.

    `index`: the plan's PlanIndex, when the caller asks for many agents of one plan."""
    key = (agent.tenant, agent.name)
    index = index or PlanIndex(plan)
    verdict = index.health.get(key)
    conflict = index.conflicts.get(key)
    wait = index.waits.get(key)
    session = observed.session(agent.launch.socket, agent.name)
    decision = index.budget.get(key)
    effective = agent if decision is None else effective_agent(agent, decision)
    if agent.name in failed:
        health = "failed"
        ready = _cond("Ready", False, "ApplyFailed", f"{failed[agent.name]}; the next run tries again")
    elif agent.name in started:
        # Worded as the next run will see it (a young session), so that run rewrites nothing.
        health = "starting"
        ready = _cond("Ready", False, "Starting", _stable_message(health, agent))
    elif conflict is not None:
        health = "conflict"
        ready = _cond("Ready", False, "Conflict", conflict.message)
    elif verdict is not None and verdict.health == "missing":
        health = "missing"
        ready = _cond("Ready", False, condition_reason(verdict), f"{verdict.message}; never started, so never looped")
    elif verdict is None or session is None:
        health = "absent"
        ready = _cond("Ready", False, "Absent", "no session; the next run spawns it")
    else:
        health = verdict.health
        good = verdict.health == "healthy"
        ready = _cond("Ready", good, verdict.health.capitalize(), _stable_message(health, agent, verdict))
    # Status messages avoid ages ("5s ago"): they would change the file on every run.
    if health == "healthy":
        healthy = _cond("Healthy", True, "Heartbeat", _stable_message(health, agent))
    elif health == "starting":
        healthy = _cond("Healthy", None, "Starting", "waiting for the first heartbeat within the start-up grace")
    elif verdict is not None and verdict.reason:
        healthy = _cond("Healthy", False, condition_reason(verdict), _stable_message(health, agent, verdict))
    else:
        healthy = _cond("Healthy", False, health.capitalize(), _stable_message(health, agent) if verdict else ready.message)
    drift_bits = []
    # A throttled agent runs as its budget decision says: that launch is the one to match.
    want = effective.launch.spec_hash
    if session is not None and session.marks.owned and session.marks.spec_hash != want and agent.name not in started:
        drift_bits.append(f"spec hash {session.marks.spec_hash} != {want}")
    if conflict is not None:
        drift_bits.append("a foreign session holds the name")
    drifted = _cond("Drifted", bool(drift_bits), "SpecDiffers" if drift_bits else "InSync",
                    "; ".join(drift_bits) if drift_bits else "running as the repository says")
    if wait is not None:
        evidence = f"{wait.attempts} restarts in a row without recovering; next try at {wait.until.isoformat(timespec='seconds')}"
        stalled = _cond("Stalled", wait.stalled, "CrashLoop" if wait.stalled else "BackingOff", evidence)
    else:
        stalled = _cond("Stalled", False, "Progressing", "no restart loop")
    budget = budget_condition(decision, index.paces)
    return health, (ready, healthy, budget, drifted, stalled)


def pace_words(pace: Pace | None, account: str | None) -> str:
    """The numbers behind a decision in whole percents: they change rarely, unlike the
    policy's own reason (0.1% of a 5h window passes in 18 s)."""
    if pace is None:
        return f"account {account}: not in budget.yaml" if account else "no account in budget.yaml serves its runtime"
    if pace.state is PaceState.NO_SIGNAL or pace.used is None or pace.allowed is None:
        return f"account {pace.account}: no usage signal"
    reset = pace.reset.isoformat() if pace.reset else "unknown"
    return (f"account {pace.account}: used {_pct(pace.used)}%, allowed {_pct(pace.allowed)}%, resets {reset}, "
            f"confidence {pace.confidence}, source {pace.source}")


#: Decisions that run the desired model although the account is over pace.
_EXEMPT = {"workers-first": "OverPaceWorkersFirst", "hysteresis": "OverPaceHysteresis",
           "critical-rapid": "OverPaceCritical", "no-room": "OverPaceAtFloor"}


def budget_condition(decision: Decision | None, paces: Mapping[tuple[str, str], Pace]) -> Condition:
    """BudgetOK from the agent's budget decision, with the numbers and what happens next."""
    if decision is None:
        return _cond("BudgetOK", True, "NoBudget", "the tenant has no budget.yaml, so it is not throttled")
    pace = paces.get((decision.tenant, decision.account or ""))
    numbers = pace_words(pace, decision.account)
    desired = decision.rungs[0]
    here = decision.rungs[decision.rung]
    if decision.state is State.REFUSED:
        return _cond("BudgetOK", False, "Refused",
                     f"refused ({decision.rule}): {here.label()} is its cheapest rung; {numbers}; "
                     f"it is not started until the cap resets")
    if decision.state is State.QUEUED:
        if decision.rule == "concurrency":
            return _cond("BudgetOK", False, "Queued", f"queued (concurrency): {decision.reason}; respawned when a slot frees")
        until = decision.until.isoformat() if decision.until else None
        nxt = f"respawned after {until}" if until else f"respawned when account {decision.account} is back under pace"
        return _cond("BudgetOK", False, "Queued",
                     f"queued ({decision.rule}) until {until or 'its account is back under pace'}; {numbers}; {nxt}")
    if decision.throttled:
        return _cond("BudgetOK", False, "Downgraded",
                     f"on {here.label()} instead of {desired.label()} ({decision.rule}); {numbers}; "
                     f"returns to {desired.model} when back under pace")
    if decision.rule in _EXEMPT:
        return _cond("BudgetOK", True, _EXEMPT[decision.rule],
                     f"runs {desired.label()} although over pace ({decision.rule}); {numbers}")
    if decision.rule == "no-account":
        return _cond("BudgetOK", True, "NoAccount", f"no account in budget.yaml serves {desired.runtime}, so it is not throttled")
    if decision.rule == "no-usage-signal":
        return _cond("BudgetOK", True, "NoSignal", f"{numbers}, so it is not throttled")
    return _cond("BudgetOK", True, "WithinPace", f"runs {desired.label()}; {numbers}")


def _pct(value: float) -> int:
    return round(value * 100)


def account_status(pace: Pace, now: datetime) -> AccountStatus:
    """One account in whole percents, with when the window would run out at the burn so far."""
    used = None if pace.used is None else _pct(pace.used)
    allowed = None if pace.allowed is None else _pct(pace.allowed)
    return AccountStatus(pace.account, pace.runtime, pace.regime, pace.state.value, used, allowed,
                         pace.reset.isoformat() if pace.reset else None, projected_exhaustion(pace, now),
                         pace.confidence, pace.source)


def projected_exhaustion(pace: Pace, now: datetime) -> str | None:
    """When the window runs out at the burn so far (used / elapsed per window), to the
    hour (so it changes rarely); "spent" when it has; None when that is not before the
    reset or cannot be known (no signal, no reset, no time elapsed).

    The window's length is (reset - now) / (1 - elapsed), its start reset - length, and
    the window is used up at start + length * elapsed / used.
    """
    if pace.used is None or pace.elapsed is None or pace.reset is None:
        return None
    if pace.used >= 1.0:
        return "spent"
    if pace.used <= pace.elapsed or pace.elapsed <= 0.0 or pace.elapsed >= 1.0:
        return None
    length = (pace.reset - now) / (1.0 - pace.elapsed)
    at = pace.reset - length + length * (pace.elapsed / pace.used)
    return at.replace(minute=0, second=0, microsecond=0).isoformat()


#: Condition reasons for the verdicts' reason codes (core/health.py, core/held.py).
_REASONS = {"auth": "AuthFailed", "usage-limit": "UsageLimit", "missing-binary": "MissingBinary"}


def condition_reason(verdict: AgentHealth) -> str:
    """The CamelCase condition reason of a verdict with a reason code.

    >>> condition_reason(AgentHealth("t", "a", "waiting", "...", "dialog-trust"))
    'DialogTrust'
    """
    code = verdict.reason or verdict.health
    return _REASONS.get(code) or "".join(part.capitalize() for part in code.split("-"))


def _stable_message(health: str, agent: DesiredAgent, verdict: AgentHealth | None = None) -> str:
    if verdict is not None and health in ("waiting", "missing"):
        return verdict.message  # worded without ages by core/health.py and core/held.py
    if health == "dead":
        return "its process exited; the next run restarts it"
    if health == "starting":
        return f"started; within the {int(agent.startup_grace.total_seconds())}s start-up grace"
    timeout = int(agent.heartbeat_timeout.total_seconds())
    if health == "healthy":
        return f"answers heartbeats within the {timeout}s timeout"
    if health == "stale":
        return f"heartbeats stopped (timeout {timeout}s); the next run restarts it"
    if health == "silent":
        return f"no heartbeat since it started (timeout {timeout}s); the next run restarts it"
    return health


def carry_since(new: tuple[Condition, ...], old: AgentStatus | None, now: datetime) -> tuple[Condition, ...]:
    """Keep a condition's `since` while its status holds; stamp `now` when it changes.

    A condition equal to the previous one but for `since` is the previous one itself, so
    an unchanged status is made of the previous status's objects (cheap to compare)."""
    if old is not None and len(old.conditions) == len(new) and all(
        o.type == n.type and o.status == n.status and o.reason == n.reason and o.message == n.message
        for o, n in zip(old.conditions, new, strict=True)
    ):
        return old.conditions
    before_by_type = {c.type: c for c in old.conditions} if old else {}
    out = []
    stamp = ""
    for cond in new:
        before = before_by_type.get(cond.type)
        if before is not None and before.status == cond.status:
            if before.reason == cond.reason and before.message == cond.message:
                out.append(before)
                continue
            since = before.since
        else:
            since = stamp = stamp or now.isoformat(timespec="seconds")
        out.append(Condition(cond.type, cond.status, cond.reason, cond.message, since))
    return tuple(out)


def tenant_status(
    tenant: DesiredTenant,
    host: str,
    plan: Plan,
    observed: ObservedFleet,
    *,
    revision: str,
    started: Mapping[str, str],
    failed: Mapping[str, str],
    run: RunRecord | None,
    previous: TenantStatus | None,
    now: datetime,
    ledger: Iterable[LedgerEntry] = (),
    index: PlanIndex | None = None,
    lanes: TenantLanes | None = None,
    task_states: Mapping[str, str] | None = None,
    booked: SpendBook | None = None,
) -> TenantStatus:
    """One tenant's status on `host` after this tick (`index`: the plan's PlanIndex, when
    the caller reports several tenants of one plan; `task_states`: the state people set
    on each task in tasks.yaml, so the learned spend counts only finished tasks; `booked`:
    the spend already booked under the lanes' windows, in place of `ledger`)."""
    old_agents = {a.name: a for a in previous.agents} if previous else {}
    agents = []
    index = index or PlanIndex(plan)
    for agent in sorted(tenant.on_host(host).values(), key=lambda a: a.name):
        health, conds = agent_conditions(agent, plan, observed, started, failed, index)
        beat = observed.heartbeats.get((agent.tenant, agent.name))
        session = observed.session(agent.launch.socket, agent.name)
        running_model = beat.model if beat else (session.marks.model or None if session else None)
        if agent.name in started:
            # just started with it (on its budget rung, if any); the next run observes the same
            decision = index.budget.get((agent.tenant, agent.name))
            running_model = agent.model if decision is None else decision.model
        tokens = sum(beat.usage.values()) if beat else 0
        before = old_agents.get(agent.name)
        reported = AgentStatus(
            agent.name, agent.role, agent.alias, agent.lifecycle, agent.model, running_model, health,
            _rounded(tokens), carry_since(conds, before, now),
        )
        agents.append(before if before is not None and before == reported else reported)
    runs = tuple(previous.runs) if previous else ()
    if run is not None:
        runs = (run, *runs)[:MAX_RUNS]
    systemd = observed.systemd.get(tenant.user)
    mode = "systemd --user" if systemd is not None and systemd.available else "tmux-only"
    notes = tuple(n for n in plan.notes if tenant.name in n)
    accounts = tuple(account_status(p, now) for t, p in plan.paces if t == tenant.name)
    queue = tuple(
        QueuedAgent(d.agent, d.account, d.rule, d.until.isoformat() if d.until else None)
        for d in plan.budget if d.tenant == tenant.name and d.state is State.QUEUED
    )
    final, done = finished_tasks(task_states, lanes)
    if booked is not None:
        spend, learned = spend_summary(booked, final, done)
    else:
        spend, learned = ledger_summary(tenant.name, host, ledger, lanes.memory.windows() if lanes else (), final, done)
    lane_rows, task_rows = lane_status(lanes) if lanes is not None else ((), ())
    return TenantStatus(tenant.name, host, revision, mode, tuple(agents), runs, notes, accounts, queue, spend, learned,
                        lane_rows, task_rows)


def lane_status(lanes: TenantLanes) -> tuple[tuple[LaneStatus, ...], tuple[TaskStatus, ...]]:
    """The lanes and the fleet's view of their tasks, in words that hold while nothing changes."""
    rows = tuple(LaneStatus(v.lane, v.desired, v.running, v.open, v.queued, v.workers, v.reason) for v in lanes.lanes)
    tasks = tuple(TaskStatus(v.task, v.lane or "", v.state.value, v.agent,
                             v.since.isoformat(timespec="seconds") if v.since else None, v.note)
                  for v in lanes.tasks)
    return rows, tasks


def finished_tasks(task_states: Mapping[str, str] | None, lanes: TenantLanes | None,
                   ) -> tuple[frozenset[str], frozenset[str] | None]:
    """The tasks whose spend no longer grows (done, cancelled or reported blocked) and the
    done ones (None when neither tasks.yaml nor the lanes say: every task teaches)."""
    if task_states is None and lanes is None:
        return frozenset(), None
    from reconciler.core.lanes import TaskState  # noqa: PLC0415  (the lanes load only for fleets with lanes or tasks)

    people = task_states or {}
    views = lanes.tasks if lanes else ()
    done = {t for t, state in people.items() if state == "done"} | {v.task for v in views if v.state is TaskState.DONE}
    final = done | {t for t, state in people.items() if state == "cancelled"} | {
        v.task for v in views if v.state in (TaskState.CANCELLED, TaskState.BLOCKED)}
    return frozenset(final), frozenset(done)


def ledger_summary(tenant: str, host: str, ledger: Iterable[LedgerEntry], windows: Iterable[Window] = (),
                   final: Collection[str] = (), done: Collection[str] | None = None,
                   ) -> tuple[tuple[TaskSpend, ...], tuple[LearnedHint, ...]]:
    """This host's spend per (task, agent), each entry booked to the task its agent held
    then (`windows`, core/task_spend.py), and the learned spend per (role, model) of the
    `done` tasks (None: of every task with spend); see `spend_summary`."""
    mine = ((e, e.tokens, 1) for e in ledger if e.tenant == tenant and e.host == host)
    return spend_summary(book_spend(SpendBook(), mine, windows), final, done)


def spend_summary(book: SpendBook, final: Collection[str] = (), done: Collection[str] | None = None,
                  ) -> tuple[tuple[TaskSpend, ...], tuple[LearnedHint, ...]]:
    """The spend per (task, agent) and the learned spend of the `done` tasks, from their sums.

    A `final` task's spend is exact (it no longer grows); an open task's is to the
    thousand, so a working agent does not rewrite the status every tick."""
    spend = tuple(TaskSpend(task, agent, tokens if task in final else _rounded(tokens))
                  for (task, agent), (tokens, _) in sorted(book.tasks.items()))
    samples: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (role, model, _tenant, task), (tokens, _) in sorted(book.learned.items()):
        if done is None or task in done:
            samples[(role, model)].append(tokens)
    learned = tuple(LearnedHint(role, model, _rounded(int(s.median)), _rounded(int(s.p90)))
                    for (role, model), s in ((key, median_p90(values)) for key, values in sorted(samples.items())))
    return spend, learned


def _rounded(tokens: int) -> int:
    """Token counts to the thousand, so a working agent does not change status every tick."""
    return (tokens // 1000) * 1000
