"""`fleet task reopen` end to end, on a real tmux server with the stub agent: a worker takes
its brief and reports the task done from its pane (`/done`), a person reopens it, the next
reconcile types the brief again (a new message id, which the worker acks) and TASKS.md and
status show the task worked on again, saying who reopened it and why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.core.render import status_json
from reconciler.drivers.reports import read_reports
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.test_lanes import DONE_T1, HOST, OPEN_T2, Shop
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux


def t2_status(shop: Shop) -> dict[str, object]:
    tasks = status_json((shop.repo / "status" / HOST / "shop.yaml").read_text())["tasks"]
    found: dict[str, object] = next(t for t in tasks if t["task"] == "T2")
    return found


def briefed(shop: Shop, runs: list[str]) -> bool:
    runs.append(shop.reconcile().stdout)
    return "> brief    shop/coder0-0: task T2" in runs[-1]


def test_a_reopened_task_gets_its_brief_again_and_is_worked_on(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    roster = shop.repo / "tenants" / "shop" / "roster.yaml"
    roster.write_text(roster.read_text().replace("cooldown: 1s", "cooldown: 10m"))  # the worker stays for the reopen
    shop.tasks(DONE_T1, OPEN_T2)
    layout = StateLayout(shop.state)
    assert "spawn    shop/coder0-0" in shop.reconcile().stdout
    assert retry_until(layout.heartbeat("shop", "coder0-0").exists, 10)
    runs: list[str] = []
    assert retry_until(lambda: briefed(shop, runs), 20), runs[-1]
    first = json.loads(layout.lanes("shop").read_text())["assignments"]["T2"]["message"]
    beat = layout.heartbeat("shop", "coder0-0")
    assert retry_until(lambda: f'"ack": "{first}"' in beat.read_text(), 10), "the worker acks its brief"

    shop.tmux("send-keys", "-t", "=coder0-0:", "-l", "/done T2 documented in README")
    shop.tmux("send-keys", "-t", "=coder0-0:", "Enter")
    assert retry_until(lambda: read_reports(layout, "shop")[0] != [], 10)
    shop.reconcile()
    assert (t2_status(shop)["state"], t2_status(shop)["agent"]) == ("done", "coder0-0")
    assert json.loads(layout.lanes("shop").read_text())["assignments"] == {}

    reopen = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "task", "reopen", "T2", "--tenant", "shop", "--state-dir",
         str(shop.state), "--repo", str(shop.repo), "--note", "the README example is wrong"],
        capture_output=True, text=True, timeout=60, check=False, env={**shop.env, "USER": "alice", "LOGNAME": "alice"})
    assert reopen.returncode == 0, reopen.stderr
    assert "shop: task T2 reopened (it was done, by coder0-0)" in reopen.stdout

    runs.clear()
    assert retry_until(lambda: briefed(shop, runs), 20), runs[-1]  # once the worker's heartbeat says idle
    held = json.loads(layout.lanes("shop").read_text())["assignments"]["T2"]
    assert (held["agent"], held["attempts"]) == ("coder0-0", 1), "a fresh assignment"
    assert held["message"] != first, "the brief is typed again, as a new message"
    assert retry_until(lambda: f'"ack": "{held["message"]}"' in beat.read_text(), 10), "the worker acks it"

    shop.reconcile()
    assert json.loads(layout.lanes("shop").read_text())["assignments"]["T2"]["acked"] is True
    t2 = t2_status(shop)
    assert (t2["state"] in {"assigned", "working"}, t2["agent"], t2["note"]) == (
        True, "coder0-0", "reopened by alice: the README example is wrong"), t2
    tasks_md = (shop.repo / "TASKS.md").read_text()
    row = next(line for line in tasks_md.splitlines() if line.startswith("| T2 |"))
    assert "| api | assigned since" in row or "| api | working since" in row, row
    assert "| coder0-0 |" in row and "reopened by alice: the README example is wrong" in row, row
    windows = json.loads(layout.lanes("shop").read_text())["closed"]
    assert [(w["task"], w["agent"]) for w in windows] == [("T2", "coder0-0")], "the first turn's spend stays T2's"
