"""Benchmark: reading 100 sessions with one tmux call versus one call per session.

Starts a private tmux server with 100 marked sessions (`sleep 600`), then times, as the
median of RUNS runs each: our `observe_socket` (one `list-panes -a`), libtmux's
per-session walk (`for s in server.sessions: s.panes`, one call per session) and
libtmux's `server.panes` (one call). The server is killed in a `finally`.

Run: `python benchmarks/bench_observe.py [--sessions 100] [--runs 7]`
Reference (ARCHITECTURE.md): one listing of 100 panes about 10 ms; the walk about 0.8 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import libtmux

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.drivers.tmux import observe_socket, spawn_sessions
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey


def median_ms(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and minimum wall time of `action` over `runs` runs, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def start_fleet(key: SocketKey, sessions: int) -> None:
    spawn_sessions(
        [
            LaunchSpec("bench", f"agent{i}", "bench-host", key, ("sleep", "600"), (), None, "m", "h")
            for i in range(sessions)
        ]
    )


def walk(server: libtmux.Server) -> int:
    return sum(len(session.panes) for session in server.sessions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()
    key = SocketKey(None, f"fleet-bench-{uuid.uuid4().hex[:8]}")
    assert key.name is not None
    try:
        start_fleet(key, options.sessions)
        server = libtmux.Server(socket_name=key.name)
        assert len(observe_socket(key).sessions) == options.sessions
        assert walk(server) == len(server.panes) == options.sessions
        rows = [
            ("fleet observe_socket (1 call)", lambda: observe_socket(key)),
            (f"libtmux sessions -> panes ({options.sessions + 1} calls)", lambda: walk(server)),
            ("libtmux server.panes (1 call)", lambda: server.panes),
        ]
        print(f"{options.sessions} sessions, median of {options.runs} runs")
        print(f"{'method':<42} {'median ms':>10} {'min ms':>8}")
        for label, action in rows:
            median, fastest = median_ms(action, options.runs)
            print(f"{label:<42} {median:>10.1f} {fastest:>8.1f}")
    finally:
        subprocess.run(["tmux", "-L", key.name, "kill-server"], capture_output=True, check=False)
        socket = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.geteuid()}" / key.name
        socket.unlink(missing_ok=True)  # tmux leaves its socket file behind


if __name__ == "__main__":
    main()
