"""Issue 6: what running tenants as their own Linux users costs, side by side in one run.

The same fleet (--tenants tenants of --agents stub agents, healthy) reconciled by root,
once with every tenant as root's own (each on its own socket) and once with every
tenant as its own user (root runs fleet as each user, in parallel). Whole processes,
alternating, median of --runs: a no-op reconcile (--no-git) and a dry-run.

    sudo python benchmarks/bench_users.py [--tenants 4] [--agents 10] [--runs 7]
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

from benchmarks.fleetgen import alternate, kill_server, write_fleet

HOST = "bench"


def make_users(count: int) -> list[str]:
    names = [f"fleet-b-{uuid.uuid4().hex[:6]}" for _ in range(count)]
    for name in names:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    return names


def remove_users(names: list[str]) -> None:
    for name in names:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True, check=False)
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)


def with_users(repo: Path, names: list[str]) -> None:
    """Give tenant i the user names[i] (one socket name for all: each user has its own)."""
    for i, name in enumerate(names):
        roster = repo / "tenants" / f"t{i}" / "roster.yaml"
        text = "\n".join(line for line in roster.read_text().splitlines() if not line.startswith("socket_name:"))
        roster.write_text(text.replace(f"host: {HOST}", f"host: {HOST}\nuser: {name}", 1) + "\n")


def wait_healthy(argv: list[str], env: dict[str, str], agents: int) -> None:
    """Until `fleet ps` says every agent is healthy (stub agents answer within ~50 ms)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.stdout.count('"health": "healthy"') == agents:
            return
        time.sleep(0.2)
    raise RuntimeError(f"not healthy within 60 s: {argv}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_users needs root (it creates users and reconciles them)")
    socket = f"fleet-bench-{uuid.uuid4().hex[:6]}"
    names = make_users(opts.tenants)
    fleet = [sys.executable, "-m", "reconciler"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            own = write_fleet(Path(tmp) / "own", tenants=opts.tenants, agents=opts.agents, host=HOST, socket=socket)
            shutil.copytree(own, Path(tmp) / "users")
            users = Path(tmp) / "users"
            with_users(users, names)
            env = {**os.environ, "FLEET_STATE_DIR": str(Path(tmp) / "state")}
            total = opts.tenants * opts.agents
            for repo in (own, users):
                subprocess.run([*fleet, "reconcile", str(repo), "--host", HOST, "--no-git"], env=env, check=True,
                               capture_output=True)
                wait_healthy([*fleet, "ps", str(repo), "--host", HOST, "--output", "json"], env, total)
            commands = {
                "root's own tenants, no-op": [*fleet, "reconcile", str(own), "--host", HOST, "--no-git"],
                "tenants as users, no-op": [*fleet, "reconcile", str(users), "--host", HOST, "--no-git"],
                "root's own tenants, dry-run": [*fleet, "reconcile", str(own), "--host", HOST, "--dry-run"],
                "tenants as users, dry-run": [*fleet, "reconcile", str(users), "--host", HOST, "--dry-run"],
            }
            samples = alternate(commands, opts.runs, env)
            medians = {name: statistics.median(s) * 1000 for name, s in samples.items()}
            print(f"{opts.tenants} tenants x {opts.agents} healthy stub agents, median of {opts.runs}:")
            for name, ms in medians.items():
                print(f"  {name:<30} {ms:8.0f} ms")
            for kind in ("no-op", "dry-run"):
                extra = medians[f"tenants as users, {kind}"] - medians[f"root's own tenants, {kind}"]
                print(f"  as users, {kind}: +{extra:.0f} ms in all, +{extra / opts.tenants:.0f} ms per tenant user")
    finally:
        for i in range(opts.tenants):
            kill_server(socket if i == 0 else f"{socket}-{i}")
        remove_users(names)


if __name__ == "__main__":
    main()
