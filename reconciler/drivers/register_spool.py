"""The register's local files: the digest of what was last written, the spool, the ledger's tail.

All under the state directory (StateLayout.register_digest / register_spool). The digest
lets a run write only what changed; the spool keeps, in order, the batches the register
could not take (unreachable, restarted, an old schema), one JSON line each, until a
later run replays them. Both are replaced atomically. No psycopg here: a run without a
reachable register still reads and writes these.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from reconciler.drivers.files import DAMAGED, write_atomic
from reconciler.drivers.ledger import parse_entry
from reconciler.model.layout import StateLayout
from reconciler.register.rows import Batch, Digest, Row

#: What reading a damaged or unreadable file of ours raises.
_UNREADABLE: tuple[type[Exception], ...] = (OSError, UnicodeDecodeError, IndexError, *DAMAGED)


def read_digest(layout: StateLayout) -> Digest | None:
    """The digest, or None when there is none or it is damaged (then everything is written again)."""
    try:
        return Digest.from_json(layout.register_digest().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except _UNREADABLE:
        return None


def write_digest(layout: StateLayout, digest: Digest) -> None:
    path = layout.register_digest()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, digest.to_json(), mode=0o600)


def read_spool(layout: StateLayout) -> tuple[list[Batch], list[str]]:
    """The spooled batches in order, and a problem line per damaged one (skipped)."""
    path = layout.register_spool()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{path}: cannot read the register spool ({exc.strerror or exc})"]
    batches, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            batches.append(Batch.from_json(line))
        except _UNREADABLE as exc:
            problems.append(f"{path}:{number}: damaged spooled batch skipped ({exc})")
    return batches, problems


def write_spool(layout: StateLayout, batches: Sequence[Batch]) -> None:
    """Replace the spool with `batches` (none: remove it)."""
    path = layout.register_spool()
    if not batches:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, "".join(b.to_json() + "\n" for b in batches), mode=0o600)


#: Ledger fields copied to the register's `ledger` rows (tenant and host are the row's own).
LEDGER_FIELDS = ("ts", "agent", "role", "task", "account", "model", "source", "stream", "tokens", "dollars",
                 "total_tokens", "total_usd", "confidence")


def ledger_tail(layout: StateLayout, tenants: Iterable[str], taken: dict[str, int],
                limit: int = 64 << 20) -> tuple[list[Row], dict[str, int], list[str]]:
    """Ledger lines appended since `taken` (bytes per tenant) as register rows keyed by
    the SHA-256 of the line, with the new offsets. A ledger shorter than its offset was
    moved aside: it is read from the start (the keys make that write nothing twice)."""
    rows: list[Row] = []
    offsets: dict[str, int] = {}
    problems: list[str] = []
    for tenant in sorted(tenants):
        path = layout.ledger(tenant)
        start = taken.get(tenant, 0)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < start:
                    start = 0
                if size == start:
                    offsets[tenant] = start
                    continue
                handle.seek(start)
                data = handle.read(min(size - start, limit))
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot read the ledger for the register ({exc.strerror or exc})")
            continue
        complete = data[: data.rfind(b"\n") + 1]  # a line being appended is taken next time
        offsets[tenant] = start + len(complete)
        for raw in complete.splitlines():
            if not raw.strip():
                continue
            try:
                entry = parse_entry(raw.decode("utf-8"))
            except _UNREADABLE:
                continue  # write-back reports damaged ledger lines already
            values = {f: getattr(entry, f) for f in LEDGER_FIELDS}
            values["ts"] = entry.ts.isoformat()
            rows.append(Row("ledger", tenant, hashlib.sha256(raw.strip()).hexdigest(), values))
    return rows, offsets, problems


def spool_path(layout: StateLayout) -> Path:
    return layout.register_spool()
