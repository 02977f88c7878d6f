"""Exact per-task spend: ledger entries go to the task their agent held when they accrued,
and TASKS.md and MISSION-MANIFEST.md show it (core/task_spend.py, core/render.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from reconciler.core.lane_memory import lanes_json, parse_lanes
from reconciler.core.lanes import (
    MAX_CLOSED_WINDOWS,
    Assignment,
    LaneMemory,
    TaskState,
    TaskView,
    TenantLanes,
    Window,
    close_windows,
)
from reconciler.core.render import render_manifest, render_tasks
from reconciler.core.status import finished_tasks, ledger_summary
from reconciler.core.task_spend import attribute, task_tokens
from reconciler.model.ledger import LedgerEntry
from reconciler.model.status import LaneStatus, LearnedHint, TaskSpend, TaskStatus, TenantStatus
from reconciler.spec.load import load_repo
from tests.core.factories import EXAMPLES, NOW

MIN = timedelta(minutes=1)


class MarkdownSnapshot(SingleFileSnapshotExtension):
    _write_mode = WriteMode.TEXT
    file_extension = "md"


@pytest.fixture
def snapshot_md(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(MarkdownSnapshot)


def entry(agent: str | None, at: datetime, tokens: int, task: str | None = None, *, host: str = "shop-1",
          model: str = "sonnet") -> LedgerEntry:
    return LedgerEntry(at, "shop", host, agent, "coder", task, None, model, "heartbeat", f"{agent}@1", tokens, None,
                       tokens, None, "estimated")


# --- attribution --------------------------------------------------------------------------


def test_an_entry_at_the_assignment_came_before_it_and_one_at_the_release_is_the_tasks() -> None:
    window = Window("coder0-0", NOW, NOW + 10 * MIN, "T1")
    got = attribute([entry("coder0-0", NOW - MIN, 1), entry("coder0-0", NOW, 2),
                     entry("coder0-0", NOW + timedelta(microseconds=1), 4), entry("coder0-0", NOW + 10 * MIN, 8),
                     entry("coder0-0", NOW + 10 * MIN + timedelta(microseconds=1), 16)], [window])
    assert [(e.tokens, e.task) for e in got] == [(1, None), (2, None), (4, "T1"), (8, "T1"), (16, None)]


def test_an_agent_that_worked_three_tasks_has_each_tasks_tokens() -> None:
    windows = [Window("coder0-0", NOW, NOW + 10 * MIN, "T1"),
               Window("coder0-0", NOW + 10 * MIN, NOW + 30 * MIN, "T2"),  # given the next task in the same tick
               Window("coder0-0", NOW + 40 * MIN, None, "T3"),  # still held
               Window("coder0-1", NOW, None, "T4")]
    ledger = [entry("coder0-0", NOW + 5 * MIN, 100), entry("coder0-0", NOW + 10 * MIN, 50),  # T1
              entry("coder0-0", NOW + 11 * MIN, 7), entry("coder0-0", NOW + 30 * MIN, 3),  # T2
              entry("coder0-0", NOW + 35 * MIN, 999),  # idle between tasks: no task's
              entry("coder0-0", NOW + 41 * MIN, 20), entry("coder0-0", NOW + 9 * 60 * MIN, 30),  # T3, open-ended
              entry("coder0-1", NOW + 5 * MIN, 1_000),  # another worker's, in its own window
              entry("orchestrator", NOW + 5 * MIN, 5, task="T9"),  # a named agent's task stays its own
              entry(None, NOW + 5 * MIN, 77)]  # unattributed spend is no task's
    assert task_tokens(ledger, reversed(windows)) == {
        ("T1", "coder0-0"): 150, ("T2", "coder0-0"): 10, ("T3", "coder0-0"): 50, ("T4", "coder0-1"): 1_000,
        ("T9", "orchestrator"): 5}


def test_a_task_worked_by_two_agents_in_turn_has_both_their_tokens() -> None:
    windows = [Window("coder0-0", NOW, NOW + 10 * MIN, "T1"), Window("coder0-1", NOW + 10 * MIN, None, "T1")]
    ledger = [entry("coder0-0", NOW + 5 * MIN, 40), entry("coder0-1", NOW + 15 * MIN, 2), entry("coder0-0", NOW + 15 * MIN, 9)]
    assert task_tokens(ledger, windows) == {("T1", "coder0-0"): 40, ("T1", "coder0-1"): 2}


# --- the lane memory keeps the windows ----------------------------------------------------


def test_a_released_or_reassigned_task_closes_its_window_at_the_release() -> None:
    before = LaneMemory({}, {"T1": Assignment("coder0-0", NOW), "T2": Assignment("coder0-1", NOW),
                             "T3": Assignment("coder0-1", NOW - MIN)})
    later = NOW + 5 * MIN
    after = LaneMemory({}, {"T2": Assignment("coder0-0", later), "T3": Assignment("coder0-1", NOW - MIN, "msg-1")})
    kept = close_windows(before, after, later)
    assert kept.closed == (Window("coder0-0", NOW, later, "T1"), Window("coder0-1", NOW, later, "T2"))
    assert kept.assignments == after.assignments  # T3 still held by its worker: its brief's retries change nothing
    assert kept.windows() == (*kept.closed, Window("coder0-0", later, None, "T2"), Window("coder0-1", NOW - MIN, None, "T3"))
    assert parse_lanes(lanes_json(kept)) == kept


def test_the_history_is_capped_to_the_most_recent_windows() -> None:
    old = tuple(Window("coder0-0", NOW, NOW, f"T{i}") for i in range(MAX_CLOSED_WINDOWS))
    kept = close_windows(LaneMemory({}, {"X": Assignment("coder0-0", NOW)}, old), LaneMemory({}, {}, old), NOW + MIN)
    assert len(kept.closed) == MAX_CLOSED_WINDOWS and kept.closed[-1].task == "X" and kept.closed[0].task == "T1"


# --- status: exact when final, learned from done tasks ------------------------------------


def test_status_spend_is_exact_for_a_finished_task_and_learned_only_from_done_ones() -> None:
    windows = (Window("coder0-0", NOW, NOW + 10 * MIN, "T1"), Window("coder0-0", NOW + 10 * MIN, NOW + 20 * MIN, "T3"),
               Window("coder0-0", NOW + 20 * MIN, None, "T2"))
    ledger = [entry("coder0-0", NOW + MIN, 12_345), entry("coder0-0", NOW + 11 * MIN, 2_500),
              entry("coder0-0", NOW + 21 * MIN, 4_321), entry("coder0-0", NOW + 21 * MIN, 5, host="other")]
    views = (TaskView("shop", "T1", "api", TaskState.DONE, "coder0-0"), TaskView("shop", "T3", "api", TaskState.BLOCKED),
             TaskView("shop", "T2", "api", TaskState.WORKING, "coder0-0"))
    lanes = TenantLanes(tasks=views, memory=LaneMemory({}, {"T2": Assignment("coder0-0", NOW + 20 * MIN)}, windows[:2]))
    final, done = finished_tasks({"T1": "open", "T2": "open", "T3": "open", "T4": "done"}, lanes)
    assert (final, done) == ({"T1", "T3", "T4"}, {"T1", "T4"})
    spend, learned = ledger_summary("shop", "shop-1", ledger, lanes.memory.windows(), final, done)
    assert spend == (TaskSpend("T1", "coder0-0", 12_345), TaskSpend("T2", "coder0-0", 4_000),  # working: to the thousand
                     TaskSpend("T3", "coder0-0", 2_500))
    assert learned == (LearnedHint("coder", "sonnet", 12_000, 12_000),)  # T1 only: T3 is blocked, T2 not finished


# --- TASKS.md and MISSION-MANIFEST.md -----------------------------------------------------


def lane_world() -> tuple[list[TenantStatus], str]:
    """The lanes example with T1 and T5 done (T1 past its projection), T2 working, T3 blocked."""
    at = NOW.isoformat(timespec="seconds")
    tasks = (TaskStatus("T1", "api", "done", "coder0-0", at, "merged as PR 42"),
             TaskStatus("T2", "api", "working", "coder0-1", at),
             TaskStatus("T3", "api", "blocked", "coder0-0", at, "needs the | staging key"),
             TaskStatus("T4", "api", "cancelled", note="cancelled in tasks.yaml"),
             TaskStatus("T5", "api", "done", "coder0-0", at, "cached"))
    spend = (TaskSpend("T1", "coder0-0", 520_000), TaskSpend("T2", "coder0-1", 31_000), TaskSpend("T3", "coder0-0", 12_345),
             TaskSpend("T5", "coder0-0", 90_000))
    lanes = (LaneStatus("api", 2, 2, 1, 0, ("coder0-0", "coder0-1"), "1 open task, min 0"),)
    here = TenantStatus("shop", "shop-1", "abc1234", "tmux-only", spend=spend, lanes=lanes, tasks=tasks)
    there = TenantStatus("shop", "shop-2", "abc1234", "tmux-only", spend=(TaskSpend("T2", "coder0-1", 1_000),))
    return [here, there], "abc1234"


def test_tasks_md_shows_each_tasks_spend_flags_the_overrun_and_learns_per_lane(snapshot_md: SnapshotAssertion) -> None:
    statuses, revision = lane_world()
    text = render_tasks(load_repo(EXAMPLES / "lanes"), statuses, revision)
    at = NOW.isoformat(timespec="seconds")
    # T1 and T5 are the lane's finished tasks: median (520,000 + 90,000) / 2, p90 the larger
    assert (f"| T1 | Paginate the list endpoint | api | done since {at} | coder0-0 | normal | 400,000 | "
            "520,000 (over by 30%) | 305,000 / 520,000 | merged as PR 42 |") in text
    assert f"| T2 | Document pagination | api | working since {at} | coder0-1 | normal | 100,000 | 32,000 |" in text
    assert text == snapshot_md


def test_the_mission_manifest_counts_spend_and_names_who_works_and_what_is_blocked(snapshot_md: SnapshotAssertion) -> None:
    statuses, revision = lane_world()
    repo = load_repo(EXAMPLES / "lanes")
    text = render_manifest(repo, statuses, revision)
    # 2 of 4 done (T4 cancelled is not counted), 850,000 projected, 654,345 spent (both hosts)
    assert ("| M1 | Paginated API | 2 / 4 (1 cancelled) | 850,000 | 654,345 | T1 | api | coder0-1 |") in text
    assert "| T3 | Rate-limit the list endpoint | coder0-0 | needs the \\| staging key |" in text
    assert render_manifest(repo, list(reversed(statuses)), revision) == text, "the same data, the same bytes"
    assert text == snapshot_md
