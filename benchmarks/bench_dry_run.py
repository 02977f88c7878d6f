"""Dry-run of a 100-agent tenant with 100 sessions running, whole process, against the floor.

The floor (benchmarks/floor.py) imports the same third-party modules and lists the
socket once. Runs alternate so machine noise hits both alike.
Target (issue 2): dry-run at most 1.5x the floor.

    python benchmarks/bench_dry_run.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import alternate, kill_server, write_fleet, write_heartbeats
from benchmarks.floor import floor_command
from reconciler.core.desired import build_desired
from reconciler.drivers import tmux
from reconciler.spec.load import load_repo

AGENTS = 100
HOST = "bench"
COMMAND = "sleep 600"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    opts = parser.parse_args()
    socket = f"fleet-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_fleet(Path(tmp) / "repo", tenants=1, agents=AGENTS, host=HOST, socket=socket)
        state = Path(tmp) / "state"
        desired = build_desired(load_repo(repo), host=HOST, state_dir=str(state), command_override=COMMAND)
        agents = desired.tenants["t0"].agents
        try:
            tmux.spawn_sessions([a.launch for a in agents])
            write_heartbeats(state, "t0", HOST, [a.name for a in agents])
            sessions = len(tmux.observe_socket(desired.tenants["t0"].socket).sessions)
            env = {**os.environ, "MOSAIC_AGENT_COMMAND": COMMAND}
            args = ["reconcile", str(repo), "--dry-run", "--host", HOST, "--state-dir", str(state), "--detailed-exitcode"]
            floor, modules = floor_command(args, env, socket)
            ours = [sys.executable, "-m", "reconciler.cli", *args]
            samples = alternate({"floor": floor, "dry-run": ours}, opts.runs, env)
        finally:
            kill_server(socket)
    mf, mo = statistics.median(samples["floor"]), statistics.median(samples["dry-run"])
    print(f"dry-run of {AGENTS} agents, {sessions} sessions running, healthy; median of {opts.runs}, whole process")
    print(f"  floor (imports the same {modules} library modules, one tmux list-panes): {mf * 1000:7.1f} ms")
    print(f"  fleet reconcile --dry-run --detailed-exitcode:                    {mo * 1000:7.1f} ms")
    print(f"  ratio: {mo / mf:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
