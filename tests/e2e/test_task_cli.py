"""`fleet task done|blocked` as an agent runs it: the installed CLI as a subprocess with the
pane's FLEET_* environment, writing its own reports file; mistakes are one `error:` line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers.reports import read_reports
from reconciler.model.layout import StateLayout


def task(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", "task", *args], capture_output=True, text=True,
                          timeout=60, env={**base, **env}, check=False)


def test_done_then_blocked_land_in_the_agents_own_reports(tmp_path: Path) -> None:
    pane = {"FLEET_TENANT": "shop", "FLEET_AGENT": "coder0-1", "FLEET_STATE_DIR": str(tmp_path)}
    done = task("done", "T7", "--note", "merged as PR 42", **pane)
    assert done.returncode == 0, done.stderr
    assert "shop/coder0-1: task T7 reported done" in done.stdout
    assert task("blocked", "T8", "--note", "needs the staging key", **pane).returncode == 0
    again = task("done", "T7", **pane)  # a later word replaces the earlier one
    assert again.returncode == 0
    reports, problems = read_reports(StateLayout(tmp_path), "shop")
    assert problems == []
    assert sorted((r.task, r.state, r.note) for r in reports) == [("T7", "done", ""), ("T8", "blocked", "needs the staging key")]
    assert (tmp_path / "shop" / "reports" / "coder0-1.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("args", "env", "says"), [
    (("done", "T7"), {}, "no tenant: run this inside the agent's pane ($FLEET_TENANT is set there)"),
    (("done", "T7"), {"FLEET_TENANT": "shop"}, "no agent: run this inside the agent's pane"),
    (("done", "../x"), {"FLEET_TENANT": "shop", "FLEET_AGENT": "a"}, "task id '../x' is not an id of tasks.yaml"),
    (("done", "T7"), {"FLEET_TENANT": "../etc", "FLEET_AGENT": "a"}, "tenant '../etc' is not a fleet name"),
    (("done", "T7"), {"FLEET_TENANT": "shop", "FLEET_AGENT": "a"}, "no state directory"),
    (("blocked", "T7", "--note", " "), {"FLEET_TENANT": "shop", "FLEET_AGENT": "a", "FLEET_STATE_DIR": "/tmp"},
     "--note is empty; say why the task is blocked"),
], ids=["no-tenant", "no-agent", "bad-task-id", "bad-tenant", "no-state-dir", "blocked-without-a-note"])
def test_mistakes_are_one_error_line(args: tuple[str, ...], env: dict[str, str], says: str) -> None:
    result = task(*args, **env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


LANES_REPO = Path(__file__).resolve().parents[2] / "reconciler" / "examples" / "lanes"


def test_a_person_reopens_a_done_task_in_a_file_of_its_own(tmp_path: Path) -> None:
    pane = {"FLEET_TENANT": "shop", "FLEET_AGENT": "coder0-1", "FLEET_STATE_DIR": str(tmp_path)}
    assert task("done", "T3", "--note", "merged as PR 42", **pane).returncode == 0
    agent_file = (tmp_path / "shop" / "reports" / "coder0-1.json").read_bytes()
    person = {"FLEET_STATE_DIR": str(tmp_path), "USER": "alice", "LOGNAME": "alice"}
    reopened = task("reopen", "T3", "--tenant", "shop", "--note", "the tests fail on main",
                    "--repo", str(LANES_REPO), **person)
    assert reopened.returncode == 0, reopened.stderr
    assert "shop: task T3 reopened (it was done, by coder0-1)" in reopened.stdout
    assert (tmp_path / "shop" / "reports" / "coder0-1.json").read_bytes() == agent_file, "the agent's file is its own"
    reports, problems = read_reports(StateLayout(tmp_path), "shop")
    assert problems == []
    latest = max(reports, key=lambda r: (r.ts, r.state == "reopened"))
    assert (latest.agent, latest.state, latest.note) == ("alice", "reopened", "the tests fail on main")
    assert (tmp_path / "shop" / "reports" / "_reopened.json").stat().st_mode & 0o777 == 0o600
    again = task("reopen", "T3", "--tenant", "shop", **person)
    assert again.returncode == 1 and "task T3 is already open: alice reopened it" in again.stderr, again.stderr
    # The agent reports again (its file, its word): the task can be reopened again after that.
    assert task("blocked", "T3", "--note", "flaky CI", **pane).returncode == 0
    from_pane = task("reopen", "T3", **pane)  # an orchestrator's pane: its tenant, its name
    assert from_pane.returncode == 0, from_pane.stderr
    assert "reopened (it was blocked, by coder0-1)" in from_pane.stdout


@pytest.mark.parametrize(("args", "says"), [
    (("reopen", "T3"), "no tenant: pass --tenant NAME"),
    (("reopen", "../x", "--tenant", "shop"), "task id '../x' is not an id of tasks.yaml"),
    (("reopen", "T3", "--tenant", "shop"), "task T3: no agent has reported it done or blocked in the state directory"),
    (("reopen", "T9", "--tenant", "shop", "--repo", str(LANES_REPO)), "task T9: tasks.yaml has no such task"),
    (("reopen", "T4", "--tenant", "shop", "--repo", str(LANES_REPO)),
     "task T4 is set cancelled in tasks.yaml, which wins over any report; set it open there with "
     "`fleet task set-state REPO T4 open`"),
    (("reopen", "T3", "--tenant", "nope", "--repo", str(LANES_REPO)), "tenant nope has no tasks in"),
], ids=["no-tenant", "bad-task-id", "not-reported", "unknown-id", "cancelled-in-tasks-yaml", "unknown-tenant"])
def test_reopen_mistakes_are_one_error_line(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = task(*args, FLEET_STATE_DIR=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "shop" / "reports" / "_reopened.json").exists(), "nothing is written"


def test_reopen_refuses_a_task_set_done_in_tasks_yaml(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    (repo / "tenants" / "shop").mkdir(parents=True)
    text = (LANES_REPO / "tenants" / "shop" / "tasks.yaml").read_text()
    (repo / "tenants" / "shop" / "tasks.yaml").write_text(text.replace("id: T3\n", "id: T3\n        state: done\n"))
    state = tmp_path / "state"
    pane = {"FLEET_TENANT": "shop", "FLEET_AGENT": "coder0-1", "FLEET_STATE_DIR": str(state)}
    assert task("done", "T3", **pane).returncode == 0
    refused = task("reopen", "T3", "--tenant", "shop", "--repo", str(repo), FLEET_STATE_DIR=str(state))
    assert refused.returncode == 1
    assert "task T3 is set done in tasks.yaml" in refused.stderr and "fleet task set-state REPO T3 open" in refused.stderr
    assert not (state / "shop" / "reports" / "_reopened.json").exists()
