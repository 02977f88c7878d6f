"""Issue 4's benchmarks: merge-to-converged in watch mode, and bytes committed by quiet ticks.

1. A host runs `fleet reconcile --watch` (default --fetch-every 2s) on a clone of a bare
   remote; a person pushes a roster commit adding a worker; we time from the push
   returning to the worker's tmux session existing. Median of --runs. Target <= 3 s.
2. Five more `fleet reconcile` runs with nothing new: bytes committed (diff bytes of new
   commits on the remote). Target: 0.

    python benchmarks/bench_watch.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import kill_server
from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "minimal"
GIT_ID = ["-c", "user.name=Person", "-c", "user.email=person@example.com"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def wait_for(predicate, seconds: float) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if predicate():
            return time.perf_counter() - start
        time.sleep(0.02)
    raise TimeoutError("not converged in time")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    socket = f"fleet-bw-{uuid.uuid4().hex[:8]}"
    key = SocketKey(None, socket)
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600"}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bare, person, host = tmp / "remote.git", tmp / "person", tmp / "host"
        git(tmp, "init", "-q", "--bare", "-b", "main", str(bare))
        shutil.copytree(EXAMPLE, person)
        fleet_yaml = person / "fleet.yaml"
        fleet_yaml.write_text(fleet_yaml.read_text().replace("mosaic-demo", socket).replace("90s", "90s\n  startup_grace: 1h"))
        git(person, "init", "-q", "-b", "main")
        git(person, "add", "-A")
        git(person, *GIT_ID, "commit", "-qm", "seed")
        git(person, "remote", "add", "origin", str(bare))
        git(person, "push", "-q", "-u", "origin", "main")
        git(tmp, "clone", "-q", str(bare), str(host))
        cmd = [sys.executable, "-m", "reconciler.cli", "reconcile", str(host), "--watch", "--host", "demo",
               "--state-dir", str(tmp / "state"), "--interval", "1h"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        try:
            wait_for(lambda: len(tmux.observe_socket(key).sessions) == 2, 30)
            roster = person / "tenants/demo/roster.yaml"
            for i in range(opts.runs):
                time.sleep(1.0)  # let the host finish pushing its status
                git(person, *GIT_ID, "pull", "-q", "--rebase", "origin", "main")
                roster.write_text(roster.read_text() + f"  - name: worker-{i}\n    role: coder\n")
                git(person, *GIT_ID, "commit", "-qam", f"add worker-{i}")
                git(person, "push", "-q", "origin", "main")
                samples.append(wait_for(lambda i=i: f"worker-{i}" in tmux.observe_socket(key).sessions, 30))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        before = git(bare, "rev-parse", "main")
        plain = [sys.executable, "-m", "reconciler.cli", "reconcile", str(host), "--host", "demo", "--state-dir", str(tmp / "state")]
        subprocess.run(plain, env=env, capture_output=True, check=True)  # settle the last status
        settled = git(bare, "rev-parse", "main")
        for _ in range(5):
            subprocess.run(plain, env=env, capture_output=True, check=True)
        after = git(bare, "rev-parse", "main")
        quiet_bytes = len(git(bare, "log", "-p", f"{settled}..{after}")) if after != settled else 0
        kill_server(socket)
    print(f"merge to converged in watch mode (--fetch-every 2s), {opts.runs} pushes")
    print(f"  median {statistics.median(samples):.2f} s, min {min(samples):.2f} s, max {max(samples):.2f} s  (target <= 3 s)")
    print(f"quiet ticks: 5 runs with nothing new -> {quiet_bytes} bytes committed (target 0); "
          f"remote head {'unchanged' if after == settled else 'MOVED'} (before the settle run: {'same' if before == settled else 'one status commit'})")


if __name__ == "__main__":
    main()
