"""The spend ledger file: `$FLEET_STATE_DIR/<tenant>/ledger.jsonl`, append-only.

The ingesters (engine/ingest.py) append one JSON line per counter increase; TASKS.md
reads the lines back (model/ledger.py's `learned_spend`). Lines are never rewritten, so
a reader may tail the file, which a tick does (drivers/ledger_fold.py; the whole reads
here are its fallback); a damaged line is reported and skipped, never fatal, and a
ledger that is not a regular file or is over `MAX_LEDGER_BYTES` is reported, not read. The
read-compute-append of one ingest runs under an flock on the file itself, so two
ingesters (the CLI and a reconcile tick) never append the same increase twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from reconciler.drivers.files import DAMAGED, damage, read_capped
from reconciler.model.layout import StateLayout
from reconciler.model.ledger import LedgerEntry

#: About 300,000 entries; a ledger this large should be rotated (moved aside) by hand.
MAX_LEDGER_BYTES = 128 << 20


def ledger_path(state_dir: Path, tenant: str) -> Path:
    return StateLayout(state_dir).ledger(tenant)


def render_entry(entry: LedgerEntry) -> str:
    """One JSON line, fields in a fixed order, time in UTC with Z.

    >>> e = LedgerEntry(datetime(2026, 11, 25, 12, tzinfo=UTC), "jarvis", "w", "coder0-0", "coder", "T1",
    ...                 None, "opus", "heartbeat", "coder0-0@42", 500, None, 1500, None, "estimated")
    >>> print(render_entry(e), end="")
    {"ts": "2026-11-25T12:00:00Z", "tenant": "jarvis", "host": "w", "agent": "coder0-0", "role": "coder", "task": "T1", "account": null, "model": "opus", "source": "heartbeat", "stream": "coder0-0@42", "tokens": 500, "dollars": null, "total_tokens": 1500, "total_usd": null, "confidence": "estimated"}
    >>> parse_entry(render_entry(e)) == e
    True
    """
    doc = {
        "ts": entry.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tenant": entry.tenant, "host": entry.host, "agent": entry.agent, "role": entry.role,
        "task": entry.task, "account": entry.account, "model": entry.model, "source": entry.source,
        "stream": entry.stream, "tokens": entry.tokens, "dollars": entry.dollars,
        "total_tokens": entry.total_tokens, "total_usd": entry.total_usd, "confidence": entry.confidence,
    }
    return json.dumps(doc) + "\n"


def parse_entry(line: str) -> LedgerEntry:
    """One ledger line back into an entry; ValueError (or KeyError/TypeError) when damaged."""
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    ts = datetime.fromisoformat(doc["ts"])
    if ts.utcoffset() is None:
        raise ValueError("'ts' has no time zone")
    return LedgerEntry(
        ts=ts.astimezone(UTC),
        tenant=str(doc["tenant"]), host=str(doc["host"]),
        agent=_opt_str(doc.get("agent")), role=_opt_str(doc.get("role")), task=_opt_str(doc.get("task")),
        account=_opt_str(doc.get("account")), model=str(doc["model"]),
        source=str(doc["source"]), stream=str(doc["stream"]),
        tokens=_int(doc["tokens"]), dollars=_opt_float(doc.get("dollars")),
        total_tokens=_int(doc["total_tokens"]), total_usd=_opt_float(doc.get("total_usd")),
        confidence=str(doc["confidence"]),
    )


def parse_ledger(text: str, where: str = "ledger") -> tuple[list[LedgerEntry], list[str]]:
    """Every readable line of a ledger, and a problem for each damaged one.

    A cut-off last line (a writer killed mid-append) is one such problem; the entries
    before and after it still count.
    """
    return parse_lines(text.splitlines(), where)


def parse_lines(lines: Sequence[str], where: str, first: int = 1) -> tuple[list[LedgerEntry], list[str]]:
    """`parse_ledger` of lines numbered from `first` (a read from a cursor numbers on)."""
    entries: list[LedgerEntry] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        try:
            entries.append(parse_entry(line))
        except DAMAGED as exc:
            problems.append(f"{where}:{number}: unreadable ledger line ({damage(exc)}); it is skipped, "
                            "delete the line to silence this")
    return entries, problems


def read_ledger(path: Path) -> tuple[list[LedgerEntry], list[str]]:
    """The whole ledger of one tenant; a missing file is an empty ledger."""
    try:
        text = read_capped(path, MAX_LEDGER_BYTES)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{path}: cannot read the ledger ({exc.strerror or exc}); {_FIX}"]
    except UnicodeDecodeError as exc:
        return [], [f"{path}: cannot read the ledger ({exc}); {_FIX}"]
    return parse_ledger(text, str(path))


def update_ledger(
    path: Path, compute: Callable[[Sequence[LedgerEntry]], Sequence[LedgerEntry]]
) -> tuple[list[LedgerEntry], list[str]]:
    """Read the ledger, let `compute` decide the new entries, append them; all under one flock.

    Returns the entries appended and the problems met reading the old ones. The append
    is a single `write` of whole lines on an O_APPEND descriptor, then fsync. A ledger
    that cannot be opened, is a symlink (never followed: it could point anywhere), is not
    a regular file or is too large is one problem, and nothing is appended.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return [], [f"{path}: cannot open the ledger ({exc.strerror or exc}); nothing was appended, {_FIX}"]
    try:
        refused = _refusal(os.fstat(fd))
        if refused:
            return [], [f"{path}: {refused}; nothing was appended, {_FIX}"]
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as handle:
            text = handle.read(MAX_LEDGER_BYTES).decode("utf-8", errors="replace")
        old, problems = parse_ledger(text, str(path))
        new = list(compute(old))
        if new:
            payload = "".join(_heal(text) + render_entry(e) if i == 0 else render_entry(e)
                              for i, e in enumerate(new))
            try:
                _write_all(fd, payload.encode())
                os.fsync(fd)
            except OSError as exc:  # a full disk: the next ingest computes these entries again
                return [], [*problems, f"{path}: could not append to the ledger ({exc.strerror or exc}); "
                            "the next ingest appends what is missing"]
        return new, problems
    finally:
        os.close(fd)  # closing releases the flock


_FIX = "fix its permissions, or move it aside (the next ingest starts a new one)"


def _refusal(kind: os.stat_result) -> str:
    """Why the opened ledger must not be read and appended to ("" when it may)."""
    if not stat.S_ISREG(kind.st_mode):
        return "the ledger is not a regular file"
    if kind.st_size > MAX_LEDGER_BYTES:
        return f"the ledger is larger than {MAX_LEDGER_BYTES >> 20} MiB"
    return ""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _heal(text: str) -> str:
    """A newline first when the last line was cut off, so it cannot swallow the next entry."""
    return "\n" if text and not text.endswith("\n") else ""


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)

