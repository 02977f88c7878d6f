"""Issue 3's benchmarks, side by side in one run (median of --runs, whole processes).

1. Cold start of 100 agents (`sleep 600` through MOSAIC_AGENT_COMMAND) with
   `fleet reconcile`, against `tmuxp load -d` of the same 100 one-pane sessions.
   Target: at least 25x faster than tmuxp.
2. No-op reconcile of 100 healthy agents (fresh heartbeats), against the floor of
   issue 2 (benchmarks/floor.py). Target: at most 1.5x the floor.

    python benchmarks/bench_apply.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import alternate, kill_server, write_fleet, write_heartbeats
from benchmarks.floor import floor_command
from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey

AGENTS = 100
HOST = "bench"
COMMAND = "sleep 600"


def tmuxp_workspaces(folder: Path, names: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.yaml"
        path.write_text(f"session_name: {name}\nwindows:\n  - window_name: main\n    panes:\n      - {COMMAND}\n")
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    ours_socket = f"fleet-bench-{uuid.uuid4().hex[:8]}"
    theirs_socket = f"{ours_socket}-tmuxp"
    tmuxp = shutil.which("tmuxp") or str(Path(sys.executable).parent / "tmuxp")
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_fleet(Path(tmp) / "repo", tenants=1, agents=AGENTS, host=HOST, socket=ours_socket)
        state = Path(tmp) / "state"
        names = ["orchestrator", "enhancer", *(f"worker-{i}" for i in range(AGENTS - 2))]
        workspaces = tmuxp_workspaces(Path(tmp) / "tmuxp", names)
        env = {**os.environ, "MOSAIC_AGENT_COMMAND": COMMAND}
        reconcile = [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--host", HOST, "--state-dir", str(state)]
        load = [tmuxp, "load", "-d", "-y", "-L", theirs_socket, *workspaces]

        def fresh_servers(_name: str) -> None:
            # Both servers go before every timed run: tmuxp's 100 panes are shells that are
            # still starting up when `tmuxp load` returns, and would load the CPU under ours.
            kill_server(theirs_socket)
            kill_server(ours_socket)
            shutil.rmtree(state, ignore_errors=True)
            time.sleep(1.0)

        try:
            cold = alternate({"tmuxp load -d": load, "fleet reconcile": reconcile}, opts.runs, env, before=fresh_servers)
            ours_sessions = tmux.observe_socket(SocketKey(None, ours_socket)).sessions
            assert len(ours_sessions) == AGENTS and all(s.marks.owned for s in ours_sessions.values())
            subprocess.run(load, env=env, capture_output=True, check=True)
            assert len(tmux.observe_socket(SocketKey(None, theirs_socket)).sessions) == AGENTS
            kill_server(theirs_socket)
            write_heartbeats(state, "t0", HOST, names)
            check = subprocess.run(reconcile, env=env, capture_output=True, text=True, check=False)
            assert check.returncode == 0 and "No changes" in check.stdout, check.stdout[-400:]
            floor, modules = floor_command(["reconcile", str(repo), "--host", HOST, "--state-dir", str(state)], env, ours_socket)
            noop = alternate({"floor": floor, "fleet reconcile (no-op)": reconcile}, max(opts.runs, 7), env)
        finally:
            kill_server(ours_socket)
            kill_server(theirs_socket)
    t_tmuxp, t_ours = statistics.median(cold["tmuxp load -d"]), statistics.median(cold["fleet reconcile"])
    print(f"cold start of {AGENTS} agents, median of {opts.runs}, whole process")
    print(f"  tmuxp load -d (100 one-pane sessions): {t_tmuxp * 1000:8.0f} ms")
    print(f"  fleet reconcile:                       {t_ours * 1000:8.0f} ms")
    print(f"  speed-up: {t_tmuxp / t_ours:.1f}x  (target >= 25x)")
    t_floor, t_noop = statistics.median(noop["floor"]), statistics.median(noop["fleet reconcile (no-op)"])
    print(f"no-op reconcile of {AGENTS} healthy agents, median of {max(opts.runs, 7)}, whole process")
    print(f"  floor (same {modules} library modules, one list-panes): {t_floor * 1000:7.1f} ms")
    print(f"  fleet reconcile:                                           {t_noop * 1000:7.1f} ms")
    print(f"  ratio: {t_noop / t_floor:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
