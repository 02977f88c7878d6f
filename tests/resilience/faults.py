"""Faults to plant in the state directory and the repository, for the resilience tests.

Each `Fault` replaces one file with something a crash, a bad editor, a full disk or a
hostile user could leave there: cut-off JSON, binary bytes, a folder, a FIFO, a symlink
to /dev/zero, a sparse file larger than any reader's cap. `mutations` walks a valid JSON
record and yields it with one value at a time swapped for a wrong-typed or out-of-range
one, for the readers' and the planner's handling of records that *parse*.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

#: Larger than every reader's cap (the ledger's 128 MiB is the largest); sparse, so free.
HUGE = 200 << 20


def clear(path: Path) -> None:
    """Remove whatever sits at `path`: a file, a symlink, a FIFO or a folder."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _text(text: str) -> Callable[[Path, str], None]:
    def plant(path: Path, valid: str) -> None:
        del valid
        path.write_text(text, encoding="utf-8")
    return plant


def _truncated(path: Path, valid: str) -> None:
    """Cut inside a line (two thirds in: within the second of two ledger lines too)."""
    path.write_text(valid[: len(valid) * 2 // 3], encoding="utf-8")


def _binary(path: Path, valid: str) -> None:
    del valid
    path.write_bytes(bytes(random.Random(6).randrange(256) for _ in range(512)) + b"\xff\xfe")


def _bom(path: Path, valid: str) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + valid.encode())


def _huge(path: Path, valid: str) -> None:
    path.write_text(valid, encoding="utf-8")
    os.truncate(path, HUGE)  # valid JSON, then 200 MiB of NULs (a hole: no disk used)


def _directory(path: Path, valid: str) -> None:
    del valid
    path.mkdir()
    (path / "inside").write_text("x")


def _dev_zero(path: Path, valid: str) -> None:
    del valid
    path.symlink_to("/dev/zero")


def _fifo(path: Path, valid: str) -> None:
    del valid
    os.mkfifo(path)


def _loop(path: Path, valid: str) -> None:
    del valid
    path.symlink_to(path.name)


class Fault(NamedTuple):
    test_id: str
    plant: Callable[[Path, str], None]  # (where, a valid file's text) -> None


FAULTS = [
    Fault("truncated", _truncated),
    Fault("binary-garbage", _binary),
    Fault("empty", _text("")),
    Fault("nul-bytes", _text("\0" * 64)),
    Fault("utf8-bom", _bom),
    Fault("json-array", _text("[1, 2, 3]")),
    Fault("json-string", _text('"a string"')),
    Fault("json-null", _text("null")),
    Fault("nested-100k-deep", _text("[" * 100_000 + "]" * 100_000)),
    Fault("huge-sparse", _huge),
    Fault("directory", _directory),
    Fault("symlink-to-dev-zero", _dev_zero),
    Fault("fifo", _fifo),
    Fault("symlink-loop", _loop),
]

#: Values a record may hold where another type or range is expected.
WEIRD: list[Any] = [
    None, True, -1, 2**70, 1e308, float("nan"), float("inf"), "", "x" * 3000, [], {}, [[[[[]]]]],
    "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2026-11-25T12:00:00",
]
_DROP = object()


def mutations(doc: Any, values: list[Any] = WEIRD) -> Iterator[tuple[str, Any]]:
    """(where, doc with one change) for each value position of `doc` and each value, plus
    each key dropped. Only the first element of a list is visited: the others share its shape.
    """
    for where, setter in _positions(doc):
        for value in [*values, _DROP]:
            copy = json.loads(json.dumps(doc))
            setter(copy, value)
            yield f"{where}={'<dropped>' if value is _DROP else json.dumps(value)[:20]}", copy


def _positions(doc: Any, where: str = "") -> Iterator[tuple[str, Callable[[Any, Any], None]]]:
    """Every place in `doc`, with a function that sets (or drops) it in a copy of `doc`."""
    keys: list[Any] = list(doc) if isinstance(doc, dict) else [0] if isinstance(doc, list) and doc else []
    for key in keys:
        here = f"{where}.{key}" if where else str(key)

        def setter(copy: Any, value: Any, key: Any = key, where: str = where) -> None:
            parent = _get(copy, where)
            if value is _DROP:
                del parent[key]
            else:
                parent[key] = value
        yield here, setter
        yield from _positions(doc[key], here)


def _get(doc: Any, where: str) -> Any:
    for part in where.split(".") if where else []:
        doc = doc[0] if isinstance(doc, list) else doc[part]
    return doc


def dumps(doc: Any) -> str:
    """JSON as a careless writer would: NaN and Infinity included (Python's json reads them)."""
    return json.dumps(doc, allow_nan=True)


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError when the block runs longer than `seconds` (a read that never
    ends: /dev/zero, a FIFO). Main thread only, as pytest runs tests."""
    def expire(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise TimeoutError(f"still running after {seconds:g} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
