"""Ingest cursors on real files: a file is read from its cursor, or from 0 when rotated or
truncated; a line still being written waits; the book survives a round trip and a damaged
one starts over; a dry-run ingest writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.drivers.ingest_cursors import FileCursor, parse_book, read_book, render_book
from reconciler.drivers.runtime_usage import ClaudeFold, ClaudeSum, ClaudeUsage, CodexSession
from reconciler.drivers.transcripts import read_chunk, scan_claude_home, scan_codex_home
from reconciler.engine.ingest import Homes, ingest_all
from reconciler.model.layout import StateLayout
from reconciler.spec.load import load_repo
from tests.engine import usage_samples as samples
from tests.engine.usage_samples import NOW, TENANT


def token_count(total: int, used: float = 10.0) -> str:
    return json.dumps({"timestamp": "2026-11-25T11:30:00Z", "type": "event_msg", "payload": {
        "type": "token_count", "info": {"total_token_usage": {"input_tokens": total, "output_tokens": 0,
                                                              "total_tokens": total}},
        "rate_limits": {"secondary": {"used_percent": used, "window_minutes": 10080, "resets_at": 1795996800}}}}) + "\n"


def rollout(home: Path, *lines: str) -> Path:
    path = home / "sessions" / "2026" / "11" / "25" / "rollout-2026-11-25T11-00-00-s1.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"timestamp": "2026-11-25T11:00:00Z", "type": "session_meta", "payload": {"id": "s1"}}) + "\n"
    path.write_text(meta + "".join(lines))
    return path


def scan(home: Path, book: dict[str, FileCursor]) -> tuple[CodexSession, dict[str, FileCursor], list[str]]:
    problems: list[str] = []
    sessions, moved = scan_codex_home(home, book, problems)
    assert len(sessions) == 1
    return sessions[0], moved, problems


def test_an_appended_line_is_the_only_thing_read(tmp_path: Path) -> None:
    path = rollout(tmp_path, token_count(100))
    first, book, problems = scan(tmp_path, {})
    assert (first.session, first.total_tokens, problems) == ("s1", 100, [])
    # Spoil the bytes already read, in place (same inode, same size): a re-read would see them.
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.write(b"#" * (size - 1))
    with path.open("a") as handle:
        handle.write(token_count(250))
    second, book, problems = scan(tmp_path, book)
    assert (second.session, second.total_tokens, problems) == ("s1", 250, []), "only the appended line was read"
    assert book[str(path)].offset == path.stat().st_size


def test_an_unchanged_file_is_not_opened(tmp_path: Path) -> None:
    path = rollout(tmp_path, token_count(100))
    _, book, _ = scan(tmp_path, {})
    path.chmod(0)  # unreadable now: a read would be a problem (root reads anyway, so only the result counts)
    try:
        again, moved, problems = scan(tmp_path, book)
    finally:
        path.chmod(0o600)
    assert (again.total_tokens, problems, moved) == (100, [], book)


class Restart(NamedTuple):
    test_id: str
    rotate: bool  # a new file renamed over the old one (another inode), else cut in place


@pytest.mark.parametrize("case", [Restart("rotated-new-inode", True), Restart("truncated-shorter", False)],
                         ids=lambda c: c.test_id)
def test_a_rotated_or_truncated_file_is_read_from_the_start(tmp_path: Path, case: Restart) -> None:
    path = rollout(tmp_path, token_count(100), token_count(200))
    _, book, _ = scan(tmp_path, {})
    if case.rotate:
        fresh = path.with_name("new.tmp")
        fresh.write_text(path.read_text().splitlines(keepends=True)[0] + token_count(30))
        fresh.replace(path)
        assert path.stat().st_ino != book[str(path)].inode
    else:
        with path.open("r+") as handle:
            handle.truncate(len(path.read_text().splitlines(keepends=True)[0]))
        with path.open("a") as handle:
            handle.write(token_count(30))
        assert path.stat().st_size < book[str(path)].offset
    again, moved, problems = scan(tmp_path, book)
    assert (again.total_tokens, problems) == (30, []), "read from 0, not from the old offset"
    assert moved[str(path)].offset == path.stat().st_size


def test_a_line_being_written_waits_for_the_next_read(tmp_path: Path) -> None:
    path = rollout(tmp_path, token_count(100))
    line = token_count(400)
    with path.open("a") as handle:
        handle.write(line[:30])
    first, book, problems = scan(tmp_path, {})
    assert (first.total_tokens, problems) == (100, [])
    with path.open("a") as handle:
        handle.write(line[30:])
    second, _, problems = scan(tmp_path, book)
    assert (second.total_tokens, problems) == (400, [])
    chunk = read_chunk(path, book[str(path)], [])
    assert chunk is not None and chunk.start == book[str(path)].offset and not chunk.fresh


def claude_line(message: str, output: int, session: str = "c1") -> str:
    return json.dumps(samples.assistant(message, f"req-{message}", "2026-11-25T11:00:03.000Z", output,
                                        session=session)) + "\n"


def test_claude_streamed_lines_and_copies_count_once(tmp_path: Path) -> None:
    """A message streamed over two reads adds only its growth; a new file copying old
    messages (a resumed session) adds nothing, though the old file is not re-read."""
    project = tmp_path / "projects" / "p"
    project.mkdir(parents=True)
    original = project / "c1.jsonl"
    original.write_text(claude_line("m1", 1))
    index: dict[tuple[str, str], str] = {}

    def run(book: dict[str, FileCursor]) -> tuple[int, dict[str, FileCursor]]:
        problems: list[str] = []
        sums, moved, counted = scan_claude_home(tmp_path, book, problems, lambda: index)
        assert problems == []
        for message, request, tag in counted:
            index.setdefault((message, request), tag)
        return sum(s.tokens for s in sums), moved

    base = 4 + 2000 + 15000
    total, book = run({})
    assert total == base + 1
    with original.open("a") as handle:
        handle.write(claude_line("m1", 250) + claude_line("m2", 10))
    total, book = run(book)
    assert total == 2 * base + 250 + 10
    (project / "0-copy.jsonl").write_text(original.read_text() + claude_line("m3", 5))
    total, book = run(book)
    assert total == 3 * base + 250 + 10 + 5, "only m3 is new"


def test_the_book_round_trips_and_a_damaged_one_starts_over(tmp_path: Path) -> None:
    usage = ClaudeUsage("m1", "r1", "c1", "opus", NOW, "/src", 1, 2, 3, 4, cost_usd=0.5)
    book = {"/a": FileCursor(3, 10, CodexSession("s1", "/src", "gpt-5.5", 15, {"total_tokens": 15}, None, NOW)),
            "/b": FileCursor(4, 20, ClaudeFold((ClaudeSum("c1", "opus", 10, 0.5, "/src", NOW),), (usage,)))}
    assert parse_book(render_book(book)) == book
    path = tmp_path / "cursors.json"
    path.write_text('{"version": 1, "files": {"/a": {"inode": -1}}}')
    problems: list[str] = []
    assert read_book(path, problems) == {}
    assert len(problems) == 1 and "read from the start" in problems[0]


def test_a_dry_run_ingest_writes_nothing_but_reports_the_reading(tmp_path: Path) -> None:
    repo = load_repo(samples.write_repo(tmp_path / "repo"))
    state = tmp_path / "state"
    homes = {TENANT: Homes(codex=samples.write_codex_home(tmp_path / "codex"))}
    (report,) = ingest_all(repo, state, homes, NOW, host="h", commit=False).tenants
    assert [(o.signal.account, o.status) for o in report.signals] == [("codex-pro", "written")]
    assert report.ledger == ()
    layout = StateLayout(state)
    assert not layout.usage_record(TENANT, "codex-pro").exists()
    assert not layout.ingest_cursors(TENANT).exists() and not layout.ledger(TENANT).exists()
    (applied,) = ingest_all(repo, state, homes, NOW, host="h").tenants
    assert applied.ledger and layout.ingest_cursors(TENANT).exists() and layout.usage_record(TENANT, "codex-pro").exists()
