"""One view of the fleet, built once from one observation, that every surface renders.

`fleet ps` (cli/ps.py), `fleet serve` (reconciler/web) and `fleet top` (reconciler/tui)
read the same `FleetView`: the ps rows (core/ps.py, unchanged), each agent's detail
(conditions with their reasons, last heartbeat, desired against running model, budget
rung, restarts and backoff, the task it holds), each budget account's pace
(core/budget_view.py), and the lanes (desired vs running workers, queue depth, why) with
each lane task's fleet view (core/lanes.py). Pure: it
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
from reconciler.core.lane_plan import LanePlan
from reconciler.core.lanes import LaneView, TaskState, TaskView, ordered_tasks
from reconciler.core.plan import Plan, Wait
from reconciler.core.ps import NONE, PsRow, human_age, ps_notes, ps_rows, row_json
from reconciler.model.history import RestartRecord
from reconciler.model.observed import Heartbeat, ObservedFleet
from reconciler.spec.repo import FleetRepo

#: Version of `view_json`'s document: bump it when a key changes meaning or goes away.
#: 2: lanes and tasks have their own keys; `notes` no longer carries the lane lines.
FORMAT_VERSION = 2
#: The columns of the lanes table and of the tasks table, on every surface.
LANE_HEADERS = ("LANE", "TENANT", "HOST", "RUNNING", "DESIRED", "OPEN", "QUEUED", "WORKERS", "WHY")
TASK_HEADERS = ("TASK", "TENANT", "LANE", "STATE", "AGENT", "SINCE", "NOTE", "TITLE")


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
class TaskRow:
    """One lane task as the surfaces show it: the fleet's view (core/lanes.py) and its title."""

    view: TaskView
    title: str
    mission: str

    @property
    def key(self) -> str:
        return f"{self.view.tenant}/{self.view.task}"


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
    task: TaskRow | None = None  # the lane task this worker holds (assigned or working)

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
    notes: tuple[str, ...]  # what `fleet ps` prints under its table, before the lane lines
    problems: tuple[str, ...]
    lanes: tuple[LaneView, ...] = ()  # this host's lanes, as the plan sized them
    tasks: tuple[TaskRow, ...] = ()  # every lane task of the tenants in view, in file order

    def lane_lines(self) -> tuple[str, ...]:
        """One line per lane, as `fleet ps` prints them after its notes."""
        return tuple(lane.summary() for lane in self.lanes)

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
    lanes: LanePlan | None = None,
) -> FleetView:
    """The whole view of one tick; `fleet ps` rows are exactly `ps_rows` of the same tick,
    the lanes are the plan's and the tasks `lanes`' (the tick's lane plan after dispatch)."""
    rows = ps_rows(desired, observed, plan, now)
    tasks = task_rows(repo, lanes)
    held = {(t.view.tenant, t.view.agent): t for t in tasks
            if t.view.agent and t.view.state in (TaskState.ASSIGNED, TaskState.WORKING)}
    decisions = {(d.tenant, d.agent): d for d in plan.budget}
    waits = {(w.tenant, w.agent): w for w in plan.waits}
    reasons = {(a.tenant, a.agent): a.reason.message for a in plan.actions}
    history = history or {}
    agents = {
        f"{row.tenant}/{row.agent}": _detail(
            row, observed.heartbeats.get((row.tenant, row.agent)), decisions.get((row.tenant, row.agent)),
            history.get((row.tenant, row.agent)), waits.get((row.tenant, row.agent)),
            reasons.get((row.tenant, row.agent), ""), held.get((row.tenant, row.agent)))
        for row in rows
    }
    accounts = tuple(account_views(repo, budget)) if repo is not None and budget is not None else ()
    return FleetView(desired.host, now, tuple(rows), agents, accounts, tuple(ps_notes(desired, observed)),
                     tuple(problems), tuple(plan.lanes), tasks)


def task_rows(repo: FleetRepo | None, lanes: LanePlan | None) -> tuple[TaskRow, ...]:
    """Each lane task's fleet view with its title and mission, tenant by tenant."""
    if lanes is None:
        return ()
    out: list[TaskRow] = []
    for tenant in sorted(lanes.tenants):
        spec = repo.tenants.get(tenant) if repo is not None else None
        missions = {t.id: m for m in (spec.tasks.missions if spec and spec.tasks else ()) for t in m.tasks}
        titles = {t.id: t.title for t in ordered_tasks(spec.tasks if spec else None)}
        out += [TaskRow(v, titles.get(v.task, ""), missions[v.task].id if v.task in missions else "")
                for v in lanes.tenants[tenant].tasks]
    return tuple(out)


def _detail(row: PsRow, beat: Heartbeat | None, decision: Decision | None, record: RestartRecord | None,
            wait: Wait | None, planned_reason: str, task: TaskRow | None) -> AgentDetail:
    rung = None if decision is None else Rung(
        decision.rung, decision.model, decision.runtime, decision.state.value, decision.account, decision.rule,
        decision.reason, tuple(r.label() for r in decision.rungs))
    restarts = Restarts(
        attempts=wait.attempts if wait else record.attempts if record else 0,
        last_at=record.last_at if record else None, last_reason=record.last_reason if record else "",
        backoff_until=wait.until if wait else None, stalled=wait.stalled if wait else False,
        message=wait.message if wait else "")
    return AgentDetail(row, _conditions(row, rung, restarts, planned_reason), beat, row.model, row.desired_model,
                       None if rung is None else rung.model, rung, restarts, planned_reason, task)


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


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """The tasks page's filters; an empty field matches everything.

    >>> TaskFilters.of({"lane": "api", "state": " done "})
    TaskFilters(tenant='', lane='api', state='done')
    """

    tenant: str = ""
    lane: str = ""
    state: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> TaskFilters:
        return cls(**{k: params.get(k, "").strip() for k in ("tenant", "lane", "state")})

    def matches_lane(self, lane: LaneView) -> bool:
        return (not self.tenant or lane.tenant == self.tenant) and (not self.lane or lane.lane == self.lane)

    def matches(self, task: TaskRow) -> bool:
        v = task.view
        return ((not self.tenant or v.tenant == self.tenant) and (not self.lane or (v.lane or "") == self.lane)
                and (not self.state or v.state.value == self.state))


def task_choices(view: FleetView) -> dict[str, list[str]]:
    """The values each task filter can take in this view (every state, so a filter on
    `done` stays selectable before any task is done)."""
    return {
        "tenant": sorted({t.view.tenant for t in view.tasks} | {lane.tenant for lane in view.lanes}),
        "lane": sorted({t.view.lane or "" for t in view.tasks} | {lane.lane for lane in view.lanes}),
        "state": [s.value for s in TaskState],
    }


def lane_cells(lane: LaneView) -> tuple[str, ...]:
    """The lanes table's cells (LANE_HEADERS), the same on every surface."""
    return (lane.lane, lane.tenant, lane.host, str(lane.running), str(lane.desired), str(lane.open),
            str(lane.queued), ", ".join(lane.workers) or NONE, lane.detail())


def task_cells(task: TaskRow, now: datetime) -> tuple[str, ...]:
    """The tasks table's cells (TASK_HEADERS); SINCE is an age at the view's time."""
    v = task.view
    since = NONE if v.since is None else human_age(max(0, int((now - v.since).total_seconds())))
    return (v.task, v.tenant, v.lane or NONE, v.state.value, v.agent or NONE, since, v.note or NONE, task.title or NONE)


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
        "task": None if detail.task is None else task_json(detail.task),
    }


def lane_json(lane: LaneView) -> dict[str, Any]:
    return {"tenant": lane.tenant, "lane": lane.lane, "host": lane.host, "desired": lane.desired,
            "running": lane.running, "open": lane.open, "queued": lane.queued, "workers": list(lane.workers),
            "reason": lane.detail(), "summary": lane.summary()}


def task_json(task: TaskRow) -> dict[str, Any]:
    v = task.view
    return {"tenant": v.tenant, "task": v.task, "mission": task.mission, "title": task.title, "lane": v.lane,
            "state": v.state.value, "agent": v.agent, "since": _iso(v.since), "note": v.note}


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
        "lanes": [lane_json(lane) for lane in view.lanes], "tasks": [task_json(t) for t in view.tasks],
        "notes": list(view.notes), "problems": list(view.problems),
    }
