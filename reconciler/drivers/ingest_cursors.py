"""Ingest cursors: how far each runtime file has been read, and what its lines added up to.

`fleet reconcile` ingests the runtimes' usage files every tick (engine/ingest.py), so a
tick must not re-read a transcript's whole history. For each file the cursor book
(`<tenant>/ingest/cursors.json`, model/layout.py) keeps its inode, the byte offset just
past the last whole line read, and the fold of those lines (a Codex session's totals and
limits, a Claude transcript's sums): a file is read from its offset, or from 0 when its
inode changed or it is shorter than the offset (rotated or truncated). Claude message ids
already counted go to an append-only index (`<tenant>/ingest/claude-keys`), read only when
a transcript is read from 0, so a resumed session copying old messages into a new file
counts nothing twice. Parsing and rendering here are pure; `read_book`/`write_book` and
the key index are the I/O. A damaged book is a problem line and starts over (everything
is read once more; the ledger's own totals keep that from booking anything twice).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.drivers.files import DAMAGED, damage, read_capped, write_if_changed
from reconciler.drivers.runtime_usage import (
    ClaudeFold,
    ClaudeSum,
    ClaudeUsage,
    CodexSession,
    RateReading,
    RateWindow,
)

FORMAT_VERSION = 1
#: A book this large means tens of thousands of transcript files: refused, read again from 0.
MAX_BOOK_BYTES = 64 << 20
MAX_KEYS_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class FileCursor:
    """One file: its inode, the offset past its last whole line read, and their fold."""

    inode: int
    offset: int
    fold: CodexSession | ClaudeFold


Book = Mapping[str, FileCursor]


# --- the book's JSON (pure) ------------------------------------------------------------------


def render_book(book: Book) -> str:
    """The book as JSON, files sorted, so an unchanged book renders the same bytes.

    >>> book = {"/h/r.jsonl": FileCursor(7, 120, CodexSession("s1", total_tokens=15))}
    >>> parse_book(render_book(book)) == book
    True
    """
    files = {path: {"inode": c.inode, "offset": c.offset, **_fold_json(c.fold)} for path, c in sorted(book.items())}
    return json.dumps({"version": FORMAT_VERSION, "files": files}, sort_keys=True) + "\n"


def parse_book(text: str) -> dict[str, FileCursor]:
    """A book back from JSON; ValueError (or another of files.DAMAGED) when damaged."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or not isinstance(doc.get("files"), dict):
        raise ValueError(f"expected {{'version': {FORMAT_VERSION}, 'files': {{...}}}}")
    book = {}
    for path, raw in doc["files"].items():
        inode, offset = raw["inode"], raw["offset"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (inode, offset)):
            raise ValueError(f"{path}: inode and offset must be non-negative integers")
        fold = _codex(raw["codex"]) if "codex" in raw else _claude(raw["claude"])
        book[str(path)] = FileCursor(inode, offset, fold)
    return book


def _fold_json(fold: CodexSession | ClaudeFold) -> dict[str, object]:
    if isinstance(fold, CodexSession):
        limits = None if fold.limits is None else {
            "observed_at": _iso(fold.limits.observed_at), "plan": fold.limits.plan,
            "windows": [{"name": w.name, "used": w.used_fraction, "reset_at": _iso(w.reset_at),
                         "window_s": None if w.window is None else w.window.total_seconds()}
                        for w in fold.limits.windows]}
        return {"codex": {"session": fold.session, "cwd": fold.cwd, "model": fold.model,
                          "total_tokens": fold.total_tokens, "usage": dict(fold.usage), "limits": limits,
                          "last_event": _iso(fold.last_event)}}
    return {"claude": {
        "sums": [{"session": s.session, "model": s.model, "tokens": s.tokens, "usd": s.usd, "cwd": s.cwd,
                  "ts": _iso(s.ts)} for s in fold.sums],
        "recent": [{"id": u.message_id, "request": u.request_id, "session": u.session, "model": u.model,
                    "ts": _iso(u.ts), "cwd": u.cwd, "cost_usd": u.cost_usd,
                    "counts": [u.input_tokens, u.output_tokens, u.cache_creation_input_tokens,
                               u.cache_read_input_tokens]} for u in fold.recent]}}


def _codex(raw: Mapping[str, object]) -> CodexSession:
    limits = raw.get("limits")
    reading = None
    if isinstance(limits, dict):
        windows = tuple(RateWindow(str(w["name"]), float(w["used"]),
                                   None if w["window_s"] is None else timedelta(seconds=float(w["window_s"])),
                                   _time(w["reset_at"])) for w in limits["windows"])
        observed = _time(limits["observed_at"])
        assert observed is not None
        reading = RateReading(observed, windows, limits.get("plan"))
    usage = raw.get("usage") or {}
    assert isinstance(usage, dict)
    return CodexSession(str(raw["session"]), _opt(raw.get("cwd")), str(raw["model"]), int(str(raw["total_tokens"])),
                        {str(k): int(v) for k, v in usage.items()}, reading, _time(raw.get("last_event")))


def _claude(raw: Mapping[str, object]) -> ClaudeFold:
    sums, recent = raw["sums"], raw["recent"]
    assert isinstance(sums, list) and isinstance(recent, list)
    return ClaudeFold(
        tuple(ClaudeSum(str(s["session"]), str(s["model"]), int(s["tokens"]),
                        None if s["usd"] is None else float(s["usd"]), _opt(s["cwd"]), _time(s["ts"])) for s in sums),
        tuple(_usage(u) for u in recent))


def _usage(u: Mapping[str, object]) -> ClaudeUsage:
    counts = u["counts"]
    assert isinstance(counts, list) and len(counts) == 4
    cost = u["cost_usd"]
    return ClaudeUsage(str(u["id"]), str(u["request"]), str(u["session"]), str(u["model"]), _time(u["ts"]),
                       _opt(u["cwd"]), int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3]),
                       cost_usd=None if cost is None else float(str(cost)))


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.utcoffset() is None:
        raise ValueError(f"time {value!r} has no zone")
    return moment


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


# --- on disk ---------------------------------------------------------------------------------


def read_book(path: Path, problems: list[str]) -> dict[str, FileCursor]:
    """The saved book; missing is empty, damaged is a problem and empty (read all again)."""
    try:
        return parse_book(read_capped(path, MAX_BOOK_BYTES))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        problems.append(f"{path}: unreadable ingest cursors ({exc.strerror or exc}); the runtimes' files are read "
                        "from the start this tick")
    except DAMAGED as exc:
        problems.append(f"{path}: unreadable ingest cursors ({damage(exc)}); the runtimes' files are read from the "
                        "start this tick, and the book is rewritten")
    return {}


def write_book(path: Path, book: Book) -> None:
    write_if_changed(path, render_book(book), mode=0o600)


def read_keys(path: Path, problems: list[str]) -> dict[tuple[str, str], str]:
    """Every Claude message (id, request id) already counted, with the tag of the file
    that counted it (drivers/transcripts.py `file_tag`), from the append-only index."""
    try:
        text = read_capped(path, MAX_KEYS_BYTES)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: unreadable message index ({exc}); a resumed Claude session's copied "
                        "messages may be counted again")
        return {}
    keys: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            keys.setdefault((parts[0], parts[1]), parts[2])
    return keys


def append_keys(path: Path, keys: Iterable[tuple[str, str, str]]) -> None:
    """Add counted messages to the index: one `write` of whole lines on O_APPEND."""
    payload = "".join(f"{m}\t{r}\t{t}\n" for m, r, t in keys if not any(c in m + r + t for c in "\t\n"))
    if not payload:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, payload.encode())
    finally:
        os.close(fd)
