"""One remembered result per call site, for what a resident loop asks again each tick.

`load_repo` gives `fleet reconcile --watch` the very same (frozen) objects while no spec
changed, so a result derived from them can be reused by identity: no hashing of a large
structure, and an object that changed is always a new object.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LastResult(Generic[V]):
    """The value built last time, reused while `source` is the same object and `key` equal.

    >>> memo: LastResult[list[int]] = LastResult()
    >>> a = (1, 2)
    >>> memo.get(a, "k", lambda: [1]) is memo.get(a, "k", lambda: [2])
    True
    >>> memo.get(a, "other", lambda: [3]), memo.get((1, 2, 3), "other", lambda: [4])
    ([3], [4])
    """

    def __init__(self) -> None:
        self._kept: tuple[object, Hashable, V] | None = None

    def get(self, source: object, key: Hashable, build: Callable[[], V]) -> V:
        kept = self._kept
        if kept is not None and kept[0] is source and kept[1] == key:
            return kept[2]
        value = build()
        self._kept = (source, key, value)
        return value
