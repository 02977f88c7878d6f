"""A lane through `fleet reconcile`, with real tmux and real stub agents: a lane at min 0
runs nothing without work, gets a worker when an open task appears, hears the worker
report the task done from inside its pane, and retires it after the cooldown.

Each reconcile is the installed CLI as a subprocess on a private socket and state
directory, the way a timer or a person runs it (docs/lanes.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.core.render import status_json
from reconciler.drivers.reports import read_reports
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo, write
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux

HOST = "shop-1"
TASKS = """apiVersion: fleet.mosaicstack.dev/v1
kind: Tasks
tenant: shop
missions:
  - id: M1
    title: Paginated API
    tasks:
{tasks}"""
DONE_T1 = "      - id: T1\n        title: Paginate\n        lane: api\n        state: done\n"
OPEN_T2 = "      - id: T2\n        title: Document pagination\n        lane: api\n        depends_on: [T1]\n"


class Shop:
    def __init__(self, tmp_path: Path, socket: str) -> None:
        self.repo = example_repo(tmp_path, "lanes", socket)
        roster = self.repo / "tenants" / "shop" / "roster.yaml"
        roster.write_text(roster.read_text().replace("cooldown: 5m", "cooldown: 1s"))
        self.socket = socket
        self.state = tmp_path / "state"
        self.state.mkdir()
        no_systemd = tmp_path / "no-systemd"
        no_systemd.mkdir(mode=0o700)
        self.env = {k: v for k, v in os.environ.items() if k not in {"MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"}}
        self.env |= {"FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}

    def tasks(self, *tasks: str) -> None:
        write(self.repo, "tenants/shop/tasks.yaml", TASKS.format(tasks="".join(tasks)))

    def reconcile(self) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(self.repo), "--no-git",
                               "--host", HOST, "--state-dir", str(self.state)],
                              capture_output=True, text=True, timeout=90, env=self.env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              env=self.env, stdin=subprocess.DEVNULL, check=False).stdout

    def sessions(self) -> set[str]:
        return set(self.tmux("list-sessions", "-F", "#{session_name}").split())

    def report(self, agent: str, *args: str) -> None:
        """`fleet task ARGS` as `agent` would run it: in the FLEET_* environment of its pane."""
        pane_env = dict(line.split("=", 1) for line in self.tmux("show-environment", "-t", f"={agent}").split()
                        if line.startswith("FLEET_"))
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", "task", *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**{k: v for k, v in self.env.items() if not k.startswith("FLEET_")}, **pane_env})
        assert done.returncode == 0, done.stderr


def test_a_lane_at_min_0_gets_a_worker_for_a_task_and_drains_after_the_cooldown(
        tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    shop.tasks(DONE_T1)
    shop.reconcile()
    assert shop.sessions() == {"orchestrator", "enhancer"}, "no open task: the lane runs nothing"

    shop.tasks(DONE_T1, OPEN_T2)  # a merged PR adds a task to the lane
    up = shop.reconcile()
    assert "spawn    shop/coder0-0" in up.stdout and "lane api wants 1 worker (1 open task)" in up.stdout, up.stdout
    assert shop.sessions() == {"orchestrator", "enhancer", "coder0-0"}
    beat = StateLayout(shop.state).heartbeat("shop", "coder0-0")
    assert retry_until(beat.exists, 10), "the worker heartbeats"
    steady = shop.reconcile().stdout
    assert "0 to spawn, 0 to restart, 0 to stop" in steady, "an open task keeps its one worker"

    # The worker reports from inside its pane, as an agent would.
    shop.tmux("send-keys", "-t", "=coder0-0:", "-l", "/done T2 documented in README")
    shop.tmux("send-keys", "-t", "=coder0-0:", "Enter")
    assert retry_until(lambda: read_reports(StateLayout(shop.state), "shop")[0] != [], 10)
    [report] = read_reports(StateLayout(shop.state), "shop")[0]
    assert (report.agent, report.task, report.state, report.note) == ("coder0-0", "T2", "done", "documented in README")

    retired: list[str] = []

    def drained() -> bool:
        retired.append(shop.reconcile().stdout)
        return "coder0-0" not in shop.sessions()

    assert retry_until(drained, 30), f"the idle worker is retired after its cooldown; last run:\n{retired[-1]}"
    assert "stop     shop/coder0-0 (stub-large): lane api: coder0-0 is idle since" in retired[-1], retired[-1]
    assert shop.sessions() == {"orchestrator", "enhancer"}
    status = status_json((shop.repo / "status" / HOST / "shop.yaml").read_text())
    assert [t for t in status["tasks"] if t["task"] == "T2"] == [{
        "task": "T2", "lane": "api", "state": "done", "agent": "coder0-0", "since": report.ts.isoformat(timespec="seconds"),
        "note": "documented in README"}], "the fleet's view is in status"
    assert "state: done" not in (shop.repo / "tenants" / "shop" / "tasks.yaml").read_text().split("id: T2")[1], \
        "never in the spec files"
    tasks_md = (shop.repo / "TASKS.md").read_text()
    assert f"| api | done since {report.ts.isoformat(timespec='seconds')} | coder0-0 |" in tasks_md, tasks_md
    assert "| documented in README |" in tasks_md, tasks_md
    memory = json.loads(StateLayout(shop.state).lanes("shop").read_text())
    assert (memory["assignments"], memory["last_active"]) == ({}, {}), "a retired worker leaves nothing behind"
    assert [(w["task"], w["agent"]) for w in memory["closed"]] == [("T2", "coder0-0")], "but its task's window"


def test_a_worker_gets_its_brief_acks_it_and_reports_done_from_its_environment(
        tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    shop.tasks(DONE_T1, OPEN_T2)
    assert "spawn    shop/coder0-0" in shop.reconcile().stdout
    layout = StateLayout(shop.state)
    assert retry_until(layout.heartbeat("shop", "coder0-0").exists, 10)

    briefed: list[str] = []

    def brief_typed() -> bool:  # the first run may still see the new worker start up
        briefed.append(shop.reconcile().stdout)
        return "> brief    shop/coder0-0: task T2" in briefed[-1]

    assert retry_until(brief_typed, 20), briefed[-1]
    memory = json.loads(layout.lanes("shop").read_text())
    held = memory["assignments"]["T2"]
    assert (held["agent"], held["attempts"], held["acked"]) == ("coder0-0", 1, False), "recorded before the send"
    brief = layout.brief("shop", "T2").read_text()
    assert brief.startswith("# Task T2: Document pagination") and "fleet task done T2" in brief
    beat = layout.heartbeat("shop", "coder0-0")
    assert retry_until(lambda: f'"ack": "{held["message"]}"' in beat.read_text(), 10), "the worker acks the brief"

    confirmed = shop.reconcile().stdout
    assert "> brief" not in confirmed, "an acked brief is not typed again"
    assert json.loads(layout.lanes("shop").read_text())["assignments"]["T2"]["acked"] is True
    task = next(t for t in status_json((shop.repo / "status" / HOST / "shop.yaml").read_text())["tasks"]
                if t["task"] == "T2")
    assert (task["state"] in {"assigned", "working"}, task["agent"], task["note"]) == (True, "coder0-0", "")

    ps = subprocess.run([sys.executable, "-m", "reconciler.cli", "ps", str(shop.repo), "--host", HOST, "--state-dir",
                         str(shop.state)], capture_output=True, text=True, timeout=60, env=shop.env, check=False)
    assert ps.returncode == 0, ps.stderr
    assert "lane shop/api: 1 running, 1 desired, 0 tasks queued (1 open task)" in ps.stdout, ps.stdout
    assert any(line.startswith("coder0-0 ") and "healthy" in line for line in ps.stdout.splitlines()), ps.stdout

    # The agent reports with `fleet task done`, in the environment its pane was started with.
    shop.report("coder0-0", "done", "T2", "--note", "see PR 7")
    after = shop.reconcile()
    task = next(t for t in status_json((shop.repo / "status" / HOST / "shop.yaml").read_text())["tasks"]
                if t["task"] == "T2")
    assert (task["state"], task["agent"], task["note"]) == ("done", "coder0-0", "see PR 7"), after.stdout
    assert json.loads(layout.lanes("shop").read_text())["assignments"] == {}, "the worker is free"


def test_sigkill_at_random_moments_never_loses_or_doubles_a_task(tmp_path: Path, tmux_socket: SocketKey) -> None:
    """`fleet reconcile` killed with SIGKILL at random moments of runs that hand out tasks:
    a lane of two workers and 48 tasks (at least twelve kills, up to forty until
    one lands after an assignment was recorded: under load the runs slow down); before each killed run one holder reports its
    task done, so the run has a task to hand out. After each kill the recorded holders are
    checked (no worker holds two tasks, no task is ever recorded for two workers), and then
    undisturbed runs must converge: two tasks held, both briefs acked."""
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    shop.tasks(DONE_T1, *(f"      - id: T{n}\n        title: Task {n}\n        lane: api\n" for n in range(2, 50)))
    layout = StateLayout(shop.state)
    argv = [sys.executable, "-m", "reconciler.cli", "reconcile", str(shop.repo), "--no-git", "--host", HOST,
            "--state-dir", str(shop.state)]
    rng = random.Random(1212)
    holder: dict[str, str] = {}  # task -> the worker it was first recorded for

    def memory(when: str) -> dict[str, dict[str, object]]:
        try:
            held: dict[str, dict[str, object]] = json.loads(layout.lanes("shop").read_text())["assignments"]
        except FileNotFoundError:
            return {}
        workers = [str(a["agent"]) for a in held.values()]
        assert len(workers) == len(set(workers)), f"{when}: a worker holds two tasks: {held}"
        for task, a in held.items():
            assert holder.setdefault(task, str(a["agent"])) == a["agent"], f"{when}: {task} moved: {held}"
        return held

    started = time.monotonic()
    shop.reconcile()  # the workers start; how long a run takes here, under this machine's load
    took = time.monotonic() - started
    assert retry_until(lambda: all(layout.heartbeat("shop", w).exists() for w in ("coder0-0", "coder0-1")), 20)

    delays: list[float] = []
    hits = 0  # killed runs that had recorded a new assignment
    for trial in range(40):  # at least 12; more while no kill has landed after a new assignment (load)
        if trial >= 12 and hits:
            break
        before = memory(f"before run {trial}")
        acked = sorted((t, str(a["agent"])) for t, a in before.items() if a["acked"])
        if acked:  # free one worker, so this run hands out a task
            task, agent = acked[0]
            done = subprocess.run([sys.executable, "-m", "reconciler.cli", "task", "done", task, "--tenant", "shop",
                                   "--agent", agent, "--state-dir", str(shop.state)],
                                  capture_output=True, text=True, timeout=60, env=shop.env, check=False)
            assert done.returncode == 0, done.stderr
        delay = rng.uniform(0.2, 1.5) * took
        delays.append(round(delay, 2))
        run = subprocess.Popen(argv, env=shop.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        run.send_signal(signal.SIGKILL)
        run.wait(30)
        after = memory(f"after the kill of run {trial} at {delay:.2f}s (delays so far {delays})")
        hits += bool(set(after) - set(before))

    def converged() -> bool:
        shop.reconcile()
        held = memory("while converging")
        acks = {w: json.loads(layout.heartbeat("shop", w).read_text()).get("ack") for w in ("coder0-0", "coder0-1")}
        return len(held) == 2 and all(a["acked"] or acks.get(str(a["agent"])) == a["message"] for a in held.values())

    assert retry_until(converged, 60), f"no convergence after kills at {delays}"
    assert hits, f"no killed run had recorded an assignment (delays {delays}, a run took {took:.2f}s): proves nothing"
    shop.reconcile()
    held = memory("converged")
    assert len(held) == 2 and all(a["acked"] for a in held.values()), held
    status = status_json((shop.repo / "status" / HOST / "shop.yaml").read_text())
    views = {t["task"]: t for t in status["tasks"]}
    for task, a in held.items():
        assert views[task]["state"] in {"assigned", "working"} and views[task]["agent"] == a["agent"], views[task]
