"""The budget policy's types: the ladder, each agent's decision and memory, the plan.

Split from core/budget.py (the policy itself) so that the planner, status and views,
which read decisions on every tick, do not load the policy: it runs only for tenants
with a budget.yaml. The memory's JSON form is in core/budget_memory.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from reconciler.core.desired import DesiredAgent, on_rung
from reconciler.core.pace import Pace
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Budget, Fleet, Tasks


@dataclass(frozen=True, slots=True)
class Rung:
    runtime: str
    model: str

    def label(self) -> str:
        return f"{self.model} ({self.runtime})"


def agent_rungs(runtime: str, model: str, fleet: Fleet) -> tuple[Rung, ...]:
    """Desired first, cheapest last: the runtime's ladder from `model` down, then the
    runtimes after this one in fleet.yaml's `downgrade` order (a runtime that is not
    in that list has no cross-runtime rungs)."""
    ladder = fleet.runtimes[runtime].ladder if runtime in fleet.runtimes else [model]
    own = ladder[ladder.index(model):] if model in ladder else [model]
    rungs = [Rung(runtime, m) for m in own]
    order = fleet.downgrade
    if runtime in order:
        for other in order[order.index(runtime) + 1:]:
            if other in fleet.runtimes and other != runtime:
                rungs += [Rung(other, m) for m in fleet.runtimes[other].ladder]
    return tuple(rungs)


class State(StrEnum):
    RUN = "run"
    QUEUED = "queued"
    REFUSED = "refused"


class Change(StrEnum):
    """What this tick changes for the agent (the planner acts on `State` and the rung)."""

    NONE = "none"
    DOWN = "down"
    UP = "up"
    QUEUE = "queue"
    RELEASE = "release"
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class AgentMemory:
    """What the policy needs from the last tick: persisted by the engine, like restart history."""

    runtime: str
    model: str
    account: str | None = None
    changed_at: datetime | None = None  # the last model change, for hysteresis
    state: State = State.RUN
    cause: str = ""  # the rule that queued or refused it
    until: datetime | None = None  # a budget queue ends at the window's reset


@dataclass(frozen=True, slots=True)
class Decision:
    """One agent's verdict: where on its ladder it runs, or why it does not, with numbers."""

    tenant: str
    agent: str
    lifecycle: str
    state: State
    change: Change
    rungs: tuple[Rung, ...]
    rung: int  # index into `rungs`; 0 is the desired model
    account: str | None
    rule: str
    reason: str
    changed_at: datetime | None = None
    until: datetime | None = None
    account_env: bool = False  # several accounts serve this runtime: the launch names it

    @property
    def runtime(self) -> str:
        return self.rungs[self.rung].runtime

    @property
    def model(self) -> str:
        return self.rungs[self.rung].model

    @property
    def throttled(self) -> bool:
        return self.rung > 0

    def rung_of(self, model: str) -> int | None:
        """Where a running session's model sits on this agent's ladder (None: not on it)."""
        return next((i for i, r in enumerate(self.rungs) if r.model == model), None)

    def memory(self) -> AgentMemory:
        return AgentMemory(self.runtime, self.model, self.account, self.changed_at, self.state,
                           self.rule if self.state is not State.RUN else "", self.until)


@dataclass(frozen=True, slots=True)
class TenantInputs:
    """Everything the policy reads for one tenant; usage by account, memory by agent."""

    name: str
    agents: Sequence[DesiredAgent]  # the whole tenant, every host, in roster order
    budget: Budget
    fleet: Fleet
    tasks: Tasks | None = None
    usage: Mapping[str, UsageSignal] = field(default_factory=dict)
    memory: Mapping[str, AgentMemory] = field(default_factory=dict)
    held: Mapping[str, str] = field(default_factory=dict)  # lane worker -> the id of the task it holds (core/lanes.py)


@dataclass(frozen=True, slots=True)
class TenantBudget:
    tenant: str
    paces: tuple[Pace, ...]
    decisions: tuple[Decision, ...]

    def memory(self) -> dict[str, AgentMemory]:
        return {d.agent: d.memory() for d in self.decisions}


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """The policy's answer for every tenant that has a budget.yaml."""

    tenants: Mapping[str, TenantBudget] = field(default_factory=dict)

    def by_agent(self) -> dict[tuple[str, str], Decision]:
        return {(d.tenant, d.agent): d for t in self.tenants.values() for d in t.decisions}


def effective_agent(agent: DesiredAgent, decision: Decision) -> DesiredAgent:
    """The agent on the rung (and account) its budget decision names: what the planner
    launches, and what status and `fleet ps` compare a running session with."""
    runtime = decision.runtime
    ladder = agent.ladder if runtime == agent.runtime else tuple(r.model for r in decision.rungs if r.runtime == runtime)
    return on_rung(agent, runtime, decision.model, ladder, decision.account if decision.account_env else None)
