"""A tick's spend-ledger cost at 1, 32 and 128 MB of ledger: whole reads versus the fold.

An applying tick touches `ledger.jsonl` twice: the ingest appends each spend counter's
increase under its flock (it needs each counter's last entry), and the status write-back
books the spend per task (core/status.py `ledger_summary`). Before: both parse the whole
file (drivers/ledger.py `update_ledger`, `read_ledger`, still there as the fallback).
After: both read from the fold file's cursor (drivers/ledger_fold.py). Each timed tick
appends the increase of ten counters (ten entries), as a working fleet does, then reads
for the write-back and books under lane windows.

The synthetic ledger: 40 named agents with one task each (their entries carry it), 10
lane workers whose entries the windows book (a quarter of the lines), some unattributed
spend; a counter per agent process, restarted every 20,000 entries. Reported: the first
tick after the ledger grew to its size (the fold is built: one whole read), the median
of RUNS ticks after it in the same process (a resident `fleet reconcile --watch`: the fold
is kept in memory), the same in a new process each tick (the fold file is parsed), and
the fold file's size.

    python benchmarks/bench_ledger.py [--sizes 1 32 128] [--runs 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import median_seconds
from reconciler.core.lanes import Window
from reconciler.core.status import ledger_summary, spend_summary
from reconciler.drivers import ledger_fold
from reconciler.drivers.ledger import MAX_LEDGER_BYTES, read_ledger, render_entry, update_ledger
from reconciler.drivers.ledger_fold import read_ledger_fold, update_ledger_fold
from reconciler.engine.ingest import SpendCounter, ledger_deltas
from reconciler.engine.writeback import _BOOKED, booked_spend
from reconciler.model.ledger import LedgerEntry

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TENANT, HOST = "bench", "bench-host"
WINDOWS = tuple(Window(f"lane-{w}", T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1), f"L{w}-{h}")
           for w in range(10) for h in range(0, 2000, 2))


def line(n: int) -> str:
    """The n-th entry of the synthetic ledger."""
    kind = n % 8
    if kind < 2:
        agent, task, role = f"lane-{n % 10}", None, "coder"
    elif kind == 7:
        agent, task, role = None, None, None
    else:
        agent, task, role = f"agent-{n % 40}", f"T{n % 40}", "coder"
    stream = f"{agent or 'transcript'}@{n // 20000}"
    return render_entry(LedgerEntry(T0 + timedelta(seconds=10 * n), TENANT, HOST, agent, role, task, "max",
                                    "opus" if n % 3 else "sonnet", "heartbeat", stream, 1000 + n % 500, None,
                                    1000 * n, None, "estimated"))


def grow(path: Path, size: int, start: int) -> int:
    """Append lines until the file holds `size` bytes; the next line's number."""
    n = start
    with path.open("a") as handle:
        written = path.stat().st_size if path.exists() else 0
        chunk: list[str] = []
        while written < size:
            text = line(n)
            chunk.append(text)
            written += len(text)
            n += 1
            if len(chunk) == 10000:
                handle.write("".join(chunk))
                chunk = []
        handle.write("".join(chunk))
    return n


class Tick:
    """One tick's ledger work: append ten counters' increases, then book the spend."""

    def __init__(self, path: Path, fold: Path | None) -> None:
        self.path, self.fold, self.n = path, fold, 10**9

    def counters(self) -> list[SpendCounter]:
        self.n += 1
        return [SpendCounter("heartbeat", f"agent-{i}@tick", "opus", 1000 * self.n, None, T0, f"agent-{i}", "max",
                             "estimated", restarts=True) for i in range(10)]

    def __call__(self) -> None:
        counters = self.counters()

        def compute(old: Sequence[LedgerEntry]) -> list[LedgerEntry]:
            return ledger_deltas(old, counters, tenant=TENANT, host=HOST, agents={})

        if self.fold is None:
            appended, _ = update_ledger(self.path, compute)
            entries, _ = read_ledger(self.path)
            spend, _learned = ledger_summary(TENANT, HOST, entries, WINDOWS)
        else:
            appended, _ = update_ledger_fold(self.path, self.fold, compute)
            fold, _ = read_ledger_fold(self.path, self.fold)
            spend, _learned = spend_summary(booked_spend(self.path, TENANT, HOST, fold, WINDOWS))
        assert len(appended) == 10, appended
        assert spend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-ledger-", dir=options.dir))
    try:
        print(f"{'ledger':>8} {'whole read, per tick':>22} {'fold: first tick':>18} {'fold: next ticks':>18} "
              f"{'(new process)':>14} {'fold file':>10}")
        before, after, fold = root / "before.jsonl", root / "after.jsonl", root / "after.fold.json"
        n = 0
        for size_mb in options.sizes:
            size = min(size_mb << 20, MAX_LEDGER_BYTES - (1 << 20))  # room for the ticks' appends under the cap
            n = grow(before, size, n)
            shutil.copyfile(before, after)
            fold.unlink(missing_ok=True)
            whole = median_seconds(Tick(before, None), options.runs)[0]
            folded = Tick(after, fold)
            start = time.perf_counter()
            folded()
            first = time.perf_counter() - start
            steady = median_seconds(folded, options.runs)[0]

            def cold(folded: Tick = folded) -> None:
                ledger_fold._MEMO.clear()  # a one-shot `fleet reconcile`: the fold file is parsed,
                _BOOKED.clear()  # and the spend booked from it
                folded()

            fresh = median_seconds(cold, options.runs)[0]
            print(f"{before.stat().st_size / 2**20:>6.0f}MB {whole * 1000:>20.1f}ms {first * 1000:>16.1f}ms "
                  f"{steady * 1000:>16.1f}ms {fresh * 1000:>12.1f}ms {fold.stat().st_size / 2**20:>8.1f}MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
