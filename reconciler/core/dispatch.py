"""Dispatch: which idle worker gets which queued task this tick, and which brief is typed again.

It follows the lanes' scaling and the plan in the tick (engine/tick.py): pure, like them.
An idle, healthy worker of a lane that holds no task gets the lane's next queued task
(most urgent first, then mission order, then file order); the assignment goes into the
lane memory with the id of the brief's message *before* apply types it (engine/dispatch.py),
and the worker's heartbeat acking that id confirms it (core/lanes.py). Apply records when it
typed the brief (`sent_at`, `typed`). So a crash between recording and typing neither
loses the task (it is held, its brief not typed, and the next tick types it) nor gives it
to two workers (a task has one holder); a crash between typing and recording that it was
typed types the same message again (the same id: an agent that acked it acks it again).
A brief typed but not acked is typed again with back-off, and so is the brief of a holder
restarted since its brief was typed (a new process has not read it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from reconciler.core.budget_types import BudgetPlan, State
from reconciler.core.lane_plan import LanePlan
from reconciler.core.lanes import (
    Assignment,
    LaneMemory,
    TaskState,
    TaskView,
    TenantLanes,
    ordered_tasks,
)
from reconciler.model.observed import ObservedFleet, SocketKey
from reconciler.spec.models import Task
from reconciler.spec.repo import FleetRepo

URGENCY_RANK = {"critical": 0, "high": 1, "normal": 2}
#: An unacked brief is typed again after 30 s, then 60 s, ... at most every 5 min.
RETRY_FIRST = timedelta(seconds=30)
RETRY_MAX = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One brief to type: task `task` to worker `agent`, as message `message`."""

    tenant: str
    lane: str
    agent: str
    task: str
    message: str
    attempt: int
    reason: str


def retry_after(attempts: int) -> timedelta:
    """How long an unacked brief waits before it is typed again.

    >>> [int(retry_after(n).total_seconds()) for n in (1, 2, 3, 6, 9)]
    [30, 60, 120, 300, 300]
    """
    return min(RETRY_FIRST * int(2 ** max(min(attempts, 16) - 1, 0)), RETRY_MAX)


def message_id(tenant: str, task: str, agent: str, now: datetime, attempt: int) -> str:
    """A brief's message id, derived from the tick's own values: the core draws no random
    numbers, so a tick replays exactly (a later tick's `now` gives another id).

    >>> from datetime import UTC
    >>> message_id("shop", "T1", "coder0-0", datetime(2026, 1, 1, tzinfo=UTC), 1)[:4]
    'msg-'
    """
    digest = hashlib.sha256(f"{tenant}:{task}:{agent}:{now.isoformat()}:{attempt}".encode()).hexdigest()
    return f"msg-{digest[:8]}"


def next_tasks(tasks: list[Task], views: Mapping[str, TaskView], lane: str) -> list[Task]:
    """The lane's queued tasks in the order they are handed out: urgency, then file order."""
    order = {t.id: i for i, t in enumerate(tasks)}
    queued = [t for t in tasks if t.lane == lane and (v := views.get(t.id)) is not None and v.state is TaskState.QUEUED]
    return sorted(queued, key=lambda t: (URGENCY_RANK[t.urgency], order[t.id]))


def plan_dispatch(repo: FleetRepo, lanes: LanePlan, observed: ObservedFleet, health: Mapping[tuple[str, str], str],
                  budget: BudgetPlan, sockets: Mapping[str, SocketKey], now: datetime) -> tuple[LanePlan, tuple[Dispatch, ...]]:
    """The lane plan with this tick's assignments recorded, and the briefs to type.

    `health`: the planner's verdict per (tenant, agent); `sockets`: each tenant's socket,
    to find a worker's session."""
    decisions = budget.by_agent()
    tenants = dict(lanes.tenants)
    out: list[Dispatch] = []
    for name, tl in lanes.tenants.items():
        spec = repo.tenants.get(name)
        if spec is None:
            continue
        ready = {w for w in tl.workers if health.get((name, w)) == "healthy"
                 and ((d := decisions.get((name, w))) is None or d.state is State.RUN)}
        tenants[name], sent = _tenant(name, tl, ordered_tasks(spec.tasks), observed, ready, sockets.get(name), now)
        out += sent
    return LanePlan(tenants), tuple(out)


def _tenant(name: str, tl: TenantLanes, tasks: list[Task], observed: ObservedFleet, ready: set[str],
            socket: SocketKey | None, now: datetime) -> tuple[TenantLanes, list[Dispatch]]:
    held = dict(tl.memory.assignments)
    views = {v.task: v for v in tl.tasks}
    out: list[Dispatch] = []
    for task_id, a in sorted(held.items()):
        view = views.get(task_id)
        if view is None or not view.state.open or a.agent not in ready:
            continue
        session = observed.session(socket, a.agent) if socket is not None else None
        restarted = session is not None and a.sent_at is not None and session.created > a.sent_at
        due = a.sent_at is None or now - a.sent_at >= retry_after(a.attempts)
        if restarted or (not a.acked and due):
            if restarted:
                why = f"{a.agent} was restarted since its brief was typed"
            elif a.sent_at is None:
                why = f"brief {a.message or '(none)'} was recorded but not typed (attempt {a.attempts})"
            else:
                why = f"brief {a.message or '(none)'} not acknowledged after attempt {a.attempts}"
            held[task_id], sent = _send(name, view.lane or "", a, task_id, now, why)
            out.append(sent)
    holders = {a.agent for t, a in held.items() if (v := views.get(t)) is not None and v.state.open}
    free = [w for w in tl.workers if w in ready and w not in holders
            and (beat := observed.heartbeats.get((name, w))) is not None and beat.state == "idle"]
    for lane in tl.lanes:
        idle = [w for w in free if w in lane.workers]
        for worker, task in zip(idle, next_tasks(tasks, views, lane.lane), strict=False):
            fresh = Assignment(worker, now)
            held[task.id], sent = _send(name, lane.lane, fresh, task.id, now, f"{worker} is idle and healthy")
            out.append(sent)
    if not out:
        return tl, []
    new_views = tuple(_held_view(v, held.get(v.task)) for v in tl.tasks)
    memory = replace(tl.memory, assignments=held)
    lanes = tuple(replace(v, queued=sum(1 for t in new_views if t.lane == v.lane and t.state is TaskState.QUEUED))
                  for v in tl.lanes)
    return replace(tl, tasks=new_views, memory=memory, lanes=lanes), out


def _send(tenant: str, lane: str, a: Assignment, task: str, now: datetime, why: str) -> tuple[Assignment, Dispatch]:
    """The assignment as recorded before the brief is typed: `sent_at` stays empty until
    apply has typed it (engine/dispatch.py), so a brief that never left is typed at the
    next tick, not a retry delay later."""
    if a.message and a.sent_at is None and not a.acked:  # recorded, maybe typed: the same message again
        return a, Dispatch(tenant, lane, a.agent, task, a.message, a.attempts, why)
    attempt = a.attempts + 1
    msg = message_id(tenant, task, a.agent, now, attempt)
    return (replace(a, message=msg, sent_at=None, attempts=attempt, acked=False),
            Dispatch(tenant, lane, a.agent, task, msg, attempt, why))


def typed(memory: LaneMemory, sent: Mapping[str, str], now: datetime) -> LaneMemory:
    """`memory` once apply has typed the briefs `sent` (task -> message id) at `now`."""
    held = {task: replace(a, sent_at=now) if sent.get(task) == a.message else a for task, a in memory.assignments.items()}
    return replace(memory, assignments=held)


def _held_view(view: TaskView, held: Assignment | None) -> TaskView:
    if held is None or not view.state.open or (view.agent == held.agent and held.acked):
        return view
    state = view.state if view.agent == held.agent else TaskState.ASSIGNED
    return replace(view, state=state, agent=held.agent, since=held.since,
                   note=f"brief {held.message} not acknowledged yet (attempt {held.attempts})")
