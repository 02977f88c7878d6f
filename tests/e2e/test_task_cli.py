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
