"""Generated fleets for the benchmarks: N tenants of M agents each, written as YAML."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

FLEET_YAML = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: bench
defaults:
  socket_name: {socket}
  heartbeat_timeout: 90s
  startup_grace: 1h
  runtime: stub
  model: stub-large
runtimes:
  stub:
    command: "fleet-stub-agent --model {{model}}"
    ladder: [stub-large, stub-small]
"""


def roster_yaml(tenant: str, host: str, agents: int, socket: str | None) -> str:
    lines = [
        "apiVersion: fleet.mosaicstack.dev/v1",
        "kind: Roster",
        f"tenant: {tenant}",
        f"host: {host}",
        *([f"socket_name: {socket}"] if socket else []),
        "agents:",
        "  - name: orchestrator",
        "    role: orchestrator",
        "  - name: enhancer",
        "    role: enhancer",
    ]
    for i in range(agents - 2):
        lines += [f"  - name: worker-{i}", "    role: coder", f"    lane: lane-{i % 7}"]
    return "\n".join(lines) + "\n"


def write_fleet(root: Path, *, tenants: int, agents: int, host: str, socket: str) -> Path:
    """A repository of `tenants` tenants with `agents` agents each; tenant i > 0 gets socket `{socket}-i`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "fleet.yaml").write_text(FLEET_YAML.format(socket=socket))
    for t in range(tenants):
        folder = root / "tenants" / f"t{t}"
        folder.mkdir(parents=True, exist_ok=True)
        own_socket = None if t == 0 else f"{socket}-{t}"
        (folder / "roster.yaml").write_text(roster_yaml(f"t{t}", host, agents, own_socket))
    return root


def median_seconds(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def kill_server(socket: str) -> None:
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


def alternate(commands: dict[str, list[str]], runs: int, env: dict[str, str], before: Callable[[str], object] | None = None) -> dict[str, list[float]]:
    """Time whole processes, alternating between them each round so noise hits all alike.

    `before(name)` runs untimed ahead of each timed run (e.g. to reset the tmux server).
    """
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            if before is not None:
                before(name)
            start = time.perf_counter()
            result = subprocess.run(argv, env=env, capture_output=True, check=False)
            samples[name].append(time.perf_counter() - start)
            if result.returncode not in (0, 2):
                raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr.decode()[-800:]}")
    return samples


def write_heartbeats(state: Path, tenant: str, host: str, agents: list[str], model: str = "stub-large") -> None:
    """Fresh heartbeats for every agent, as healthy agents would have written them."""
    folder = state / tenant / "heartbeats"
    folder.mkdir(parents=True, exist_ok=True)
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for i, agent in enumerate(agents):
        record = {"tenant": tenant, "host": host, "agent": agent, "seq": 1, "ts": ts, "pid": 1000 + i,
                  "state": "idle", "model": model, "ack": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        (folder / f"{agent}.json").write_text(json.dumps(record))
