"""Decoding a one-record state file: its JSON object, and values shown as their author wrote them.

Pure helpers shared by the parsers of heartbeats (model/heartbeat.py), usage records and
restart history; the files themselves are read by the drivers (drivers/files.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping


def json_object(text: str) -> Mapping[str, object]:
    """Decode the file; an empty or cut-off file is said to be so (a non-atomic writer)."""
    if not text.strip():
        raise ValueError("empty file")
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "" if text.rstrip().endswith("}") else ", truncated?"
        raise ValueError(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}{hint})"
        ) from exc
    except RecursionError:
        raise ValueError("invalid JSON (nested too deeply)") from None
    if not isinstance(decoded, dict):
        raise ValueError(f"expected a JSON object, got {_JSON_KINDS.get(type(decoded), 'a value')}")
    record: Mapping[str, object] = decoded
    return record


_JSON_KINDS: dict[type, str] = {list: "an array", str: "a string", int: "a number"}
_JSON_KINDS |= {float: "a number", bool: "a boolean", type(None): "null"}


def show(value: object) -> str:
    """A value as the file's author wrote it (JSON), cut short."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
