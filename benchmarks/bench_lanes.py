"""The lane steps of one tick for a tenant with 1,000 tasks (issue 12): scaling, the budget
policy on the kept workers, settling, the planner and dispatch, pure, as engine/tick.py
composes them; and a whole `fleet reconcile --dry-run` of that repository (nothing runs,
so every worker is planned as a spawn).

The tenant is examples/fleets/lanes with one lane of max 20 and 1,000 tasks in 10
missions (a third waiting on the task before them, a tenth done, the rest open); 20
workers run, half of them holding a task.

    python benchmarks/bench_lanes.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import median_seconds
from reconciler.core.budget import decide_fleet
from reconciler.core.desired import build_desired
from reconciler.core.dispatch import plan_dispatch
from reconciler.core.lanes import Assignment, LaneMemory, scale_lanes, settle, with_workers
from reconciler.core.planner import PlanOptions, plan
from reconciler.model.observed import Heartbeat, Marks, ObservedFleet, ObservedSession, SocketSnapshot
from reconciler.spec.load import load_repo

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOST = "shop-1"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "lanes"
TASKS = 1000
WORKERS = 20


def write_repo(root: Path) -> Path:
    repo = root / "lanes"
    shutil.copytree(EXAMPLE, repo)
    roster = repo / "tenants" / "shop" / "roster.yaml"
    roster.write_text(roster.read_text().replace("max: 2", f"max: {WORKERS}"))
    (repo / "tenants" / "shop" / "budget.yaml").write_text(
        (repo / "tenants" / "shop" / "budget.yaml").read_text().replace("concurrency: 4", "concurrency: 30"))
    lines = ["apiVersion: fleet.mosaicstack.dev/v1", "kind: Tasks", "tenant: shop", "missions:"]
    for m in range(10):
        lines += [f"  - id: M{m}", f"    title: Mission {m}", "    tasks:"]
        for t in range(TASKS // 10):
            n = m * (TASKS // 10) + t
            lines += [f"      - id: T{n}", f"        title: Task {n}", "        lane: api",
                      f"        projected_tokens: {1000 * (n % 50 + 1)}"]
            if n % 3 == 1:
                lines.append(f"        depends_on: [T{n - 1}]")
            if n % 10 == 0:
                lines.append("        state: done")
    (repo / "tenants" / "shop" / "tasks.yaml").write_text("\n".join(lines) + "\n")
    return repo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo_path = write_repo(Path(tmp))
        repo = load_repo(repo_path)
        assert repo.ok, repo.errors
        fleet = build_desired(repo, host=HOST, state_dir="/state")
        tenant = fleet.tenants["shop"]
        sessions = {}
        beats = {}
        for agent in (*tenant.agents, *tenant.lanes[0].workers):
            sessions[agent.name] = ObservedSession(agent.name, "$1", NOW - timedelta(hours=1), None, 0, 42, False, None,
                                                   "fleet-stub-agent", False,
                                                   Marks("shop", agent.name, HOST, agent.launch.spec_hash, agent.model))
            beats[("shop", agent.name)] = Heartbeat("shop", HOST, agent.name, 1, NOW - timedelta(seconds=5), "idle",
                                                    agent.model, 42)
        observed = ObservedFleet(NOW, {tenant.socket: SocketSnapshot(tenant.socket, True, sessions)}, heartbeats=beats)
        held = {f"T{n}": Assignment(f"coder0-{i}", NOW - timedelta(minutes=10), f"msg-{i:08x}", NOW, 1, True)
                for i, n in enumerate(range(2, 2 + 3 * (WORKERS // 2), 3))}
        memory = {"shop": LaneMemory({}, held)}

        def lane_steps() -> tuple[object, tuple[object, ...]]:
            lanes = scale_lanes(repo, fleet, observed, memory, {}, NOW)
            desired = with_workers(fleet, lanes)
            budget = decide_fleet(repo, desired, {}, {}, NOW)
            lanes = settle(lanes, budget)
            result = plan(desired, observed, NOW, PlanOptions(budget=budget, lanes=lanes))
            health = {(h.tenant, h.agent): h.health for h in result.health}
            return plan_dispatch(repo, lanes, observed, health, budget, {"shop": tenant.socket}, NOW)

        _, sent = lane_steps()
        median, samples = median_seconds(lane_steps, args.runs)
        print(f"lane steps, {TASKS} tasks, {WORKERS} workers ({len(sent)} briefs planned): "
              f"median {median * 1000:.1f} ms over {args.runs} runs (min {min(samples) * 1000:.1f} ms)")

        state = Path(tmp) / "state"
        env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600"}
        argv = [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo_path), "--dry-run", "--host", HOST,
                "--state-dir", str(state)]
        cli, cli_samples = median_seconds(lambda: subprocess.run(argv, env=env, capture_output=True, check=True), 3)
        print(f"fleet reconcile --dry-run, {TASKS} tasks: median {cli * 1000:.0f} ms over 3 runs "
              f"(min {min(cli_samples) * 1000:.0f} ms; a socket that does not run: nothing is observed)")


if __name__ == "__main__":
    main()
