"""The spend ledger: what each agent spent, one append-only entry per observed increase.

Entries are appended by the ingesters (engine/ingest.py) to
`$FLEET_STATE_DIR/<tenant>/ledger.jsonl` and never rewritten; TASKS.md reads them back
through `learned_spend` to set projected spend against what similar tasks really cost.
This module is plain data plus that one pure summary, so the pure core may import it.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One increase of one counter (`source`, `stream`, `model`) since its previous entry.

    `tokens` and `dollars` are the increase; `total_tokens` and `total_usd` are the
    counter's value after it, which is how a re-ingest of the same files knows there is
    nothing new (see engine/ingest.py). `agent`, `role` and `task` are None when the
    spend could not be attributed (a transcript whose folder matches no agent's workdir).
    """

    ts: datetime
    tenant: str
    host: str
    agent: str | None
    role: str | None
    task: str | None
    account: str | None
    model: str
    source: str
    stream: str
    tokens: int
    dollars: float | None
    total_tokens: int
    total_usd: float | None
    confidence: str

    @property
    def counter(self) -> tuple[str, str, str]:
        """The counter this entry advances: deltas are taken per counter."""
        return (self.source, self.stream, self.model)


class LearnedSpend(NamedTuple):
    """Tokens per task for one (role, model): the median and the 90th percentile."""

    median: float
    p90: float


def learned_spend(entries: Iterable[LedgerEntry]) -> dict[tuple[str, str], LearnedSpend]:
    """Median and p90 of the tokens a task took, by the role and model that spent them.

    A task's spend is the sum of its entries per (role, model), so a task that was
    downgraded halfway counts once for each model it ran on. Entries without a task or a
    role teach nothing about tasks and are left out. p90 is the nearest-rank percentile
    (an observed value, never an interpolation between two tasks).

    >>> from datetime import UTC, datetime
    >>> def e(task, tokens, model="opus"):
    ...     return LedgerEntry(datetime(2026, 11, 25, tzinfo=UTC), "jarvis", "h", "coder0-0", "coder",
    ...                        task, None, model, "heartbeat", "coder0-0@1", tokens, None, tokens, None,
    ...                        "estimated")
    >>> learned_spend([e("T1", 100), e("T1", 50), e("T2", 400), e("T3", 200), e(None, 9)])
    {('coder', 'opus'): LearnedSpend(median=200, p90=400)}
    """
    per_task: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for entry in entries:
        if entry.task is None or entry.role is None:
            continue
        per_task[(entry.role, entry.model, entry.tenant, entry.task)] += entry.tokens
    samples: dict[tuple[str, str], list[int]] = defaultdict(list)
    for (role, model, _, _), tokens in sorted(per_task.items()):
        samples[(role, model)].append(tokens)
    return {key: median_p90(values) for key, values in sorted(samples.items())}


def median_p90(values: list[int]) -> LearnedSpend:
    """The median and the nearest-rank 90th percentile of some tasks' tokens (not empty).

    >>> median_p90([400, 100, 200])
    LearnedSpend(median=200, p90=400)
    """
    return LearnedSpend(statistics.median(values), _nearest_rank(values, 0.9))


def _nearest_rank(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


#: A counter's key in a fold: the tenant, then the counter (`LedgerEntry.counter`).
CounterKey = tuple[str, str, str, str]
#: Spend already booked to a task: tenant, host, agent, role, task, model.
TaskedKey = tuple[str, str, str | None, str | None, str, str]
#: Spend of an agent not yet booked to a task (its windows decide): tenant, host, agent, role, model, ts.
LooseKey = tuple[str, str, str, str | None, str, datetime]
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LedgerFold:
    """What a ledger's lines add up to, for its two readers, so a tick folds only new lines.

    The ingest needs each counter's last entry (`last`: `ledger_deltas` takes increases
    from it); the status write-back needs the tokens per task (`tasked`) and, for entries
    whose task the lane windows decide at read time, the tokens per agent and moment
    (`loose`). `lines` and `problems` are the lines read and the damaged ones reported,
    so a reader from a cursor says what a whole read would.
    """

    lines: int = 0
    problems: tuple[str, ...] = ()
    last: dict[CounterKey, LedgerEntry] = field(default_factory=dict)
    tasked: dict[TaskedKey, int] = field(default_factory=dict)
    loose: dict[LooseKey, int] = field(default_factory=dict)

    def last_entries(self) -> list[LedgerEntry]:
        """Each counter's last entry: `ledger_deltas` takes the same increases from these as from every entry."""
        return list(self.last.values())

    def spend_entries(self) -> list[LedgerEntry]:
        """One entry per sum: `core/status.ledger_summary` books them as it books every entry.

        >>> def e(task, agent, tokens, h=1):
        ...     return LedgerEntry(datetime(2026, 1, 1, h, tzinfo=UTC), "t", "h", agent, "coder", task, None, "m",
        ...                        "heartbeat", "s", tokens, None, tokens, None, "estimated")
        >>> fold = fold_ledger(LedgerFold(), [e("T1", "a", 5), e("T1", "a", 7), e(None, "w", 3), e(None, None, 9)], 4)
        >>> [(x.task, x.agent, x.tokens) for x in fold.spend_entries()]
        [('T1', 'a', 12), (None, 'w', 3)]
        """
        return [_tasked(key, tokens) for key, tokens in self.tasked.items()] + \
            [_loose(key, tokens) for key, tokens in self.loose.items()]


def _tasked(key: TaskedKey, tokens: int) -> LedgerEntry:
    tenant, host, agent, role, task, model = key
    return LedgerEntry(_NO_TIME, tenant, host, agent, role, task, None, model, "", "", tokens, None, tokens, None, "")


def _loose(key: LooseKey, tokens: int) -> LedgerEntry:
    tenant, host, agent, role, model, ts = key
    return LedgerEntry(ts, tenant, host, agent, role, None, None, model, "", "", tokens, None, tokens, None, "")


def fold_changes(old: LedgerFold, new: LedgerFold, tenant: str, host: str) -> list[tuple[LedgerEntry, int, int]]:
    """What `new`'s sums of `tenant` on `host` add to `old`'s, as (entry, tokens, entries)
    changes for core/task_spend.py `book_spend`: a sum that grew, appeared or went away.

    >>> def e(tokens, h):
    ...     return LedgerEntry(datetime(2026, 1, 1, h, tzinfo=UTC), "t", "h", "w", "coder", None, None, "m",
    ...                        "heartbeat", "s", tokens, None, tokens, None, "estimated")
    >>> a = fold_ledger(LedgerFold(), [e(5, 1)], 1)
    >>> b = fold_ledger(a, [e(7, 1), e(3, 2)], 2)
    >>> sorted((x.ts.hour, n, c) for x, n, c in fold_changes(a, b, "t", "h"))
    [(1, 7, 0), (2, 3, 1)]
    """
    return [*_changes(old.tasked, new.tasked, _tasked, tenant, host),
            *_changes(old.loose, new.loose, _loose, tenant, host)]


K = TypeVar("K", TaskedKey, LooseKey)


def _changes(mine: Mapping[K, int], theirs: Mapping[K, int], make: Callable[[K, int], LedgerEntry],
             tenant: str, host: str) -> list[tuple[LedgerEntry, int, int]]:
    changes = []
    for key, tokens in theirs.items() - mine.items():  # set operations on the views: no Python loop over all
        if key[0] == tenant and key[1] == host:
            before = mine.get(key)
            changes.append((make(key, tokens - (before or 0)), tokens - (before or 0), int(before is None)))
    for key in mine.keys() - theirs.keys():
        if key[0] == tenant and key[1] == host:
            changes.append((make(key, -mine[key]), -mine[key], -1))
    return changes


def fold_ledger(fold: LedgerFold, entries: Iterable[LedgerEntry], lines: int,
                problems: Iterable[str] = ()) -> LedgerFold:
    """`fold` with `lines` more ledger lines read: their `entries` and `problems` (pure).

    An entry with neither task nor agent is spent by no task and teaches nothing: only
    its counter is kept."""
    last, tasked, loose = dict(fold.last), dict(fold.tasked), dict(fold.loose)
    for entry in entries:
        last[(entry.tenant, *entry.counter)] = entry
        if entry.task is not None:
            key = (entry.tenant, entry.host, entry.agent, entry.role, entry.task, entry.model)
            tasked[key] = tasked.get(key, 0) + entry.tokens
        elif entry.agent is not None:
            loose_key = (entry.tenant, entry.host, entry.agent, entry.role, entry.model, entry.ts)
            loose[loose_key] = loose.get(loose_key, 0) + entry.tokens
    return LedgerFold(fold.lines + lines, (*fold.problems, *problems), last, tasked, loose)
