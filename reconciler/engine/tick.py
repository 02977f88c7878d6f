"""One tick up to the plan: load -> desired -> observe -> budget policy -> plan.

Dry-run stops here; apply (engine/apply.py) continues from the same `Tick`, so what a
dry-run prints is exactly what an apply would do. The budget policy's memory (each
agent's rung and last model change) is read here from `$state/<tenant>/budget.json`
and written by apply, the way restart history is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.budget_memory import parse_memory
from reconciler.core.budget_types import AgentMemory, BudgetPlan
from reconciler.core.desired import DesiredFleet, build_desired
from reconciler.core.plan import Plan, Reason
from reconciler.core.planner import PlanOptions, plan
from reconciler.engine.observe import observe
from reconciler.engine.state import read_history, read_per_tenant
from reconciler.model.history import RestartRecord
from reconciler.model.observed import ObservedFleet
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo


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


def heartbeat_dir(state_dir: Path, tenant: str) -> Path:
    return state_dir / tenant / "heartbeats"


def budget_memory_path(state_dir: Path, tenant: str) -> Path:
    return state_dir / tenant / "budget.json"


def read_budget_memory(state_dir: Path, tenants: Iterable[str]) -> tuple[dict[tuple[str, str], AgentMemory], list[str]]:
    """Every tenant's budget memory; a corrupt file starts over (agents go back to their
    desired model and the policy steps them down again if needed)."""
    return read_per_tenant(tenants, lambda t: budget_memory_path(state_dir, t), parse_memory, "budget memory")


def plan_tick(inputs: TickInputs, now: datetime | None = None, repo: FleetRepo | None = None) -> Tick:
    """Everything up to the plan, with exactly one observation of the world (`repo`: the
    repository already loaded from `inputs.repo`, to read it once)."""
    repo = repo if repo is not None else load_repo(inputs.repo)
    desired = _desired(repo, inputs)
    if inputs.down:
        desired = replace(desired, tenants={n: replace(t, agents=()) for n, t in desired.tenants.items()})
    at = now or datetime.now(UTC)
    users = sorted({t.socket.user for t in desired.tenants.values()}, key=lambda u: u or "")
    observed = observe(
        desired.sockets,
        users,
        {name: heartbeat_dir(inputs.state_dir, name) for name in desired.tenants},
        at,
    )
    history, history_problems = read_history(inputs.state_dir, sorted(desired.tenants))
    budget, budget_problems = _budget(repo, desired, observed, inputs.state_dir, at)
    options = PlanOptions(allow_mass_stop=inputs.allow_mass_stop, history=history, budget=budget)
    result = plan(desired, observed, at, options)
    if inputs.down:
        why = Reason("down", "`fleet down` stops every agent of the tenant on this host")
        result = replace(result, actions=tuple(replace(a, reason=why) for a in result.actions), notes=())
    problems = (*observed.problems, *history_problems, *budget_problems)
    return Tick(inputs, repo, desired, observed, result, at, history, problems, budget)


#: The last desired fleet built, with the repository object and options it came from:
#: load_repo gives a resident loop the same FleetRepo while no spec changed.
_LAST_DESIRED: list[tuple[FleetRepo, tuple[object, ...], DesiredFleet]] = []


def _desired(repo: FleetRepo, inputs: TickInputs) -> DesiredFleet:
    """build_desired, or (same repository object, same options) the result built last time."""
    only = None if inputs.tenants is None else frozenset(inputs.tenants)
    key = (inputs.host, str(inputs.state_dir), inputs.command_override, only)
    if _LAST_DESIRED and _LAST_DESIRED[0][0] is repo and _LAST_DESIRED[0][1] == key:
        return _LAST_DESIRED[0][2]
    desired = build_desired(repo, host=inputs.host, state_dir=str(inputs.state_dir),
                            command_override=inputs.command_override, only_tenants=inputs.tenants)
    _LAST_DESIRED[:] = [(repo, key, desired)]
    return desired


def _budget(repo: FleetRepo, desired: DesiredFleet, observed: ObservedFleet, state_dir: Path,
            now: datetime) -> tuple[BudgetPlan, list[str]]:
    """The budget policy's decisions for tenants with a budget.yaml, and what could not be read.

    Usage signals come from the observe step (`ObservedFleet.usage`); the memory from
    the state directory."""
    budgeted = sorted(n for n in desired.tenants if (spec := repo.tenants.get(n)) is not None and spec.budget)
    if not budgeted:
        return BudgetPlan(), []
    from reconciler.core.budget import decide_fleet  # noqa: PLC0415  (the policy: only for tenants with a budget)

    memory, problems = read_budget_memory(state_dir, budgeted)
    return decide_fleet(repo, desired, observed.usage, memory, now), problems
