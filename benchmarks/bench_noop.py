"""Issue 10's no-op benchmarks: a reconcile with nothing to change, one-shot and resident.

1. No-op `fleet reconcile` (apply, every agent healthy, nothing to change) of one tenant
   of 50 and of 100 agents, whole process, against the floor of benchmarks/floor.py
   (the same library modules imported, one tmux listing); runs alternate, median of
   --runs. Target: at most 1.5x the floor.
2. A resident no-op tick of 1,000 agents across 10 tenants (10 tmux servers): what
   `fleet reconcile --watch` pays per tick once it is up, timed in one process that
   runs the same command again and again (median of --runs after one warm-up tick).
   Target: at most 100 ms.

Both processes of (1) run with byte-code caching on (PYTHONDONTWRITEBYTECODE dropped,
one untimed round first), as an installed fleet does: pip compiles every module, the
floor's libraries included, so compiling our sources each run is no cost a host pays.

    python benchmarks/bench_noop.py [--runs 15] [--skip-resident] [--env-as-is]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import alternate, kill_server, write_fleet, write_heartbeats
from benchmarks.floor import floor_command

HOST = "bench"
COMMAND = "sleep 600"

#: One resident process: the same reconcile the `--watch` loop runs on each tick.
RESIDENT = """
import contextlib, io, json, sys, time
from reconciler.cli.app import app
argv, runs = json.loads(sys.argv[1]), int(sys.argv[2])
samples = []
for i in range(runs + 1):
    said = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(said):
        try:
            app(argv, standalone_mode=False)
        except SystemExit as exc:
            assert not exc.code, exc
    took = time.perf_counter() - start
    assert "No changes" in said.getvalue(), said.getvalue()[-400:]
    if i:
        samples.append(took)
print(json.dumps(samples))
"""


def agent_names(agents: int) -> list[str]:
    return ["orchestrator", "enhancer", *(f"worker-{i}" for i in range(agents - 2))]


def converged_fleet(root: Path, tenants: int, agents: int, socket: str, env: dict[str, str]) -> tuple[list[str], Path]:
    """A generated fleet with every agent running (a cold reconcile) and a fresh heartbeat
    for each, settled so the next reconcile has nothing to change; returns its argv."""
    repo = write_fleet(root / "repo", tenants=tenants, agents=agents, host=HOST, socket=socket)
    state = root / "state"
    args = ["reconcile", str(repo), "--host", HOST, "--state-dir", str(state)]
    fleet = [sys.executable, "-m", "reconciler.cli", *args]
    subprocess.run(fleet, env=env, capture_output=True, check=True)
    for t in range(tenants):
        write_heartbeats(state, f"t{t}", HOST, agent_names(agents))
    settle = subprocess.run(fleet, env=env, capture_output=True, text=True, check=True)
    assert "No changes" in settle.stdout, settle.stdout[-400:]
    return args, state


def sockets(base: str, tenants: int) -> list[str]:
    return [base, *(f"{base}-{t}" for t in range(1, tenants))]


def one_shot(tmp: Path, agents: int, runs: int, env: dict[str, str]) -> tuple[float, float, int]:
    socket = f"fleet-noop-{uuid.uuid4().hex[:8]}"
    try:
        args, _ = converged_fleet(tmp / f"n{agents}", 1, agents, socket, env)
        floor, modules = floor_command(args, env, socket)
        fleet = [sys.executable, "-m", "reconciler.cli", *args]
        alternate({"floor": floor, "fleet": fleet}, 1, env)  # writes byte-code, warms the page cache
        samples = alternate({"floor": floor, "fleet": fleet}, runs, env)
    finally:
        kill_server(socket)
    return statistics.median(samples["floor"]), statistics.median(samples["fleet"]), modules


def resident(tmp: Path, tenants: int, agents: int, runs: int, env: dict[str, str]) -> list[float]:
    base = f"fleet-noop-{uuid.uuid4().hex[:8]}"
    try:
        args, _ = converged_fleet(tmp / "resident", tenants, agents, base, env)
        proc = subprocess.run([sys.executable, "-c", RESIDENT, json.dumps(args), str(runs)], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"resident ticks failed: {proc.stderr[-800:]}")
    finally:
        for socket in sockets(base, tenants):
            kill_server(socket)
    samples: list[float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--skip-resident", action="store_true", help="Only the one-shot ratios (no 1,000 sessions).")
    parser.add_argument("--env-as-is", action="store_true",
                        help="Keep PYTHONDONTWRITEBYTECODE if set (our modules then compile from source every run "
                             "when no __pycache__ exists, the libraries' byte-code is used).")
    opts = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if opts.env_as_is or k != "PYTHONDONTWRITEBYTECODE"}
    env["MOSAIC_AGENT_COMMAND"] = COMMAND
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-noop-"))
    try:
        print(f"no-op reconcile of healthy agents, one tenant, whole process, median of {opts.runs} (alternating)")
        for agents in (50, 100):
            floor, ours, modules = one_shot(tmp, agents, opts.runs, env)
            print(f"  {agents:4d} agents: floor ({modules} library modules, one list-panes) {floor * 1000:6.1f} ms, "
                  f"fleet reconcile {ours * 1000:6.1f} ms, ratio {ours / floor:.2f}x  (target <= 1.5x)")
        if not opts.skip_resident:
            samples = resident(tmp, 10, 100, opts.runs, env)
            print(f"resident no-op tick (as --watch runs it), 1000 agents in 10 tenants on 10 tmux servers, "
                  f"median of {opts.runs} after a warm-up tick")
            print(f"  median {statistics.median(samples) * 1000:.1f} ms, min {min(samples) * 1000:.1f} ms, "
                  f"max {max(samples) * 1000:.1f} ms  (target <= 100 ms)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
