"""The state-directory driver: heartbeat files in, atomic writes out.

The observe step reads every agent's heartbeat with one directory scan per tenant
(`scan_heartbeats`; the record is parsed and validated by the pure model/heartbeat.py);
a corrupt file becomes a problem line for status, never a failed tick. Every state file is read through `read_capped`, so a huge file, a FIFO or a
symlink to /dev/zero is refused instead of read forever. Everything the reconciler
persists under the state directory goes through `write_atomic`, so a reader never sees
half a file; `check_state_writable` says, before any apply, when it could not.
A resident loop keeps each heartbeat it read by the file's stat (`StatCache`) and
reads only those that changed since.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.model.observed import Heartbeat

R = TypeVar("R")

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
    if explicit := os.environ.get(STATE_DIR_ENV):
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

    The fsync runs on a folder's first probe in this process only: a resident loop
    probes every tick, and the faults that come and go (a remount read-only, a
    permission, a full disk) fail at the create or the write already, as file systems
    reserve the space when written to (tmpfs, ext4, XFS, btrfs).
    """
    folders = [StateLayout(state_dir).tenant(tenant) for tenant in sorted(set(tenants))] or [state_dir]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _probe(folder)
        except OSError as exc:
            return _unwritable(state_dir, folder, exc)
    return None


#: How much older than the clock a file's last change must be before what was read from
#: it is kept by its stat: a write within the file system's timestamp granularity of an
#: earlier one can leave size and times as they were (git's "racy" files).
SETTLED_NS = 2_000_000_000


class StatCache(Generic[R]):
    """What was read from each file, kept while the file's stat stays the same.

    A resident loop reads a thousand heartbeats every tick; most did not change. The key
    is the file's device, inode, size, modification and change times (`os.stat`, links
    followed): a rename over it (how agents write) gives another inode and times, an
    edit in place another change time. A file changed within SETTLED_NS of being read is
    not kept, so two writes in one timestamp tick are never mistaken for one. Only
    records are kept; a file that could not be used is read again each time.
    """

    def __init__(self, limit: int = 1 << 16) -> None:
        self._entries: dict[str, tuple[tuple[int, ...], R]] = {}
        self._limit = limit

    def read(self, entry: os.DirEntry[str], read_one: Callable[[Path], R | str]) -> R | str:
        """`read_one` of the file a directory scan found, or what it gave while the stat was the same."""
        try:
            ahead = entry.stat()
        except OSError:
            return read_one(Path(entry.path))  # it says why
        key = (ahead.st_dev, ahead.st_ino, ahead.st_size, ahead.st_mtime_ns, ahead.st_ctime_ns)
        kept = self._entries.get(entry.path)
        if kept is not None and kept[0] == key:
            return kept[1]
        now = time.time_ns()
        outcome = read_one(Path(entry.path))
        if isinstance(outcome, str) or max(ahead.st_mtime_ns, ahead.st_ctime_ns) > now - SETTLED_NS:
            self._entries.pop(entry.path, None)
            return outcome
        if len(self._entries) >= self._limit and entry.path not in self._entries:
            self._entries.clear()
        self._entries[entry.path] = (key, outcome)
        return outcome

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: Heartbeats read by this process (a resident `--watch` loop reads only the changed ones).
_HEARTBEATS: StatCache[Heartbeat] = StatCache()


def scan_heartbeats(directory: Path) -> tuple[dict[str, Heartbeat], list[str]]:
    """Read every `*.json` heartbeat of one folder with a single `os.scandir`.

    Returns heartbeats by agent name and problem lines (`PATH: what; how to fix`) for
    files that could not be used; hidden files (an agent's `.NAME.tmp` before its
    rename) are skipped. A missing folder is no heartbeats yet, not a problem. A file
    whose stat did not change since this process read it is not read again (StatCache).
    """
    return scan_records(directory, _read_heartbeat, lambda beat: beat.agent, "heartbeats", _HEARTBEATS)


def scan_records(
    directory: Path, read_one: Callable[[Path], R | str], key: Callable[[R], str], what: str,
    cache: StatCache[R] | None = None,
) -> tuple[dict[str, R], list[str]]:
    """One `os.scandir` of a folder of `*.json` records, each read by `read_one` (a record,
    or the problem line that says why it is skipped), through `cache` when given. Hidden
    files are a writer's temporary files; a missing folder holds no records yet."""
    try:
        with os.scandir(directory) as scan:
            entries = sorted((e for e in scan if e.name.endswith(".json") and not e.name.startswith(".")),
                             key=lambda e: e.name)
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"{directory}: cannot list {what} ({exc.strerror}); check the folder"]
    found: dict[str, R] = {}
    problems: list[str] = []
    for entry in entries:
        outcome = read_one(directory / entry.name) if cache is None else cache.read(entry, read_one)
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


#: Folders (device, inode) whose probe was fsynced by this process.
_SYNCED: set[tuple[int, int]] = set()


def _probe(folder: Path) -> None:
    """Create, fill, fsync (the folder's first probe in this process) and remove one
    hidden file in `folder`; raises OSError if any step fails."""
    where = folder.stat()
    fd, name = tempfile.mkstemp(dir=folder, prefix=".fleet-probe.", suffix=".tmp")
    try:
        view = memoryview(_PROBE)
        while view:
            view = view[os.write(fd, view):]
        if (where.st_dev, where.st_ino) not in _SYNCED:
            os.fsync(fd)
            _SYNCED.add((where.st_dev, where.st_ino))
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
