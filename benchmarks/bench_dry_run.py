"""Dry-run of a 100-agent tenant with 100 sessions running, whole process, against the floor.

The floor is a Python process that imports the same third-party libraries as the
dry-run (found by asking a dry-run process which it loaded) and lists the socket once
with libtmux. Runs alternate between the two so machine noise hits both alike.
Target (issue 2): dry-run at most 1.5x the floor.

    python benchmarks/bench_dry_run.py [--runs 11]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import kill_server, write_fleet
from reconciler.core.desired import build_desired
from reconciler.drivers import tmux
from reconciler.drivers.tmux import LIST_FORMAT
from reconciler.spec.load import load_repo

AGENTS = 100
HOST = "bench"
COMMAND = "sleep 600"

PROBE = """
import sys, json
sys.argv = ["fleet", *json.loads(sys.argv[1])]
from reconciler.cli import main
try:
    main()
except SystemExit:
    pass
print("\\n@@" + json.dumps(sorted(sys.modules)))
"""


def third_party_imports(args: list[str], env: dict[str, str]) -> list[str]:
    """Top-level third-party packages a dry-run process really imports (namespace ones too)."""
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True, text=True, env=env, check=True)
    names = json.loads(out.stdout.rsplit("@@", 1)[1])
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    found = []
    for name in names:
        if name.split(".")[0].startswith("_") or name.split(".")[0] == "reconciler" or name == "__main__":
            continue
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        places = [getattr(mod, "__file__", None), *list(getattr(mod, "__path__", []))]
        if any(p and purelib in Path(p).resolve().parents for p in places):
            found.append(name)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    opts = parser.parse_args()
    socket = f"fleet-bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_fleet(Path(tmp) / "repo", tenants=1, agents=AGENTS, host=HOST, socket=socket)
        state = Path(tmp) / "state"
        desired = build_desired(load_repo(repo), host=HOST, state_dir=str(state), command_override=COMMAND)
        try:
            tmux.spawn_sessions([a.launch for a in desired.tenants["t0"].agents])
            sessions = len(tmux.observe_socket(desired.tenants["t0"].socket).sessions)
            env = {**os.environ, "MOSAIC_AGENT_COMMAND": COMMAND}
            args = [
                "reconcile",
                str(repo),
                "--dry-run",
                "--host",
                HOST,
                "--state-dir",
                str(state),
                "--detailed-exitcode",
            ]
            libs = third_party_imports(args, env)
            floor_code = (
                "".join(f"import {lib}\n" for lib in libs)
                + "import subprocess\n"
                + f"subprocess.run(['tmux', '-u', '-L', {socket!r}, 'list-panes', '-a', '-F', {LIST_FORMAT!r}],"
                + " capture_output=True, check=True)\n"
            )
            ours_cmd = [sys.executable, "-m", "reconciler.cli", *args]
            floor_cmd = [sys.executable, "-c", floor_code]
            check = subprocess.run(ours_cmd, env=env, capture_output=True, text=True, check=False)
            assert check.returncode == 0, (
                f"expected a converged no-op dry-run, got {check.returncode}: {check.stdout[-500:]}"
            )
            ours, floor = [], []
            for _ in range(opts.runs):
                for cmd, bucket in ((ours_cmd, ours), (floor_cmd, floor)):
                    start = time.perf_counter()
                    subprocess.run(
                        cmd, env=env, capture_output=True, check=cmd is floor_cmd
                    )
                    bucket.append(time.perf_counter() - start)
        finally:
            kill_server(socket)
    ours.sort()
    floor.sort()
    mo, mf = ours[len(ours) // 2], floor[len(floor) // 2]
    print(
        f"dry-run of {AGENTS} agents with {sessions} sessions running, median of {opts.runs} (whole process)"
    )
    print(f"  floor (imports the same {len(libs)} third-party modules; one tmux list-panes): {mf * 1000:7.1f} ms")
    print(f"  fleet reconcile --dry-run:                          {mo * 1000:7.1f} ms")
    print(f"  ratio: {mo / mf:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
