"""Malformed repositories, part 4: lanes in the roster and the task fields that drive them
(`lane`, `depends_on`, `state`); each mistake is one located error (docs/lanes.md).
See `corpus.py` for what a case asserts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.load import load_repo
from tests.spec.corpus import BASE_ROSTER, ROSTER, TASKS, Case, check, doc, params
from tests.spec.support import build_repo, error_lines

#: BASE_ROSTER with one lane: its lines 10 to 16.
LANE_ROSTER = BASE_ROSTER + doc("""
    lanes:
      - name: api
        role: coder
        min: 0
        max: 2
        cooldown: 5m
        workdir: ~/src/api
""")

#: Tasks of lane `api`: T1 on line 8, T2 on line 11 (its depends_on on line 14).
LANE_TASKS = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Tasks
    tenant: demo
    missions:
      - id: M1
        title: API
        tasks:
          - id: T1
            title: Paginate
            lane: api
          - id: T2
            title: Document pagination
            lane: api
            depends_on: [T1]
            state: open
""")


CASES = [
    Case("lane-max-below-min", {ROSTER: LANE_ROSTER.replace("min: 0", "min: 3")},
         "tenants/demo/roster.yaml:14:10", ("`max` (2) is below `min` (3)", "raise max or lower min")),
    Case("lane-max-zero", {ROSTER: LANE_ROSTER.replace("max: 2", "max: 0")},
         "tenants/demo/roster.yaml:14:10", ("`max` is 0; it must be at least 1",)),
    Case("lane-unknown-key", {ROSTER: LANE_ROSTER.replace("cooldown: 5m", "cooldwn: 5m")},
         "tenants/demo/roster.yaml:15:5", ("unknown key `cooldwn`", "did you mean `cooldown`?")),
    Case("lane-bad-cooldown", {ROSTER: LANE_ROSTER.replace("cooldown: 5m", "cooldown: soon")},
         "tenants/demo/roster.yaml:15:15", ("'soon' is not a duration",)),
    Case("lane-twice", {ROSTER: LANE_ROSTER + "  - name: api\n    role: tester\n"},
         "tenants/demo/roster.yaml:17:11", ("lane name 'api' is used twice", "first at lanes item 1")),
    Case("lane-unknown-runtime", {ROSTER: LANE_ROSTER + "    runtime: claud\n"},
         "tenants/demo/roster.yaml:17:14", ("lane api: runtime 'claud'", "is not defined in fleet.yaml; use one of stub")),
    Case("lane-model-off-ladder", {ROSTER: LANE_ROSTER + "    model: opus\n"},
         "tenants/demo/roster.yaml:17:12", ("lane api: model 'opus' is not on runtime 'stub''s ladder",)),
    Case("lane-unknown-host", {ROSTER: LANE_ROSTER + "    host: dragn\n"},
         "tenants/demo/roster.yaml:17:11", ("host 'dragn' is named by no roster or agent", "hosts: demo")),
    Case("lane-worker-name-too-long",
         {ROSTER: LANE_ROSTER.replace("role: coder", "role: " + "c" * 39)},
         "tenants/demo/roster.yaml:12:11", ("is not a valid agent name (at most 40 characters)", "use a shorter role")),
    Case("lane-relative-workdir", {ROSTER: LANE_ROSTER.replace("~/src/api", "src/api")},
         "tenants/demo/roster.yaml:16:14", ("a relative path depends on the folder",)),
    Case("lane-worktree-placeholder", {ROSTER: LANE_ROSTER + "    worktree: {repo: ~/src/api, branch: 'fleet/{who}'}\n"},
         "tenants/demo/roster.yaml:17:41", ("`branch`: unknown placeholder {who}",)),
    # --- tasks.yaml: lane, depends_on, state -----------------------------------------------
    Case("task-unknown-lane", {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("Paginate\n        lane: api", "Paginate\n        lane: ap")},
         "tenants/demo/tasks.yaml:10:15", ("task T1 names lane 'ap', which is not in roster.yaml (lanes: api)",)),
    Case("task-lane-without-lanes", {TASKS: LANE_TASKS},
         "tenants/demo/tasks.yaml:10:15", ("it has no `lanes:`",), echoes=1),
    Case("task-lane-and-agent", {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("title: Paginate\n", "title: Paginate\n        agent: enhancer\n")},
         "tenants/demo/tasks.yaml:10:16", ("names both `agent:` and `lane:`", "keep one")),
    Case("task-unknown-dependency", {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("[T1]", "[T9]")},
         "tenants/demo/tasks.yaml:14:22", ("task T2 depends on 'T9', which is no task of this tenant",)),
    Case("task-depends-on-itself", {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("[T1]", "[T2]")},
         "tenants/demo/tasks.yaml:14:22", ("task T2 depends on itself",)),
    Case("task-dependency-cycle",
         {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("Paginate\n        lane: api\n", "Paginate\n        lane: api\n        depends_on: [T2]\n")},
         "tenants/demo/tasks.yaml:11:21", ("in a cycle (T1 -> T2 -> T1)", "remove one of these depends_on")),
    Case("task-bad-state", {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS.replace("state: open", "state: closed")},
         "tenants/demo/tasks.yaml:15:16", ("`state` is 'closed'; it must be 'open', 'done' or 'cancelled'",)),
]


@pytest.mark.parametrize("case", params(CASES))
def test_lane_mistake_is_located(case: Case, tmp_path: Path) -> None:
    check(case, tmp_path)


def test_lanes_and_lane_tasks_load(tmp_path: Path) -> None:
    repo = load_repo(build_repo(tmp_path, {ROSTER: LANE_ROSTER, TASKS: LANE_TASKS}))
    assert error_lines(repo) == []
    roster = repo.tenants["demo"].roster
    assert roster.lane_workers() == {"api": ("coder0-0", "coder0-1")}
    tasks = repo.tenants["demo"].tasks
    assert tasks is not None and [t.depends_on for t in tasks.missions[0].tasks] == [[], ["T1"]]


def test_lanes_of_one_role_are_numbered_in_roster_order(tmp_path: Path) -> None:
    two = LANE_ROSTER + "  - name: web\n    role: coder\n    max: 1\n  - name: qa\n    role: tester\n    max: 1\n"
    repo = load_repo(build_repo(tmp_path, {ROSTER: two}))
    assert error_lines(repo) == []
    assert repo.tenants["demo"].roster.lane_workers() == {
        "api": ("coder0-0", "coder0-1"), "web": ("coder1-0",), "qa": ("tester0-0",)}


def test_a_lane_skips_the_numbers_named_agents_use(tmp_path: Path) -> None:
    named = LANE_ROSTER.replace("  - name: enhancer\n", "  - name: coder0-1\n    role: coder\n  - name: enhancer\n")
    repo = load_repo(build_repo(tmp_path, {ROSTER: named}))
    assert error_lines(repo) == []
    assert repo.tenants["demo"].roster.lane_workers() == {"api": ("coder1-0", "coder1-1")}


def test_a_worker_name_taken_twice_is_located(tmp_path: Path) -> None:
    """Role `c1`'s first worker and role `c`'s eleventh lane are both `c10-0`: the second lane is the error."""
    agents = "".join(f"  - name: c{k}-0\n    role: c\n" for k in range(10))
    text = BASE_ROSTER + agents + "lanes:\n  - name: one\n    role: c1\n  - name: two\n    role: c\n"
    repo = load_repo(build_repo(tmp_path, {ROSTER: text}))
    lines = error_lines(repo)
    assert len(lines) == 1 and lines[0].startswith("tenants/demo/roster.yaml:33:11: lane two: its worker 'c10-0' is "
                                                   "also a worker of lane one"), lines
