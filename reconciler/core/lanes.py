"""Lane scaling: a lane's open tasks -> how many of its workers run, and which.

It sits in the tick between the observe step and the budget policy (engine/tick.py): the
roster's lanes come with their whole pool of workers built (core/desired.py), and this
module picks the workers that are desired this tick, the way KEDA sizes a Deployment by
queue depth. Pure: the tasks, what was observed (sessions and heartbeats), the lane
memory the engine kept (each worker's last activity, which task each worker holds), the
agents' reports (`fleet task done|blocked`) and `now` are arguments. The result says
which workers to run, which to retire and why, each task's fleet view for status and
TASKS.md, and the memory to keep (core/lane_memory.py writes it as JSON).

The rules (docs/lanes.md):

- A lane task is *done* when people set `state: done` or its worker reported it done,
  *cancelled* when people say so, *blocked* when its worker reported it blocked (with the
  note), *waiting* while a task it depends on is not done; otherwise it is open: assigned
  to the worker that holds it (working when that worker's heartbeat says so), or queued.
  The latest word on a task wins: a person's reopen (`fleet task reopen`) after a report
  makes it open again, and an assignment older than the reopen is over (the task is
  queued, and dispatch hands it out again with a new brief).
- Desired workers = open tasks of the lane (assigned or not), clamped to [min, max].
- A worker that holds a task or whose own heartbeat says working or waiting is always
  kept; then idle running workers, lowest name first; then new workers, lowest free name
  first. A running worker beyond that is retired only when its heartbeat does not say it
  is busy and its own last activity is older than the lane's cooldown. A lane with
  `reuse: false` retires an idle worker as soon as it has reported on a task (one worker
  per task).
- The budget policy then sees the kept workers as any other ephemeral agent
  (concurrency, pacing ladder); a worker it queues gives its task back to the queue, and
  the task says why (`settle`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from reconciler.core.budget_types import BudgetPlan, State
from reconciler.core.desired import DesiredAgent, DesiredFleet, DesiredLane, DesiredTenant
from reconciler.core.lane_plan import LanePlan
from reconciler.model.observed import ObservedFleet
from reconciler.model.task_report import REOPENED, REPORT_STATES, TaskReport
from reconciler.spec.models import Task, Tasks, format_duration
from reconciler.spec.repo import FleetRepo

#: The heartbeat states that mean a worker is at work, whatever it holds.
BUSY_STATES = frozenset({"working", "waiting"})


class TaskState(StrEnum):
    """The fleet's view of a task (status and TASKS.md); people set only open/done/cancelled."""

    QUEUED = "queued"
    WAITING = "waiting"
    ASSIGNED = "assigned"
    WORKING = "working"
    BLOCKED = "blocked"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def open(self) -> bool:
        """Asks for a worker."""
        return self in (TaskState.QUEUED, TaskState.ASSIGNED, TaskState.WORKING)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A task held by a worker since `since`, recorded by dispatch (core/dispatch.py) before
    its brief is sent and confirmed when the worker's heartbeat acks `message`."""

    agent: str
    since: datetime
    message: str = ""  # the id of the last brief typed to the worker
    sent_at: datetime | None = None  # when that brief was (to be) typed
    attempts: int = 0  # briefs typed for this assignment
    acked: bool = False  # the worker's heartbeat acked `message`


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """A task held by one worker from `since` (exclusive) to `until` (inclusive; None: still
    held): the spend the worker's ledger entries record in it is the task's (core/task_spend.py)."""

    agent: str
    since: datetime
    until: datetime | None
    task: str


#: Closed assignment windows kept in the lane memory, the most recent; older ones are
#: forgotten (their tasks' spend is then no longer attributed).
MAX_CLOSED_WINDOWS = 10_000


@dataclass(frozen=True, slots=True)
class LaneMemory:
    """What the lanes of one tenant keep between ticks (`<tenant>/lanes.json`)."""

    last_active: Mapping[str, datetime] = field(default_factory=dict)  # worker -> its last activity
    assignments: Mapping[str, Assignment] = field(default_factory=dict)  # task id -> its holder
    closed: tuple[Window, ...] = ()  # assignments that ended: who held which task, from when to when

    def windows(self) -> tuple[Window, ...]:
        """Every assignment window, closed and still open."""
        held = (Window(a.agent, a.since, None, task) for task, a in sorted(self.assignments.items()))
        return (*self.closed, *held)


def close_windows(before: LaneMemory, after: LaneMemory, now: datetime) -> LaneMemory:
    """`after` with each assignment of `before` it no longer has (the task was reported,
    finished, given back or given to another worker) kept as a window closed at `now`.

    `now` is when the fleet let go of the task, not when the agent reported: an agent
    still writes its last words after `fleet task done`, and its next task starts later.

    >>> from datetime import UTC
    >>> t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)
    >>> held = LaneMemory({}, {"T1": Assignment("coder0-0", t0)})
    >>> close_windows(held, LaneMemory(), t1).closed == (Window("coder0-0", t0, t1, "T1"),)
    True
    >>> close_windows(held, held, t1) is held
    True
    """
    ended = tuple(Window(a.agent, a.since, now, task) for task, a in sorted(before.assignments.items())
                  if (still := after.assignments.get(task)) is None or (still.agent, still.since) != (a.agent, a.since))
    if not ended:
        return after
    return replace(after, closed=(*after.closed, *ended)[-MAX_CLOSED_WINDOWS:])


@dataclass(frozen=True, slots=True)
class TaskView:
    """One task as the fleet sees it: its state, who holds or reported it and since when, why."""

    tenant: str
    task: str
    lane: str | None
    state: TaskState
    agent: str | None = None
    since: datetime | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class LaneView:
    """One lane this tick: desired vs running workers, queue depth, and why."""

    tenant: str
    lane: str
    host: str
    desired: int
    running: int
    open: int
    queued: int
    workers: tuple[str, ...]
    reason: str  # in words that hold while nothing changes (status keeps it)
    cooling: tuple[tuple[str, timedelta], ...] = ()  # idle workers kept until their cooldown ends, and how long

    def summary(self) -> str:
        """One line for `fleet ps` and the dry-run, e.g. "lane shop/api: 1 running, 2 desired, 1 task queued (...)"."""
        tasks = f"{self.queued} task{'s' if self.queued != 1 else ''} queued"
        return f"lane {self.tenant}/{self.lane}: {self.running} running, {self.desired} desired, {tasks} ({self.detail()})"

    def detail(self) -> str:
        """The reason with each cooling worker's time left, e.g. "0 open tasks; coder0-0 idle, cooldown 4m left"."""
        left = "".join(f"; {name} idle, cooldown {max(1, int(-(-t.total_seconds() // 60)))}m left"
                       for name, t in self.cooling)
        return self.reason + left


@dataclass(frozen=True, slots=True)
class TenantLanes:
    lanes: tuple[LaneView, ...] = ()
    tasks: tuple[TaskView, ...] = ()
    workers: tuple[str, ...] = ()  # desired this tick, every lane of the tenant on this host
    retire: Mapping[str, str] = field(default_factory=dict)  # worker -> why it stops
    memory: LaneMemory = field(default_factory=LaneMemory)


def ordered_tasks(tasks: Tasks | None) -> list[Task]:
    """The tenant's tasks in file order (mission order, then task order)."""
    return [t for m in (tasks.missions if tasks else ()) for t in m.tasks]


def scale_lanes(
    repo: FleetRepo,
    desired: DesiredFleet,
    observed: ObservedFleet,
    memory: Mapping[str, LaneMemory],
    reports: Mapping[str, Iterable[TaskReport]],
    now: datetime,
) -> LanePlan:
    """The lane plan of every desired tenant with lanes on this host."""
    out: dict[str, TenantLanes] = {}
    for name, tenant in desired.tenants.items():
        lanes = [lane for lane in tenant.lanes if lane.host == desired.host]
        spec = repo.tenants.get(name)
        if not lanes or spec is None:
            continue
        out[name] = scale_tenant(tenant, lanes, ordered_tasks(spec.tasks), observed,
                                 memory.get(name, LaneMemory()), tuple(reports.get(name, ())), now)
    return LanePlan(out)


def latest_reports(reports: Iterable[TaskReport]) -> dict[str, TaskReport]:
    """Each task's word that stands: its agents' latest report (by time), unless a reopen
    names exactly that report (the one it reopened; no agent has reported since). A reopen
    naming no report (a hand-written file) stands when it is no older than the report.

    What is compared is which report was reopened, not the two times: a report typed in
    the second of a reopen still wins.
    """
    latest: dict[str, TaskReport] = {}
    reopens: dict[str, TaskReport] = {}
    for report in sorted(reports, key=lambda r: (r.ts, r.agent)):
        (reopens if report.state == REOPENED else latest)[report.task] = report
    for task, reopen in reopens.items():
        word = latest.get(task)
        if word is None or (reopen.reopens == (word.agent, word.ts) if reopen.reopens else reopen.ts >= word.ts):
            latest[task] = reopen
    return latest


def reopen_refusal(task: str, latest: TaskReport | None, spec_state: str | None = None, *,
                   known: bool = True, where: str = "this state directory") -> str | None:
    """Why `fleet task reopen` refuses `task`, or None: only a task whose latest word is an
    agent's done or blocked can be reopened, and tasks.yaml (`spec_state`, the state people
    set there, when the repository was read; `known` False: it was read and has no such
    task) wins over any report.

    >>> reopen_refusal("T7", None)[:60]
    'task T7: no agent has reported it done or blocked in this st'
    """
    if not known:
        return f"task {task}: tasks.yaml has no such task; check the id (fleet task add creates one)"
    if spec_state in ("done", "cancelled"):
        return (f"task {task} is set {spec_state} in tasks.yaml, which wins over any report; "
                f"set it open there with `fleet task set-state REPO {task} open` (a commit), not reopen")
    if latest is None:
        return (f"task {task}: no agent has reported it done or blocked in {where}, so there is "
                "nothing to reopen; check the id, and run this on the host of the task's lane (its reports "
                "are there), as the user its reconcile runs as")
    if latest.state not in REPORT_STATES:
        return (f"task {task} is already open: {latest.agent} reopened it at {latest.ts.isoformat()}; "
                "it is reopened again only after its worker reports it done or blocked")
    return None


def task_views(tenant: str, tasks: list[Task], pools: Mapping[str, tuple[str, ...]], memory: LaneMemory,
               reports: Mapping[str, TaskReport], busy: Mapping[str, str]) -> list[TaskView]:
    """Every task's fleet view (see the module's rules); `pools`: each lane's worker names,
    `busy`: the heartbeat state of each worker that has one."""
    views: dict[str, TaskView] = {}
    for task in tasks:
        views[task.id] = _view(tenant, task, pools, memory, reports.get(task.id), busy)
    done = {tid for tid, v in views.items() if v.state is TaskState.DONE}
    for task in tasks:
        waits = [d for d in task.depends_on if d not in done]
        if waits and views[task.id].state.open:
            views[task.id] = TaskView(tenant, task.id, task.lane, TaskState.WAITING,
                                      note=f"waits on {', '.join(waits)}")
    return [views[t.id] for t in tasks]


def _view(tenant: str, task: Task, pools: Mapping[str, tuple[str, ...]], memory: LaneMemory,
          report: TaskReport | None, busy: Mapping[str, str]) -> TaskView:
    if task.state == "done":
        return TaskView(tenant, task.id, task.lane, TaskState.DONE, note="set done in tasks.yaml")
    if task.state == "cancelled":
        return TaskView(tenant, task.id, task.lane, TaskState.CANCELLED, note="cancelled in tasks.yaml")
    if report is not None and report.state != REOPENED:
        state = TaskState.DONE if report.state == "done" else TaskState.BLOCKED
        return TaskView(tenant, task.id, task.lane, state, report.agent, report.ts, report.note)
    reopened = reopen_note(report)
    held = memory.assignments.get(task.id)
    if held is not None and report is not None and held.since <= report.ts:
        held = None  # given before the reopen: that worker's turn is over, the task goes out again
    if held is not None and task.lane is not None and held.agent in pools.get(task.lane, ()):
        state = TaskState.WORKING if busy.get(held.agent) == "working" else TaskState.ASSIGNED
        note = reopened if held.acked or not held.message else \
            f"brief {held.message} not acknowledged yet (attempt {held.attempts})"
        return TaskView(tenant, task.id, task.lane, state, held.agent, held.since, note)
    if report is not None:
        return TaskView(tenant, task.id, task.lane, TaskState.QUEUED, since=report.ts, note=reopened)
    return TaskView(tenant, task.id, task.lane, TaskState.QUEUED)


def reopen_note(report: TaskReport | None) -> str:
    """What an open task says of its reopen, e.g. "reopened by alice: the tests fail on main"."""
    if report is None or report.state != REOPENED:
        return ""
    return f"reopened by {report.agent}" + (f": {report.note}" if report.note else "")


@dataclass(slots=True)
class _Workers:
    """What one tick knows of a tenant's workers on this host."""

    running: dict[str, datetime] = field(default_factory=dict)  # worker -> its session's creation
    beats: dict[str, str] = field(default_factory=dict)  # worker -> its heartbeat's state
    acks: dict[str, str] = field(default_factory=dict)  # worker -> the last message id its heartbeat acked
    reported: dict[str, datetime] = field(default_factory=dict)  # worker -> its latest report
    holders: set[str] = field(default_factory=set)  # workers holding an open task
    last_active: dict[str, datetime] = field(default_factory=dict)

    def busy(self, name: str) -> bool:
        return name in self.holders or self.beats.get(name) in BUSY_STATES


def _observe_workers(tenant: str, lanes: list[DesiredLane], observed: ObservedFleet,
                     reports: tuple[TaskReport, ...]) -> _Workers:
    seen = _Workers()
    for lane in lanes:
        for worker in lane.workers:
            session = observed.session(worker.launch.socket, worker.name)
            if session is not None and session.marks.owned and session.marks.tenant == tenant \
                    and session.marks.agent == worker.name:
                seen.running[worker.name] = session.created
            beat = observed.heartbeats.get((tenant, worker.name))
            if beat is not None:
                seen.beats[worker.name] = beat.state
                if beat.ack:
                    seen.acks[worker.name] = beat.ack
    for report in reports:
        if report.state != REOPENED:  # a reopen is a person's word, not a worker's activity
            seen.reported[report.agent] = max(report.ts, seen.reported.get(report.agent, report.ts))
    return seen


def scale_tenant(tenant: DesiredTenant, lanes: list[DesiredLane], tasks: list[Task], observed: ObservedFleet,
                 memory: LaneMemory, reports: tuple[TaskReport, ...], now: datetime) -> TenantLanes:
    pools = {lane.name: tuple(w.name for w in lane.workers) for lane in tenant.lanes}
    seen = _observe_workers(tenant.name, lanes, observed, reports)
    latest = latest_reports(reports)
    views = task_views(tenant.name, [t for t in tasks if t.lane is not None], pools, memory, latest, seen.beats)
    seen.holders = {v.agent for v in views if v.state.open and v.agent}
    lane_views: list[LaneView] = []
    retire: dict[str, str] = {}
    for lane in lanes:
        lane_views.append(_scale_lane(tenant.name, lane, pools[lane.name], views, seen, memory, now, retire))
    live = {}
    for view in views:
        held = memory.assignments.get(view.task)
        if view.state.open and held is not None and view.agent == held.agent:
            confirmed = held.acked or (bool(held.message) and seen.acks.get(held.agent) == held.message)
            live[view.task] = replace(held, acked=confirmed)
    views = [replace(v, note=reopen_note(latest.get(v.task)))
             if v.task in live and live[v.task].acked and v.note.startswith("brief ") else v for v in views]
    kept_memory = LaneMemory({n: t for n, t in sorted(seen.last_active.items()) if n not in retire}, live,
                             memory.closed)
    workers = tuple(w for v in lane_views for w in v.workers)
    # A lane runs on one host, and only that host hears its workers: another host's lane's
    # tasks are left to that host's status (TASKS.md joins them), never reported queued here.
    local = {lane.name for lane in lanes}
    views = [v for v in views if v.lane in local]
    return TenantLanes(tuple(lane_views), tuple(views), workers, retire, kept_memory)


def _scale_lane(tenant: str, lane: DesiredLane, pool: tuple[str, ...], views: list[TaskView], seen: _Workers,
                memory: LaneMemory, now: datetime, retire: dict[str, str]) -> LaneView:
    """One lane's kept workers (adding its retirements to `retire`)."""
    lane_tasks = [v for v in views if v.lane == lane.name]
    open_ = sum(1 for v in lane_tasks if v.state.open)
    queued = sum(1 for v in lane_tasks if v.state is TaskState.QUEUED)
    want = min(max(open_, lane.min), lane.max)
    for name in pool:
        if name in seen.running or name in seen.holders:
            times = [t for t in (memory.last_active.get(name), seen.running.get(name), seen.reported.get(name)) if t]
            seen.last_active[name] = max([*times, now] if seen.busy(name) or not times else times)
    keep = [n for n in pool if n in seen.holders or (n in seen.running and seen.busy(n))]
    idle = [n for n in pool if n in seen.running and n not in keep]
    spent = [] if lane.reuse else [n for n in idle if seen.reported.get(n, datetime.min.replace(tzinfo=now.tzinfo))
                                   >= seen.running[n]]
    for name in spent:  # one worker per task: done with its task, so gone at once
        retire[name] = f"lane {lane.name}: {name} has reported on its task, and the lane gives each task a fresh worker"
    idle = [n for n in idle if n not in spent]
    new = [n for n in pool if n not in seen.running and n not in keep]
    keep += (idle + new)[:max(want - len(keep), 0)]  # idle running workers first, then new ones, lowest first
    cooling: list[tuple[str, timedelta]] = []
    for name in idle:
        if name in keep:
            continue
        left = seen.last_active[name] + lane.cooldown - now
        if left > timedelta(0):
            keep.append(name)
            cooling.append((name, left))
            continue
        retire[name] = (f"lane {lane.name}: {name} is idle since {seen.last_active[name].isoformat()}, past its "
                        f"cooldown of {format_duration(lane.cooldown)}, and the lane needs {want} "
                        f"worker{'s' if want != 1 else ''} ({open_} open task{'s' if open_ != 1 else ''}, min {lane.min})")
    kept = tuple(n for n in pool if n in keep)
    return LaneView(tenant, lane.name, lane.host, want, sum(1 for n in pool if n in seen.running), open_, queued,
                    kept, _lane_reason(lane, open_, cooling), tuple(cooling))


def _lane_reason(lane: DesiredLane, open_: int, cooling: list[tuple[str, timedelta]]) -> str:
    """Why the lane has the workers it has, e.g. "3 open tasks, max 2"."""
    tasks = f"{open_} open task{'s' if open_ != 1 else ''}"
    if open_ > lane.max:
        why = f"{tasks}, max {lane.max}"
    elif open_ < lane.min:
        why = f"{tasks}, min {lane.min}"
    else:
        why = tasks
    for name, _ in cooling:
        why += f"; {name} idle, cooling down"
    return why


def with_workers(desired: DesiredFleet, plan: LanePlan) -> DesiredFleet:
    """`desired` with each tenant's desired workers among its agents (the same object when
    no tenant has lanes, so what is keyed on it stays cached)."""
    if not plan.tenants:
        return desired
    tenants = dict(desired.tenants)
    for name, lanes in plan.tenants.items():
        tenant = tenants[name]
        wanted = set(lanes.workers)
        pool: list[DesiredAgent] = [w for lane in tenant.lanes for w in lane.workers if w.name in wanted]
        tenants[name] = replace(tenant, agents=(*tenant.agents, *pool))
    return replace(desired, tenants=tenants)


def settle(plan: LanePlan, budget: BudgetPlan) -> LanePlan:
    """The lane plan after the budget policy: a worker it queues (or refuses) gives its task
    back to the queue, the task says why, and the assignment is forgotten."""
    decisions = budget.by_agent()
    if not decisions or not plan.tenants:
        return plan
    tenants = dict(plan.tenants)
    for name, lanes in plan.tenants.items():
        held = {w: d for w in lanes.workers if (d := decisions.get((name, w))) is not None and d.state is not State.RUN}
        if not held:
            continue
        views = []
        for view in lanes.tasks:
            decision = held.get(view.agent or "") if view.state.open else None
            if decision is None:
                views.append(view)
                continue
            views.append(replace(view, state=TaskState.QUEUED, agent=None, since=None,
                                 note=f"back in the queue: {view.agent} is {decision.state.value} by the budget "
                                      f"policy ({decision.rule})"))
        assignments = {t: a for t, a in lanes.memory.assignments.items() if a.agent not in held}
        lane_views = tuple(
            replace(v, reason=f"{v.reason}; {n} queued by budget",
                    queued=sum(1 for t in views if t.lane == v.lane and t.state is TaskState.QUEUED))
            if (n := sum(1 for w in v.workers if w in held)) else v
            for v in lanes.lanes)
        tenants[name] = replace(lanes, tasks=tuple(views), lanes=lane_views,
                                memory=replace(lanes.memory, assignments=assignments))
    return LanePlan(tenants)
