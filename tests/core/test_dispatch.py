"""Dispatch (core/dispatch.py) on the `lanes` example, composed as the tick composes it:
which idle, healthy worker gets which queued task, which brief is typed again, and what
the lane memory records before apply types anything. A table of cases over a small world
(tests/core/test_lanes.py's), and a property: however a tick is interrupted between
recording and typing, no task is lost and none is held twice.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.budget import decide_fleet
from reconciler.core.desired import build_desired
from reconciler.core.dispatch import Dispatch, plan_dispatch, retry_after, typed
from reconciler.core.lanes import (
    Assignment,
    LaneMemory,
    LanePlan,
    TaskState,
    scale_lanes,
    settle,
    with_workers,
)
from reconciler.core.planner import PlanOptions, plan
from reconciler.core.render import render_brief
from reconciler.model.observed import ObservedFleet
from tests.core.factories import NOW, STATE_DIR
from tests.core.test_lanes import HOST, MIN, World, load, observe


def tick(world: World, now: datetime = NOW, obs: ObservedFleet | None = None) -> tuple[LanePlan, tuple[Dispatch, ...]]:
    repo = load(world)
    fleet = build_desired(repo, host=HOST, state_dir=STATE_DIR)
    obs = obs or observe(fleet, world)
    lanes = scale_lanes(repo, fleet, obs, {"shop": world.memory}, {"shop": world.reports}, now)
    fleet = with_workers(fleet, lanes)
    budget = decide_fleet(repo, fleet, {}, {}, now)
    lanes = settle(lanes, budget)
    result = plan(fleet, obs, now, PlanOptions(budget=budget, lanes=lanes))
    health = {(h.tenant, h.agent): h.health for h in result.health}
    return plan_dispatch(repo, lanes, obs, health, budget, {n: t.socket for n, t in fleet.tenants.items()}, now)


def with_acks(world: World, acks: dict[str, str], now: datetime = NOW) -> ObservedFleet:
    """The world observed at `now` (every heartbeat 5 s old), each worker acking `acks`."""
    repo = load(world)
    fleet = build_desired(repo, host=HOST, state_dir=STATE_DIR)
    obs = observe(fleet, world)
    beats = {k: replace(b, ack=acks.get(k[1], b.ack), ts=now - timedelta(seconds=5)) for k, b in obs.heartbeats.items()}
    return replace(obs, heartbeats=beats, taken_at=now)


def test_idle_healthy_workers_get_the_most_urgent_tasks_first() -> None:
    world = World(workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)})
    lanes, sent = tick(world)
    assert [(d.agent, d.task, d.attempt) for d in sent] == [("coder0-0", "T3", 1), ("coder0-1", "T1", 1)]
    memory = lanes.tenants["shop"].memory.assignments
    assert {t: (a.agent, a.message, a.attempts, a.acked) for t, a in memory.items()} == {
        "T3": ("coder0-0", sent[0].message, 1, False), "T1": ("coder0-1", sent[1].message, 1, False)}
    views = {v.task: v for v in lanes.tenants["shop"].tasks}
    assert views["T3"].state is TaskState.ASSIGNED and "not acknowledged yet" in views["T3"].note
    assert views["T5"].state is TaskState.QUEUED


def test_a_worker_just_spawned_gets_nothing_until_it_heartbeats_healthy() -> None:
    _, sent = tick(World())  # nothing runs: two workers are spawned this tick
    assert sent == ()


def test_the_ack_confirms_and_nothing_is_typed_again() -> None:
    world = World(workers={"coder0-0": timedelta(hours=1)}, concurrency=3)
    lanes, sent = tick(world)
    assert [d.task for d in sent] == ["T3"]
    later = replace(world, memory=typed(lanes.tenants["shop"].memory, {"T3": sent[0].message}, NOW))
    lanes2, again = tick(later, NOW + MIN, with_acks(later, {"coder0-0": sent[0].message}, NOW + MIN))
    assert again == ()
    held = lanes2.tenants["shop"].memory.assignments["T3"]
    assert held.acked and held.agent == "coder0-0"
    assert next(v for v in lanes2.tenants["shop"].tasks if v.task == "T3").note == ""


def test_an_unacked_brief_is_typed_again_after_its_backoff() -> None:
    world = World(workers={"coder0-0": timedelta(hours=1)}, concurrency=3)
    lanes, sent = tick(world)
    untyped = replace(world, memory=lanes.tenants["shop"].memory)
    _, again = tick(untyped, NOW + timedelta(seconds=1))  # recorded, never typed: the same brief at once
    assert [(d.message, d.attempt) for d in again] == [(sent[0].message, 1)] and "not typed" in again[0].reason
    later = replace(world, memory=typed(lanes.tenants["shop"].memory, {"T3": sent[0].message}, NOW))
    _, soon = tick(later, NOW + 10 * timedelta(seconds=1))
    assert soon == ()
    _, due = tick(later, NOW + retry_after(1))
    assert [(d.agent, d.task, d.attempt) for d in due] == [("coder0-0", "T3", 2)]
    assert due[0].message != sent[0].message and "not acknowledged after attempt 1" in due[0].reason


def test_a_restarted_holder_gets_its_brief_again() -> None:
    sent_at = NOW - 30 * MIN
    memory = LaneMemory({}, {"T3": Assignment("coder0-0", sent_at, "msg-00000001", sent_at, 1, True)})
    world = World(workers={"coder0-0": 5 * MIN}, memory=memory, concurrency=3)  # its session is newer than the brief
    _, sent = tick(world)
    assert [(d.agent, d.task, d.attempt) for d in sent] == [("coder0-0", "T3", 2)]
    assert "restarted since its brief was typed" in sent[0].reason


def test_a_worker_queued_by_the_budget_gets_no_brief() -> None:
    world = World(workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)}, concurrency=3)
    _, sent = tick(world)
    assert [d.agent for d in sent] == ["coder0-0"]


def test_the_brief_says_what_to_do_and_how_to_report() -> None:
    repo = load(World())
    spec = repo.tenants["shop"].tasks
    assert spec is not None
    mission = spec.missions[0]
    text = render_brief("shop", "coder0-0", "api", mission, mission.tasks[0])
    assert text.startswith("# Task T1: Paginate the list endpoint\n")
    assert "Add cursor pagination to GET /items" in text and "400,000 tokens" in text
    assert '`fleet task done T1 --note "' in text and "`fleet task blocked T1 --note" in text


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=400)), min_size=1, max_size=8))
def test_interrupted_ticks_never_lose_or_double_a_task(steps: list[tuple[bool, int]]) -> None:
    """Each step is one tick `seconds` later; the flag says whether apply got to type the
    briefs (and record that it did) before the process died; the assignments are recorded
    either way, as apply writes them first. An acked brief is seen at the next tick.
    Invariants: every worker holds at most one task, a held task is open and its view names
    its holder, and a held brief is acked, or typed and waiting out its back-off, or
    planned to be typed this very tick (the same message when it may already have been)."""
    world = World(workers={"coder0-0": timedelta(hours=1), "coder0-1": timedelta(hours=1)}, concurrency=4)
    now = NOW
    reached: dict[str, str] = {}  # worker -> the last message that reached its pane
    for was_typed, seconds in steps:
        now += timedelta(seconds=seconds)
        obs = with_acks(world, reached, now)
        lanes, sent = tick(world, now, obs)
        memory = lanes.tenants["shop"].memory
        holders = [a.agent for a in memory.assignments.values()]
        assert len(holders) == len(set(holders)), memory
        views = {v.task: v for v in lanes.tenants["shop"].tasks}
        planned = {d.task: d.message for d in sent}
        for task, a in memory.assignments.items():
            assert views[task].state.open and views[task].agent == a.agent
            waiting = a.sent_at is not None and now - a.sent_at < retry_after(a.attempts)
            assert a.acked or waiting or planned.get(task) == a.message, (a, sent)
        if was_typed:  # apply typed them and recorded so; else the process died in between
            reached |= {d.agent: d.message for d in sent}
            memory = typed(memory, planned, now)
        world = replace(world, memory=memory)
    assert set(world.memory.assignments) <= {"T1", "T3", "T5"}  # the open, unblocked tasks


@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_retry_after_grows_and_is_capped(attempts: int) -> None:
    assert timedelta(seconds=30) <= retry_after(attempts) <= timedelta(minutes=5)
