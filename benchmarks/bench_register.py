"""Issue 14: what the register costs one host per tick, at 100 and 1,000 agents.

A throwaway Postgres cluster (Debian's server, a Unix socket in a temporary folder, as
tests/plugins/postgres.py starts it), migrated; then the host's register step as an
applying run takes it (engine/register_sync.py `write_rows`: read the digest and the
ledger's tail, plan the batch, connect, check the schema, write one transaction, save
the digest), timed from the outside, median of --runs:

Each tenant's status document (the whole status, for the projections) is a row too,
rewritten when any of its agents changed.

- first: nothing written yet (every row, and the prune of what is not there);
- 10% changed: a tenth of the agents changed health, their heartbeats too, and one run;
- all changed: every agent changed;
- no-op: nothing changed (the one write is the host's touch).

Then the change feed: from the start of a batch's write on one connection to its
NOTIFY arriving on another that LISTENs, and to the same notification handed over by
the watch loop's listener thread (drivers/register_listen.py; polled every millisecond
here, where the loop asks every quarter second).

Then the projections: 10,000 agents across 20 hosts (10 tenants of 1,000 agents, each
tenant's agents spread over the 20 hosts: 200 status documents of 50 agents). The lease
holder's way, reading the 200 documents from the register on the run's open connection
(engine/register_sync.py `documents`) and rendering TASKS.md and MISSION-MANIFEST.md,
side by side with the way without a register, parsing the 200 status files
(engine/writeback.py `read_all_statuses`, its parse cache emptied each time, as in a
one-shot run) and rendering the same; both renderings are checked equal.

Last, the change feed of `fleet serve`: from the start of another host's write to the All
hosts page's server-sent event that shows it arriving at a client on 127.0.0.1 (the
notification, the feed's re-read of the register, the board rendered, the event sent),
with the register holding 20 and 1,000 agents (20 hosts); the re-read's share is timed
inside the server.

    python benchmarks/bench_register.py [--runs 15] [--only projections]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.core.render import render_manifest, render_status, render_tasks
from reconciler.drivers import register as pg
from reconciler.engine import writeback
from reconciler.engine.register_sync import documents, write_rows
from reconciler.model.layout import StateLayout
from reconciler.model.status import AgentStatus, Condition, TenantStatus
from reconciler.register.rows import DOC, Batch, Row
from reconciler.spec.load import load_repo
from reconciler.spec.models import UrlFrom
from tests.plugins.postgres import Cluster, _bindir

TENANTS = 10
ENV = "FLEET_BENCH_REGISTER_URL"


def start_cluster() -> Cluster:
    import pwd  # noqa: PLC0415

    bindir = _bindir()
    if bindir is None:
        sys.exit("no Postgres server binaries: run ./dev setup")
    owner = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-pg-"))
    (root / "sock").mkdir()
    if owner:
        account = pwd.getpwnam(owner)
        for path in (root, root / "sock"):
            os.chown(path, account.pw_uid, account.pw_gid)
    cluster = Cluster(bindir, root, owner, owner or pwd.getpwuid(os.geteuid()).pw_name)
    done = cluster._run(["initdb", "-D", str(cluster.data), "-U", cluster.superuser, "--auth=trust", "--no-sync"])
    assert done.returncode == 0, done.stderr
    cluster.start()
    return cluster


def rows(agents: int, generation: int, changed: int, docs: bool = True) -> list[Row]:
    """The kept rows of `agents` agents over TENANTS tenants, with each tenant's status
    document (as engine/register_sync.py `kept_rows` makes them); the first `changed` of
    them show `generation` in their health message and heartbeat state."""
    from reconciler.core.render import status_document  # noqa: PLC0415

    out = []
    statuses: dict[str, list[AgentStatus]] = {}
    for n in range(agents):
        tenant, gen = f"t{n % TENANTS}", generation if n < changed else 0
        out.append(Row("agents", tenant, f"a{n}", {
            "role": "coder", "alias": None, "lifecycle": "ephemeral", "desired_model": "opus",
            "running_model": "opus", "health": "healthy", "tokens": 1000 + gen,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running", "message": f"up ({gen})",
                            "since": "2026-12-01T00:00:00+00:00"}]}))
        out.append(Row("heartbeats", tenant, f"a{n}", {"seq": generation, "ts": datetime.now(UTC).isoformat(),
                                                        "state": "working" if gen % 2 else "idle", "model": "opus",
                                                        "pid": 1000 + n, "ack": None}))
        statuses.setdefault(tenant, []).append(AgentStatus(
            f"a{n}", "coder", None, "ephemeral", "opus", "opus", "healthy", 1000 + gen,
            (Condition("Ready", "True", "Running", f"up ({gen})", "2026-12-01T00:00:00+00:00"),)))
    if docs:
        out += [Row("status_docs", tenant, DOC, {"doc": status_document(TenantStatus(tenant, "bench", "abc", "",
                                                                                     tuple(agents_)))})
                for tenant, agents_ in sorted(statuses.items())]
    return out


def tick(layout: StateLayout, agents: int, generation: int, changed: int, noop: bool = False) -> float:
    kept = rows(agents, generation, changed)
    runs = [] if noop else [Row("runs", "t0", f"run{generation}", {
        "revision": "abc", "at": datetime.now(UTC).isoformat(), "duration_ms": 5, "actions": ["restart a0"], "failed": 0})]
    start = time.perf_counter()
    problems = write_rows(layout, UrlFrom(env=ENV), host="bench", tenants=[f"t{i}" for i in range(TENANTS)],
                          kept=kept, runs=runs, run_id=f"run{generation}", finished=datetime.now(UTC)).problems
    took = time.perf_counter() - start
    assert not problems, problems
    return took


def wake_latency(cluster: Cluster, runs: int) -> list[float]:
    """Seconds from writing a one-row batch to its notification on a listening connection."""
    import psycopg  # noqa: PLC0415

    from reconciler.register.rows import Batch  # noqa: PLC0415

    url = cluster.url(cluster.new_database())
    with pg.connect(url) as conn:
        pg.migrate(conn, pg.migrations())
    samples = []
    with psycopg.connect(url, autocommit=True) as listener, pg.connect(url) as writer:
        listener.execute(f"LISTEN {pg.CHANNEL}")
        for n in range(1, runs + 1):
            batch = Batch(n, "bench", f"r{n}", datetime.now(UTC).isoformat(), ("t0",),
                          upserts=tuple(rows(1, n, 1, docs=False)[:1]))
            start = time.perf_counter()
            pg.write_batch(writer, batch)
            for _note in listener.notifies(timeout=5, stop_after=1):
                samples.append(time.perf_counter() - start)
    assert len(samples) == runs, samples
    return samples


def listener_latency(cluster: Cluster, runs: int) -> list[float]:
    """Seconds from writing a batch as host `a` to `Listener.take()` returning it on host `b`."""
    from reconciler.drivers.register_listen import Listener  # noqa: PLC0415
    from reconciler.register.rows import Batch  # noqa: PLC0415

    url = cluster.url(cluster.new_database())
    with pg.connect(url) as conn:
        pg.migrate(conn, pg.migrations())
    os.environ[ENV] = url
    listener = Listener(UrlFrom(env=ENV), "b", retry=0.1)
    listener.start()
    samples = []
    try:
        assert listener.connected.wait(10)
        with pg.connect(url) as writer:
            for n in range(1, runs + 1):
                batch = Batch(n, "a", f"r{n}", datetime.now(UTC).isoformat(), ("t0",), upserts=tuple(rows(1, n, 1, docs=False)[:1]))
                start = time.perf_counter()
                pg.write_batch(writer, batch)
                while not listener.take():
                    assert time.perf_counter() - start < 5, "no wake"
                    time.sleep(0.001)
                samples.append(time.perf_counter() - start)
    finally:
        listener.close()
    return samples


def serve_latency(cluster: Cluster, runs: int, agents: int) -> tuple[list[float], list[float]]:
    """Seconds from a write by host `a` to the /hosts/events event showing it, and the
    re-read of the register inside each, with `agents` agents already registered."""
    from dataclasses import replace  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    from benchmarks.bench_serve import no_screen, observation, serving  # noqa: PLC0415
    from reconciler.register.rows import Batch  # noqa: PLC0415
    from reconciler.spec.models import Register  # noqa: PLC0415
    from reconciler.web.app import make_app  # noqa: PLC0415
    from reconciler.web.register_feed import read_register  # noqa: PLC0415
    from tests.web.serving import iter_events  # noqa: PLC0415

    url = cluster.url(cluster.new_database())
    with pg.connect(url) as conn:
        pg.migrate(conn, pg.migrations())
        hosts = 20
        for h in range(hosts):  # the register as 20 other hosts left it
            seeded = [r for r in rows(agents // hosts, 1, 0) if r.table == "agents"]
            pg.write_batch(conn, Batch(1, f"h{h}", "seed", datetime.now(UTC).isoformat(),
                                       tuple(sorted({r.tenant for r in seeded})), upserts=tuple(seeded)))
    os.environ[ENV] = url
    observed = replace(observation(1, 5), register=Register(url_from=UrlFrom(env=ENV)))
    app, web = make_app(lambda: observed, no_screen, interval=3600, register_fallback=3600)
    reads: list[float] = []

    def timed(config: Register) -> object:
        start = time.perf_counter()
        board = read_register(config)
        reads.append(time.perf_counter() - start)
        return board

    assert web.feed is not None
    web.feed.read = timed  # type: ignore[assignment]
    samples = []
    with serving(app) as base, httpx.Client(base_url=base, timeout=30) as client, \
            client.stream("GET", "/hosts/events") as response, pg.connect(url) as writer:
        events = iter_events(response)
        next(events)
        while not writer.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'fleet-serve'").fetchall():
            time.sleep(0.01)  # until the LISTEN connection is up
        writer.rollback()
        reads.clear()
        for n in range(1, runs + 1):
            batch = Batch(n, "a", f"r{n}", datetime.now(UTC).isoformat(), ("t0",),
                          upserts=(Row("agents", "t0", f"new{n}", rows(1, n, 1)[0].values),))
            start = time.perf_counter()
            pg.write_batch(writer, batch)
            while f'data-key="a/t0/new{n}"' not in next(events)[1]["board"]:
                pass
            samples.append(time.perf_counter() - start)
    return samples, reads


PROJECTION_HOSTS, PROJECTION_TENANTS, PROJECTION_AGENTS = 20, 10, 1000


def role(n: int) -> str:
    """Agent n's role: every tenant has its orchestrator and an enhancer, the rest code."""
    return "orchestrator" if n == 0 else "enhancer" if n == 1 else "coder"


def projection_fleet(root: Path) -> list[TenantStatus]:
    """A repository of PROJECTION_TENANTS tenants whose agents spread over PROJECTION_HOSTS
    hosts, with every host's status file of every tenant; returns the statuses."""
    (root / "fleet.yaml").write_text(
        "apiVersion: fleet.mosaicstack.dev/v1\nkind: Fleet\nname: bench\ndefaults:\n  runtime: stub\n"
        "  model: stub-large\nruntimes:\n  stub:\n    command: fleet-stub-agent --model {model}\n"
        "    ladder: [stub-large, stub-small]\n")
    statuses = []
    for t in range(PROJECTION_TENANTS):
        tenant = f"t{t}"
        lines = ["apiVersion: fleet.mosaicstack.dev/v1", "kind: Roster", f"tenant: {tenant}", "host: h0",
                 f"socket_name: bench-{tenant}", "agents:"]
        for n in range(PROJECTION_AGENTS):
            lines += [f"  - name: a{n}", f"    role: {role(n)}", f"    host: h{n % PROJECTION_HOSTS}"]
        (root / "tenants" / tenant).mkdir(parents=True)
        (root / "tenants" / tenant / "roster.yaml").write_text("\n".join(lines) + "\n")
        for h in range(PROJECTION_HOSTS):
            agents = tuple(AgentStatus(f"a{n}", role(n), None, "core", "stub-large", "stub-large", "healthy", 1000 + n, (
                Condition("Ready", "True", "Running", "session up, heartbeat 3s ago", "2026-12-01T00:00:00+00:00"),
                Condition("Degraded", "False", "AsDesired", "runs its desired model", "2026-12-01T00:00:00+00:00")))
                for n in range(h, PROJECTION_AGENTS, PROJECTION_HOSTS))
            status = TenantStatus(tenant, f"h{h}", "abc1234", "", agents)
            statuses.append(status)
            path = writeback.status_path(root, f"h{h}", tenant)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_status(status))
    return statuses


def projections(cluster: Cluster, runs: int) -> None:
    """Median ms of reading every host's status (register, or files) and of rendering both projections."""
    from reconciler.core.render import status_document  # noqa: PLC0415

    root = Path(tempfile.mkdtemp(prefix="fleet-bench-proj-"))
    url = cluster.url(cluster.new_database())
    try:
        statuses = projection_fleet(root)
        repo = load_repo(root)
        tenants = sorted(repo.tenants)
        with pg.connect(url) as conn:
            pg.migrate(conn, pg.migrations())
            for seq, h in enumerate(range(PROJECTION_HOSTS), start=1):
                mine = [s for s in statuses if s.host == f"h{h}"]
                pg.write_batch(conn, Batch(seq, f"h{h}", "r", datetime.now(UTC).isoformat(), tuple(tenants), upserts=tuple(
                    Row("status_docs", s.tenant, DOC, {"doc": status_document(s)}) for s in mine)))

        def render(read: list[TenantStatus]) -> tuple[str, str]:
            return render_tasks(repo, read, "abc1234"), render_manifest(repo, read, "abc1234")

        def from_files() -> list[TenantStatus]:
            writeback._PARSED.clear()  # a one-shot run parses every file
            read, problems = writeback.read_all_statuses(root)
            assert not problems and len(read) == len(statuses)
            return read

        with pg.connect(url) as conn:
            def from_register() -> list[TenantStatus]:
                read, problems = documents(pg.read_status_docs(conn, tenants))
                assert not problems and len(read) == len(statuses)
                return read

            assert render(from_register()) == render(from_files()), "the two ways render different bytes"
            timings: dict[str, list[float]] = {k: [] for k in ("register", "files", "render")}
            for _ in range(runs):
                for name, read in (("register", from_register), ("files", from_files)):
                    start = time.perf_counter()
                    got = read()
                    timings[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                render(got)
                timings["render"].append(time.perf_counter() - start)
        with pg.connect(url) as conn:
            start = time.perf_counter()
            pg.check_schema(conn, pg.migrations()[-1].version)
            connect = time.perf_counter() - start
        size = sum(len(render_status(s)) for s in statuses)
        med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
        print(f"projections, {len(statuses)} status documents ({size / 1e6:.1f} MB of status "
              f"files), {PROJECTION_TENANTS * PROJECTION_AGENTS} agents on {PROJECTION_HOSTS} hosts, median of {runs}:")
        print(f"  read from the register: {med['register']:.0f} ms   read the status files: {med['files']:.0f} ms   "
              f"render both: {med['render']:.0f} ms")
        print(f"  register + render: {med['register'] + med['render']:.0f} ms   "
              f"files + render: {med['files'] + med['render']:.0f} ms   (schema check on the open connection "
              f"{connect * 1000:.1f} ms)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--only", choices=["projections"], default=None)
    args = parser.parse_args()
    runs = args.runs
    cluster = start_cluster()
    if args.only == "projections":
        try:
            projections(cluster, runs)
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
        return
    try:
        print(f"{'agents':>6}  {'case':<12} {'median ms':>9}  {'rows in the batch':>17}")
        for agents in (100, 1000):
            dbname = cluster.new_database()
            os.environ[ENV] = cluster.url(dbname)
            with pg.connect(os.environ[ENV]) as conn:
                pg.migrate(conn, pg.migrations())
            state = Path(tempfile.mkdtemp(prefix="fleet-bench-state-"))
            layout = StateLayout(state)
            generation = 1
            first = tick(layout, agents, generation, agents)
            print(f"{agents:>6}  {'first':<12} {first * 1000:>9.1f}  {2 * agents + TENANTS:>17}")
            for case, changed in (("10% changed", agents // 10), ("all changed", agents), ("no-op", 0)):
                samples = []
                for _ in range(runs):
                    generation += 1 if changed else 0  # no-op: the very rows of the tick before
                    samples.append(tick(layout, agents, generation, changed or agents, noop=not changed))
                docs = min(changed, TENANTS)  # a tenant's document changes with any of its agents
                print(f"{agents:>6}  {case:<12} {statistics.median(samples) * 1000:>9.1f}  {2 * changed + docs:>17}")
            shutil.rmtree(state, ignore_errors=True)
        print(f"change to wake through NOTIFY: median {statistics.median(wake_latency(cluster, runs)) * 1000:.2f} ms")
        print(f"change to the watch loop's listener: median {statistics.median(listener_latency(cluster, runs)) * 1000:.2f} ms")
        for agents in (20, 1000):
            samples, reads = serve_latency(cluster, runs, agents)
            print(f"change to fleet serve's event ({agents} agents in the register): median "
                  f"{statistics.median(samples) * 1000:.1f} ms (max {max(samples) * 1000:.1f}), of which the "
                  f"re-read {statistics.median(reads) * 1000:.1f} ms")
        projections(cluster, runs)
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


if __name__ == "__main__":
    main()
