"""`fleet serve` on a synthetic 1,000-agent observation (10 tenants of 100, bench_planner's
mix of healthy, stale, dead, drifted and absent agents; the real planner's plan).

1. Server time of the fleet page: rendering `/` from a fresh observation (every row
   rendered, nothing cached), from the same observation again (the rows rendered once
   per observation and shared), and a whole GET / through uvicorn on 127.0.0.1.
2. Events per second the observer loop sustains with 20 open SSE streams of the fleet
   page: the loop publishes every 2 ms (the observation prebuilt, so only serving is
   measured) and 20 clients count what they receive; a stream that falls behind skips
   to the newest observation, so received/published per stream is the share it kept up with. Run for 1,000 agents
   (each event carries the whole table) and for 20 agents.

    python benchmarks/bench_serve.py [--runs 7] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_planner import HOST, NOW, observed_for
from benchmarks.fleetgen import median_seconds, write_fleet
from reconciler.core.desired import build_desired
from reconciler.core.fleetview import Filters, build_view
from reconciler.core.planner import plan
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from reconciler.web.app import make_app
from reconciler.web.observer import Observation, Published

CLIENTS = 20


def observation(tenants: int, agents: int) -> Observation:
    with tempfile.TemporaryDirectory() as tmp:
        repo = load_repo(write_fleet(Path(tmp) / "repo", tenants=tenants, agents=agents, host=HOST, socket="bench"))
    fleet = build_desired(repo, host=HOST, state_dir="/tmp/state")
    obs = observed_for(fleet)
    view = build_view(fleet, obs, plan(fleet, obs, NOW), NOW)
    return Observation(view, {k.label(): k for k in obs.sockets})


def no_screen(_socket: SocketKey, _session: str) -> list[str] | None:
    return None


def page_time(observed: Observation, runs: int) -> None:
    _app, web = make_app(lambda: observed, no_screen)
    version = iter(range(1, 1_000_000))

    def render(published: Published) -> str:
        return web.render("fleet.html.j2", title="Fleet", published=published, filters=Filters(),
                          choices={"tenant": [], "host": [], "health": [], "drift": []},
                          rows=web.rows_html(published, Filters()), banner=web.banner_html(published), events="")

    cold, cold_s = median_seconds(lambda: render(Published(next(version), observed)), runs)
    shared = Published(next(version), observed)
    render(shared)
    warm, _ = median_seconds(lambda: render(shared), runs)
    size = len(render(shared))
    rows = len(observed.view.rows)
    print(f"fleet page, {rows} rows ({size / 1024:.0f} KiB of HTML), median of {runs}:")
    print(f"  render, fresh observation: {cold * 1000:7.1f} ms  (min {min(cold_s) * 1000:.1f}, max {max(cold_s) * 1000:.1f})")
    print(f"  render, same observation:  {warm * 1000:7.1f} ms  (rows rendered once per observation)")

    app, _web = make_app(lambda: observed, no_screen, interval=3600)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        client.get("/")
        got, samples = median_seconds(lambda: client.get("/").raise_for_status(), runs)
    print(f"  GET / through uvicorn:     {got * 1000:7.1f} ms  (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})")


class serving:
    """uvicorn on a free loopback port in a thread."""

    def __init__(self, app: object) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def count_events(url: str, seconds: float) -> list[int]:
    counts = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http, http.stream("GET", "/events") as response:
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    counts[i] += 1
                if time.perf_counter() >= stop:
                    return

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return counts


def events_per_second(observed: Observation, seconds: float) -> None:
    app, web = make_app(lambda: observed, no_screen, interval=0.002)
    with serving(app) as url:
        start = time.perf_counter()
        before = web.observer.observations
        counts = asyncio.run(count_events(url, seconds))
        took = time.perf_counter() - start
        loops = web.observer.observations - before
    rows = len(observed.view.rows)
    print(f"observer loop with {CLIENTS} open SSE streams, {rows} rows, {took:.1f} s:")
    print(f"  observations published: {loops / took:8.1f} /s")
    print(f"  events received:        {sum(counts) / took:8.1f} /s in all ({min(counts) / took:.1f} to "
          f"{max(counts) / took:.1f} /s per stream)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args()
    big = observation(10, 100)
    page_time(big, opts.runs)
    events_per_second(big, opts.seconds)
    events_per_second(observation(1, 20), opts.seconds)


if __name__ == "__main__":
    main()
