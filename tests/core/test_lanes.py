"""Lane scaling (core/lanes.py) through the budget policy and the planner, as one tick composes
them: each case is the `lanes` example with some workers running, some heartbeats, reports
and lane memory, and the outcome (lanes, task views, plan actions, memory to keep) is
snapshot-tested as JSON, so a reviewer reads what the fleet would do.

Update deliberately with `pytest --snapshot-update` and review the diff.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from reconciler.core.budget import decide_fleet
from reconciler.core.desired import DesiredAgent, DesiredFleet, build_desired, host_facts
from reconciler.core.lanes import (
    Assignment,
    LaneMemory,
    LanePlan,
    TaskState,
    scale_lanes,
    settle,
    with_workers,
)
from reconciler.core.plan import plan_json
from reconciler.core.planner import PlanOptions, plan
from reconciler.core.render import parse_status, render_status, render_tasks
from reconciler.core.status import lane_status
from reconciler.model.observed import Heartbeat, ObservedFleet, ObservedSession, Resolved
from reconciler.model.status import TenantStatus
from reconciler.model.task_report import TaskReport
from reconciler.spec.load import load_repo
from reconciler.spec.models import LaneWorktree
from reconciler.spec.repo import FleetRepo
from tests.core.factories import EXAMPLES, NOW, STATE_DIR, beat, observed, running
from tests.core.test_status_render import MarkdownSnapshot

HOST = "shop-1"
MIN = timedelta(minutes=1)


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.fixture
def snapshot_md(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(MarkdownSnapshot)


@dataclass
class World:
    """The lanes example at NOW, with what a case adds: tasks set done or cancelled by
    people, running workers (age of their session), their heartbeat states, reports, memory."""

    done: set[str] = field(default_factory=set)
    workers: dict[str, timedelta] = field(default_factory=dict)  # worker -> session age
    beats: dict[str, str] = field(default_factory=dict)  # worker -> heartbeat state
    reports: list[TaskReport] = field(default_factory=list)
    memory: LaneMemory = field(default_factory=LaneMemory)
    concurrency: int | None = 4
    reuse: bool = True


def load(world: World) -> FleetRepo:
    repo = load_repo(EXAMPLES / "lanes")
    assert repo.ok, repo.errors
    spec = repo.tenants["shop"]
    assert spec.tasks is not None and spec.budget is not None
    missions = [m.model_copy(update={"tasks": [t.model_copy(update={"state": "done"}) if t.id in world.done else t
                                               for t in m.tasks]}) for m in spec.tasks.missions]
    tasks = spec.tasks.model_copy(update={"missions": missions})
    budget = spec.budget.model_copy(update={"concurrency": world.concurrency})
    roster = spec.roster.model_copy(update={"lanes": [lane.model_copy(update={"reuse": world.reuse})
                                                      for lane in spec.roster.lanes]})
    return replace(repo, tenants={"shop": replace(spec, roster=roster, tasks=tasks, budget=budget)})


def pool(fleet: DesiredFleet) -> dict[str, DesiredAgent]:
    return {w.name: w for w in fleet.tenants["shop"].lanes[0].workers}


def observe(fleet: DesiredFleet, world: World) -> ObservedFleet:
    tenant = fleet.tenants["shop"]
    sessions: list[ObservedSession] = [running(a) for a in tenant.agents]
    beats: list[Heartbeat] = [beat(a) for a in tenant.agents]
    workers = pool(fleet)
    for name, age in world.workers.items():
        sessions.append(running(workers[name], created=NOW - age))
        beats.append(replace(beat(workers[name]), state=world.beats.get(name, "idle")))
    return observed({tenant.socket: sessions}, beats)


def outcome(world: World, now: datetime = NOW) -> tuple[dict[str, Any], LanePlan]:
    """One tick's lanes, budget and plan, composed as engine/tick.py composes them."""
    repo = load(world)
    fleet = build_desired(repo, host=HOST, state_dir=STATE_DIR)
    obs = observe(fleet, world)
    lanes = scale_lanes(repo, fleet, obs, {"shop": world.memory}, {"shop": world.reports}, now)
    fleet = with_workers(fleet, lanes)
    held = {("shop", a.agent): t for t, a in lanes.tenants["shop"].memory.assignments.items()}
    budget = decide_fleet(repo, fleet, {}, {}, now, held=held)
    lanes = settle(lanes, budget)
    result = plan(fleet, obs, now, PlanOptions(budget=budget, lanes=lanes))
    shop = lanes.tenants["shop"]
    doc = {
        "lanes": [{"lane": v.lane, "desired": v.desired, "running": v.running, "open": v.open, "queued": v.queued,
                   "workers": list(v.workers), "reason": v.reason, "detail": v.detail()} for v in shop.lanes],
        "tasks": [{"task": v.task, "state": v.state.value, "agent": v.agent,
                   "since": v.since.isoformat() if v.since else None, "note": v.note} for v in shop.tasks],
        "actions": [{"action": a.kind.value, "agent": a.agent, "rule": a.reason.rule, "message": a.reason.message}
                    for a in result.actions],
        "holds": [h.message for h in result.holds],
        "memory": {"last_active": {k: v.isoformat() for k, v in shop.memory.last_active.items()},
                   "assignments": {k: [a.agent, a.since.isoformat()] for k, a in shop.memory.assignments.items()}},
    }
    return doc, lanes


def report(agent: str, task: str, state: str = "done", ago: timedelta = 2 * MIN, note: str = "") -> TaskReport:
    return TaskReport(agent, task, state, note, NOW - ago)


class Case(NamedTuple):
    test_id: str
    world: Callable[[], World]
    check: Callable[[Mapping[str, Any]], bool]


def _actions(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(a["action"], a["agent"]) for a in doc["actions"]]


CASES = [
    Case("fresh-three-open-tasks-max-2", World,
         lambda d: _actions(d) == [("spawn", "coder0-0"), ("spawn", "coder0-1")]
         and d["lanes"][0]["reason"] == "3 open tasks, max 2"),
    Case("all-done-min-0-runs-nothing", lambda: World(done={"T1", "T2", "T3", "T5"}),
         lambda d: _actions(d) == [] and d["lanes"][0]["desired"] == 0),
    Case("done-reported-worker-cools-down",
         lambda: World(done={"T3", "T5"}, workers={"coder0-0": timedelta(hours=1)},
                       reports=[report("coder0-0", "T1"), report("coder0-0", "T2", ago=MIN)]),
         lambda d: _actions(d) == [] and "cooldown 4m left" in d["lanes"][0]["detail"]
         and d["lanes"][0]["reason"] == "0 open tasks; coder0-0 idle, cooling down"),
    Case("past-cooldown-worker-retires",
         lambda: World(done={"T3", "T5"}, workers={"coder0-0": timedelta(hours=1)},
                       reports=[report("coder0-0", "T1", ago=20 * MIN), report("coder0-0", "T2", ago=10 * MIN)]),
         lambda d: _actions(d) == [("stop", "coder0-0")] and d["actions"][0]["rule"] == "lane-retire"),
    Case("working-heartbeat-keeps-a-worker-past-cooldown",
         lambda: World(done={"T1", "T2", "T3", "T5"}, workers={"coder0-0": timedelta(hours=1)}, beats={"coder0-0": "working"}),
         lambda d: _actions(d) == [] and d["lanes"][0]["workers"] == ["coder0-0"]),
    Case("holder-kept-idle-one-retired",
         lambda: World(done={"T1", "T2", "T5"}, workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)},
                       memory=LaneMemory({"coder0-0": NOW - timedelta(hours=1)},
                                         {"T3": Assignment("coder0-1", NOW - 30 * MIN)})),
         lambda d: _actions(d) == [("stop", "coder0-0")] and d["tasks"][2]["state"] == "assigned"),
    Case("lowest-free-name-is-reused",
         lambda: World(workers={"coder0-1": 2 * MIN}),
         lambda d: _actions(d) == [("spawn", "coder0-0")]),
    Case("dead-holder-is-started-again-with-its-task",
         lambda: World(done={"T1", "T2", "T5"}, memory=LaneMemory({}, {"T3": Assignment("coder0-1", NOW - 30 * MIN)})),
         lambda d: _actions(d) == [("spawn", "coder0-1")] and d["tasks"][2]["agent"] == "coder0-1"),
    Case("budget-queues-the-less-urgent-holder-its-task-goes-back",
         lambda: World(concurrency=3, workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)},
                       memory=LaneMemory({}, {"T1": Assignment("coder0-0", NOW - 30 * MIN),
                                              "T3": Assignment("coder0-1", NOW - 20 * MIN)})),
         lambda d: _actions(d) == [("queue", "coder0-0")] and d["tasks"][0]["state"] == "queued"  # T1 normal, T3 high
         and "back in the queue" in d["tasks"][0]["note"] and list(d["memory"]["assignments"]) == ["T3"]),
    Case("one-worker-per-task-retires-at-once-and-starts-a-fresh-one",
         lambda: World(reuse=False, done={"T3", "T5"}, workers={"coder0-0": timedelta(hours=1)},
                       reports=[report("coder0-0", "T1", ago=MIN)]),
         lambda d: _actions(d) == [("stop", "coder0-0"), ("spawn", "coder0-1")]
         and "gives each task a fresh worker" in d["actions"][0]["message"]),
    Case("blocked-report-frees-the-worker",
         lambda: World(done={"T1", "T2", "T5"}, workers={"coder0-0": timedelta(hours=1)},
                       reports=[report("coder0-0", "T3", "blocked", ago=30 * MIN, note="needs an API key")],
                       memory=LaneMemory({}, {"T3": Assignment("coder0-0", NOW - timedelta(hours=1))})),
         lambda d: _actions(d) == [("stop", "coder0-0")] and d["tasks"][2]["state"] == "blocked"
         and d["memory"]["assignments"] == {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_lane_outcome(case: Case, snapshot_json: SnapshotAssertion) -> None:
    doc, _ = outcome(case.world())
    assert case.check(doc), doc
    assert doc == snapshot_json


def test_a_waiting_task_asks_for_no_worker() -> None:
    _, lanes = outcome(World())
    states = {v.task: v.state for v in lanes.tenants["shop"].tasks}
    assert states == {"T1": TaskState.QUEUED, "T2": TaskState.WAITING, "T3": TaskState.QUEUED,
                      "T4": TaskState.CANCELLED, "T5": TaskState.QUEUED}


def test_a_retired_worker_is_never_held_by_the_blast_radius_rule() -> None:
    """Both workers idle past cooldown with nothing to do: 2 of 4 sessions stop, and a third
    worker would make it more than half; lane retirements are not roster changes."""
    world = World(done={"T1", "T2", "T3", "T5"}, workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)})
    doc, _ = outcome(world)
    assert _actions(doc) == [("stop", "coder0-0"), ("stop", "coder0-1")] and doc["holds"] == []


def test_cooldown_counts_from_the_workers_own_last_activity() -> None:
    """A worker busy a minute ago is not retired, however old its session."""
    world = World(done={"T1", "T2", "T3", "T5"}, workers={"coder0-0": timedelta(days=1)},
                  memory=LaneMemory({"coder0-0": NOW - MIN}))
    doc, lanes = outcome(world)
    assert _actions(doc) == [] and lanes.tenants["shop"].memory.last_active == {"coder0-0": NOW - MIN}
    later, _ = outcome(world, now=NOW + 5 * MIN)  # (the core agents' heartbeats are stale by then: restarts)
    assert [a for a in _actions(later) if a[1].startswith("coder")] == [("stop", "coder0-0")]


def test_with_workers_keeps_the_fleet_object_without_lanes() -> None:
    repo = load_repo(EXAMPLES / "minimal")
    fleet = build_desired(repo, host="demo", state_dir=STATE_DIR)
    assert with_workers(fleet, scale_lanes(repo, fleet, observed({}), {}, {}, NOW)) is fleet


def test_status_and_tasks_md_show_each_lane_tasks_fleet_view(snapshot_md: SnapshotAssertion) -> None:
    """The fleet's view reaches status (and back, as TASKS.md reads it) and TASKS.md, never tasks.yaml."""
    world = World(done={"T5"}, workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)},
                  beats={"coder0-0": "working"},
                  reports=[report("coder0-1", "T3", "blocked", ago=10 * MIN, note="needs the | staging key")],
                  memory=LaneMemory({}, {"T1": Assignment("coder0-0", NOW - 30 * MIN)}))
    _, lanes = outcome(world)
    rows, tasks = lane_status(lanes.tenants["shop"])
    status = TenantStatus("shop", HOST, "abc1234", "tmux-only", lanes=rows, tasks=tasks)
    assert parse_status(render_status(status)) == status
    text = render_tasks(load(world), [status], "abc1234")
    assert "| api | shop-1 | coder0-0 | 2 / 1 | 1 | 0 | 1 open task |" in text  # coder0-1 blocked 10m ago: retired
    assert "| T3 | Rate-limit the list endpoint | api | blocked since" in text and "| coder0-1 |" in text and "needs the \\| staging key |" in text
    assert text == snapshot_md


def test_the_json_plan_carries_the_lanes() -> None:
    repo = load(World())
    fleet = build_desired(repo, host=HOST, state_dir=STATE_DIR)
    obs = observe(fleet, World())
    lanes = scale_lanes(repo, fleet, obs, {}, {}, NOW)
    doc = plan_json(plan(with_workers(fleet, lanes), obs, NOW, PlanOptions(lanes=lanes)))
    assert doc["lanes"] == [{"tenant": "shop", "lane": "api", "host": HOST, "desired": 2, "running": 0, "open": 3,
                             "queued": 3, "workers": ["coder0-0", "coder0-1"], "reason": "3 open tasks, max 2"}]
    assert [a["source"] for a in doc["actions"]] == ["tenants/shop/roster.yaml lanes[api]"] * 2


def test_a_lane_with_a_worktree_gives_each_worker_its_own_stable_workdir() -> None:
    repo = load(World())
    spec = repo.tenants["shop"]
    tree = LaneWorktree(repo="~/src/api", branch="fleet/{lane}/{agent}/{task}")
    roster = spec.roster.model_copy(update={"lanes": [lane.model_copy(update={"worktree": tree})
                                                      for lane in spec.roster.lanes]})
    repo = replace(repo, tenants={"shop": replace(spec, roster=roster)})
    fleet = build_desired(repo, host=HOST, state_dir=STATE_DIR)
    workers = pool(fleet)
    paths = {name: w.launch.workdir for name, w in workers.items()}
    assert paths == {n: f"{STATE_DIR}/shop/worktrees/{n}" for n in ("coder0-0", "coder0-1")}, "one tree each"
    again = pool(build_desired(repo, host=HOST, state_dir=STATE_DIR))
    assert {n: w.launch.spec_hash for n, w in again.items()} == {n: w.launch.spec_hash for n, w in workers.items()}
    assert workers["coder0-1"].worktree is not None
    assert workers["coder0-1"].worktree.task_branch("coder0-1", "T7", "api") == "fleet/api/coder0-1/T7"
    assert ("FLEET_LANE", "api") in workers["coder0-0"].launch.env
    _, workdirs = host_facts(fleet)
    assert not any("worktrees" in w for _, w in workdirs), "apply makes a worktree; it is not looked up (nor `~`)"


def test_only_a_lane_workers_pane_gets_the_path_to_fleet() -> None:
    fleet = build_desired(load(World()), host=HOST, state_dir=STATE_DIR)
    resolved = Resolved(pane_path="/opt/fleet/bin:/usr/bin")
    worker = resolved.launch(pool(fleet)["coder0-0"].launch)
    named = resolved.launch(fleet.tenants["shop"].agents[0].launch)
    assert ("PATH", "/opt/fleet/bin:/usr/bin") in worker.env and worker.spec_hash == pool(fleet)["coder0-0"].launch.spec_hash
    assert "PATH" not in dict(named.env)
