"""The plan as data: a small closed set of actions, each with its reason.

Produced by `core.planner.plan`, printed by dry-run, executed by the apply engine; the
JSON form carries its own `format_version` so scripts can rely on it. Budget actions:
`downgrade` restarts an agent on a cheaper rung (a return to the desired model is a
`restart` with rule `budget-restore`), `queue` stops a worker until its window resets,
`refuse` starts nothing and is only reported. The budget decisions behind them, with
their numbers, ride along in `Plan.budget` (JSON `budget`, present only for tenants
with a budget.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from reconciler.core.budget_types import Decision
from reconciler.core.pace import Pace
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey

if TYPE_CHECKING:  # only fleets with lanes have any (core/lane_plan.py: the lanes load only for them)
    from reconciler.core.dispatch import Dispatch
    from reconciler.core.lanes import LaneView
    from reconciler.core.resume import Resume

FORMAT_VERSION = "1"


class ActionKind(StrEnum):
    SPAWN = "spawn"
    STOP = "stop"
    RESTART = "restart"
    DOWNGRADE = "downgrade"
    QUEUE = "queue"
    REFUSE = "refuse"


#: Apply order within a tenant: make room first, then start.
ACTION_ORDER = {k: i for i, k in enumerate([ActionKind.STOP, ActionKind.QUEUE, ActionKind.REFUSE,
                                            ActionKind.RESTART, ActionKind.DOWNGRADE, ActionKind.SPAWN])}


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between desired and observed, e.g. Drift("model", "opus", "sonnet")."""

    field: str
    desired: str
    observed: str


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an action is planned: the rule that fired and the evidence in words."""

    rule: str
    message: str
    source: str | None = None  # the spec that asks for it, e.g. "tenants/jarvis/roster.yaml agents[coder0-0]"


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    tenant: str
    host: str
    agent: str
    socket: SocketKey
    model: str | None
    reason: Reason
    launch: LaunchSpec | None = None
    drift: tuple[Drift, ...] = ()

    def sort_key(self) -> tuple[str, int, str]:
        return (self.tenant, ACTION_ORDER[self.kind], self.agent)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A session the fleet wants but does not own: reported, never touched."""

    tenant: str
    agent: str
    socket: SocketKey
    message: str


@dataclass(frozen=True, slots=True)
class Hold:
    """Actions kept back by a safety rule; they run only when the user confirms."""

    tenant: str
    rule: str
    message: str
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """A restart deferred by backoff."""

    tenant: str
    agent: str
    until: datetime
    attempts: int
    stalled: bool
    message: str


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """The planner's verdict on one running agent of this host, for status and history."""

    tenant: str
    agent: str
    health: str
    message: str
    #: Why it is not running or not restarted, a short code (core/health.py `Verdict.reason`,
    #: `missing-binary`): `fleet ps` and the status show it.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    host: str
    actions: tuple[Action, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    holds: tuple[Hold, ...] = ()
    waits: tuple[Wait, ...] = ()
    notes: tuple[str, ...] = ()
    health: tuple[AgentHealth, ...] = ()
    budget: tuple[Decision, ...] = ()  # this host's agents of tenants with a budget.yaml
    paces: tuple[tuple[str, Pace], ...] = ()  # (tenant, pace) of those tenants' accounts
    lanes: tuple[LaneView, ...] = ()  # this host's lanes: workers desired and running, queue depth, why
    dispatches: tuple[Dispatch, ...] = ()  # briefs apply types to lane workers (core/dispatch.py)
    resumes: tuple[Resume, ...] = ()  # resume messages to agents whose usage limit is over (core/resume.py)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    def counts(self) -> dict[str, int]:
        out = {k.value: 0 for k in ActionKind}
        for action in self.actions:
            out[action.kind.value] += 1
        return out


def action_json(action: Action) -> dict[str, Any]:
    return {
        "action": action.kind.value,
        "tenant": action.tenant,
        "host": action.host,
        "agent": action.agent,
        "model": action.model,
        "reason": action.reason.message,
        "rule": action.reason.rule,
        "source": action.reason.source,
        "socket": action.socket.label(),
        "drift": [{"field": d.field, "desired": d.desired, "observed": d.observed} for d in action.drift],
        "command": list(action.launch.argv) if action.launch else None,
        "workdir": action.launch.workdir if action.launch else None,
    }


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "tenant": d.tenant, "agent": d.agent, "state": d.state.value, "change": d.change.value,
        "runtime": d.runtime, "model": d.model, "desired_model": d.rungs[0].model, "account": d.account,
        "rule": d.rule, "reason": d.reason, "until": d.until.isoformat() if d.until else None,
        "model_changed_at": d.changed_at.isoformat() if d.changed_at else None,
    }


def pace_json(tenant: str, p: Pace) -> dict[str, Any]:
    return {
        "tenant": tenant, "account": p.account, "runtime": p.runtime, "regime": p.regime, "state": p.state.value,
        "used": p.used, "allowed": p.allowed, "elapsed": p.elapsed,
        "reset": p.reset.isoformat() if p.reset else None, "confidence": p.confidence or None,
        "source": p.source or None, "evidence": p.evidence,
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    """The machine-readable plan (docs/reference.md, "The JSON plan"), stable key order."""
    doc = _plan_doc(plan)
    if plan.budget or plan.paces:
        doc["budget"] = {"accounts": [pace_json(t, p) for t, p in plan.paces], "agents": [decision_json(d) for d in plan.budget]}
    if plan.lanes:
        doc["lanes"] = [{"tenant": v.tenant, "lane": v.lane, "host": v.host, "desired": v.desired, "running": v.running,
                         "open": v.open, "queued": v.queued, "workers": list(v.workers), "reason": v.detail()}
                        for v in plan.lanes]
    if plan.dispatches:
        doc["dispatch"] = [{"tenant": d.tenant, "lane": d.lane, "agent": d.agent, "task": d.task, "message": d.message,
                            "attempt": d.attempt, "reason": d.reason} for d in plan.dispatches]
    if plan.resumes:
        doc["resume"] = [{"tenant": r.tenant, "agent": r.agent, "message": r.message, "attempt": r.attempt,
                          "reason": r.reason} for r in plan.resumes]
    return doc


def _plan_doc(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "host": plan.host,
        "actions": [action_json(a) for a in plan.actions],
        "conflicts": [
            {"tenant": c.tenant, "agent": c.agent, "socket": c.socket.label(), "message": c.message}
            for c in plan.conflicts
        ],
        "held": [
            {"tenant": h.tenant, "rule": h.rule, "message": h.message, "actions": [action_json(a) for a in h.actions]}
            for h in plan.holds
        ],
        "waiting": [
            {"tenant": w.tenant, "agent": w.agent, "until": w.until.isoformat(), "attempts": w.attempts,
             "stalled": w.stalled, "message": w.message}
            for w in plan.waits
        ],
        "notes": list(plan.notes),
        "summary": plan.counts(),
    }
