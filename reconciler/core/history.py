"""Restart history, carried from tick to tick: the memory behind backoff and Stalled.

Pure: the engine reads the stored history, calls `advance`, and writes the result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from reconciler.model.history import RestartRecord

Key = tuple[str, str]


def advance(
    history: Mapping[Key, RestartRecord],
    *,
    healthy: Iterable[Key],
    restarted: Mapping[Key, str],
    forgotten: Iterable[Key],
    now: datetime,
) -> dict[Key, RestartRecord]:
    """The next history: a healthy agent starts over, a health restart counts one more,
    and agents that were stopped or respawned for a spec change are forgotten."""
    out = dict(history)
    for key in healthy:
        out.pop(key, None)
    for key in forgotten:
        out.pop(key, None)
    for key, reason in restarted.items():
        previous = out.get(key)
        attempts = (previous.attempts if previous else 0) + 1
        out[key] = RestartRecord(attempts, now, reason)
    return out
