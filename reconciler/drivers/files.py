"""The state-directory driver: heartbeat files in, atomic writes out.

The observe step reads every agent's heartbeat with one directory scan per tenant
(`scan_heartbeats`); a corrupt file becomes a problem line for status, never a failed
tick. Every state file is read through `read_capped`, so a huge file, a FIFO or a
symlink to /dev/zero is refused instead of read forever. Everything the reconciler
persists under the state directory goes through `write_atomic`, so a reader never sees
half a file; `check_state_writable` says, before any apply, when it could not.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from reconciler.model.observed import Heartbeat

R = TypeVar("R")

#: The heartbeat `state` values of docs/reference.md's heartbeat protocol.
HEARTBEAT_STATES = frozenset({"idle", "working", "waiting"})

#: The most a one-record state file (heartbeat, usage, history, budget memory) may hold;
#: a real one is well under 4 KiB.
MAX_RECORD_BYTES = 1 << 20

#: What decoding a damaged file can raise besides OSError: bad JSON or text, wrong types,
#: nesting deeper than the parser's stack, a time past year 9999 once moved to UTC.
DAMAGED: tuple[type[Exception], ...] = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError,
)

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


def read_capped(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The UTF-8 text of the regular file at `path`, if it holds at most `limit` bytes.

    Raises OSError (with a `strerror` fit for a problem line) for a missing or
    unreadable file, a directory, anything that is not a regular file (a FIFO, which
    would block, or a device such as /dev/zero, which never ends) and a file over
    `limit`; UnicodeDecodeError for bytes that are not UTF-8. The open never blocks and
    at most `limit + 1` bytes are read, even from a file that grows meanwhile.
    """
    ahead = Path(path).stat()  # opening a device can act (a watchdog arms), so look before opening
    if not stat.S_ISREG(ahead.st_mode) and not stat.S_ISDIR(ahead.st_mode):
        raise OSError(errno.EINVAL, f"not a regular file ({_file_kind(ahead.st_mode)})", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        kind = os.fstat(fd)  # again: it may have been swapped since
        if stat.S_ISDIR(kind.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(kind.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_file_kind(kind.st_mode)})", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit and (chunk := os.read(fd, min(1 << 16, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"larger than {_bytes(limit)}, the most such a file may hold", str(path))
    return b"".join(chunks).decode("utf-8")


def check_state_writable(state_dir: Path, tenants: Iterable[str]) -> str | None:
    """Why the reconciler could not persist anything under `state_dir`, or None when it can.

    For each tenant's folder (created if missing; `state_dir` itself when there are no
    tenants): create a small file, write one page into it, fsync, remove it. A read-only mount, a folder we may not write and a full
    file system each fail there, before any action is taken, with one message saying
    which and what to do. Nothing is left behind either way.
    """
    folders = [state_dir / tenant for tenant in sorted(set(tenants))] or [state_dir]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _probe(folder)
        except OSError as exc:
            return _unwritable(state_dir, folder, exc)
    return None


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
        if read_capped(path, limit=len(text.encode())) == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text, mode)
    return True


def _read_heartbeat(path: Path) -> Heartbeat | str:
    """One heartbeat file, or the problem line that says why it is skipped."""
    try:
        text = read_capped(path)
    except OSError as exc:
        return cannot_read(path, exc)
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text; {_HOW_TO_FIX}"
    try:
        heartbeat = parse_heartbeat(text)
    except DAMAGED as exc:
        return f"{path}: {damage(exc)}; {_HOW_TO_FIX}"
    stem = path.name.removesuffix(".json")
    if heartbeat.agent != stem:
        return (
            f"{path}: agent {heartbeat.agent!r} does not match the file name {stem!r}; "
            "an agent writes only <agent>.json, so rename the file or fix its agent field"
        )
    return heartbeat


def cannot_read(path: Path, exc: OSError) -> str:
    """The problem line of a state file that `read_capped` refused."""
    return f"{path}: cannot read it ({exc.strerror or exc}); fix its permissions or remove it"


def damage(exc: BaseException) -> str:
    """What a DAMAGED exception says about the file, in words (not a traceback)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to read (not a record the fleet writes)"
    if isinstance(exc, OverflowError):
        return f"a value is out of range ({exc})"
    return str(exc) or type(exc).__name__


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
    try:
        parsed.astimezone(UTC)
    except OverflowError:
        return f"'ts' is out of range once moved to UTC, got {_show(value)}"
    return None


def _check_state(record: Mapping[str, object]) -> str | None:
    if "state" not in record:
        return "missing field 'state'"
    value = record["state"]
    if not isinstance(value, str) or value not in HEARTBEAT_STATES:
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


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _bytes(count: int) -> str:
    """A size as a person reads it.

    >>> _bytes(1 << 20), _bytes(1536)
    ('1 MiB', '1536 bytes')
    """
    return f"{count >> 20} MiB" if count >= 1 << 20 and not count % (1 << 20) else f"{count} bytes"


#: One page: the least a file system must still give us for the smallest write.
_PROBE = b"\0" * 4096


def _probe(folder: Path) -> None:
    """Create, fill, fsync and remove one hidden file in `folder`; raises OSError if any step fails."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".fleet-probe.", suffix=".tmp")
    try:
        view = memoryview(_PROBE)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
        Path(name).unlink(missing_ok=True)


_UNWRITABLE = {
    errno.EROFS: "is read-only",
    errno.ENOSPC: "is full",
    errno.EDQUOT: "is over its disk quota",
    errno.EACCES: "is not writable by this user",
    errno.EPERM: "is not writable by this user",
}


def _unwritable(state_dir: Path, folder: Path, exc: OSError) -> str:
    """The message of `check_state_writable`: which folder, what is wrong, what to do."""
    what = _UNWRITABLE.get(exc.errno or 0, "cannot be written")
    where = "" if folder == state_dir else f" (at {folder})"
    fix = "free some space" if exc.errno in {errno.ENOSPC, errno.EDQUOT} else "fix its permissions"
    return (f"state directory {state_dir} {what}{where} ({exc.strerror or exc}): "
            f"{fix} or pass --state-dir; nothing was changed")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX: a rename lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
