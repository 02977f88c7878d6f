"""Reopening a reported task (`fleet task reopen`), as the pure rule of core/lanes.py and
core/dispatch.py sees it: the latest word on a task wins, a reopen makes it open (queued,
with who reopened it and why), an assignment older than the reopen is over, and dispatch
hands the task out again with a new brief; tasks.yaml still wins over everything."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from reconciler.core.dispatch import typed
from reconciler.core.lanes import (
    Assignment,
    LaneMemory,
    TaskState,
    TaskView,
    close_windows,
    latest_reports,
    reopen_refusal,
)
from reconciler.model.task_report import REOPENED, TaskReport
from tests.core.factories import NOW
from tests.core.test_dispatch import tick, with_acks
from tests.core.test_lanes import MIN, World, load, outcome, report


def reopen(task: str, of: TaskReport | None = None, ago: timedelta = MIN, by: str = "alice",
           note: str = "the tests fail on main") -> TaskReport:
    """`by`'s reopen of `task`, naming the report `of` it reopens (None: a hand-written one)."""
    return TaskReport(by, task, REOPENED, note, NOW - ago, (of.agent, of.ts) if of else None)


def views(world: World) -> dict[str, TaskView]:
    _, lanes = outcome(world)
    return {v.task: v for v in lanes.tenants["shop"].tasks}


#: T1 done by coder0-0 an hour ago, its worker idle since; the other tasks are done or cancelled.
T1_DONE = report("coder0-0", "T1", ago=timedelta(hours=1), note="merged as PR 4")
DONE_T1 = World(done={"T2", "T3", "T5"}, workers={"coder0-0": timedelta(hours=2)}, reports=[T1_DONE])


def test_a_reopened_task_is_queued_and_says_who_reopened_it_and_why() -> None:
    world = replace(DONE_T1, reports=[*DONE_T1.reports, reopen("T1", T1_DONE, ago=2 * MIN)])
    doc, _ = outcome(world)
    t1 = views(world)["T1"]
    assert (t1.state, t1.agent, t1.since, t1.note) == (TaskState.QUEUED, None, NOW - 2 * MIN,
                                                        "reopened by alice: the tests fail on main")
    assert doc["lanes"][0]["open"] == 1 and doc["lanes"][0]["workers"] == ["coder0-0"], "the lane wants a worker again"


def test_without_a_reopen_the_task_stays_done() -> None:
    assert views(DONE_T1)["T1"].state is TaskState.DONE


def test_the_agents_later_report_wins_over_the_reopen() -> None:
    world = replace(DONE_T1, reports=[*DONE_T1.reports, reopen("T1", T1_DONE, ago=30 * MIN),
                                      report("coder0-0", "T1", ago=MIN, note="fixed the flake")])
    t1 = views(world)["T1"]
    assert (t1.state, t1.agent, t1.note) == (TaskState.DONE, "coder0-0", "fixed the flake")


def test_a_blocked_task_can_be_reopened_too() -> None:
    blocked = report("coder0-0", "T1", "blocked", ago=timedelta(hours=1), note="needs a key")
    world = replace(DONE_T1, reports=[blocked, reopen("T1", blocked, note="the key is in the vault now")])
    assert views(world)["T1"].note == "reopened by alice: the key is in the vault now"
    assert views(world)["T1"].state is TaskState.QUEUED


def test_what_is_compared_is_which_report_was_reopened_not_the_second() -> None:
    """Stamps are to the second: a reopen in the second of the report it reopens stands,
    and a report in the second of the reopen (the worker was quick) wins over it."""
    done = TaskReport("zed", "T1", "done", "", NOW - MIN)
    assert latest_reports([done, reopen("T1", done)])["T1"].state == REOPENED
    again = TaskReport("zed", "T1", "done", "redone", NOW - MIN + timedelta(seconds=1))
    assert latest_reports([again, reopen("T1", done, ago=MIN - timedelta(seconds=1))])["T1"] == again
    other = TaskReport("amy", "T1", "blocked", "stuck", NOW - MIN + timedelta(seconds=1))  # another agent
    assert latest_reports([done, other, reopen("T1", done, ago=MIN - timedelta(seconds=1))])["T1"] == other


def test_a_reopen_naming_no_report_goes_by_time() -> None:
    done = TaskReport("zed", "T1", "done", "", NOW - 2 * MIN)
    assert latest_reports([done, reopen("T1")])["T1"].state == REOPENED
    assert latest_reports([done, reopen("T1", ago=3 * MIN)])["T1"] == done


def test_an_assignment_older_than_the_reopen_is_over_and_the_brief_goes_out_again() -> None:
    """The lane memory still holds T1 for coder0-0 (acked: the run that saw the done report
    never applied). The reopen ends that turn: coder0-0 does not hold T1 again without a
    brief; dispatch gives T1 out afresh, with a new message id, attempt 1."""
    old = Assignment("coder0-0", NOW - timedelta(hours=3), "msg-00000001", NOW - timedelta(hours=3), 1, True)
    world = replace(DONE_T1, memory=LaneMemory({}, {"T1": old}), reports=[*DONE_T1.reports, reopen("T1", T1_DONE)])
    lanes, sent = tick(world)
    assert [(d.agent, d.task, d.attempt) for d in sent] == [("coder0-0", "T1", 1)]
    assert sent[0].message != old.message and sent[0].reason == "coder0-0 is idle and healthy"
    held = lanes.tenants["shop"].memory.assignments["T1"]
    assert (held.since, held.message, held.acked) == (NOW, sent[0].message, False), "a fresh assignment"
    t1 = next(v for v in lanes.tenants["shop"].tasks if v.task == "T1")
    assert (t1.state, t1.agent) == (TaskState.ASSIGNED, "coder0-0")


def test_once_acked_the_new_assignment_holds_and_shows_the_reopen() -> None:
    world = replace(DONE_T1, reports=[*DONE_T1.reports, reopen("T1", T1_DONE)], concurrency=3)
    lanes, sent = tick(world)
    later = replace(world, memory=typed(lanes.tenants["shop"].memory, {"T1": sent[0].message}, NOW),
                    beats={"coder0-0": "working"})
    lanes2, again = tick(later, NOW + MIN, with_acks(later, {"coder0-0": sent[0].message}, NOW + MIN))
    assert again == (), "an acked brief of the reopened task is not typed again"
    t1 = next(v for v in lanes2.tenants["shop"].tasks if v.task == "T1")
    assert (t1.state, t1.agent, t1.since, t1.note) == (TaskState.WORKING, "coder0-0", NOW,
                                                        "reopened by alice: the tests fail on main")


def test_the_reopened_task_keeps_its_spend_windows() -> None:
    """The old turn is a closed window of T1 and the new one opens on T1: one task's spend."""
    old = Assignment("coder0-0", NOW - timedelta(hours=3), "msg-00000001", NOW - timedelta(hours=3), 1, True)
    world = replace(DONE_T1, memory=LaneMemory({}, {"T1": old}), reports=[*DONE_T1.reports, reopen("T1", T1_DONE)])
    lanes, _ = tick(world)
    kept = close_windows(world.memory, lanes.tenants["shop"].memory, NOW)
    assert [(w.task, w.agent, w.since, w.until) for w in kept.windows()] == [
        ("T1", "coder0-0", old.since, NOW), ("T1", "coder0-0", NOW, None)]


def test_tasks_yaml_done_wins_over_a_reopen() -> None:
    world = replace(DONE_T1, done={"T1", "T2", "T3", "T5"}, reports=[*DONE_T1.reports, reopen("T1", T1_DONE)])
    assert views(world)["T1"].state is TaskState.DONE


def test_a_reopen_is_not_the_reopeners_activity() -> None:
    """An agent that reopens a task (an orchestrator, say) is not a worker reporting: with
    `reuse: false` a worker is spent by its own reports only."""
    world = World(reuse=False, done={"T1", "T2", "T3", "T5"}, workers={"coder0-0": timedelta(hours=1)},
                  reports=[reopen("T4", by="coder0-0")])
    doc, _ = outcome(world)
    assert not any("fresh worker" in a["message"] for a in doc["actions"]), doc["actions"]


def test_reopen_refuses_what_is_not_reported_done_or_blocked() -> None:
    repo = load(World(done={"T1"}))
    spec = {t.id: t.state for m in repo.tenants["shop"].tasks.missions for t in m.tasks}  # type: ignore[union-attr]
    done = report("coder0-0", "T3")
    assert reopen_refusal("T3", done, spec["T3"]) is None
    assert reopen_refusal("T3", report("coder0-0", "T3", "blocked")) is None
    assert "no agent has reported it done or blocked" in (reopen_refusal("T3", None, spec["T3"]) or "")
    assert "already open: alice reopened it" in (reopen_refusal("T3", reopen("T3"), spec["T3"]) or "")
    said = reopen_refusal("T1", report("coder0-0", "T1"), spec["T1"]) or ""
    assert "set done in tasks.yaml" in said and "fleet task set-state REPO T1 open" in said
    assert "set cancelled in tasks.yaml" in (reopen_refusal("T4", report("coder0-0", "T4"), spec["T4"]) or "")
    assert "tasks.yaml has no such task" in (reopen_refusal("T9", done, known=False) or "")
