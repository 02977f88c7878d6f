"""YAML documents that remember where every node came from.

ruamel.yaml keeps the line and column of each key and value; this module reads a file,
turns syntax problems into located errors, and maps a pydantic error `loc` back to the
`line:col` a person should look at.

Reading is two-speed: every file is parsed with ruamel's C-accelerated safe loader (the
same YAML 1.2 resolver, about 7x faster than round-trip), and the position-keeping
round-trip tree is built only when an error needs a location.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from reconciler.errors import SpecError

Loc = Sequence[str | int]
MAX_FILE_BYTES = 1 << 20


class Source:
    """One parsed YAML file: its display path, its plain data, and (lazily) positions."""

    def __init__(self, path: str, text: str, data: Any) -> None:
        self.path = path
        self.text = text
        self.data = data

    @cached_property
    def tree(self) -> Any:
        """The round-trip tree with line and column of every node, built on first use."""
        try:
            return _yaml().load(self.text)
        except (YAMLError, RecursionError, ValueError, TypeError):
            return None

    def at(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based line and column of the node at `loc` (of the key itself when `key`).

        A loc that runs past the tree (a missing key) stops at the deepest node found,
        which is the mapping the key should be added to.
        """
        node = self.tree
        line, col = _start(node)
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, CommentedMap) and part in node:
                kline, kcol = node.lc.key(part)
                vline, vcol = node.lc.value(part)
                line, col = (kline, kcol) if (key and last) else (vline, vcol)
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, col = node.lc.item(part)
                node = node[part]
            else:
                break
        return line + 1, col + 1

    def error(self, loc: Loc, message: str, *, key: bool = False, tenant: str | None = None) -> SpecError:
        line, col = self.at(loc, key=key)
        return SpecError(self.path, line, col, message, tenant)


def _start(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return 0, 0
    return int(lc.line), int(lc.col)


def _yaml(typ: str = "rt") -> YAML:
    yaml = YAML(typ=typ, pure=typ == "rt")
    yaml.allow_duplicate_keys = False
    # Timestamps stay text: pydantic parses them, so an impossible date is a located
    # field error instead of a parser crash.
    yaml.constructor.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)
    return yaml


class _EditConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor with its own timestamps: `_yaml()` registers the
    text one on the class ruamel shares, so this subclass registers the original back."""


_EditConstructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_timestamp)


def editor_yaml() -> YAML:
    """The round-trip YAML of spec/edit.py: the loader's settings (pure, duplicate keys
    refused), plus what writing a file back needs: quotes as written, no re-wrapping of
    long lines, timestamps as ruamel's own type so they are written back as they were."""
    yaml = YAML(typ="rt", pure=True)
    yaml.Constructor = _EditConstructor
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def _timestamp_as_text(constructor: Any, node: Any) -> Any:
    return constructor.construct_scalar(node)


def _fast_load(text: str) -> Any:
    """Plain data through the C parser; any failure is re-read by `_yaml()` for its location."""
    return _yaml("safe").load(text)


#: More values than any fleet spec needs; YAML aliases can otherwise expand a few
#: hundred bytes into billions of nodes (the "billion laughs").
MAX_NODES = 200_000


class TooLarge(ValueError):
    """The document expands past MAX_NODES values."""


def to_plain(node: Any, budget: list[int] | None = None) -> Any:
    """ruamel's types -> plain dict/list/str/int/float/bool, expanding aliases with a limit."""
    budget = budget if budget is not None else [MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise TooLarge(f"the document expands to more than {MAX_NODES} values (nested YAML aliases?); write it out plainly")
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str | int) else k: to_plain(v, budget) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v, budget) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime):
        return datetime.fromisoformat(node.isoformat())
    return node


def _line_col(text: str | bytes, index: int) -> tuple[int, int]:
    """1-based line and column of offset `index`.

    >>> _line_col("ab\\ncd", 4)
    (2, 2)
    """
    head = text[:index]
    newline = "\n" if isinstance(head, str) else b"\n"
    line = head.count(newline) + 1  # type: ignore[arg-type]
    col = index - (head.rfind(newline) + 1) + 1  # type: ignore[arg-type]
    return line, col


def _syntax_error(path: str, exc: MarkedYAMLError) -> SpecError:
    # A scanner that ran off the end of a key or a quoted string knows where that
    # construct began; that is where the mistake is, not where scanning gave up.
    scanning = (exc.context or "").startswith("while scanning")
    mark = (exc.context_mark if scanning else None) or exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    hint = "fix the YAML syntax"
    if "'\\t'" in problem:
        problem, hint = "a tab character is used for indentation", "indent with spaces, never tabs"
    elif "duplicate key" in problem:
        hint = "keep one of the two; YAML keys must be unique in a mapping"
    elif "another document" in problem:
        problem, hint = "a second YAML document (---) in this file", "keep one document per file"
    elif exc.context and exc.context not in problem:
        problem = f"{problem} ({exc.context.strip()})"
    return SpecError(path, line, col, f"{problem}; {hint}")


def read_source(file: Path, display: str) -> Source | SpecError:
    """Parse one YAML file, or return the located reason it cannot be parsed."""
    raw = read_raw(file, display)
    return raw if isinstance(raw, SpecError) else parse_source(raw, display)


def read_raw(file: Path, display: str) -> bytes | SpecError:
    """A spec file's bytes, or the located reason they cannot be read (spec/cache.py keys
    its parsed results on them)."""
    try:
        return file.read_bytes()
    except OSError as exc:
        return SpecError(display, 1, 1, f"cannot read the file ({exc.strerror}); check its permissions")


def parse_source(raw: bytes, display: str) -> Source | SpecError:
    """Bytes of one YAML file parsed, or the located reason they cannot be."""
    if len(raw) > MAX_FILE_BYTES:
        return SpecError(display, 1, 1, f"file is {len(raw)} bytes; spec files are limited to 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(raw, exc.start)
        return SpecError(display, line, col, f"file is not UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8")
    try:
        tree = _fast_load(text)
    except (YAMLError, RecursionError, ValueError, TypeError):
        try:
            tree = _yaml().load(text)
        except MarkedYAMLError as exc:
            return _syntax_error(display, exc)
        except ReaderError as exc:
            line, col = _line_col(text, exc.position)
            return SpecError(display, line, col, f"character {exc.character!r} is not allowed in YAML; remove it")
        except (YAMLError, RecursionError, ValueError, TypeError) as exc:
            return SpecError(display, 1, 1, f"invalid YAML ({type(exc).__name__}: {exc}); fix the YAML syntax")
    if tree is None:
        return SpecError(display, 1, 1, "file is empty; it needs at least `apiVersion:` and `kind:`")
    if not isinstance(tree, dict):
        kind = "a list" if isinstance(tree, list) else f"a {type(tree).__name__}"
        return SpecError(display, 1, 1, f"the document is {kind}; it must be a mapping starting with `apiVersion:` and `kind:`")
    try:
        data = to_plain(tree)
    except (TooLarge, RecursionError) as exc:
        message = str(exc) if isinstance(exc, TooLarge) else "the document nests too deeply (a recursive alias?); write it out plainly"
        return SpecError(display, 1, 1, message)
    return Source(display, text, data)
