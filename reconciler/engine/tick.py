"""One tick up to the plan: load -> desired -> observe -> plan.

Dry-run stops here; apply (engine/apply.py) continues from the same `Tick`, so what a
dry-run prints is exactly what an apply would do.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.desired import DesiredFleet, build_desired
from reconciler.core.plan import Plan, Reason
from reconciler.core.planner import PlanOptions, plan
from reconciler.engine.observe import observe
from reconciler.engine.state import read_history
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


def heartbeat_dir(state_dir: Path, tenant: str) -> Path:
    return state_dir / tenant / "heartbeats"


def plan_tick(inputs: TickInputs, now: datetime | None = None) -> Tick:
    """Everything up to the plan, with exactly one observation of the world."""
    repo = load_repo(inputs.repo)
    desired = build_desired(
        repo,
        host=inputs.host,
        state_dir=str(inputs.state_dir),
        command_override=inputs.command_override,
        only_tenants=inputs.tenants,
    )
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
    result = plan(desired, observed, at, PlanOptions(allow_mass_stop=inputs.allow_mass_stop, history=history))
    if inputs.down:
        why = Reason("down", "`fleet down` stops every agent of the tenant on this host")
        result = replace(result, actions=tuple(replace(a, reason=why) for a in result.actions), notes=())
    return Tick(inputs, repo, desired, observed, result, at, history, (*observed.problems, *history_problems))
