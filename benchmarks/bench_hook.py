"""Issue 11's benchmark: `fleet-hook` start-up against a bare interpreter.

Claude Code runs the hook on every tool call and its status line every two seconds, so
one hook call must cost about what starting Python costs. Side by side, median of
--runs each: `python3 -c pass` (same interpreter), and the real console script
handling a Claude Code `PreToolUse` event (read the previous heartbeat, lock, write
atomically). Target: within 10 ms of the bare interpreter (the fsync of the
heartbeat alone takes 1 to 5 ms on a shared disk).

    python benchmarks/bench_hook.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def median_ms(argv: Sequence[str], runs: int, env: dict[str, str], stdin: bytes = b"") -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, input=stdin, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    opts = parser.parse_args()
    hook = Path(sys.executable).with_name("fleet-hook")
    event = json.dumps({"hook_event_name": "PreToolUse", "tool_name": "Bash", "session_id": "s"}).encode()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "FLEET_TENANT": "bench", "FLEET_AGENT": "hook", "FLEET_HOST": "h",
               "FLEET_MODEL": "opus", "FLEET_STATE_DIR": state}
        bare = median_ms([sys.executable, "-c", "pass"], opts.runs, env)
        hooked = median_ms([str(hook), "claude"], opts.runs, env, event)
        beat = json.loads((Path(state) / "bench" / "heartbeats" / "hook.json").read_text())
    assert beat["seq"] == opts.runs and beat["state"] == "working", beat
    print(f"{'python3 -c pass':<34}{bare:8.1f} ms  (median of {opts.runs})")
    print(f"{'fleet-hook claude (PreToolUse)':<34}{hooked:8.1f} ms  (median of {opts.runs})")
    print(f"{'overhead':<34}{hooked - bare:8.1f} ms  target <= 10 ms")


if __name__ == "__main__":
    main()
