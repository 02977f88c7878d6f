"""An agent's effective settings: its own keys, then its role's defaults, then the fleet's.

Pure and shared by the validator (to check ladders) and the desired-state builder (to
launch), so what is validated is exactly what runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reconciler.spec.models import Agent, Fleet, Lane, Role

CORE_ROLES = frozenset({"orchestrator", "enhancer"})


@dataclass(frozen=True, slots=True)
class Resolved:
    runtime: str
    model: str
    lifecycle: Literal["core", "ephemeral"]
    workdir: str | None
    runtime_from: str
    model_from: str


def resolve_agent(agent: Agent, fleet: Fleet, roles: dict[str, Role]) -> Resolved:
    """Fill in what the roster leaves out; `*_from` says which file decided (for errors)."""
    role = roles.get(agent.role)
    rd = role.defaults if role else None
    if agent.runtime:
        runtime, runtime_from = agent.runtime, "roster"
    elif rd and rd.runtime:
        runtime, runtime_from = rd.runtime, "role"
    else:
        runtime, runtime_from = fleet.defaults.runtime, "fleet"
    ladder = fleet.runtimes[runtime].ladder if runtime in fleet.runtimes else []
    if agent.model:
        model, model_from = agent.model, "roster"
    elif rd and rd.model and (rd.runtime in (None, runtime)):
        model, model_from = rd.model, "role"
    elif fleet.defaults.model in ladder or not ladder:
        model, model_from = fleet.defaults.model, "fleet"
    else:
        model, model_from = ladder[0], "ladder"
    lifecycle = agent.lifecycle or (rd.lifecycle if rd else None)
    if lifecycle is None:
        lifecycle = "core" if agent.role in CORE_ROLES else "ephemeral"
    workdir = agent.workdir or (rd.workdir if rd else None)
    return Resolved(runtime, model, lifecycle, workdir, runtime_from, model_from)


def lane_agent(lane: Lane, name: str) -> Agent:
    """One worker of `lane` as the roster entry it would be: the lane's agent fields, its
    role, `lifecycle: ephemeral` and `lane:`, so it is validated, resolved and launched
    exactly like a named agent."""
    return Agent(name=name, role=lane.role, runtime=lane.runtime, model=lane.model,
                 lifecycle="ephemeral", lane=lane.name, workdir=lane.workdir, host=lane.host, env=dict(lane.env),
                 env_from=list(lane.env_from), trust_workdir=lane.trust_workdir)
