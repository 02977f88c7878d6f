"""Pydantic's validation errors, said the way a person fixing a YAML file needs them.

Each message names the key, says what is wrong and how to fix it; the location comes
from `yamlsource.Source.at`. A message is one line of printable text whatever the YAML
held: it is printed as `file:line:col: message`, so a key or value with a newline, an
escape sequence or a bidi override is shown escaped, and a long value is cut short.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from reconciler.spec import models as m

PATTERN_HINTS: dict[str, str] = {
    m.NAME_PATTERN: "use lower-case letters, digits and '-', starting with a letter, at most 40 characters",
    m.SOCKET_PATTERN: "use letters, digits, '_', '.' and '-', at most 64 characters",
    m.HOST_PATTERN: "use a host name: letters, digits, '.' and '-'",
    m.USER_PATTERN: "use a Linux user name: lower-case letters, digits, '_' and '-'",
    m.MODEL_PATTERN: "use letters, digits and . _ : / @ -, starting with a letter or digit",
    m.LANE_PATTERN: "use lower-case letters, digits, '.', '_' and '-'",
    m.BRANCH_PATTERN: "use a git branch name: letters, digits, '.', '_', '/' and '-', with {agent}, {task} or {lane}",
    m.ENV_NAME_PATTERN: "use letters, digits and '_', not starting with a digit (e.g. LOG_LEVEL)",
    m.DURATION_PATTERN: "write a number with a unit, e.g. 90s, 5m, 1h30m, 7d",
    m.NO_CONTROL_PATTERN: "control characters (newline, tab, escape, DEL) are not allowed; write it on one line",
    m.TEXT_PATTERN: ("control characters (newline, tab, escape, DEL, U+0080 to U+009F, U+2028, U+2029) and "
                     "bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) are not "
                     "allowed; remove them and keep it on one line"),
    m.LINES_PATTERN: ("control characters other than tab and newline (escape, DEL, U+0080 to U+009F) and "
                      "bidirectional controls (U+061C, U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069) are not "
                      "allowed; remove them"),
}


def _field(loc: tuple[str | int, ...]) -> str:
    named = [p for p in loc if isinstance(p, str) and p != "[key]"]
    return named[-1] if named else "document"


#: How much of a bad value a message repeats; the location already says where it is.
SHOWN_CHARS = 80


def printable(text: str) -> str:
    r"""`text` with every character a terminal could act on escaped as `repr` would.

    >>> printable("unknown key `a\nb\x1b[31m\u202e`; ok é")
    'unknown key `a\\nb\\x1b[31m\\u202e`; ok é'
    """
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _shown(value: Any) -> str:
    """`repr(value)`, a long string cut to its first SHOWN_CHARS characters.

    >>> _shown("ab")
    "'ab'"
    >>> _shown("x" * 100) == repr("x" * SHOWN_CHARS) + "... (100 characters)"
    True
    """
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"
    return repr(value)


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The nested model class a loc points into, to suggest its real keys."""
    current: Any = model
    mapping = False  # the next part is a key of a `dict[str, Model]` (a runtime's name)
    for part in loc:
        if isinstance(part, int) or part == "[key]" or mapping:
            mapping = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part)
        if info is None:
            return None
        mapping = _is_dict(info.annotation)
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _is_dict(annotation: Any) -> bool:
    """True for `dict[K, V]`, also inside `X | None`."""
    if getattr(annotation, "__origin__", None) is dict:
        return True
    return any(_is_dict(arg) for arg in getattr(annotation, "__args__", ()) or () if arg is not type(None))


def _unwrap(annotation: Any) -> Any:
    """The BaseModel inside list[X], dict[K, X], X | None."""
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def describe(error: ErrorDetails, root: type[BaseModel]) -> tuple[str, bool]:
    """(message, points_at_key) for one pydantic error: one line of printable text."""
    message, at_key = _describe(error, root)
    return printable(message), at_key


def _describe(error: ErrorDetails, root: type[BaseModel]) -> tuple[str, bool]:
    loc = tuple(error["loc"])
    kind = error["type"]
    name = _field(loc)
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        fix = f"did you mean `{close[0]}`?" if close else f"allowed keys here: {', '.join(allowed)}"
        return f"unknown key `{loc[-1]}`; {fix}", True
    if kind == "invalid_key":
        return f"unknown key `{loc[-1]}`; keys are names (strings), and this one is not allowed here", True
    if kind == "timezone_aware":
        return f"`{name}` needs a time zone; write it like 2026-11-30T00:00:00Z", False
    if kind == "missing":
        return f"missing required key `{name}`; add `{name}:` here", False
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return f"`{name}` is {_shown(value)}; it must be {expected}", False
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        hint = PATTERN_HINTS.get(pattern, f"it must match {pattern}")
        what = "key" if loc and loc[-1] == "[key]" else f"`{name}`"
        return f"{what} {_shown(value)} is not allowed; {hint}", loc[-1] == "[key]" if loc else False
    if kind in {"string_too_long", "too_long"}:
        return f"`{name}` is too long; at most {ctx.get('max_length')} allowed", False
    if kind == "string_too_short":
        return f"`{name}` is empty; give it a value", False
    if kind == "too_short":
        need = ctx.get("min_length")
        return f"`{name}` needs at least {need} {'entry' if need == 1 else 'entries'}; add one", False
    if kind in {"string_type", "int_type", "int_parsing", "float_type", "float_parsing", "bool_type",
                "list_type", "dict_type", "model_type", "model_attributes_type", "datetime_type",
                "datetime_parsing", "datetime_from_date_parsing", "int_from_float"}:
        wanted = {
            "string_type": "a string", "int_type": "a whole number", "int_parsing": "a whole number",
            "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
            "bool_type": "true or false", "list_type": "a list (`- item` lines)",
            "dict_type": "a mapping (`key: value` lines)", "model_type": "a mapping (`key: value` lines)",
            "model_attributes_type": "a mapping (`key: value` lines)",
            "datetime_type": "a date-time like 2026-11-30T00:00:00Z",
            "datetime_parsing": "a date-time like 2026-11-30T00:00:00Z",
            "datetime_from_date_parsing": "a date-time like 2026-11-30T00:00:00Z",
        }[kind]
        return f"`{name}` is {_show(value)}; it must be {wanted}", False
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = next(iter(ctx.values()), "")
        words = {"greater_than": "more than", "greater_than_equal": "at least",
                 "less_than": "less than", "less_than_equal": "at most"}[kind]
        return f"`{name}` is {_shown(value)}; it must be {words} {bound}", False
    if kind == "value_error":
        return f"`{name}`: {ctx.get('error', error['msg'])!s}" if loc else str(ctx.get("error", error["msg"])), False
    return f"`{name}`: {error['msg']}", False


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return _shown(value)
