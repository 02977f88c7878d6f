"""Issue 13's traces benchmark: what `fleet reconcile` pays for OpenTelemetry, off and on.

1. Import cost: the `fleet reconcile` process's imports under `python -X importtime`,
   traces off (no OTEL_* variable: nothing of OpenTelemetry may load) and on
   (OTEL_EXPORTER_OTLP_ENDPOINT set: the API, SDK and OTLP/HTTP exporter load, through
   reconciler/drivers/telemetry/otel.py, with their own dependencies: protobuf,
   requests). Median of --runs of the top-level imports' cumulative time, OpenTelemetry's
   own modules' share, and the fleet's two small trace modules that load either way.
2. Whole process: `fleet reconcile --dry-run` of a 20-agent tenant, off and on (spans
   sent to a loopback sink that answers 200 at once), runs alternating.

    python benchmarks/bench_telemetry.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import alternate, write_fleet

HOST = "bench"
AGENTS = 20
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


class _Sink(BaseHTTPRequestHandler):
    """A collector that takes every batch and answers at once."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


#: The fleet's own trace modules that load whether traces are on or off.
OURS = frozenset({"reconciler.core.traces", "reconciler.drivers.telemetry", "reconciler.engine.tracing"})


def import_profile(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """One `-X importtime` run: (ms importing everything at top level, ms of which under
    OpenTelemetry's packages, modules of OpenTelemetry loaded, ms of the fleet's own
    trace modules)."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                          check=False)
    total = otel = ours = 0.0
    count = 0
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        self_us, cumulative_us, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
        if indent == 1:  # a top-level import: its cumulative time counts once
            total += cumulative_us / 1000
        if name.split(".")[0] == "opentelemetry":
            otel += self_us / 1000
            count += 1
        if name in OURS:
            ours += self_us / 1000
    return total, otel, count, ours


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    opts = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "TRACEPARENT"}
    base["MOSAIC_AGENT_COMMAND"] = "sleep 600"
    envs = {"off": base, "on": {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}}
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_fleet(Path(tmp) / "repo", tenants=1, agents=AGENTS, host=HOST,
                           socket=f"fleet-bench-{uuid.uuid4().hex[:8]}")
        args = ["-m", "reconciler.cli", "reconcile", str(repo), "--dry-run", "--host", HOST,
                "--state-dir", str(Path(tmp) / "state")]
        for env in envs.values():  # byte-code caches written once, as an installed fleet has them
            subprocess.run([sys.executable, *args], capture_output=True, env=env, check=False)
        profiles = {name: [import_profile(args, env) for _ in range(opts.runs)] for name, env in envs.items()}
        # both through `env`, so the one with the endpoint set pays nothing the other does not
        whole = alternate({"off": ["env", "FLEET_BENCH=off", sys.executable, *args],
                           "on": ["env", f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}", sys.executable, *args]},
                          opts.runs, envs["off"])
        whole_off, whole_on = whole["off"], whole["on"]
    server.shutdown()
    print(f"`fleet reconcile --dry-run` of {AGENTS} agents; median of {opts.runs}")
    for name, runs in profiles.items():
        total = statistics.median(r[0] for r in runs)
        otel = statistics.median(r[1] for r in runs)
        ours = statistics.median(r[3] for r in runs)
        print(f"  imports, traces {name:3}: {total:6.1f} ms in all, {otel:5.1f} ms of it OpenTelemetry's own "
              f"({runs[0][2]} modules), {ours:4.2f} ms the fleet's trace modules")
    print(f"  whole process, traces off: {statistics.median(whole_off) * 1000:6.1f} ms")
    print(f"  whole process, traces on:  {statistics.median(whole_on) * 1000:6.1f} ms  (spans to a loopback sink)")


if __name__ == "__main__":
    main()
