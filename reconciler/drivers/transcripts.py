"""Reading the runtimes' own folders for the ingesters (engine/ingest.py).

Codex rollouts and Claude Code transcripts under a tenant's homes, and the status-line
hook's records in the state directory: each file is read here, cut to the lines worth
parsing, and handed to the pure parsers of drivers/runtime_usage.py. A file that cannot
be read, or lines that do not parse, become one problem line each, never a failed ingest.

With a cursor book (drivers/ingest_cursors.py) a file is read only past its cursor: an
unchanged file costs one `stat`, a grown one the bytes it grew by, and only whole lines
are read (a line the runtime is still writing waits for the next tick). A file whose
inode changed, or that is now shorter than its cursor, is read from the start.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.drivers.ingest_cursors import FileCursor
from reconciler.drivers.runtime_usage import (
    ClaudeFold,
    ClaudeSum,
    CodexSession,
    StatuslineRecord,
    fold_claude,
    parse_claude_transcript,
    parse_codex_rollout,
    parse_statusline_record,
)

#: Lines worth parsing in a rollout; the rest (prompts, tool output) are skipped unread.
_CODEX_MARKERS = ('"token_count"', '"session_meta"', '"turn_context"')


@dataclass(frozen=True, slots=True)
class Chunk:
    """The whole lines of a file past its cursor: `fresh` when read from 0."""

    inode: int
    start: int
    end: int
    text: str
    fresh: bool


def read_chunk(path: Path, cursor: FileCursor | None, problems: list[str]) -> Chunk | None:
    """The file's whole lines past `cursor` (all of them when its inode changed or it
    shrank); None when unreadable. An unchanged file is only stat'ed."""
    try:
        ahead = path.stat()
        if cursor is not None and ahead.st_ino == cursor.inode and ahead.st_size == cursor.offset:
            return Chunk(cursor.inode, cursor.offset, cursor.offset, "", False)
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            fresh = cursor is None or info.st_ino != cursor.inode or info.st_size < cursor.offset
            start = 0 if fresh or cursor is None else cursor.offset
            handle.seek(start)
            data = handle.read(max(info.st_size - start, 0))
    except OSError as exc:
        problems.append(f"{path}: cannot read it ({exc.strerror}); check its permissions")
        return None
    whole = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    return Chunk(info.st_ino, start, start + whole, data[:whole].decode("utf-8", errors="replace"), fresh)


def scan_codex_home(home: Path, book: Mapping[str, FileCursor],
                    problems: list[str]) -> tuple[list[CodexSession], dict[str, FileCursor]]:
    """Every rollout's session, each folded on from its cursor; and the moved cursors."""
    sessions, moved = [], {}
    for path in sorted((home / "sessions").rglob("rollout-*.jsonl")):
        cursor = book.get(str(path))
        chunk = read_chunk(path, cursor, problems)
        if chunk is None:
            continue
        start = None if chunk.fresh or cursor is None or not isinstance(cursor.fold, CodexSession) else cursor.fold
        if chunk.text or start is None:
            session, bad = parse_codex_rollout(_keep(chunk.text, _CODEX_MARKERS), path.stem, start)
            _summarize(path, bad, problems, chunk.start)
        else:
            session = start
        sessions.append(session)
        moved[str(path)] = FileCursor(chunk.inode, chunk.end, session)
    return sessions, moved


Seen = Callable[[], Mapping[tuple[str, str], str]]


def scan_claude_home(home: Path, book: Mapping[str, FileCursor], problems: list[str], index: Seen
                     ) -> tuple[list[ClaudeSum], dict[str, FileCursor], list[tuple[str, str, str]]]:
    """Every transcript's (session, model) sums, each folded on from its cursor; the moved
    cursors; and the messages counted for the first time, as (id, request, file tag).

    `index()` gives the messages counted before and the file that counted them; it is
    called only when some file is read from the start (a new or rotated transcript), so
    a tick that only reads appended lines does not read it.
    """
    sums: list[ClaudeSum] = []
    moved: dict[str, FileCursor] = {}
    counted: list[tuple[str, str, str]] = []
    owners: dict[tuple[str, str], str] | None = None
    this_scan: dict[tuple[str, str], str] = {}
    for path in sorted((home / "projects").rglob("*.jsonl")):
        cursor = book.get(str(path))
        chunk = read_chunk(path, cursor, problems)
        if chunk is None:
            continue
        fold = ClaudeFold() if chunk.fresh or cursor is None or not isinstance(cursor.fold, ClaudeFold) \
            else cursor.fold
        if chunk.text:
            tag = file_tag(path)
            if chunk.fresh and owners is None:
                owners = dict(index())
            found, bad = parse_claude_transcript(_keep(chunk.text, ('"usage"',)), path.stem)
            _summarize(path, bad, problems, chunk.start)
            fold, new = fold_claude(fold, found, seen=_counted_elsewhere(tag, this_scan, owners or {}))
            for usage in new:
                this_scan.setdefault(usage.key, tag)
                counted.append((*usage.key, tag))
        sums += fold.sums
        moved[str(path)] = FileCursor(chunk.inode, chunk.end, fold)
    return sums, moved, counted


def _counted_elsewhere(tag: str, *owners: Mapping[tuple[str, str], str]) -> Callable[[tuple[str, str]], bool]:
    """Whether a message was counted by another file than `tag` (this scan's or before)."""
    return lambda key: any(found.get(key, tag) != tag for found in owners)


def file_tag(path: Path) -> str:
    """A short stable name of a transcript file, for the message index."""
    return hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]


def _keep(text: str, markers: Sequence[str]) -> str:
    """Lines without a marker become blank (line numbers stay right), unparsed."""
    return "\n".join(line if any(m in line for m in markers) else "" for line in text.splitlines())


def read_statusline_dir(directory: Path, tenant: str, problems: list[str]) -> list[StatuslineRecord]:
    """The records the status-line hook saved for a tenant's agents (one scandir)."""
    try:
        with os.scandir(directory) as scan:
            names = sorted(e.name for e in scan if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.append(f"{directory}: cannot list status-line records ({exc.strerror}); check the folder")
        return []
    records = []
    for name in names:
        path = directory / name
        text = _read_text(path, problems)
        if text is None:
            continue
        try:
            record = parse_statusline_record(text)
        except ValueError as exc:
            problems.append(f"{path}: {exc}; the hook rewrites it on Claude Code's next status line, "
                            "or delete it")
            continue
        if record.tenant != tenant:
            problems.append(f"{path}: tenant {record.tenant!r} is not the folder's tenant {tenant!r}; ignored")
            continue
        records.append(record)
    return records


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        problems.append(f"{path}: cannot read it ({exc.strerror}); check its permissions")
        return None


def _summarize(path: Path, bad: Sequence[str], problems: list[str], start: int = 0) -> None:
    """One problem per file, however many lines it lost (a runtime may be mid-write)."""
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        where = f" (lines counted from byte {start})" if start else ""
        problems.append(f"{path}: skipped {len(bad)} unreadable line(s){where}: {bad[0]}{more}")


def expand_home(workdir: str | None, user: str | None) -> str | None:
    """A roster workdir as an absolute path; `~` is the tenant's user's home when known."""
    if workdir is None:
        return None
    candidates = [f"~{user}{workdir[1:]}"] if user and workdir.startswith("~/") else []
    for candidate in (*candidates, workdir):
        try:
            return str(Path(candidate).expanduser())
        except RuntimeError:  # no such user, or no home to expand against
            continue
    return workdir
