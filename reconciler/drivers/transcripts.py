"""Reading the runtimes' own folders for the ingesters (engine/ingest.py).

Codex rollouts and Claude Code transcripts under a tenant's homes, and the status-line
hook's records in the state directory: each file is read here, cut to the lines worth
parsing, and handed to the pure parsers of drivers/runtime_usage.py. A file that cannot
be read, or lines that do not parse, become one problem line each, never a failed ingest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from reconciler.drivers.runtime_usage import (
    ClaudeUsage,
    CodexSession,
    StatuslineRecord,
    parse_claude_transcript,
    parse_codex_rollout,
    parse_statusline_record,
)

#: Lines worth parsing in a rollout; the rest (prompts, tool output) are skipped unread.
_CODEX_MARKERS = ('"token_count"', '"session_meta"', '"turn_context"')


def read_codex_home(home: Path, problems: list[str]) -> list[CodexSession]:
    """Every `sessions/YYYY/MM/DD/rollout-*.jsonl` under a Codex home, in path order."""
    sessions = []
    for path in sorted((home / "sessions").rglob("rollout-*.jsonl")):
        text = _read_text(path, problems)
        if text is None:
            continue
        kept = "\n".join(line if any(m in line for m in _CODEX_MARKERS) else "" for line in text.splitlines())
        session, bad = parse_codex_rollout(kept, path.stem)
        _summarize(path, bad, problems)
        sessions.append(session)
    return sessions


def read_claude_home(home: Path, problems: list[str]) -> list[ClaudeUsage]:
    """Every usage line of `projects/**/*.jsonl` (sessions and their `subagents/`)."""
    usages: list[ClaudeUsage] = []
    for path in sorted((home / "projects").rglob("*.jsonl")):
        text = _read_text(path, problems)
        if text is None:
            continue
        kept = "\n".join(line if '"usage"' in line else "" for line in text.splitlines())
        found, bad = parse_claude_transcript(kept, path.stem)
        _summarize(path, bad, problems)
        usages += found
    return usages


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


def _summarize(path: Path, bad: Sequence[str], problems: list[str]) -> None:
    """One problem per file, however many lines it lost (a runtime may be mid-write)."""
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        problems.append(f"{path}: skipped {len(bad)} unreadable line(s): {bad[0]}{more}")


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
