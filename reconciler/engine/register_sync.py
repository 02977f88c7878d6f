"""After status: this run's changes to the Postgres register, or to the spool when it is away.

A step of an applying run with fleet.yaml `register:` (engine/reconcile.py calls it after
the status files are written, before the projections and Git). The host's status of
each tenant it ran (its agents, their heartbeats, its usage readings, the tasks of its
lanes and who holds them, and the whole status document), the runs that changed
something and the new ledger lines become rows (reconciler/register/rows.py); only what
differs from the digest of the last write is sent, as one batch in one transaction. Then, on the same connection, the run takes or
renews the projection lease; the holder reads back every host's status documents, from
which it renders TASKS.md and MISSION-MANIFEST.md. The register being unreachable,
restarted or at another schema never fails the run: the batch is spooled under the
state directory, the run says so once (a warning), and the next run replays the spool
in order first.

Tenancy: a tenant with `user:` is written by its own run (the one root starts as that
Linux user), connected as the user's own database role, from its own state directory
(digest, spool, heartbeats, ledger); root's run leaves such tenants out of its batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from reconciler.core.render import status_document, status_from_document
from reconciler.drivers import register as pg
from reconciler.drivers import register_spool as spool
from reconciler.drivers.users import current_user
from reconciler.engine.apply import Outcome
from reconciler.engine.tick import Tick
from reconciler.engine.writeback import run_record
from reconciler.model.layout import StateLayout
from reconciler.model.observed import Heartbeat
from reconciler.model.status import TenantStatus
from reconciler.register.rows import DOC, Row, plan_batch
from reconciler.spec.models import Register, UrlFrom
from reconciler.spec.repo import FleetRepo

#: A task's mission and title (tasks.yaml), by tenant and task id.
Titles = Mapping[tuple[str, str], tuple[str, str]]


def task_titles(repo: FleetRepo) -> dict[tuple[str, str], tuple[str, str]]:
    """(tenant, task) -> (mission, title) of every task in the tenants' tasks.yaml."""
    return {(name, task.id): (mission.id, task.title) for name, spec in repo.tenants.items()
            for mission in (spec.tasks.missions if spec.tasks else ()) for task in mission.tasks}


def task_rows(status: TenantStatus, titles: Titles) -> list[Row]:
    """The `tasks` rows of the tasks of this host's lanes (status `tasks`, the fleet's view)
    and an `assignments` row for each that names its agent: held (assigned, working) or
    reported (done, blocked) by it, since then. A task set done or cancelled in tasks.yaml
    (people's word wins over a report) names no agent, so it has no assignment; a task gone
    from the status loses both rows.

    >>> from reconciler.model.status import TaskStatus
    >>> s = TenantStatus("shop", "h", "r", "", tasks=(TaskStatus("T1", "api", "working", "coder0-0", "2026-12-01T00:00:00+00:00"),
    ...                                               TaskStatus("T2", "api", "queued")))
    >>> [(r.table, r.key, r.values["state"]) for r in task_rows(s, {("shop", "T1"): ("M1", "Paginate")})]
    [('tasks', 'T1', 'working'), ('assignments', 'T1', 'working'), ('tasks', 'T2', 'queued')]
    """
    rows: list[Row] = []
    for view in status.tasks:
        mission, title = titles.get((status.tenant, view.task), (None, view.task))
        rows.append(Row("tasks", status.tenant, view.task, {
            "mission": mission, "title": title, "lane": view.lane or None, "state": view.state, "note": view.note}))
        if view.agent and view.since:
            rows.append(Row("assignments", status.tenant, view.task, {
                "agent": view.agent, "lane": view.lane or None, "state": view.state, "since": view.since}))
    return rows


def kept_rows(statuses: Sequence[TenantStatus], beats: Mapping[tuple[str, str], Heartbeat],
              titles: Titles | None = None) -> list[Row]:
    """The rows this host keeps in the register for the tenants it ran: agents, their
    latest heartbeats, the tenants' usage readings, each status document whole, and the
    tasks of its lanes with their assignments (`titles`: from tasks.yaml, task_titles)."""
    rows: list[Row] = []
    for status in statuses:
        rows.append(Row("status_docs", status.tenant, DOC, {"doc": status_document(status)}))
        for agent in status.agents:
            rows.append(Row("agents", status.tenant, agent.name, {
                "role": agent.role, "alias": agent.alias, "lifecycle": agent.lifecycle,
                "desired_model": agent.desired_model, "running_model": agent.running_model,
                "health": agent.health, "tokens": agent.tokens,
                "conditions": [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
                                "since": c.since} for c in agent.conditions]}))
            beat = beats.get((status.tenant, agent.name))
            if beat is not None:
                rows.append(Row("heartbeats", status.tenant, agent.name, {
                    "seq": beat.seq, "ts": beat.ts.isoformat(), "state": beat.state, "model": beat.model,
                    "pid": beat.pid, "ack": beat.ack}))
        for account in status.accounts:
            rows.append(Row("usage", status.tenant, account.account, {
                "runtime": account.runtime, "regime": account.regime, "state": account.state,
                "used_pct": account.used_pct, "allowed_pct": account.allowed_pct, "reset_at": account.reset,
                "exhausts": account.exhausts, "confidence": account.confidence, "source": account.source}))
        rows += task_rows(status, titles or {})
    return rows


def run_rows(tick: Tick, statuses: Sequence[TenantStatus], outcomes: Sequence[Outcome], run_id: str,
             revision: str, finished: datetime) -> list[Row]:
    """One `runs` row per tenant this run changed something for."""
    rows = []
    for status in statuses:
        record = run_record(tick, outcomes, status.tenant, revision, finished)
        if record is not None:
            rows.append(Row("runs", status.tenant, run_id, {
                "revision": record.revision, "at": record.at, "duration_ms": record.duration_ms,
                "actions": list(record.actions), "failed": record.failed}))
    return rows


@dataclass(frozen=True, slots=True)
class Lease:
    """Asking for the projection lease: of fleet `scope`, for `ttl_s` seconds; and the
    tenants whose status documents the holder reads back (the repository's)."""

    scope: str
    ttl_s: float
    tenants: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Synced:
    """What the register step did: warnings (at most one about the register itself);
    whether the register took the batch; who holds the projection lease (None: not
    asked, or the register was not reached); and, for the holder, every host's status
    documents of the lease's tenants."""

    problems: tuple[str, ...] = ()
    reached: bool = False
    holder: str | None = None
    docs: tuple[TenantStatus, ...] | None = None


#: Added to the one warning of a run whose register step failed while it asked for the lease.
FALLBACK = "TASKS.md and MISSION-MANIFEST.md were rendered from the status files, as without a register"


def sync(tick: Tick, config: Register, statuses: Sequence[TenantStatus], outcomes: Sequence[Outcome], *,
         revision: str, finished: datetime, lease: Lease | None = None) -> Synced:
    """Write (or spool) this run's batch after replaying the spool, then (with `lease`)
    take or renew the projection lease and, holding it, read every host's documents.

    A tenant user's run (`revision` given by root, tick.inputs.revision) connects as the
    user's own role (pg.tenant_url); root's run leaves out the tenants run by other users."""
    run_id = tick.now.strftime("%Y%m%dT%H%M%S.%fZ")
    as_tenant = tick.inputs.revision is not None
    if not as_tenant:
        statuses = [s for s in statuses if s.tenant not in run_by_others(tick)]
    ran = [s for s in statuses if s.tenant in tick.desired.tenants]
    unseen = {("heartbeats", s.tenant) for s in statuses if s.tenant not in tick.desired.tenants}
    names = [s.tenant for s in statuses]
    source: UrlFrom | Callable[[], str] = config.url_from
    refused = ""
    if as_tenant:
        source = partial(pg.tenant_url, Path.home())
        refused = grant_hint(tick.inputs.repo, names)
    return write_rows(StateLayout(tick.inputs.state_dir), source, host=tick.inputs.host,
                      tenants=names, kept=kept_rows(statuses, tick.observed.heartbeats, task_titles(tick.repo)),
                      runs=run_rows(tick, ran, outcomes, run_id, revision, finished), run_id=run_id,
                      finished=finished, unseen=unseen, lease=lease, refused=refused)


def run_by_others(tick: Tick) -> frozenset[str]:
    """Tenants whose `user:` is another Linux user than this run's: their own runs write them."""
    me = current_user()
    return frozenset(name for name, spec in tick.repo.tenants.items()
                     if spec.roster.user is not None and spec.roster.user != me)


def grant_hint(repo: Path, tenants: Sequence[str]) -> str:
    """What the operator does when the register refuses a tenant user's role."""
    flags = " ".join(f"--tenant {t}" for t in tenants)
    return (f"as the register's operator, run `fleet register grant {repo} {flags}` (a role {current_user()} "
            "for peer authentication, mapped to its tenant; docs/register.md \"Tenant roles\")")


def documents(rows: Sequence[tuple[str, str, Any]]) -> tuple[list[TenantStatus], list[str]]:
    """Status documents read from the register as statuses; a damaged one is a problem line."""
    out, problems = [], []
    for tenant, host, doc in rows:
        try:
            status = status_from_document(doc)
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"the register's status of {tenant} on {host} is damaged ({exc}); left out of TASKS.md")
            continue
        if (status.tenant, status.host) != (tenant, host):
            problems.append(f"the register's status of {tenant} on {host} names {status.tenant} on {status.host}; "
                            "left out of TASKS.md")
            continue
        out.append(status)
    return out, problems


def write_rows(layout: StateLayout, url_from: UrlFrom | Callable[[], str], *, host: str, tenants: Sequence[str],
               kept: Sequence[Row], runs: Sequence[Row], run_id: str, finished: datetime,
               unseen: Collection[tuple[str, str]] = (), lease: Lease | None = None, refused: str = "") -> Synced:
    """What changed among `kept` since the digest, the `runs` and the ledgers' new lines, as
    one batch behind the spooled ones; written in order, or spooled. `url_from` says where
    the connection string is read (or reads it); `refused`, what to do when the register
    refuses the role (a tenant user's run). With `lease`, then the projection lease and
    (held) the documents, on the same connection."""
    previous = spool.read_digest(layout)
    seq = max((previous.seq if previous else 0) + 1, time.time_ns() // 1000)
    ledger, offsets, problems = spool.ledger_tail(layout, tenants, dict(previous.ledger) if previous else {})
    batch, digest = plan_batch(previous, kept, [*runs, *ledger], tenants=tenants, host=host, run_id=run_id,
                               at=finished.isoformat(), seq=seq, now=finished.timestamp(), ledger=offsets,
                               unseen=unseen)
    pending, damaged = spool.read_spool(layout)
    problems += damaged
    queue = [*pending, batch]
    done = 0
    trouble: str | None = None
    holder: str | None = None
    docs: tuple[TenantStatus, ...] | None = None
    back = "when it is back"
    try:
        url = url_from() if callable(url_from) else pg.read_url(url_from)
        with pg.connect(url) as conn:
            pg.check_schema(conn, pg.migrations()[-1].version)
            for item in queue:
                pg.write_batch(conn, item, fresh=item is batch)
                done += 1
            if lease is not None:
                holder = pg.take_lease(conn, lease.scope, pg.PROJECTIONS_LEASE, host, lease.ttl_s)
                if holder == host:
                    read, damaged_docs = documents(pg.read_status_docs(conn, lease.tenants))
                    docs = tuple(read)
                    problems += damaged_docs
    except pg.SchemaMismatch as exc:
        trouble = f"the register is not written: {exc}"
    except pg.RoleRefused as exc:
        trouble = f"the register refused this run's role ({exc}){'; ' + refused if refused else ''}"
        back = "once the role is in place"
    except pg.RegisterError as exc:
        trouble = f"the register is unreachable ({exc})"
    left = [b for b in queue[done:] if b.changed or b is not batch]
    try:
        if left or pending or damaged:
            spool.write_spool(layout, left)
        if previous is None or batch.changed or digest.ledger != previous.ledger:  # a no-op keeps it as it is
            spool.write_digest(layout, digest)
    except OSError as exc:
        problems.append(f"{spool.spool_path(layout)}: cannot keep the register spool ({exc.strerror or exc}); "
                        "the next run writes everything again")
        layout.register_digest().unlink(missing_ok=True)
    if trouble:
        problems.append(f"{trouble}; this host reconciled from Git and its state directory; {len(left)} batch(es) "
                        f"kept in {spool.spool_path(layout)}, replayed in order {back}"
                        + (f"; {FALLBACK}" if lease is not None else ""))
        return Synced(tuple(problems))
    return Synced(tuple(problems), True, holder, docs)
