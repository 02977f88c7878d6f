"""spec/edit.py: round-trip edits keep every byte they do not change.

Each case's unified diff is a snapshot (`.diff` files a reviewer reads as they are):
only the edited lines may appear in it, so a comment, a blank line, a quote or the
order of keys that moved would show. Update with `pytest --snapshot-update`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from reconciler.errors import UserError
from reconciler.spec import edit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleets"

ROSTER = """\
# yaml-language-server: $schema=../../specs/roster.schema.json
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: shop   # the shop's own roster
host: shop-1
agents:
  - name: orchestrator  # always on
    role: orchestrator
  # the one who improves the fleet
  - name: enhancer
    role: enhancer
    env: {TZ: "UTC"}

  # a coder, pinned
  - name: coder
    role: coder
    model: 'opus'   # quoted as written

# the lanes come last
lanes:
  - name: api
    role: coder
"""

TASKS = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Tasks
tenant: shop
missions:
  - id: M1
    title: Paginated API
    tasks:
      - id: T1
        title: Paginate   # first
        lane: api
        depends_on: [T0]

      # the second task
      - id: T2
        title: "Document pagination"
        lane: api
        brief: |
          Write it down.

  # a mission of its own
  - id: M2
    title: Later
    tasks: []
# end of file
"""


def unified(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "before", "after", n=2))


class DiffSnapshot(SingleFileSnapshotExtension):
    """The diff of an edit, stored as a .diff file."""

    _write_mode = WriteMode.TEXT
    file_extension = "diff"


@pytest.fixture
def snapshot_diff(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(DiffSnapshot)


class Case(NamedTuple):
    test_id: str
    before: str
    change: Callable[[str], str]


CASES = [
    Case("agent-add-after-a-commented-last-item", ROSTER,
         lambda t: edit.add_agent(t, edit.NewAgent("reviewer", "code-review", model="sonnet", workdir="~/src"))),
    Case("agent-remove-middle-takes-its-comment", ROSTER, lambda t: edit.remove_agent(t, "enhancer")),
    Case("agent-remove-last-keeps-the-comment-below", ROSTER, lambda t: edit.remove_agent(t, "coder")),
    Case("task-add-to-a-named-mission", TASKS, lambda t: edit.add_task(t, edit.NewTask(
        "Add ETags", "api", "Send ETag headers.\nKeep 304s cheap.\n\n", mission="M1", projected_tokens=120000,
        urgency="high", depends_on=("T1", "T2")))[0]),
    Case("task-add-to-an-empty-flow-mission", TASKS, lambda t: edit.add_task(t, edit.NewTask(
        "Later work", "api", "", mission="M2"))[0]),
    Case("task-add-to-a-new-mission", TASKS, lambda t: edit.add_task(t, edit.NewTask(
        "Cache it", "api", "Cache the list.", mission="M3", id="T9"))[0]),
    Case("task-add-to-the-lanes-example", (EXAMPLES / "lanes/tenants/shop/tasks.yaml").read_text(),
         lambda t: edit.add_task(t, edit.NewTask("Add ETags", "api", "Send ETag headers."))[0]),
    Case("task-add-to-a-new-file", edit.new_tasks_file("shop"),
         lambda t: edit.add_task(t, edit.NewTask("First task", "api", "Do it."))[0]),
    Case("set-state-adds-the-key-before-the-comment", TASKS, lambda t: edit.set_task_state(t, "T1", "done")[0]),
    Case("set-state-of-the-last-task", TASKS, lambda t: edit.set_task_state(t, "T2", "cancelled")[0]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_an_edit_changes_only_its_own_lines(case: Case, snapshot_diff: SnapshotAssertion) -> None:
    after = case.change(case.before)
    assert edit.load(after).drift == 0, "the result is itself written back byte for byte"
    assert unified(case.before, after) == snapshot_diff


def test_every_example_file_is_written_back_byte_for_byte() -> None:
    files = sorted(EXAMPLES.glob("*/tenants/*/*.yaml"))
    assert len(files) > 10
    drifting = [str(p) for p in files if edit.load(p.read_text()).drift]
    assert drifting == []


def test_setting_a_task_open_that_is_open_changes_nothing() -> None:
    assert edit.set_task_state(TASKS, "T1", "open") == (TASKS, "open")


@pytest.mark.parametrize(("change", "says"), [
    (lambda: edit.add_task(TASKS, edit.NewTask("x", "api", "", id="T1")), "task id 'T1' is already in tasks.yaml"),
    (lambda: edit.add_task(TASKS, edit.NewTask("x", "api", "")), "several missions (M1, M2); say which with --mission"),
    (lambda: edit.set_task_state(TASKS, "T7", "done"), "no task 'T7' in tasks.yaml (ids here: T1, T2)"),
    (lambda: edit.set_task_state(TASKS, "T1", "blocked"), "state 'blocked' is not one people set"),
    (lambda: edit.add_agent(ROSTER, edit.NewAgent("coder", "coder")), "agent 'coder' is already in roster.yaml"),
    (lambda: edit.remove_agent(ROSTER, "ghost"), "no agent 'ghost' in roster.yaml (agents here: orchestrator, "),
    (lambda: edit.add_agent("a: [", edit.NewAgent("x", "y")), "the file is not valid YAML"),
], ids=["duplicate-id", "which-mission", "unknown-task", "not-a-person-state", "duplicate-agent", "unknown-agent",
        "broken-yaml"])
def test_mistakes_say_what_to_do(change: Callable[[], object], says: str) -> None:
    with pytest.raises(UserError, match=None) as caught:
        change()
    assert says in str(caught.value)


def test_generated_ids_are_stable_and_follow_the_id_rule() -> None:
    _, first = edit.add_task(TASKS, edit.NewTask("Paginate", "api", "", mission="M1"))
    text, again = edit.add_task(TASKS, edit.NewTask("Paginate", "api", "", mission="M1"))
    assert first == again == "paginate", "the same file and title give the same id"
    _, second = edit.add_task(text, edit.NewTask("Paginate!", "api", "", mission="M1"))
    assert second == "paginate-2"
    long = edit.slug_id("An extremely long title that goes on and on about pagination", [])
    assert len(long) <= 36 and long == "an-extremely-long-title-that-goes-on"
    assert edit.slug_id("¿¿??", []) == "task"


def test_adding_then_removing_agents_gives_back_the_very_bytes() -> None:
    text = edit.add_agent(edit.add_agent(ROSTER, edit.NewAgent("x", "coder")), edit.NewAgent("y", "coder"))
    assert edit.remove_agent(edit.remove_agent(text, "y"), "x") == ROSTER


def test_tasks_added_one_after_another_keep_the_comments_below_them() -> None:
    text, _ = edit.add_task(TASKS, edit.NewTask("A", "api", "brief a", mission="M1"))
    text, _ = edit.add_task(text, edit.NewTask("B", "api", "brief b", mission="M1"))
    text, _ = edit.set_task_state(text, "b", "done")
    assert "          brief b\n        state: done\n\n  # a mission of its own\n  - id: M2\n" in text
    assert text.endswith("    tasks: []\n# end of file\n")


def test_timestamps_are_written_back_as_they_were_after_the_loader_ran() -> None:
    from reconciler.spec.yamlsource import parse_source  # noqa: PLC0415

    text = "apiVersion: x\nreset_at: 2026-01-05T09:00:00Z\nagents: []\n"
    source = parse_source(text.encode(), "t.yaml")
    assert not isinstance(source, Exception) and source.tree is not None  # the loader's round trip has run
    assert edit.load(text).drift == 0
