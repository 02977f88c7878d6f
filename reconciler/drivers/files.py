"""The state-directory driver: heartbeat files in, atomic writes out.

The observe step reads every agent's heartbeat with one directory scan per tenant
(`scan_heartbeats`); a corrupt file becomes a problem line for status, never a failed
tick. Everything the reconciler persists under the state directory goes through
`write_atomic`, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from reconciler.model.observed import Heartbeat

R = TypeVar("R")

#: The heartbeat `state` values of SPEC.md's heartbeat protocol.
HEARTBEAT_STATES = frozenset({"idle", "working", "waiting"})

_HOW_TO_FIX = (
    "the agent must write a temporary file and rename it over this one; "
    "delete the file to clear this, the agent's next heartbeat recreates it"
)


def default_state_dir() -> Path:
    """`$FLEET_STATE_DIR`, else `$XDG_STATE_HOME/mosaic-fleet`, else `~/.local/state/...`.

    Empty variables count as unset, as the XDG base directory spec says.
    """
    if explicit := os.environ.get("FLEET_STATE_DIR"):
        return Path(explicit)
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "mosaic-fleet"


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` all at once: temp file in the same folder, fsync, rename.

    Readers see the old bytes or the new ones, never a mix, and a crash leaves at most
    a hidden `.NAME.*.tmp` file that scans ignore. Parent folders are created.
    """
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def parse_heartbeat(text: str) -> Heartbeat:
    """Decode one heartbeat file, or raise ValueError saying everything that is wrong.

    Unknown keys are ignored so the protocol can grow. `ts` must carry its time zone
    (SPEC.md writes UTC with `Z`); a naive time is rejected, because read on another
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
    record = _json_object(text)
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
    )


def scan_heartbeats(directory: Path) -> tuple[dict[str, Heartbeat], list[str]]:
    """Read every `*.json` heartbeat of one folder with a single `os.scandir`.

    Returns heartbeats by agent name and problem lines (`PATH: what; how to fix`) for
    files that could not be used; hidden files (an agent's `.NAME.tmp` before its
    rename) are skipped. A missing folder is no heartbeats yet, not a problem.
    """
    return scan_records(directory, _read_heartbeat, lambda beat: beat.agent, "heartbeats")


def scan_records(
    directory: Path, read_one: Callable[[Path], R | str], key: Callable[[R], str], what: str
) -> tuple[dict[str, R], list[str]]:
    """One `os.scandir` of a folder of `*.json` records, each read by `read_one` (a record,
    or the problem line that says why it is skipped). Hidden files are a writer's
    temporary files; a missing folder holds no records yet."""
    try:
        with os.scandir(directory) as scan:
            names = sorted(e.name for e in scan if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"{directory}: cannot list {what} ({exc.strerror}); check the folder"]
    found: dict[str, R] = {}
    problems: list[str] = []
    for name in names:
        outcome = read_one(directory / name)
        if isinstance(outcome, str):
            problems.append(outcome)
        else:
            found[key(outcome)] = outcome
    return found, problems


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `text` atomically unless the file already holds exactly it; True if written.

    Files the reconciler rewrites every tick stay untouched when nothing changed, so
    Git sees no change and nothing is committed."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text, mode)
    return True


def _read_heartbeat(path: Path) -> Heartbeat | str:
    """One heartbeat file, or the problem line that says why it is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path}: cannot read it ({exc.strerror}); fix its permissions or remove it"
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text; {_HOW_TO_FIX}"
    try:
        heartbeat = parse_heartbeat(text)
    except ValueError as exc:
        return f"{path}: {exc}; {_HOW_TO_FIX}"
    stem = path.name.removesuffix(".json")
    if heartbeat.agent != stem:
        return (
            f"{path}: agent {heartbeat.agent!r} does not match the file name {stem!r}; "
            "an agent writes only <agent>.json, so rename the file or fix its agent field"
        )
    return heartbeat


def _json_object(text: str) -> Mapping[str, object]:
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
    if not isinstance(decoded, dict):
        raise ValueError(f"expected a JSON object, got {_JSON_KINDS.get(type(decoded), 'a value')}")
    record: Mapping[str, object] = decoded
    return record


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
        return f"{key!r} must be a non-empty string, got {_show(value)}"
    return None


def _check_optional_str(record: Mapping[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return None
    return f"{key!r} must be a string or null, got {_show(value)}"


def _check_int(record: Mapping[str, object], key: str, *, required: bool) -> str | None:
    if key not in record:
        return f"missing field {key!r}" if required else None
    value = record[key]
    if value is None and not required:
        return None
    if not _is_int(value) or _as_int(value) < 0:
        return f"{key!r} must be a non-negative integer, got {_show(value)}"
    return None


def _check_ts(record: Mapping[str, object]) -> str | None:
    if "ts" not in record:
        return "missing field 'ts'"
    value = record["ts"]
    if not isinstance(value, str):
        return f"'ts' must be an ISO-8601 string, got {_show(value)}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"'ts' is not an ISO-8601 time, got {_show(value)}"
    if parsed.utcoffset() is None:
        return f"'ts' has no time zone, got {_show(value)} (write UTC with a trailing Z)"
    return None


def _check_state(record: Mapping[str, object]) -> str | None:
    if "state" not in record:
        return "missing field 'state'"
    value = record["state"]
    if value not in HEARTBEAT_STATES:
        allowed = "|".join(sorted(HEARTBEAT_STATES))
        return f"'state' must be one of {allowed}, got {_show(value)}"
    return None


def _check_usage(record: Mapping[str, object]) -> str | None:
    value = record.get("usage")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and _is_int(v) for k, v in value.items()
    ):
        return f"'usage' must be an object of integer token counts, got {_show(value)}"
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


_JSON_KINDS: dict[type, str] = {list: "an array", str: "a string", int: "a number"}
_JSON_KINDS |= {float: "a number", bool: "a boolean", type(None): "null"}


def _show(value: object) -> str:
    """A value as the file's author wrote it (JSON), cut short."""
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX: a rename lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
