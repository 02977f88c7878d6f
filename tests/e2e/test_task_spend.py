"""Per-task spend through `fleet reconcile`, with real tmux, a real stub worker and real Git:
one worker of a lane works two tasks in turn, its simulated usage (the stub's heartbeat,
ingested into the ledger each tick) is booked to the task it held, TASKS.md shows each
task its own tokens, and MISSION-MANIFEST.md is committed and pushed beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers.reports import read_reports
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.git_remote import git, person_commit, remote_tree
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
      - id: T1
        title: Paginate the list endpoint
        lane: api
        projected_tokens: 500
      - id: T2
        title: Document pagination
        lane: api
        depends_on: [T1]
        projected_tokens: 100000
"""


class Host:
    """A host's clone of the fleet repository and its state directory, reconciled by the CLI."""

    def __init__(self, tmp_path: Path, socket: str) -> None:
        seed = example_repo(tmp_path / "seed-src", "lanes", socket)
        (seed / "tenants" / "shop" / "tasks.yaml").write_text(TASKS)
        self.remote = tmp_path / "remote.git"
        git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(self.remote))
        work = tmp_path / "seed"
        git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
        person_commit(work, {str(p.relative_to(seed)): p.read_text() for p in seed.rglob("*.yaml")}, "Seed the fleet")
        git(work, "push", "--quiet", str(self.remote), "main")
        self.repo = tmp_path / "host"
        git(tmp_path, "clone", "--quiet", str(self.remote), str(self.repo))
        self.socket = socket
        self.state = tmp_path / "state"
        self.layout = StateLayout(self.state)
        no_systemd = tmp_path / "no-systemd"
        no_systemd.mkdir(mode=0o700)
        self.env = {k: v for k, v in os.environ.items() if k not in {"MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"}}
        self.env |= {"FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}

    def reconcile(self) -> str:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(self.repo), "--host", HOST,
                               "--state-dir", str(self.state)],
                              capture_output=True, text=True, timeout=90, env=self.env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def type(self, line: str) -> None:
        for args in (("-l", line), ("Enter",)):
            subprocess.run(["tmux", "-L", self.socket, "send-keys", "-t", "=coder0-0:", *args], timeout=10,
                           env=self.env, stdin=subprocess.DEVNULL, check=True)

    def beat(self) -> dict[str, object]:
        try:
            doc: dict[str, object] = json.loads(self.layout.heartbeat("shop", "coder0-0").read_text())
        except (FileNotFoundError, ValueError):  # not written yet, or read mid-replace
            return {}
        return doc

    def usage(self) -> int:
        usage = self.beat().get("usage") or {}
        assert isinstance(usage, dict)
        return sum(int(v) for v in usage.values())

    def work_on(self, task: str, extra_seconds: int) -> int:
        """Reconcile until the worker is briefed on `task`, let it work, and return its usage
        when it is idle again (a tick ingests it while the task is still held)."""
        runs: list[str] = []

        def briefed() -> bool:  # the first runs may still see the worker start up
            runs.append(self.reconcile())
            return f"> brief    shop/coder0-0: task {task}" in runs[-1]

        assert retry_until(briefed, 30), runs[-1]
        message = json.loads(self.layout.lanes("shop").read_text())["assignments"][task]["message"]
        assert retry_until(lambda: self.beat().get("ack") == message, 10), "the worker acks its brief"
        self.type(f"/work {extra_seconds}")  # more simulated usage, so the two tasks differ
        assert retry_until(lambda: self.beat().get("state") == "idle", 30), "the worker finishes"
        spent = self.usage()
        self.reconcile()  # the ledger takes the usage while the worker still holds the task
        return spent

    def report_done(self, task: str) -> None:
        self.type(f"/done {task} finished")
        assert retry_until(lambda: any(r.task == task for r in read_reports(self.layout, "shop")[0]), 10)


def test_a_worker_that_works_two_tasks_in_turn_books_each_its_own_tokens(
        tmp_path: Path, tmux_socket: SocketKey, git_isolated: None) -> None:
    assert tmux_socket.name is not None
    host = Host(tmp_path, tmux_socket.name)
    assert "spawn    shop/coder0-0" in host.reconcile()
    assert retry_until(host.layout.heartbeat("shop", "coder0-0").exists, 10), "the worker heartbeats"
    assert host.usage() == 0, "an idle worker spends nothing before its first task"

    after_t1 = host.work_on("T1", 1)
    host.report_done("T1")
    after_t2 = host.work_on("T2", 3)  # the tick that sees T1 done hands T2 to the same worker
    host.report_done("T2")
    host.reconcile()
    t1, t2 = after_t1, after_t2 - after_t1
    assert t1 > 0 and t2 > 0

    memory = json.loads(host.layout.lanes("shop").read_text())
    assert [(w["task"], w["agent"]) for w in memory["closed"]] == [("T1", "coder0-0"), ("T2", "coder0-0")], \
        "the lane memory keeps each closed assignment window"
    assert memory["assignments"] == {}

    tree = remote_tree(host.remote)  # committed and pushed, like TASKS.md
    tasks_md, manifest = tree["TASKS.md"], tree["MISSION-MANIFEST.md"]
    assert tasks_md == (host.repo / "TASKS.md").read_text() and manifest == (host.repo / "MISSION-MANIFEST.md").read_text()
    learned = f"{(t1 + t2) // 2:,} / {max(t1, t2):,}"  # both finished: median of two, p90 the larger
    over = t1 * 100 // 500 - 100
    row1 = next(line for line in tasks_md.splitlines() if line.startswith("| T1 |"))
    row2 = next(line for line in tasks_md.splitlines() if line.startswith("| T2 |"))
    assert row1.startswith("| T1 | Paginate the list endpoint | api | done since ") and \
        row1.endswith(f"| coder0-0 | normal | 500 | {t1:,} (over by {over}%) | {learned} | finished |"), tasks_md
    assert row2.startswith("| T2 | Document pagination | api | done since ") and \
        row2.endswith(f"| coder0-0 | normal | 100,000 | {t2:,} | {learned} | finished |"), tasks_md
    assert f"| M1 | Paginated API | 2 / 2 | 100,500 | {t1 + t2:,} | T1 | none | none |" in manifest, manifest
    assert git(host.repo, "status", "--porcelain") == "", "everything written is committed"
