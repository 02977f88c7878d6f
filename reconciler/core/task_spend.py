"""Exact per-task spend: each ledger entry goes to the task its agent held when it accrued.

A worker of a lane works many tasks one after the other, so its spend cannot be booked
to "its" task; the lane memory keeps every assignment window instead (core/lanes.py's
`Window`: the worker, the task, from when the fleet gave it to when the fleet let go of
it), and a ledger entry whose agent held a task at the entry's time is that task's.

An entry records the increase of a counter up to its `ts` (the time the runtime wrote
the reading, not the time it was ingested), so it belongs to the window with
`since < ts <= until`: spend read at the very moment of the assignment came before it,
spend read at the moment of the release is the task's. An entry is as fine as the
runtime's readings: an increase read once across two windows goes whole to the second.
An entry that already names a task (a named agent with one task, engine/ingest.py)
keeps it. Pure: windows and entries in, tokens out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from reconciler.model.ledger import LedgerEntry

K = TypeVar("K")

if TYPE_CHECKING:  # status books spend with it for every fleet: the lanes load only for fleets with lanes
    from reconciler.core.lanes import Window


def attribute(entries: Iterable[LedgerEntry], windows: Iterable[Window]) -> list[LedgerEntry]:
    """The entries, each with the task its agent held at its time (unchanged when none did).

    >>> from datetime import UTC, datetime
    >>> from reconciler.core.lanes import Window
    >>> def at(h): return datetime(2026, 1, 1, h, tzinfo=UTC)
    >>> def e(h): return LedgerEntry(at(h), "t", "h", "w", "coder", None, None, "m", "heartbeat", "w@1", 10,
    ...                              None, 10, None, "estimated")
    >>> [x.task for x in attribute([e(1), e(2), e(3), e(5)], [Window("w", at(1), at(3), "T1"), Window("w", at(4), None, "T2")])]
    [None, 'T1', 'T1', 'T2']
    """
    by_agent: dict[str, list[Window]] = defaultdict(list)
    for window in windows:
        by_agent[window.agent].append(window)
    held = {agent: sorted(ws, key=lambda w: w.since) for agent, ws in by_agent.items()}
    starts = {agent: [w.since for w in ws] for agent, ws in held.items()}
    out = []
    for entry in entries:
        task = entry.task
        if task is None and entry.agent is not None and entry.agent in held:
            task = _holding(held[entry.agent], starts[entry.agent], entry)
        out.append(entry if task == entry.task else replace(entry, task=task))
    return out


def _holding(windows: Sequence[Window], starts: Sequence[datetime], entry: LedgerEntry) -> str | None:
    """The task of the agent's last window that starts strictly before the entry, if it had
    not ended by then (an agent holds one task at a time: its windows do not overlap)."""
    i = bisect_left(starts, entry.ts) - 1
    if i < 0:
        return None
    window = windows[i]
    return window.task if window.until is None or entry.ts <= window.until else None


def task_tokens(entries: Iterable[LedgerEntry], windows: Iterable[Window]) -> dict[tuple[str, str], int]:
    """Tokens per (task, agent): what each agent spent on each task it held, sorted.

    >>> from datetime import UTC, datetime
    >>> from reconciler.core.lanes import Window
    >>> def at(m): return datetime(2026, 1, 1, 12, m, tzinfo=UTC)
    >>> def e(m, n): return LedgerEntry(at(m), "t", "h", "w", "coder", None, None, "m", "heartbeat", "w@1", n,
    ...                                 None, n, None, "estimated")
    >>> task_tokens([e(1, 5), e(2, 7), e(9, 3)], [Window("w", at(0), at(5), "T1"), Window("w", at(5), None, "T2")])
    {('T1', 'w'): 12, ('T2', 'w'): 3}
    """
    spent: dict[tuple[str, str], int] = defaultdict(int)
    for entry in attribute(entries, windows):
        if entry.task is not None and entry.agent is not None:
            spent[(entry.task, entry.agent)] += entry.tokens
    return dict(sorted(spent.items()))


#: Tokens booked to a key, and how many ledger entries (or fold sums) gave them: a key
#: stays while one does, even at 0 tokens, as it does when every entry is read.
Tally = tuple[int, int]


@dataclass(frozen=True, slots=True)
class SpendBook:
    """The spend of one tenant on one host, attributed: tokens per (task, agent) and per
    (role, model, tenant, task), the sums `ledger_summary` reports. Sums add, so a change
    of the ledger's fold is booked by its difference alone (engine/writeback.py)."""

    tasks: Mapping[tuple[str, str], Tally] = field(default_factory=dict)
    learned: Mapping[tuple[str, str, str, str], Tally] = field(default_factory=dict)


def book_spend(book: SpendBook, changes: Iterable[tuple[LedgerEntry, int, int]],
               windows: Iterable[Window]) -> SpendBook:
    """`book` with each change booked: an entry (its task set by `windows`, as `attribute`
    sets it), the tokens it adds and the entries it adds (negative: a sum that went away).

    >>> from datetime import UTC, datetime
    >>> e = LedgerEntry(datetime(2026, 1, 1, tzinfo=UTC), "t", "h", "w", "coder", "T1", None, "m", "heartbeat", "w@1",
    ...                 10, None, 10, None, "estimated")
    >>> book = book_spend(SpendBook(), [(e, 10, 1), (e, 5, 1)], ())
    >>> book.tasks, book_spend(book, [(e, -15, -2)], ()).tasks
    ({('T1', 'w'): (15, 2)}, {})
    """
    tasks, learned = dict(book.tasks), dict(book.learned)
    listed = list(changes)
    for (_, tokens, count), booked in zip(listed, attribute((c[0] for c in listed), windows), strict=True):
        if booked.task is None:
            continue
        if booked.agent is not None:
            _tally(tasks, (booked.task, booked.agent), tokens, count)
        if booked.role is not None:
            _tally(learned, (booked.role, booked.model, booked.tenant, booked.task), tokens, count)
    return SpendBook(tasks, learned)


def _tally(sums: dict[K, Tally], key: K, tokens: int, count: int) -> None:
    old_tokens, old_count = sums.get(key, (0, 0))
    if old_count + count <= 0:
        sums.pop(key, None)
    else:
        sums[key] = (old_tokens + tokens, old_count + count)
