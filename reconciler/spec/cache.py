"""Parsed spec files kept by their bytes, so a resident loop does not parse them again.

The load step (spec/load.py) runs on every tick of `fleet reconcile --watch`; with 100
tenants, parsing YAML and validating it with pydantic costs ten times the planner. A
file whose bytes are the ones seen last time gives back the very same result (the
models are frozen, so sharing them is safe): no YAML parse, no validation. A changed
file is parsed again, alone. Keyed on the bytes themselves, not on a modification time,
so an edit within the same second (or a clock step) is never missed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

R = TypeVar("R", bytes, str)
V = TypeVar("V")

#: More spec files than any fleet has; past it the cache starts over (files come and go).
MAX_ENTRIES = 4096


class BytesCache(Generic[R, V]):
    """`key -> (bytes, value)`: the value is reused while the bytes (or text) stay the same."""

    def __init__(self, limit: int = MAX_ENTRIES) -> None:
        self._entries: dict[Hashable, tuple[R, V]] = {}
        self._limit = limit

    def get(self, key: Hashable, raw: R, compute: Callable[[R], V]) -> V:
        """The value for `raw` under `key`: the kept one when the bytes are equal, else computed."""
        kept = self._entries.get(key)
        if kept is not None and kept[0] == raw:
            return kept[1]
        value = compute(raw)
        if len(self._entries) >= self._limit and key not in self._entries:
            self._entries.clear()
        self._entries[key] = (raw, value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
