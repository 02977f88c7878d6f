"""What one run writes to the register, as data: rows, the batch of one run, and what changed.

The engine turns this host's status (core/status.py: agents, usage, its lanes' tasks and
their assignments), heartbeats and new ledger lines into `Row`s; `plan_batch` compares
them with the digest of what was last written (or spooled) and keeps only what changed,
so a tick that changed nothing on 1,000 healthy agents is one small batch: the host's
`last_seen`. A batch is plain JSON (the spool holds batches that could not be written)
and every statement it becomes is idempotent: kept rows are upserts, runs and ledger
lines inserts keyed by an idempotency key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Tables of kept rows (upserted while present, deleted when gone) and the column their key fills;
#: "" for a table of one row per tenant and host (the host's status document: key `DOC`).
KEPT = {"agents": "agent", "heartbeats": "agent", "usage": "account", "status_docs": "",
        "tasks": "task_id", "assignments": "task_id"}
#: The key of a `status_docs` row (the table has no key column beside tenant and host).
DOC = "doc"
#: Tables of appended rows, written once (ON CONFLICT DO NOTHING), and their key column.
APPENDED = {"runs": "run_id", "ledger": "idempotency_key"}
#: Fields that change on every beat and do not, alone, make a row worth writing.
VOLATILE = {"heartbeats": frozenset({"seq", "ts"})}
#: A heartbeat whose content did not change is still rewritten this often (seconds), so
#: the register's `ts` is never older than this behind the agent's own.
HEARTBEAT_REFRESH_S = 900.0


@dataclass(frozen=True, slots=True)
class Row:
    """One row of `table` for `tenant` (the host is the batch's), keyed by `key`."""

    table: str
    tenant: str
    key: str
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        return f"{self.table}/{self.tenant}/{self.key}"

    def digest(self) -> str:
        """A short hash of what matters in the row (volatile fields left out).

        >>> a = Row("heartbeats", "t", "a", {"seq": 1, "ts": "x", "state": "idle"})
        >>> b = Row("heartbeats", "t", "a", {"seq": 2, "ts": "y", "state": "idle"})
        >>> a.digest() == b.digest(), a.digest() == Row("heartbeats", "t", "a", {"state": "working"}).digest()
        (True, False)
        """
        skip = VOLATILE.get(self.table, frozenset())
        kept = {k: v for k, v in self.values.items() if k not in skip}
        return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Digest:
    """What this host last wrote (or spooled): a hash per kept row, when each heartbeat
    was last written (epoch seconds), how far each tenant's ledger file was taken, and
    the last batch's number. Kept in the state directory (StateLayout.register_digest)."""

    seq: int = 0
    rows: Mapping[str, str] = field(default_factory=dict)
    beats: Mapping[str, float] = field(default_factory=dict)
    ledger: Mapping[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "rows": dict(self.rows), "beats": dict(self.beats),
                           "ledger": dict(self.ledger)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Digest:
        doc = json.loads(text)
        return cls(int(doc["seq"]), {str(k): str(v) for k, v in doc["rows"].items()},
                   {str(k): float(v) for k, v in doc["beats"].items()},
                   {str(k): int(v) for k, v in doc["ledger"].items()})


@dataclass(frozen=True, slots=True)
class Batch:
    """One run's write for one host, applied in one transaction.

    `tenants` get their `hosts` row touched (last_seen, last_batch); `prune` names
    `table/tenant` pairs whose rows not in `upserts` are deleted (the digest was lost, so
    what is gone is not known row by row). A batch whose `seq` is not above the host's
    `last_batch` was applied before and is skipped whole: a replay writes nothing twice.
    """

    seq: int
    host: str
    run_id: str
    at: str
    tenants: tuple[str, ...]
    upserts: tuple[Row, ...] = ()
    deletes: tuple[Row, ...] = ()
    inserts: tuple[Row, ...] = ()
    prune: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the batch holds more than the host's touch."""
        return bool(self.upserts or self.deletes or self.inserts or self.prune)

    def to_json(self) -> str:
        def rows(items: Iterable[Row]) -> list[list[Any]]:
            return [[r.table, r.tenant, r.key, dict(r.values)] for r in items]

        return json.dumps({"seq": self.seq, "host": self.host, "run_id": self.run_id, "at": self.at,
                           "tenants": list(self.tenants), "upserts": rows(self.upserts),
                           "deletes": rows(self.deletes), "inserts": rows(self.inserts),
                           "prune": list(self.prune)}, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Batch:
        """A spooled batch back; ValueError/KeyError/TypeError when the line is damaged.

        >>> b = Batch(7, "h", "r", "2026-12-01T00:00:00+00:00", ("t",), upserts=(Row("agents", "t", "a", {"x": 1}),))
        >>> Batch.from_json(b.to_json()) == b
        True
        """
        doc = json.loads(text)

        def rows(items: Sequence[Any], tables: Collection[str]) -> tuple[Row, ...]:
            out = tuple(Row(str(t), str(n), str(k), dict(v)) for t, n, k, v in items)
            unknown = sorted({r.table for r in out} - set(tables))
            if unknown:
                raise ValueError(f"unknown table {unknown[0]!r}")
            return out

        return cls(int(doc["seq"]), str(doc["host"]), str(doc["run_id"]), str(doc["at"]),
                   tuple(str(t) for t in doc["tenants"]), rows(doc["upserts"], KEPT), rows(doc["deletes"], KEPT),
                   rows(doc["inserts"], APPENDED), tuple(_pair(p) for p in doc["prune"]))


def _pair(text: object) -> str:
    """A `table/tenant` pair of a spooled batch's prune, checked."""
    table, _, tenant = str(text).partition("/")
    if table not in KEPT or not tenant:
        raise ValueError(f"bad prune entry {text!r}")
    return str(text)


def plan_batch(previous: Digest | None, kept: Iterable[Row], appended: Iterable[Row], *, tenants: Collection[str],
               host: str, run_id: str, at: str, seq: int, now: float, ledger: Mapping[str, int],
               unseen: Collection[tuple[str, str]] = ()) -> tuple[Batch, Digest]:
    """The batch of what changed since `previous` (None: nothing is known, write all and
    prune), and the digest after it. `kept` are every current kept row of `tenants`;
    `appended` the new runs and ledger lines; `ledger` the ledger offsets after them;
    `unseen` (table, tenant) pairs this run did not look at (a tenant's heartbeats when
    another user runs it): their rows are neither written nor deleted.

    >>> row = Row("agents", "t", "a", {"health": "healthy"})
    >>> first, digest = plan_batch(None, [row], [], tenants=["t"], host="h", run_id="r1", at="", seq=1, now=0,
    ...                            ledger={})
    >>> len(first.upserts), first.prune
    (1, ('agents/t', 'heartbeats/t', 'usage/t', 'status_docs/t', 'tasks/t', 'assignments/t'))
    >>> again, _ = plan_batch(digest, [row], [], tenants=["t"], host="h", run_id="r2", at="", seq=2, now=1, ledger={})
    >>> again.changed, again.tenants
    (False, ('t',))
    >>> gone, after = plan_batch(digest, [], [], tenants=["t"], host="h", run_id="r3", at="", seq=3, now=2, ledger={})
    >>> [d.ident for d in gone.deletes], dict(after.rows)
    (['agents/t/a'], {})
    """
    scope = set(tenants)
    blind = {f"{table}/{tenant}/" for table, tenant in unseen}

    def carried(ident: str) -> bool:
        return ident.split("/", 2)[1] not in scope or any(ident.startswith(b) for b in blind)

    rows = {k: v for k, v in (previous.rows if previous else {}).items() if carried(k)}
    beats = {k: v for k, v in (previous.beats if previous else {}).items() if carried(k)}
    before = previous.rows if previous else {}
    upserts: list[Row] = []
    current: set[str] = set()
    for row in kept:
        if (row.table, row.tenant) in unseen:
            continue
        ident, digest = row.ident, row.digest()
        current.add(ident)
        rows[ident] = digest
        stale = row.table == "heartbeats" and now - (previous.beats.get(ident, now) if previous else now) >= HEARTBEAT_REFRESH_S
        if before.get(ident) != digest or stale:
            upserts.append(row)
            if row.table == "heartbeats":
                beats[ident] = now
        elif row.table == "heartbeats" and previous is not None:
            beats[ident] = previous.beats.get(ident, now)
    deletes = tuple(Row(table, tenant, key) for ident in sorted(before) if ident not in current and not carried(ident)
                    for table, tenant, key in [ident.split("/", 2)])
    batch = Batch(seq, host, run_id, at, tuple(sorted(scope)), tuple(upserts), deletes, tuple(appended),
                  prune=() if previous is not None else tuple(
                      f"{table}/{tenant}" for tenant in sorted(scope) for table in KEPT if (table, tenant) not in unseen))
    offsets = {**(previous.ledger if previous else {}), **ledger}
    return batch, Digest(seq, rows, beats, offsets)
