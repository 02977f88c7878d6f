"""The budget policy: usage signals, even-spread pace and the ladder -> a decision per agent.

It sits beside the planner in the pure core (ARCHITECTURE.md, "budget policy"): the
engine hands it each tenant's budget.yaml, the runtimes' ladders, this tick's usage
signals, the memory it persisted after the last apply (each agent's rung, when its model
last changed, whether it is queued and until when) and `now`. It returns one decision
per agent, which the planner turns into spawn / downgrade / restart / queue / refuse
actions, and the next memory. No I/O and no clock, so a whole window replays exactly
(engine/simulate.py does, for `fleet budget simulate`). Its types (decisions, memory,
the plan) are in core/budget_types.py, the memory's JSON in core/budget_memory.py.

The rules (the numbers are `Tuning`'s defaults, which budget.yaml's `policy:` may change):

- Pace. An account's window is [reset - window, reset); e is its elapsed fraction at
  `now`, allowed = min(e + 5% tolerance, 1 - 2% reserve). used > allowed is *over*;
  used >= 1 - reserve is *spent*; used <= allowed - 5% margin is *under*; in between
  nothing moves. API accounts pace spent_usd / hard_cap_usd over `period` the same way.
  No signal for an account: its agents are not throttled, and the reason says so.
- The ladder of an agent: its runtime's models from the desired one down, then each
  runtime after its own in fleet.yaml's `downgrade` order that has an account under
  pace; then `queue` (a worker, until the window resets); `refuse` only for a core
  agent at its floor over an API hard cap. Core agents are never queued.
- Order: over pace, each ephemeral worker billed to the account steps one rung; core
  agents step only once no throttleable worker runs on that account. A spent window
  queues every worker on it at once (there is no time left for a ladder).
- Hysteresis: an agent's model changes at most once per 30 min, both ways: a step down
  waits for the last one to show in the (cumulative) usage, a step back up also needs
  usage under pace by the margin. Queueing and release are not model changes.
- Critical tasks may run over pace only under `pacing: rapid` with `authorized_by`, and
  never past a spent window. `concurrency: N`: workers beyond N running agents are
  queued, most urgent task first (a task that names the agent, or the lane task a
  worker holds), then roster order. Several accounts for a runtime:
  new work goes to the one with the most headroom, running work stays where it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from reconciler.core.budget_types import (
    AgentMemory,
    BudgetPlan,
    Change,
    Decision,
    Rung,
    State,
    TenantBudget,
    TenantInputs,
    agent_rungs,
)
from reconciler.core.desired import DesiredAgent, DesiredFleet
from reconciler.core.pace import Pace, PaceState, Tuning, account_pace, pct
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Budget, Fleet, Tasks
from reconciler.spec.repo import FleetRepo

URGENCY_RANK = {"critical": 0, "high": 1, "normal": 2}


# --- the policy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Book:
    """The tenant's accounts by runtime, with their pace at `now`."""

    paces: Mapping[str, Pace]
    by_runtime: Mapping[str, tuple[str, ...]]

    def best(self, runtime: str) -> str | None:
        """New work goes to the account with the most headroom (unknown counts as none)."""
        names = self.by_runtime.get(runtime, ())
        if not names:
            return None
        return max(names, key=lambda n: (self.paces[n].headroom or 0.0, -names.index(n)))

    def has_room(self, runtime: str) -> bool:
        return any(self.paces[n].state is PaceState.UNDER for n in self.by_runtime.get(runtime, ()))


@dataclass(frozen=True, slots=True)
class _Ctx:
    tenant: str
    budget: Budget
    book: _Book
    now: datetime
    tuning: Tuning
    exempt: Mapping[str, str]  # agent -> why it may run over pace


@dataclass(frozen=True, slots=True)
class _Slot:
    """One agent as this tick starts: its ladder, its rung and account from memory."""

    agent: DesiredAgent
    rungs: tuple[Rung, ...]
    rung: int
    account: str | None
    memory: AgentMemory | None

    @property
    def core(self) -> bool:
        return self.agent.lifecycle == "core"

    @property
    def changed_at(self) -> datetime | None:
        return self.memory.changed_at if self.memory else None


def decide_tenant(inputs: TenantInputs, now: datetime, tuning: Tuning | None = None) -> TenantBudget:
    """Every agent's decision for one tenant: workers first, then core agents, then concurrency.
    `tuning` defaults to the tenant's budget.yaml `policy:`."""
    tuning = tuning or Tuning.of(inputs.budget.policy)
    ctx = _context(inputs, now, tuning)
    cache: dict[tuple[str, str], tuple[Rung, ...]] = {}
    slots = [_slot(ctx, a, inputs.memory.get(a.name), inputs.fleet, cache) for a in inputs.agents]
    decided = {s.agent.name: _decide(ctx, s, workers_left=False) for s in slots if not s.core}
    left = _workers_left(ctx, decided.values())
    for s in slots:
        if s.core:
            decided[s.agent.name] = _decide(ctx, s, workers_left=left.get(s.account or "", 0) > 0)
    decisions = _limit_concurrency(ctx, [(s, decided[s.agent.name]) for s in slots], _urgency(inputs.tasks, inputs.held))
    return TenantBudget(inputs.name, tuple(ctx.book.paces.values()), tuple(decisions))


def decide_fleet(
    repo: FleetRepo,
    desired: DesiredFleet,
    usage: Mapping[tuple[str, str], UsageSignal],
    memory: Mapping[tuple[str, str], AgentMemory],
    now: datetime,
    tuning: Tuning | None = None,
    held: Mapping[tuple[str, str], str] | None = None,
) -> BudgetPlan:
    """Decisions for every desired tenant with a budget.yaml; usage by (tenant, account);
    `held`: the task each lane worker holds, by (tenant, worker), so its urgency counts."""
    out: dict[str, TenantBudget] = {}
    for name, tenant in desired.tenants.items():
        spec = repo.tenants.get(name)
        if spec is None or spec.budget is None or repo.fleet is None or not tenant.agents:
            continue
        inputs = TenantInputs(
            name, tenant.agents, spec.budget, repo.fleet, spec.tasks,
            {acct: sig for (t, acct), sig in usage.items() if t == name},
            {agent: rec for (t, agent), rec in memory.items() if t == name},
            {agent: task for (t, agent), task in (held or {}).items() if t == name},
        )
        out[name] = decide_tenant(inputs, now, tuning)
    return BudgetPlan(out)


def _context(inputs: TenantInputs, now: datetime, tuning: Tuning) -> _Ctx:
    paces = {a.name: account_pace(a, inputs.usage.get(a.name), now, tuning) for a in inputs.budget.accounts}
    by_runtime: dict[str, tuple[str, ...]] = {}
    for account in inputs.budget.accounts:
        by_runtime[account.runtime] = (*by_runtime.get(account.runtime, ()), account.name)
    return _Ctx(inputs.name, inputs.budget, _Book(paces, by_runtime), now, tuning, _exempt(inputs.budget, inputs.tasks, inputs.held))


def _exempt(budget: Budget, tasks: Tasks | None, held: Mapping[str, str] | None = None) -> dict[str, str]:
    """Agents with a critical task, when the tenant paces `rapid` with an authorization."""
    if budget.pacing != "rapid" or not budget.authorized_by:
        return {}
    out: dict[str, str] = {}
    for agent, (urgency, ids) in _urgency(tasks, held).items():
        if urgency == "critical":
            out[agent] = f"critical task {', '.join(ids)} may run over pace (pacing: rapid, authorized by {budget.authorized_by})"
    return out


def _urgency(tasks: Tasks | None, held: Mapping[str, str] | None = None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each agent's most urgent task level and the ids of its tasks at that level: the
    tasks that name it, and (`held`: worker -> task id) the lane task a worker holds."""
    holder = {task: worker for worker, task in (held or {}).items()}
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for task in (t for m in (tasks.missions if tasks else ()) for t in m.tasks):
        agent = task.agent or holder.get(task.id)
        if agent is None:
            continue
        level, ids = out.get(agent, ("normal", ()))
        if URGENCY_RANK[task.urgency] < URGENCY_RANK[level] or not ids:
            out[agent] = (task.urgency, (task.id,))
        elif task.urgency == level:
            out[agent] = (level, (*ids, task.id))
    return out


def _slot(ctx: _Ctx, agent: DesiredAgent, memory: AgentMemory | None, fleet: Fleet,
          cache: dict[tuple[str, str], tuple[Rung, ...]]) -> _Slot:
    key = (agent.runtime, agent.model)
    rungs = cache.get(key)
    if rungs is None:
        rungs = cache[key] = agent_rungs(agent.runtime, agent.model, fleet)
    rung = 0
    if memory is not None:
        rung = next((i for i, r in enumerate(rungs) if (r.runtime, r.model) == (memory.runtime, memory.model)), 0)
    runtime = rungs[rung].runtime
    account = memory.account if memory is not None else None
    if account not in ctx.book.by_runtime.get(runtime, ()):
        account = ctx.book.best(runtime)
    return _Slot(agent, rungs, rung, account, memory)


def _workers_left(ctx: _Ctx, decisions: Iterable[Decision]) -> dict[str, int]:
    """Per account, the workers that still run and could still be throttled."""
    left: dict[str, int] = {}
    for d in decisions:
        if d.state is State.RUN and d.account and d.agent not in ctx.exempt:
            left[d.account] = left.get(d.account, 0) + 1
    return left


def _decide(ctx: _Ctx, slot: _Slot, *, workers_left: bool) -> Decision:
    still = _still_queued(ctx, slot)
    if still is not None:
        return still
    if slot.memory is not None and slot.memory.state is not State.RUN:
        slot = replace(slot, account=ctx.book.best(slot.rungs[slot.rung].runtime))  # released: new work
    pace = ctx.book.paces.get(slot.account) if slot.account else None
    if pace is None:
        if slot.rung > 0:
            return _restore(ctx, slot, None)
        runtime = slot.rungs[slot.rung].runtime
        return _finish(ctx, slot, State.RUN, slot.rung, "no-account",
                       f"no account in budget.yaml serves runtime {runtime}, so it is not throttled")
    if pace.state is PaceState.SPENT and not slot.core:
        return _queue(ctx, slot, pace, "window-spent", "the window is spent, so every worker on it is queued at once")
    if pace.state is PaceState.OVER and slot.agent.name in ctx.exempt:
        return _finish(ctx, slot, State.RUN, slot.rung, "critical-rapid", f"{ctx.exempt[slot.agent.name]}: {pace.evidence}")
    if pace.state in (PaceState.OVER, PaceState.SPENT):
        return _throttle(ctx, slot, pace, workers_left)
    if slot.rung > 0:
        return _restore(ctx, slot, pace)
    return _finish(ctx, slot, State.RUN, 0, _quiet_rule(pace), _quiet_words(pace))


def _quiet_rule(pace: Pace) -> str:
    return {PaceState.NO_SIGNAL: "no-usage-signal", PaceState.UNDER: "under-pace"}.get(pace.state, "on-pace")


def _quiet_words(pace: Pace) -> str:
    if pace.state is PaceState.NO_SIGNAL:
        return pace.evidence
    return f"{'under pace' if pace.state is PaceState.UNDER else 'on pace'}: {pace.evidence}"


def _still_queued(ctx: _Ctx, slot: _Slot) -> Decision | None:
    """A budget queue holds until the window resets (or, with no known reset, until the
    account is back under pace); a concurrency queue is decided afresh every tick."""
    memory = slot.memory
    if memory is None or memory.state is not State.QUEUED or memory.cause == "concurrency":
        return None
    pace = ctx.book.paces.get(memory.account or "")
    if memory.until is not None:
        if ctx.now >= memory.until:
            return None
    elif pace is None or pace.state in (PaceState.UNDER, PaceState.NO_SIGNAL):
        return None
    until = memory.until.isoformat() if memory.until else "its account is back under pace"
    now_words = pace.evidence if pace else "its account is gone from budget.yaml"
    return _finish(ctx, slot, State.QUEUED, slot.rung, memory.cause, f"queued until {until}; {now_words}",
                   until=memory.until)


def _in_hysteresis(ctx: _Ctx, slot: _Slot) -> datetime | None:
    """When the next model change may happen, if that is still ahead of `now`."""
    if slot.changed_at is None:
        return None
    allowed = slot.changed_at + ctx.tuning.hysteresis
    return allowed if ctx.now < allowed else None


def _throttle(ctx: _Ctx, slot: _Slot, pace: Pace, workers_left: bool) -> Decision:
    """Over pace: one rung down, else the queue (workers) or refuse (core over a hard cap)."""
    if slot.core and workers_left:
        return _finish(ctx, slot, State.RUN, slot.rung, "workers-first",
                       f"over pace, but workers on {pace.account} are throttled before core agents: {pace.evidence}")
    target = _down_target(ctx, slot)
    if target is None and slot.core:
        if pace.over_cap:
            return _finish(ctx, slot, State.REFUSED, slot.rung, "hard-cap",
                           f"over the hard cap at its cheapest rung {slot.rungs[slot.rung].label()}: {pace.evidence}")
        return _finish(ctx, slot, State.RUN, slot.rung, "no-room",
                       f"over pace at its cheapest rung {slot.rungs[slot.rung].label()}; core agents are never queued: {pace.evidence}")
    wait = _in_hysteresis(ctx, slot)
    if wait is not None:
        return _finish(ctx, slot, State.RUN, slot.rung, "hysteresis",
                       f"over pace, but its model changed at {_iso(slot.changed_at)}; the next step waits until {_iso(wait)}: {pace.evidence}")
    if target is None:
        return _queue(ctx, slot, pace, "floor-over-pace",
                      f"at its cheapest rung {slot.rungs[slot.rung].label()} and still over pace")
    return _step(ctx, slot, target, "over-pace", f"over pace: {pace.evidence}")


def _restore(ctx: _Ctx, slot: _Slot, pace: Pace | None) -> Decision:
    """Below its desired model and not over pace (or no longer billed to any account):
    one rung back up, when both gates open."""
    target = _up_target(ctx, slot)
    here = slot.rungs[slot.rung].label()
    evidence = pace.evidence if pace else f"no account in budget.yaml serves runtime {slot.rungs[slot.rung].runtime}"
    if target is None:
        return _finish(ctx, slot, State.RUN, slot.rung, "held-down",
                       f"stays on {here}: the account above is not under pace by the {pct(ctx.tuning.restore_margin)} margin; {evidence}")
    wait = _in_hysteresis(ctx, slot)
    if wait is not None:
        return _finish(ctx, slot, State.RUN, slot.rung, "hysteresis",
                       f"stays on {here}: its model changed at {_iso(slot.changed_at)}; it may return from {_iso(wait)}: {evidence}")
    back = ctx.book.paces.get(_account_for(ctx, slot, target) or "")
    if back is None:
        return _step(ctx, slot, target, "budget-restore", f"not throttled: {evidence}")
    why = "no usage signal" if back.state is PaceState.NO_SIGNAL else "back under pace"
    return _step(ctx, slot, target, "budget-restore", f"{why}: {back.evidence}")


def _down_target(ctx: _Ctx, slot: _Slot) -> int | None:
    """The next cheaper rung: the same runtime's next model, else the top of the next
    runtime in the downgrade order that has an account under pace."""
    current = slot.rungs[slot.rung].runtime
    for i in range(slot.rung + 1, len(slot.rungs)):
        runtime = slot.rungs[i].runtime
        if runtime == current or ctx.book.has_room(runtime):
            return i
    return None


def _up_target(ctx: _Ctx, slot: _Slot) -> int | None:
    """The rung one step back toward the desired model, if its account lets it return."""
    current, home = slot.rungs[slot.rung].runtime, slot.rungs[0].runtime
    for i in range(slot.rung - 1, -1, -1):
        runtime = slot.rungs[i].runtime
        if runtime in (current, home) or ctx.book.has_room(runtime):
            return i if _returnable(ctx, slot, i) else None
    return None


def _returnable(ctx: _Ctx, slot: _Slot, target: int) -> bool:
    account = _account_for(ctx, slot, target)
    pace = ctx.book.paces.get(account) if account else None
    home = slot.rungs[target].runtime == slot.rungs[0].runtime
    if pace is None:
        return home
    return pace.state is PaceState.UNDER or (pace.state is PaceState.NO_SIGNAL and home)


def _account_for(ctx: _Ctx, slot: _Slot, target: int) -> str | None:
    """Same runtime: the agent keeps its account. Another runtime: the one with most headroom."""
    runtime = slot.rungs[target].runtime
    return slot.account if runtime == slot.rungs[slot.rung].runtime else ctx.book.best(runtime)


def _step(ctx: _Ctx, slot: _Slot, target: int, rule: str, why: str) -> Decision:
    before, after = slot.rungs[slot.rung], slot.rungs[target]
    account = _account_for(ctx, slot, target)
    onto = f" on account {account}" if after.runtime != before.runtime and account else ""
    words = f"{before.label()} -> {after.label()}{onto}; {why}"
    return _finish(ctx, replace(slot, account=account), State.RUN, target, rule, words)


def _queue(ctx: _Ctx, slot: _Slot, pace: Pace, rule: str, why: str) -> Decision:
    until = pace.reset
    when = until.isoformat() if until else "its account is back under pace (no reset time known)"
    return _finish(ctx, slot, State.QUEUED, slot.rung, rule, f"queued until {when}: {why}; {pace.evidence}", until=until)


def _finish(ctx: _Ctx, slot: _Slot, state: State, rung: int, rule: str, reason: str,
            until: datetime | None = None) -> Decision:
    """The decision, with what changed since the memory and when the model last changed."""
    old_rung = slot.rung
    changed_at = ctx.now if rung != old_rung else slot.changed_at
    was = slot.memory.state if slot.memory else State.RUN
    runtime = slot.rungs[rung].runtime
    return Decision(
        tenant=ctx.tenant, agent=slot.agent.name, lifecycle=slot.agent.lifecycle, state=state,
        change=_change(was, state, old_rung, rung), rungs=slot.rungs, rung=rung, account=slot.account,
        rule=rule, reason=reason, changed_at=changed_at, until=until,
        account_env=len(ctx.book.by_runtime.get(runtime, ())) > 1,
    )


def _change(was: State, now: State, old_rung: int, rung: int) -> Change:
    if rung != old_rung:
        return Change.DOWN if rung > old_rung else Change.UP
    if now is was:
        return Change.NONE
    return {State.QUEUED: Change.QUEUE, State.REFUSED: Change.REFUSE, State.RUN: Change.RELEASE}[now]


def _limit_concurrency(ctx: _Ctx, pairs: list[tuple[_Slot, Decision]],
                       urgency: Mapping[str, tuple[str, tuple[str, ...]]]) -> list[Decision]:
    """`concurrency: N`: core agents always run; workers fill what is left in priority order."""
    limit = ctx.budget.concurrency
    decisions = [d for _, d in pairs]
    if limit is None:
        return decisions
    running = [(i, s, d) for i, (s, d) in enumerate(pairs) if d.state is State.RUN]
    cores = sum(1 for _, s, _ in running if s.core)
    workers = sorted(((i, s, d) for i, s, d in running if not s.core),
                     key=lambda t: (URGENCY_RANK[urgency.get(t[1].agent.name, ("normal", ()))[0]], t[0]))
    free = max(limit - cores, 0)
    for i, slot, d in workers[free:]:
        decisions[i] = replace(
            d, state=State.QUEUED, change=_change(slot.memory.state if slot.memory else State.RUN, State.QUEUED, slot.rung, d.rung),
            rule="concurrency", until=None,
            reason=f"queued until a slot frees: concurrency {limit}, with {cores} core agent(s) and {free} worker(s) "
                   f"ahead of it (most urgent task first, then roster order)",
        )
    return decisions


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else "-"
