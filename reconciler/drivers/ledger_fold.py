"""The ledger read from a cursor: a tick's ledger cost follows what was appended since the last.

Both readers of `ledger.jsonl` in an applying tick (the ingest's append under its flock,
the status write-back's spend) used to parse the whole file. The fold file
(`<tenant>/ledger.fold.json`, model/layout.py) keeps the ledger's inode, the offset just
past the last whole line folded, a digest of the bytes around that offset (its first and
last 4 KiB before it), and what those lines add up to (model/ledger.py `LedgerFold`): a
reader checks the cursor, parses only the bytes after it, folds them in and saves the
fold. When the cursor no longer matches (the file was moved aside, replaced, truncated
or rewritten in place) or the fold file is missing, damaged or of another version, the
ledger is folded from its first byte, which is the whole read it replaces; new bytes
that are not UTF-8 leave it to the whole read (drivers/ledger.py), which reports them.
A line after the last newline (an append cut off) is parsed but not folded, so the next
reader parses it again. The fold file is a cache: deleting it costs one whole read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler.drivers.files import DAMAGED, read_capped, write_if_changed
from reconciler.drivers.ledger import (
    _FIX,
    MAX_LEDGER_BYTES,
    _refusal,
    _write_all,
    parse_entry,
    parse_lines,
    read_ledger,
    render_entry,
    update_ledger,
)
from reconciler.model.ledger import LedgerEntry, LedgerFold, fold_ledger

FORMAT_VERSION = 1
#: A fold this large holds hundreds of thousands of counters: refused, the ledger is read whole.
MAX_FOLD_BYTES = 64 << 20
CHECK_BYTES = 4096
_UNUSABLE: tuple[type[Exception], ...] = (OSError, *DAMAGED)


@dataclass(frozen=True, slots=True)
class SavedFold:
    """The fold of a ledger's bytes up to `offset`, and how to know it is still that file."""

    inode: int
    offset: int
    check: str
    fold: LedgerFold


# --- the fold file's JSON (pure) -------------------------------------------------------------


def render_fold(saved: SavedFold) -> str:
    """The fold as JSON; entries as their ledger lines.

    >>> from datetime import UTC
    >>> e = LedgerEntry(datetime(2026, 1, 1, tzinfo=UTC), "t", "h", "w", "coder", None, None, "m", "heartbeat",
    ...                 "w@1", 5, None, 5, None, "estimated")
    >>> saved = SavedFold(7, 300, "ab", fold_ledger(LedgerFold(), [e, e], 3, ["ledger:2: damaged"]))
    >>> parse_fold(render_fold(saved)) == saved
    True
    """
    fold = saved.fold
    doc = {
        "version": FORMAT_VERSION, "inode": saved.inode, "offset": saved.offset, "check": saved.check,
        "lines": fold.lines, "problems": list(fold.problems),
        "last": [render_entry(e) for e in fold.last.values()],
        "tasked": [[*key, tokens] for key, tokens in fold.tasked.items()],
        "loose": [[*key[:5], key[5].isoformat(), tokens] for key, tokens in fold.loose.items()],
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def parse_fold(text: str) -> SavedFold:
    """A fold back from JSON; ValueError (or another of files.DAMAGED) when damaged or of another version."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"expected a fold of version {FORMAT_VERSION}")
    inode, offset, lines = doc["inode"], doc["offset"], doc["lines"]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (inode, offset, lines)):
        raise ValueError("inode, offset and lines must be non-negative integers")
    last: dict[tuple[str, str, str, str], LedgerEntry] = {}
    for line in doc["last"]:
        entry = parse_entry(line)
        last[(entry.tenant, *entry.counter)] = entry
    tasked = {(str(t), str(h), _opt(a), _opt(r), str(task), str(m)): _tokens(n)
              for t, h, a, r, task, m, n in doc["tasked"]}
    loose = {(str(t), str(h), str(a), _opt(r), str(m), _time(ts)): _tokens(n) for t, h, a, r, m, ts, n in doc["loose"]}
    problems = tuple(str(p) for p in doc["problems"])
    return SavedFold(inode, offset, str(doc["check"]), LedgerFold(lines, problems, last, tasked, loose))


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _tokens(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _time(value: object) -> datetime:
    moment = datetime.fromisoformat(str(value))
    if moment.utcoffset() is None:
        raise ValueError(f"time {value!r} has no zone")
    return moment


# --- on disk ---------------------------------------------------------------------------------


#: The fold each fold file last held or was meant to hold in this process, with the file's
#: (inode, size, mtime) then: a resident loop neither parses the fold again each tick nor
#: writes it on every append. A file changed by another process is parsed again.
_MEMO: dict[Path, tuple[tuple[int, int, int] | None, SavedFold]] = {}
#: The (inode, offset) of the fold this process last wrote or read, by fold file.
_written: dict[Path, tuple[int, int]] = {}
#: The fold file is rewritten once the ledger has grown by this much past it, or by its own size.
SAVE_EVERY = 256 << 10


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        seen = path.stat()
    except OSError:
        return None
    return seen.st_ino, seen.st_size, seen.st_mtime_ns


def load_fold(path: Path) -> SavedFold | None:
    """The saved fold (this process's newer one when the file is as it left it); None when
    missing, unreadable or damaged (the ledger is then folded from 0)."""
    key, signature = path.absolute(), _signature(path)
    kept = _MEMO.get(key)
    if kept is not None and signature is not None and kept[0] == signature:
        return kept[1]
    try:
        saved = parse_fold(read_capped(path, MAX_FOLD_BYTES))
    except _UNUSABLE:
        _MEMO.pop(key, None)
        return None
    _MEMO[key] = (signature, saved)
    _written[key] = (saved.inode, saved.offset)
    return saved


def save_fold(path: Path, saved: SavedFold) -> None:
    """Keep the fold for this process, and write it (atomically) unless it only moved on
    from the one written by less than SAVE_EVERY or the fold file's size (so the writes
    cost, per byte appended, a bounded amount). Not written, it costs another process
    only a read of those bytes; a failure to write, a longer read."""
    key = path.absolute()
    kept = _MEMO.get(key)
    signature = kept[0] if kept else None
    if kept is not None and kept[1].inode == saved.inode and signature is not None:
        written = _written.get(key, (saved.inode, -1))
        if written[0] == saved.inode and 0 <= saved.offset - written[1] < max(SAVE_EVERY, signature[1]):
            _MEMO[key] = (signature, saved)
            return
    with contextlib.suppress(OSError):
        write_if_changed(path, render_fold(saved), mode=0o600)
        signature = _signature(path)
        _written[key] = (saved.inode, saved.offset)
    _MEMO[key] = (signature, saved)


def _check(fd: int, offset: int) -> str:
    """A digest of the first and last CHECK_BYTES before `offset`: a file rewritten in place differs."""
    head = os.pread(fd, min(offset, CHECK_BYTES), 0)
    tail = os.pread(fd, min(offset, CHECK_BYTES), max(0, offset - CHECK_BYTES))
    return hashlib.sha256(head + b"\0" + tail).hexdigest()


def _read_from(fd: int, offset: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.pread(fd, min(1 << 20, limit - size), offset + size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def fold_open(fd: int, kind: os.stat_result, saved: SavedFold | None,
              where: str) -> tuple[SavedFold, LedgerFold] | None:
    """Fold the ledger open on `fd` from `saved`'s cursor (from 0 when it does not match).

    Returns the fold to save (up to the last newline) and the fold of every byte (with
    the line after it, if any); None when the new bytes are not UTF-8."""
    start = saved if saved is not None and saved.inode == kind.st_ino and saved.offset <= kind.st_size \
        and saved.check == _check(fd, saved.offset) else None
    offset, fold = (start.offset, start.fold) if start else (0, LedgerFold())
    data = _read_from(fd, offset, max(0, MAX_LEDGER_BYTES - offset))
    cut = data.rfind(b"\n") + 1
    try:
        whole, rest = data[:cut].decode("utf-8"), data[cut:].decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = whole.splitlines()  # `whole` ends with a newline: its lines then `rest`'s are those of the whole text
    entries, problems = parse_lines(lines, where, fold.lines + 1)
    folded = fold_ledger(fold, entries, len(lines), problems)
    end = offset + cut
    saving = SavedFold(kind.st_ino, end, start.check if start and end == start.offset else _check(fd, end), folded)
    more = rest.splitlines()
    if not more:
        return saving, folded
    entries, problems = parse_lines(more, where, folded.lines + 1)
    return saving, fold_ledger(folded, entries, len(more), problems)


def read_ledger_fold(path: Path, fold_path: Path, *, save: bool = True) -> tuple[LedgerFold, list[str]]:
    """The fold of the whole ledger, whose `spend_entries` book what `read_ledger`'s entries
    book, and the ledger's problems. `save=False`: the fold file is only read."""
    try:
        ahead = path.stat()
    except FileNotFoundError:
        return LedgerFold(), []
    except OSError:
        return _whole(path)
    if not stat.S_ISREG(ahead.st_mode) or ahead.st_size > MAX_LEDGER_BYTES:
        return _whole(path)  # which says why it is not read
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return _whole(path)
    try:
        kind = os.fstat(fd)
        saved = load_fold(fold_path)
        done = fold_open(fd, kind, saved, str(path)) if stat.S_ISREG(kind.st_mode) \
            and kind.st_size <= MAX_LEDGER_BYTES else None
    finally:
        os.close(fd)
    if done is None:
        return _whole(path)
    saving, fold = done
    if save and (saved is None or saving.offset != saved.offset or saving.inode != saved.inode):
        save_fold(fold_path, saving)
    return fold, list(fold.problems)


def _whole(path: Path) -> tuple[LedgerFold, list[str]]:
    """`read_ledger`, folded: the fallback when the ledger cannot be read from a cursor."""
    entries, problems = read_ledger(path)
    return fold_ledger(LedgerFold(), entries, 0, problems), problems


def update_ledger_fold(
    path: Path, fold_path: Path, compute: Callable[[Sequence[LedgerEntry]], Sequence[LedgerEntry]]
) -> tuple[list[LedgerEntry], list[str]]:
    """`update_ledger`, with `compute` given each counter's last entry (`LedgerFold.last_entries`)
    read from the fold's cursor rather than every entry of the ledger."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        return update_ledger(path, compute)  # which says why it cannot open it
    try:
        refused = _refusal(os.fstat(fd))
        if refused:
            return [], [f"{path}: {refused}; nothing was appended, {_FIX}"]
        fcntl.flock(fd, fcntl.LOCK_EX)
        kind = os.fstat(fd)
        done = fold_open(fd, kind, load_fold(fold_path), str(path))
        if done is None:
            os.close(fd)
            fd = -1
            return update_ledger(path, compute)
        saving, fold = done
        new = list(compute(fold.last_entries()))
        problems = list(fold.problems)
        if new:
            heal = "\n" if kind.st_size and os.pread(fd, 1, kind.st_size - 1) != b"\n" else ""  # see `_heal`
            payload = (heal + "".join(render_entry(e) for e in new)).encode()
            try:
                _write_all(fd, payload)
                os.fsync(fd)
            except OSError as exc:
                return [], [*problems, f"{path}: could not append to the ledger ({exc.strerror or exc}); "
                            "the next ingest appends what is missing"]
            if saving.offset == kind.st_size:  # nothing after the cursor: the new lines are folded as they are
                end = kind.st_size + len(payload)
                saving = SavedFold(kind.st_ino, end, _check(fd, end), fold_ledger(saving.fold, [parse_entry(render_entry(e)) for e in new], len(new)))
        save_fold(fold_path, saving)
        return new, problems
    finally:
        if fd >= 0:
            os.close(fd)

