"""One view of the fleet, built once from one observation, that every surface renders.

`fleet ps` (cli/ps.py), `fleet serve` (reconciler/web) and whatever comes next read the
same `FleetView`: the ps rows (core/ps.py, unchanged), each agent's detail (conditions
with their reasons, last heartbeat, desired against running model, budget rung,
restarts and backoff) and each budget account's pace (core/budget_view.py). Pure: it
reads what one tick produced and decides nothing, so the surfaces cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.core.budget_types import BudgetPlan, Decision
from reconciler.core.budget_view import AccountView, account_views
from reconciler.core.desired import DesiredFleet
from reconciler.core.plan import Plan, Wait
from reconciler.core.ps import PsRow, human_age, ps_notes, ps_rows, row_json
from reconciler.model.history import RestartRecord
from reconciler.model.observed import Heartbeat, ObservedFleet
from reconciler.spec.repo import FleetRepo

#: Version of `view_json`'s document: bump it when a key changes meaning or goes away.
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Condition:
    """One axis of an agent's state, as Kubernetes-style tools show them: a type, whether
    it holds, a one-word reason and a sentence that says what happens next."""

    type: str
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Rung:
    index: int  # 0 is the desired model
    model: str
    runtime: str
    state: str  # run, queued, refused
    account: str | None
    rule: str
    reason: str
    ladder: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Restarts:
    attempts: int
    last_at: datetime | None
    last_reason: str
    backoff_until: datetime | None
    stalled: bool
    message: str


@dataclass(frozen=True, slots=True)
class AgentDetail:
    """What an agent's page shows beyond its row."""

    row: PsRow
    conditions: tuple[Condition, ...]
    heartbeat: Heartbeat | None
    running_model: str | None
    desired_model: str | None
    budget_model: str | None  # the model the budget ladder wants now (None: no budget)
    rung: Rung | None
    restarts: Restarts
    planned_reason: str

    @property
    def key(self) -> str:
        return f"{self.row.tenant}/{self.row.agent}"


@dataclass(frozen=True, slots=True)
class FleetView:
    host: str
    taken_at: datetime
    rows: tuple[PsRow, ...]
    agents: Mapping[str, AgentDetail]  # by "tenant/agent"
    accounts: tuple[AccountView, ...]
    notes: tuple[str, ...]
    problems: tuple[str, ...]

    def summary(self) -> dict[str, int]:
        """How many agents are in each health, for a banner ("3 healthy, 1 dead")."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.health or "unknown"] = counts.get(row.health or "unknown", 0) + 1
        return dict(sorted(counts.items()))


def build_view(
    desired: DesiredFleet, observed: ObservedFleet, plan: Plan, now: datetime, *,
    repo: FleetRepo | None = None, budget: BudgetPlan | None = None,
    history: Mapping[tuple[str, str], RestartRecord] | None = None, problems: Sequence[str] = (),
) -> FleetView:
    """The whole view of one tick; `fleet ps` rows are exactly `ps_rows` of the same tick."""
    rows = ps_rows(desired, observed, plan, now)
    decisions = {(d.tenant, d.agent): d for d in plan.budget}
    waits = {(w.tenant, w.agent): w for w in plan.waits}
    reasons = {(a.tenant, a.agent): a.reason.message for a in plan.actions}
    history = history or {}
    agents = {
        f"{row.tenant}/{row.agent}": _detail(
            row, observed.heartbeats.get((row.tenant, row.agent)), decisions.get((row.tenant, row.agent)),
            history.get((row.tenant, row.agent)), waits.get((row.tenant, row.agent)),
            reasons.get((row.tenant, row.agent), ""))
        for row in rows
    }
    accounts = tuple(account_views(repo, budget)) if repo is not None and budget is not None else ()
    return FleetView(desired.host, now, tuple(rows), agents, accounts,
                     (*ps_notes(desired, observed), *(lane.summary() for lane in plan.lanes)),
                     tuple(problems))


def _detail(row: PsRow, beat: Heartbeat | None, decision: Decision | None, record: RestartRecord | None,
            wait: Wait | None, planned_reason: str) -> AgentDetail:
    rung = None if decision is None else Rung(
        decision.rung, decision.model, decision.runtime, decision.state.value, decision.account, decision.rule,
        decision.reason, tuple(r.label() for r in decision.rungs))
    restarts = Restarts(
        attempts=wait.attempts if wait else record.attempts if record else 0,
        last_at=record.last_at if record else None, last_reason=record.last_reason if record else "",
        backoff_until=wait.until if wait else None, stalled=wait.stalled if wait else False,
        message=wait.message if wait else "")
    return AgentDetail(row, _conditions(row, rung, restarts, planned_reason), beat, row.model, row.desired_model,
                       None if rung is None else rung.model, rung, restarts, planned_reason)


def _conditions(row: PsRow, rung: Rung | None, restarts: Restarts, planned_reason: str) -> tuple[Condition, ...]:
    """Healthy, InSync, OnBudget and NotBackingOff, each with the planner's own words."""
    health = row.health or "unknown"
    drift = ", ".join(flag.value for flag in row.drift)
    sync_message = planned_reason or (f"drift: {drift}" if drift else "running as the specs say")
    conditions = [
        Condition("Healthy", row.health == "healthy", health, row.health_message or health),
        Condition("InSync", not row.drift, "Drift" if row.drift else "Synced", sync_message),
    ]
    if rung is not None:
        on_top = rung.index == 0 and rung.state == "run"
        why = "Desired" if on_top else ("Throttled" if rung.state == "run" else rung.state.capitalize())
        conditions.append(Condition("OnBudget", on_top, why, rung.reason))
    if restarts.attempts or restarts.backoff_until:
        conditions.append(Condition("NotBackingOff", restarts.backoff_until is None,
                                    "Stalled" if restarts.stalled else "Backoff" if restarts.backoff_until else "Restarted",
                                    restarts.message or f"{restarts.attempts} restart(s); last: {restarts.last_reason}"))
    return tuple(conditions)


# --- filters, shared by every surface --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """The fleet table's filters; an empty field matches everything.

    `drift` is "yes" (any drift flag), "no" (none) or one flag's name.

    >>> Filters.of({"tenant": "demo", "other": "x"})
    Filters(tenant='demo', host='', health='', drift='')
    """

    tenant: str = ""
    host: str = ""
    health: str = ""
    drift: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Filters:
        return cls(**{k: params.get(k, "").strip() for k in ("tenant", "host", "health", "drift")})

    def matches(self, row: PsRow) -> bool:
        flags = {flag.value for flag in row.drift}
        drift_ok = (not self.drift or (self.drift == "yes" and bool(flags)) or (self.drift == "no" and not flags)
                    or self.drift in flags)
        return (drift_ok and (not self.tenant or row.tenant == self.tenant) and (not self.host or row.host == self.host)
                and (not self.health or (row.health or "unknown") == self.health))


def choices(rows: Sequence[PsRow]) -> dict[str, list[str]]:
    """The values each filter can take on these rows, sorted."""
    return {
        "tenant": sorted({r.tenant for r in rows}), "host": sorted({r.host for r in rows}),
        "health": sorted({r.health or "unknown" for r in rows}),
        "drift": ["yes", "no", *sorted({f.value for r in rows for f in r.drift})],
    }


# --- JSON ------------------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def detail_json(detail: AgentDetail) -> dict[str, Any]:
    beat = detail.heartbeat
    return {
        "row": row_json(detail.row),
        "conditions": [{"type": c.type, "ok": c.ok, "reason": c.reason, "message": c.message}
                       for c in detail.conditions],
        "heartbeat": None if beat is None else {
            "seq": beat.seq, "ts": _iso(beat.ts), "state": beat.state, "model": beat.model, "pid": beat.pid,
            "ack": beat.ack, "age": human_age(detail.row.heartbeat_age_s)},
        "model": {"running": detail.running_model, "desired": detail.desired_model, "budget": detail.budget_model},
        "rung": None if detail.rung is None else {
            "index": detail.rung.index, "model": detail.rung.model, "runtime": detail.rung.runtime,
            "state": detail.rung.state, "account": detail.rung.account, "rule": detail.rung.rule,
            "reason": detail.rung.reason, "ladder": list(detail.rung.ladder)},
        "restarts": {"attempts": detail.restarts.attempts, "last_at": _iso(detail.restarts.last_at),
                     "last_reason": detail.restarts.last_reason, "backoff_until": _iso(detail.restarts.backoff_until),
                     "stalled": detail.restarts.stalled, "message": detail.restarts.message},
        "planned_reason": detail.planned_reason,
    }


def account_json(view: AccountView) -> dict[str, Any]:
    p = view.pace
    return {"tenant": view.tenant, "account": p.account, "runtime": p.runtime, "regime": p.regime,
            "state": p.state.value, "used": p.used, "allowed": p.allowed, "elapsed": p.elapsed,
            "reset": _iso(p.reset), "confidence": p.confidence, "source": p.source, "evidence": p.evidence,
            "window_s": None if view.window is None else int(view.window.total_seconds()),
            "exhaustion": _iso(view.exhaustion), "next": list(view.next_steps)}


def view_json(view: FleetView) -> dict[str, Any]:
    """The whole view as one JSON document (the web view's /api/fleet)."""
    return {
        "format_version": FORMAT_VERSION, "host": view.host, "taken_at": _iso(view.taken_at),
        "summary": view.summary(), "rows": [row_json(r) for r in view.rows],
        "agents": {key: detail_json(d) for key, d in view.agents.items()},
        "accounts": [account_json(a) for a in view.accounts],
        "notes": list(view.notes), "problems": list(view.problems),
    }
