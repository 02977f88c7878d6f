"""One tick up to the plan: load -> desired -> ingest -> observe -> lanes -> budget policy -> plan -> dispatch.

Dry-run stops here; apply (engine/apply.py) continues from the same `Tick`, so what a
dry-run prints is exactly what an apply would do: the observe step (engine/observe.py)
is the tick's only reader, of the host (programs and workdirs included, resolved into
the desired launches) and of the state directory (restart history and the budget
policy's memory, which apply writes back). Before it, tenants with a budget.yaml ingest
the runtimes' usage files from their cursors (engine/ingest.py): an applying tick writes
the usage records, the ledger and the moved cursors; a dry-run reads the same bytes,
writes nothing, and hands the readings it would have written to the plan.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.budget_types import BudgetPlan
from reconciler.core.desired import DesiredFleet, build_desired, resolve_desired
from reconciler.core.health import Health
from reconciler.core.held import USAGE_LIMIT as HELD_USAGE
from reconciler.core.lane_plan import LanePlan
from reconciler.core.plan import ActionKind, Plan
from reconciler.core.planner import PlanOptions, plan, unhealthy_panes
from reconciler.core.traces import scope_attrs
from reconciler.drivers import telemetry
from reconciler.engine.memo import LastResult
from reconciler.engine.observe import StoredState, observe_screens, observe_tick
from reconciler.model.history import RestartRecord
from reconciler.model.layout import StateLayout
from reconciler.model.observed import ObservedFleet, Resolved
from reconciler.model.usage import UsageSignal
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo

if TYPE_CHECKING:  # resumes: only with an agent held by a usage limit (core/resume.py)
    from reconciler.core.resume import ResumeRecord


@dataclass(frozen=True, slots=True)
class TickInputs:
    repo: Path
    host: str
    state_dir: Path
    tenants: Collection[str] | None = None
    command_override: str | None = None
    allow_mass_stop: bool = False
    down: bool = False  # `fleet down`: desire no agents at all for the tenants in scope
    revision: str | None = None  # the spec revision, when the specs are a copy outside Git (a tenant user's run)
    dry_run: bool = False  # ingest reads but writes nothing (no usage record, ledger line or cursor)


@dataclass(frozen=True, slots=True)
class Tick:
    inputs: TickInputs
    repo: FleetRepo
    desired: DesiredFleet
    observed: ObservedFleet
    plan: Plan
    now: datetime
    history: dict[tuple[str, str], RestartRecord]
    problems: tuple[str, ...]
    budget: BudgetPlan = field(default_factory=BudgetPlan)
    lanes: LanePlan = field(default_factory=LanePlan)  # each lane's workers and each lane task's fleet view
    #: The resume records apply writes before it types the plan's resumes (core/resume.py),
    #: for every tenant of the tick: None when there is nothing to write.
    resumes: Mapping[tuple[str, str], ResumeRecord] | None = None

    @property
    def briefs_waiting(self) -> bool:
        """A lane has queued tasks and a worker this tick starts (or that is still starting):
        its brief goes out on the first tick that finds it healthy, so a watch loop ticks
        again soon rather than an interval later."""
        starting = {(a.tenant, a.agent) for a in self.plan.actions if a.kind in (ActionKind.SPAWN, ActionKind.RESTART)}
        starting |= {(h.tenant, h.agent) for h in self.plan.health if h.health == Health.STARTING.value}
        return any(v.queued and any((v.tenant, w) in starting for w in v.workers) for v in self.plan.lanes)


def plan_tick(inputs: TickInputs, now: datetime | None = None, repo: FleetRepo | None = None) -> Tick:
    """Everything up to the plan, with exactly one observation of the world (`repo`: the
    repository already loaded from `inputs.repo`, to read it once)."""
    repo = repo if repo is not None else load_repo(inputs.repo)
    desired = _desired(repo, inputs)
    at = now or datetime.now(UTC)
    budgeted = sorted(n for n in desired.tenants if (spec := repo.tenants.get(n)) is not None and spec.budget)
    scope = scope_attrs(inputs.host, desired.tenants)
    step = telemetry.start("observe", scope)  # a child of the run's span; nothing nests in it (a no-op while off)
    fresh, ingest_problems = _ingest(repo, desired, inputs, at, budgeted)
    observed, stored = observe_tick(desired, StateLayout(inputs.state_dir), at, budgeted)
    step.end()
    if fresh and inputs.dry_run:  # what an apply would have written, and then read
        from reconciler.drivers.usage import aged  # noqa: PLC0415

        observed = replace(observed, usage={**observed.usage, **{k: aged(s, at) for k, s in fresh.items()}})
    step = telemetry.start("plan", scope)
    desired = _resolved(desired, observed.resolved)
    lanes, desired = _scale_lanes(repo, desired, observed, stored, at)
    if panes := unhealthy_panes(desired, observed, at):  # a dialog may explain them (core/held.py)
        observed = replace(observed, screens=observe_screens(panes, observed))
    held = {(t, a.agent): task for t, tl in lanes.tenants.items() for task, a in tl.memory.assignments.items()}
    budget = _budget(repo, desired, observed, stored, at, budgeted, held)
    if lanes.tenants:
        from reconciler.core.lanes import settle  # noqa: PLC0415  (only for tenants with lanes, like _scale_lanes)

        lanes = settle(lanes, budget)
    history = dict(stored.history)
    options = PlanOptions(allow_mass_stop=inputs.allow_mass_stop, history=history, budget=budget, lanes=lanes)
    result = plan(desired, observed, at, options)
    if lanes.tenants:
        from reconciler.core.dispatch import plan_dispatch  # noqa: PLC0415  (only for tenants with lanes)
        from reconciler.core.lanes import LaneMemory, close_windows  # noqa: PLC0415

        health = {(h.tenant, h.agent): h.health for h in result.health}
        sockets = {n: t.socket for n, t in desired.tenants.items()}
        lanes, dispatches = plan_dispatch(repo, lanes, observed, health, budget, sockets, at)
        lanes = LanePlan({t: replace(tl, memory=close_windows(stored.lanes.get(t, LaneMemory()), tl.memory, at))
                          for t, tl in lanes.tenants.items()})  # per-task spend needs every window (core/task_spend.py)
        result = replace(result, dispatches=dispatches,
                         lanes=tuple(v for t in sorted(lanes.tenants) for v in lanes.tenants[t].lanes))
    result, resumes = _resumes(desired, observed, stored, result, budget, at)
    step.set({f"fleet.actions.{kind}": n for kind, n in result.counts().items()} if telemetry.on() else {})
    step.end()
    problems = (*ingest_problems, *observed.problems, *stored.problems)
    return Tick(inputs, repo, desired, observed, result, at, history, problems, budget, lanes, resumes)


def _resumes(desired: DesiredFleet, observed: ObservedFleet, stored: StoredState, result: Plan, budget: BudgetPlan,
             at: datetime) -> tuple[Plan, Mapping[tuple[str, str], ResumeRecord] | None]:
    """The plan with the resume messages due to agents held by a usage limit (core/resume.py),
    and each held agent's health saying when its next one comes; the records to write."""
    if not stored.resumes and not any(h.reason == HELD_USAGE for h in result.health):
        return result, None
    first = {(t.name, a.name): a.usage_limit_retry for t in desired.tenants.values()
             for a in t.on_host(desired.host).values()}
    from reconciler.core.resume import plan_resumes  # noqa: PLC0415  (only with an agent held by a limit)

    planned = plan_resumes(result.health, observed.heartbeats, stored.resumes, budget, first, at)
    health = tuple(replace(h, message=f"{h.message}; {note}") if (note := planned.notes.get((h.tenant, h.agent)))
                   else h for h in result.health)
    return replace(result, health=health, resumes=planned.resumes), planned.records


def _scale_lanes(repo: FleetRepo, desired: DesiredFleet, observed: ObservedFleet, stored: StoredState,
                 at: datetime) -> tuple[LanePlan, DesiredFleet]:
    """The lane plan and `desired` with the workers it wants (core/lanes.py); a fleet with no
    lane on this host gets the empty plan without loading the lanes at all (core/lane_plan.py)."""
    if not any(lane.host == desired.host for t in desired.tenants.values() for lane in t.lanes):
        return LanePlan(), desired
    from reconciler.core.lanes import scale_lanes, with_workers  # noqa: PLC0415  (only for tenants with lanes)

    lanes = scale_lanes(repo, desired, observed, stored.lanes, stored.reports, at)
    return lanes, with_workers(desired, lanes)


#: load_repo gives a resident loop the same FleetRepo while no spec changed.
_DESIRED: LastResult[DesiredFleet] = LastResult()
#: Likewise the resolved fleet, while the desired fleet is the same and the host facts equal.
_RESOLVED: LastResult[DesiredFleet] = LastResult()


def _desired(repo: FleetRepo, inputs: TickInputs) -> DesiredFleet:
    """build_desired, or (same repository object, same options) the result built last time."""
    only = None if inputs.tenants is None else frozenset(inputs.tenants)
    key = (inputs.host, str(inputs.state_dir), inputs.command_override, only, inputs.down)
    return _DESIRED.get(repo, key, lambda: build_desired(
        repo, host=inputs.host, state_dir=str(inputs.state_dir), command_override=inputs.command_override,
        only_tenants=inputs.tenants, down=inputs.down))


def _resolved(desired: DesiredFleet, resolved: Resolved) -> DesiredFleet:
    """resolve_desired, or (same desired object, equal host facts) the result of last time."""
    return _RESOLVED.get(desired, resolved, lambda: resolve_desired(desired, resolved))


def _ingest(repo: FleetRepo, desired: DesiredFleet, inputs: TickInputs, now: datetime,
            budgeted: list[str]) -> tuple[dict[tuple[str, str], UsageSignal], list[str]]:
    """Usage from the runtimes' own files, for the budgeted tenants (engine/ingest.py)."""
    if not budgeted:
        return {}, []
    from reconciler.engine.ingest import ingest_tick  # noqa: PLC0415  (only for tenants with a budget)

    try:
        return ingest_tick(repo, desired, inputs.state_dir, now, host=inputs.host, tenants=budgeted,
                           commit=not inputs.dry_run)
    except OSError as exc:  # a full disk or a read-only state dir: the tick goes on with the last records
        return {}, [f"usage ingest failed ({exc.strerror or exc}); the budget policy uses the records already "
                    "in the state directory"]


def _budget(repo: FleetRepo, desired: DesiredFleet, observed: ObservedFleet, stored: StoredState,
            now: datetime, budgeted: list[str], held: Mapping[tuple[str, str], str]) -> BudgetPlan:
    """The budget policy's decisions for tenants with a budget.yaml (`budgeted`), from
    what the observe step read: usage signals and the policy's memory."""
    if not budgeted:
        return BudgetPlan()
    from reconciler.core.budget import decide_fleet  # noqa: PLC0415  (the policy: only for tenants with a budget)

    return decide_fleet(repo, desired, observed.usage, stored.budget_memory, now, held=held)
