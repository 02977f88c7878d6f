"""The heartbeat protocol's record (docs/reference.md, docs/heartbeat-protocol.md): parsing and validation.

Pure: the observe step reads each agent's file through drivers/files.py (`scan_heartbeats`)
and hands the text here; what is wrong with a record comes back as one ValueError that
names every bad field, so one problem line tells the agent's author everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from reconciler.model.observed import Heartbeat
from reconciler.model.records import json_object, show

#: The heartbeat `state` values of docs/reference.md's heartbeat protocol.
HEARTBEAT_STATES = frozenset({"idle", "working", "waiting"})

def parse_heartbeat(text: str) -> Heartbeat:
    """Decode one heartbeat file, or raise ValueError saying everything that is wrong.

    Unknown keys are ignored so the protocol can grow. `ts` must carry its time zone
    (docs/reference.md writes UTC with `Z`); a naive time is rejected, because read on another
    host it would be off by that host's UTC offset. It is returned in UTC.

    >>> hb = parse_heartbeat('{"tenant": "jarvis", "host": "w", "agent": "coder0-0",'
    ...     ' "seq": 42, "ts": "2026-11-25T12:00:00Z", "state": "working", "model": "opus"}')
    >>> hb.agent, hb.ts.isoformat()
    ('coder0-0', '2026-11-25T12:00:00+00:00')
    >>> parse_heartbeat('{"tenant": "jarvis", "agent": "x", "seq": -1}')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: missing field 'host', 'seq' must be a non-negative integer, got -1, ...
    """
    record = json_object(text)
    errors = _problems(record)
    if errors:
        raise ValueError(", ".join(errors))
    return Heartbeat(
        tenant=str(record["tenant"]),
        host=str(record["host"]),
        agent=str(record["agent"]),
        seq=_as_int(record["seq"]),
        ts=datetime.fromisoformat(str(record["ts"])).astimezone(UTC),
        state=str(record["state"]),
        model=str(record["model"]),
        pid=None if record.get("pid") is None else _as_int(record["pid"]),
        ack=None if record.get("ack") is None else str(record["ack"]),
        usage=_usage(record.get("usage")),
        event=_optional_str(record.get("event")),
        event_ts=_optional_ts(record.get("event_ts")),
        held=_optional_str(record.get("held")) if record["state"] == "waiting" else None,
        reason=_optional_str(record.get("reason")),
        threads=_threads(record.get("threads")),
        acks=_acks(record.get("acks")),
    )


def _threads(value: object) -> tuple[str, ...]:
    """The record's Codex thread ids (strings only; anything else reads as none)."""
    return tuple(t for t in value if isinstance(t, str) and t)[-16:] if isinstance(value, list) else ()


def _acks(value: object) -> tuple[str, ...]:
    """fleet-hook's `acks`: a list of ids; anything else (or any other entry) is left out."""
    return tuple(a for a in value if isinstance(a, str) and a) if isinstance(value, list) else ()


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_ts(value: object) -> datetime | None:
    """An extra time of fleet-hook's records; one that does not parse is ignored (the
    protocol's own fields are the ones validated)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None


def _problems(record: Mapping[str, object]) -> list[str]:
    """Every field error of one record, in the protocol's field order."""
    checks = (
        _check_str(record, "tenant"),
        _check_str(record, "host"),
        _check_str(record, "agent"),
        _check_int(record, "seq", required=True),
        _check_ts(record),
        _check_int(record, "pid", required=False),
        _check_state(record),
        _check_str(record, "model"),
        _check_optional_str(record, "ack"),
        _check_usage(record),
    )
    return [problem for problem in checks if problem]


def _check_str(record: Mapping[str, object], key: str) -> str | None:
    if key not in record:
        return f"missing field {key!r}"
    value = record[key]
    if not isinstance(value, str) or not value:
        return f"{key!r} must be a non-empty string, got {show(value)}"
    return None


def _check_optional_str(record: Mapping[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return None
    return f"{key!r} must be a string or null, got {show(value)}"


def _check_int(record: Mapping[str, object], key: str, *, required: bool) -> str | None:
    if key not in record:
        return f"missing field {key!r}" if required else None
    value = record[key]
    if value is None and not required:
        return None
    if not _is_int(value) or _as_int(value) < 0:
        return f"{key!r} must be a non-negative integer, got {show(value)}"
    return None


def _check_ts(record: Mapping[str, object]) -> str | None:
    if "ts" not in record:
        return "missing field 'ts'"
    value = record["ts"]
    if not isinstance(value, str):
        return f"'ts' must be an ISO-8601 string, got {show(value)}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"'ts' is not an ISO-8601 time, got {show(value)}"
    if parsed.utcoffset() is None:
        return f"'ts' has no time zone, got {show(value)} (write UTC with a trailing Z)"
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return f"'ts' is out of range once moved to UTC, got {show(value)}"
    return None


def _check_state(record: Mapping[str, object]) -> str | None:
    if "state" not in record:
        return "missing field 'state'"
    value = record["state"]
    if not isinstance(value, str) or value not in HEARTBEAT_STATES:
        allowed = "|".join(sorted(HEARTBEAT_STATES))
        return f"'state' must be one of {allowed}, got {show(value)}"
    return None


def _check_usage(record: Mapping[str, object]) -> str | None:
    value = record.get("usage")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in value.items()
    ):
        return f"'usage' must be an object of integer token counts, got {show(value)}"
    return None


def _is_int(value: object) -> bool:
    """JSON integers only: `true` is not a sequence number."""
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _usage(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _as_int(v) for k, v in value.items()}
