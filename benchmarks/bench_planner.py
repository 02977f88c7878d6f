"""The pure planner alone on 10,000 agents across 100 tenants (issue 2 target: <= 200 ms).

The observed snapshot mixes what a large host sees: most agents healthy, some with a
stale heartbeat, a changed spec, a dead pane, some absent, and removed agents to stop.

    python benchmarks/bench_planner.py [--runs 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import median_seconds, write_fleet
from reconciler.core.desired import DesiredFleet, build_desired
from reconciler.core.planner import plan
from reconciler.model.observed import (
    Heartbeat,
    Marks,
    ObservedFleet,
    ObservedSession,
    SocketKey,
    SocketSnapshot,
)
from reconciler.spec.load import load_repo

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOST = "bench"


def observed_for(fleet: DesiredFleet) -> ObservedFleet:
    sockets: dict[SocketKey, dict[str, ObservedSession]] = {}
    beats: dict[tuple[str, str], Heartbeat] = {}
    i = 0
    for tenant in fleet.tenants.values():
        sessions = sockets.setdefault(tenant.socket, {})
        for agent in tenant.agents:
            i += 1
            if i % 50 == 0:
                continue  # absent -> spawn
            marks = Marks(
                agent.tenant, agent.name, HOST, agent.launch.spec_hash if i % 40 else "changed", agent.model
            )
            sessions[agent.name] = ObservedSession(
                agent.name,
                f"${i}",
                NOW - timedelta(hours=2),
                None,
                0,
                1000 + i,
                i % 70 == 0,
                None,
                "sleep",
                False,
                marks,
            )
            age = timedelta(minutes=10) if i % 30 == 0 else timedelta(seconds=5)
            beats[(agent.tenant, agent.name)] = Heartbeat(
                agent.tenant, HOST, agent.name, 1, NOW - age, "idle", agent.model
            )
        extra = f"retired-{tenant.name}"
        sessions[extra] = ObservedSession(
            extra,
            "$0",
            NOW,
            None,
            0,
            1,
            False,
            None,
            "sleep",
            False,
            Marks(tenant.name, extra, HOST, "h", "stub-large"),
        )
    return ObservedFleet(NOW, {k: SocketSnapshot(k, True, v) for k, v in sockets.items()}, heartbeats=beats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo_path = write_fleet(Path(tmp) / "repo", tenants=100, agents=100, host=HOST, socket="bench")
        load_time, _ = median_seconds(lambda: load_repo(repo_path), 3)
        repo = load_repo(repo_path)
    assert repo.ok, repo.errors[:3]
    fleet = build_desired(repo, host=HOST, state_dir="/tmp/state")
    fleet = replace(fleet)  # frozen; the planner gets exactly this
    obs = observed_for(fleet)
    agents = sum(len(t.agents) for t in fleet.tenants.values())
    result = plan(fleet, obs, NOW)
    med, samples = median_seconds(lambda: plan(fleet, obs, NOW), opts.runs)
    print(f"planner: {agents} agents across {len(fleet.tenants)} tenants, median of {opts.runs}")
    print(
        f"  plan():       {med * 1000:7.1f} ms  (target <= 200 ms; min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"
    )
    print(f"  plan size:    {result.counts()}")
    print(f"  (for context) load_repo of the same 100 tenants: {load_time * 1000:.0f} ms")


if __name__ == "__main__":
    main()
