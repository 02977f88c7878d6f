"""The ledger read from a cursor (drivers/ledger_fold.py) says what a whole read says.

Each test reads the same ledger both ways: `read_ledger` / `update_ledger` (the whole
file) and `read_ledger_fold` / `update_ledger_fold` (from the fold file's cursor), and
compares what the status write-back books (core/status.py `ledger_summary`, under lane
windows), the problems reported, and what an ingest would append (`ledger_deltas`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.core.lanes import Window
from reconciler.core.status import ledger_summary, spend_summary
from reconciler.drivers import ledger_fold
from reconciler.drivers.ledger import read_ledger, render_entry, update_ledger
from reconciler.drivers.ledger_fold import load_fold, read_ledger_fold, update_ledger_fold
from reconciler.engine.ingest import SpendCounter, ledger_deltas
from reconciler.engine.writeback import booked_spend
from reconciler.model.ledger import LedgerEntry

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
WINDOWS = (Window("w1", T0 + timedelta(minutes=2), T0 + timedelta(minutes=6), "L1"),
           Window("w1", T0 + timedelta(minutes=6), None, "L2"),
           Window("w2", T0, T0 + timedelta(minutes=4), "L3"))


def entry(n: int, *, agent: str | None = "w1", task: str | None = None, host: str = "h", tenant: str = "t",
          model: str = "opus", stream: str | None = None) -> LedgerEntry:
    return LedgerEntry(T0 + timedelta(minutes=n % 9), tenant, host, agent, "coder" if agent else None, task, None,
                       model, "heartbeat", stream or f"{agent}@{n % 3}", 10 + n, None, 100 * n, None, "estimated")


def mixed(start: int, count: int) -> list[LedgerEntry]:
    """Named tasks, lane workers' spend the windows book, unattributed spend, another host and tenant."""
    shapes = [{}, {"task": "T1"}, {"agent": None}, {"agent": "w2"}, {"host": "other"}, {"tenant": "u"},
              {"agent": "a", "task": "T2", "model": "sonnet"}]
    return [entry(n, **shapes[n % len(shapes)]) for n in range(start, start + count)]  # type: ignore[arg-type]


def append(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def booked(entries: Sequence[LedgerEntry]) -> object:
    return [ledger_summary(tenant, host, entries, windows, ("L1",), done)
            for tenant in ("t", "u") for host in ("h", "other")
            for windows in ((), WINDOWS) for done in (None, frozenset({"T1", "L1", "L2"}))]


def counters() -> list[SpendCounter]:
    return [SpendCounter("heartbeat", f"{a}@{i}", "opus", 5000, None, T0, a, None, "estimated", restarts=True)
            for a in ("w1", "w2", "a", "x") for i in range(3)]


def deltas(old: Sequence[LedgerEntry]) -> list[LedgerEntry]:
    return ledger_deltas(old, counters(), tenant="t", host="h", agents={})


def assert_same(path: Path, fold: Path) -> None:
    whole, whole_problems = read_ledger(path)
    folded, fold_problems = read_ledger_fold(path, fold)
    assert fold_problems == whole_problems
    assert booked(folded.spend_entries()) == booked(whole)
    for n, windows in enumerate(((), WINDOWS)):  # the write-back books only what changed since its last book
        for tenant, host in (("t", "h"), ("u", "other"), ("t", "other")):
            book = booked_spend(path.with_suffix(f".{n}"), tenant, host, folded, windows)
            for done in (None, frozenset({"T1", "L1", "L2"})):
                assert spend_summary(book, ("L1",), done) == ledger_summary(tenant, host, whole, windows, ("L1",), done)
    assert deltas(folded.last_entries()) == deltas(whole)  # what the ingest's compute is given
    saved = load_fold(fold)
    assert saved is not None and saved.offset <= path.stat().st_size
    kept = dict(ledger_fold._MEMO)
    ledger_fold._MEMO.clear()  # another process: the fold file as written, maybe behind this one's
    again, again_problems = read_ledger_fold(path, fold, save=False)
    assert (again.spend_entries(), again_problems) == (folded.spend_entries(), fold_problems)
    ledger_fold._MEMO.update(kept)


def test_a_fold_read_in_steps_books_what_a_whole_read_books(tmp_path: Path) -> None:
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 40)))
    assert_same(path, fold)
    assert ledger_fold.parse_fold(fold.read_text()).offset == path.stat().st_size, "a fold built from 0 is written"
    append(path, "not json\n" + "".join(render_entry(e) for e in mixed(40, 30)))
    assert_same(path, fold)
    append(path, render_entry(entry(99))[:30])  # an append cut off: parsed, reported, not folded
    assert_same(path, fold)
    saved = load_fold(fold)
    assert saved is not None and saved.offset == path.stat().st_size - 30
    append(path, "\n" + render_entry(entry(100)))
    assert_same(path, fold)
    assert len(read_ledger(path)[1]) == 2


def test_only_the_new_bytes_are_read(tmp_path: Path) -> None:
    """A byte changed in the middle of the folded part (beyond the digest's 4 KiB at each
    end) goes unseen: the fold did not read those bytes again."""
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 200)))
    before = read_ledger_fold(path, fold)[0].spend_entries()
    middle = path.stat().st_size // 2
    with path.open("r+b") as handle:
        handle.seek(middle)
        handle.write(b"\x00")
    assert read_ledger_fold(path, fold)[0].spend_entries() == before
    assert read_ledger(path)[1] != [], "a whole read sees the damaged line"


def test_a_ledger_moved_aside_truncated_or_rewritten_is_read_from_the_start(tmp_path: Path) -> None:
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 50)))
    assert_same(path, fold)
    path.rename(tmp_path / "ledger.old.jsonl")  # rotated by hand: the next ingest starts a new one
    append(path, "".join(render_entry(e) for e in mixed(50, 5)))
    assert_same(path, fold)
    append(path, "".join(render_entry(e) for e in mixed(55, 40)))
    assert_same(path, fold)
    with path.open("r+") as handle:  # truncated in place: same inode, shorter
        handle.truncate(len(render_entry(mixed(50, 1)[0])))
    assert_same(path, fold)
    text = "".join(render_entry(e) for e in mixed(200, 60))
    path.write_text(text)  # rewritten in place, longer than the cursor: the digest differs
    assert_same(path, fold)
    saved = load_fold(fold)
    assert saved is not None and saved.inode == path.stat().st_ino and saved.fold.lines == 60


def test_a_damaged_or_foreign_fold_file_means_a_whole_read(tmp_path: Path) -> None:
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 30)))
    for text in ("{not json", '{"version": 99}', '{"version": 1, "inode": -1}', "[]"):
        fold.write_text(text)
        assert load_fold(fold) is None
        assert_same(path, fold)


def test_bytes_that_are_not_utf8_are_left_to_the_whole_read(tmp_path: Path) -> None:
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 10)))
    assert_same(path, fold)
    with path.open("ab") as handle:
        handle.write(b"\xff\xfe\n")
    folded, problems = read_ledger_fold(path, fold)
    assert (folded.spend_entries(), problems) == ([], read_ledger(path)[1])
    assert read_ledger(path)[0] == [] and len(read_ledger(path)[1]) == 1


def test_the_ingest_appends_from_the_fold_what_it_appends_from_the_whole_ledger(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()  # the same file name: the problems name it
    whole, folded, fold = tmp_path / "a" / "l.jsonl", tmp_path / "b" / "l.jsonl", tmp_path / "b.fold.json"
    for path in (whole, folded):
        append(path, "".join(render_entry(e) for e in mixed(0, 40)) + render_entry(entry(7))[:20])
    for step in range(3):
        new_whole = update_ledger(whole, deltas)
        new_fold = update_ledger_fold(folded, fold, deltas)
        assert (new_fold[0], [p.replace("/b/", "/a/") for p in new_fold[1]]) == new_whole
        assert new_whole[0] != [] or step > 0, "the counters' increases are appended"
        assert folded.read_bytes() == whole.read_bytes()
        saved = load_fold(fold)
        assert saved is not None and (saved.offset == folded.stat().st_size) == (step > 0), \
            "the appended lines are folded as they are written, unless a cut-off line came before them"
        assert_same(folded, fold)
        step_entries = "".join(render_entry(e) for e in mixed(100 + 10 * step, 10))
        append(whole, step_entries)
        append(folded, step_entries)
    assert_same(folded, fold)


def test_a_dry_read_leaves_the_fold_file_alone(tmp_path: Path) -> None:
    path, fold = tmp_path / "ledger.jsonl", tmp_path / "ledger.fold.json"
    append(path, "".join(render_entry(e) for e in mixed(0, 10)))
    assert read_ledger_fold(path, fold, save=False)[1] == []
    assert not fold.exists()
    assert read_ledger_fold(tmp_path / "missing.jsonl", fold)[1] == []


LINES = st.lists(st.one_of(st.integers(0, 300).map(lambda n: render_entry(mixed(n, 1)[0])),
                           st.sampled_from(["garbage\n", "\n", "{}\n", "\r\n"])), max_size=40)


@settings(max_examples=60, deadline=None)
@example(chunks=[([render_entry(mixed(1, 1)[0])], 1)])  # a ledger of one line without its newline
@given(chunks=st.lists(st.tuples(LINES, st.integers(0, 60)), min_size=1, max_size=5))
def test_folding_in_any_steps_books_what_a_whole_read_books(chunks: list[tuple[list[str], int]]) -> None:
    """Any ledger appended in any steps, each step possibly ending mid-line."""
    with tempfile.TemporaryDirectory() as folder:
        path, fold = Path(folder) / "ledger.jsonl", Path(folder) / "ledger.fold.json"
        path.touch()
        pending = ""
        for lines, cut in chunks:
            text = pending + "".join(lines)
            pending = text[len(text) - min(cut, len(text)):] if lines else ""
            append(path, text[:len(text) - len(pending)])
            assert_same(path, fold)
        append(path, pending)
        assert_same(path, fold)
        fold.unlink()
        assert_same(path, fold)
