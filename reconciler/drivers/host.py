"""What this host has: where a program is, whether a folder exists.

The observe step asks here once per tick for every program and workdir the desired
launches name (core/desired.py `host_facts`), so the plan shows exactly what apply
hands tmux. The launcher (reconciler/launcher.py) finds its agent's program the same
way in the pane. Standard library only: the launcher imports it on every start.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def program_path(program: str) -> str:
    """A program named without a folder, as an absolute path: PATH first, then beside the
    running Python (fleet's own console scripts, e.g. fleet-stub-agent, in a venv that is
    not on PATH). Found nowhere, it is returned as named."""
    if "/" in program:
        return program
    if found := shutil.which(program):
        return str(Path(found).absolute())
    beside = Path(sys.executable).parent / program
    return str(beside) if beside.is_file() else program


def pane_path(environ_path: str) -> str:
    """The PATH for a lane worker's pane: the folder of this host's `fleet` first, then
    `environ_path` (the reconciler's own); "" when `fleet` is nowhere to be found.

    >>> import os
    >>> pane_path("/usr/bin").endswith(":/usr/bin") or pane_path("/usr/bin") == ""
    True
    """
    found = program_path("fleet")
    if "/" not in found:
        return ""
    folder = str(Path(found).parent)
    rest = [p for p in environ_path.split(os.pathsep) if p and p != folder]
    return os.pathsep.join([folder, *rest])


def program_found(program: str) -> bool:
    """Whether `program` (a path, or a name looked up as `program_path` does) exists here."""
    if "/" in program:
        return Path(program).expanduser().is_file()
    return program_path(program) != program or shutil.which(program) is not None


def lineage(pid: int, limit: int = 64) -> tuple[int, ...]:
    """`pid` and its ancestors up to init, from /proc; () when `pid` is gone (or off Linux).

    The observe step asks this for the runtime pid of an event-driven runtime's heartbeat,
    so health can see the runtime alive inside its pane (core/health.py).
    """
    chain: list[int] = []
    while pid > 1 and len(chain) < limit:
        try:
            raw = Path(f"/proc/{pid}/stat").read_bytes()
            ppid = int(raw[raw.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
        pid = ppid
    return tuple(chain)


def kept_session_id(path: Path) -> str | None:
    """The conversation id kept at `path` (one UUID), or None: absent, unreadable or not a UUID."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _UUID.fullmatch(text) else None


#: How much of a transcript is read to find its first message (one comes after a few
#: metadata lines); a conversation is never that long before its first prompt.
TRANSCRIPT_HEAD = 1 << 20


def claude_transcript(config_dir: str, session_id: str) -> str | None:
    """What Claude Code keeps of `session_id` under `config_dir` (`~/.claude`), in
    `projects/<folder>/<id>.jsonl`: None (no file), "empty" (only metadata lines: the
    runtime writes the file at start and its records later) or "conversation" (a message).

    Measured with 2.1.328: `--resume ID` fails ("No conversation found") unless there is
    a message, and `--session-id ID` fails ("already in use") once the file exists.
    """
    try:
        projects = Path(config_dir).expanduser() / "projects"
        for folder in projects.iterdir():
            try:
                with (folder / f"{session_id}.jsonl").open("rb") as handle:
                    head = handle.read(TRANSCRIPT_HEAD)
            except FileNotFoundError:
                continue
            return "conversation" if b'"type":"user"' in head or b'"type":"assistant"' in head else "empty"
    except (OSError, RuntimeError):
        return None
    return None


#: How much of a Codex rollout's end is read: its last turn's events (task_complete is last).
ROLLOUT_TAIL = 64 * 1024
#: At most this many rollouts (the newest changed since the agent's last event) are read.
MAX_ROLLOUTS = 8


def codex_rollout_tails(codex_home: str, since: float) -> list[str]:
    """The ends of the Codex rollouts changed after `since` (a POSIX time: the agent's last
    heartbeat event), newest first: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl` of
    the two newest days. Nothing changed since: nothing is read but the folders' listings."""
    try:
        days = sorted(Path(codex_home).expanduser().glob("sessions/*/*/*"))[-2:]
        found = []
        for day in days:
            for path in day.glob("rollout-*.jsonl"):
                stat = path.stat()
                if stat.st_mtime > since:
                    found.append((stat.st_mtime, path, stat.st_size))
        tails = []
        for _, path, size in sorted(found, reverse=True)[:MAX_ROLLOUTS]:
            with path.open("rb") as handle:
                handle.seek(max(size - ROLLOUT_TAIL, 0))
                tails.append(handle.read(ROLLOUT_TAIL).decode("utf-8", errors="replace"))
        return tails
    except (OSError, RuntimeError):
        return []


def workdir_exists(workdir: str) -> bool:
    """Whether `workdir` (with `~` for this process's user's home) is a folder here."""
    try:
        return Path(workdir).expanduser().is_dir()
    except RuntimeError:  # no home to expand `~` against
        return False


#: How much of a Codex rollout is read for its first line (`session_meta`, which holds
#: the instructions: a persona of up to 20,000 characters and Codex's own prompt).
ROLLOUT_HEAD = 1 << 20


def codex_rollout_cwd(codex_home: str, thread_id: str) -> str | None:
    """The workdir Codex's rollout of `thread_id` was started in, or None: no rollout
    (a side thread, such as the per-turn title, writes none) or one whose first line is
    not that thread's `session_meta`.

    Measured with 0.169.0: `$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl`,
    written at the first turn, its first line `{"type": "session_meta", "payload":
    {"id": ID, "cwd": ...}}`. The ids are UUIDv7, so the day is read from the id and
    only that day's folders (one either side, for the local time zone) are listed.
    """
    import json  # noqa: PLC0415 - not on the launcher's path (see the module's docstring)

    if not _UUID.fullmatch(thread_id):
        return None
    sessions = Path(codex_home).expanduser() / "sessions"
    try:
        for day in _rollout_days(thread_id):
            for path in (sessions / day).glob(f"rollout-*-{thread_id}.jsonl"):
                with path.open("rb") as handle:
                    first = handle.readline(ROLLOUT_HEAD)
                meta = json.loads(first)
                payload = meta.get("payload") if isinstance(meta, dict) else None
                if meta.get("type") == "session_meta" and isinstance(payload, dict) and \
                        payload.get("id") == thread_id and isinstance(payload.get("cwd"), str):
                    return str(payload["cwd"])
    except (OSError, RuntimeError, ValueError, AttributeError):
        return None
    return None


def _rollout_days(thread_id: str) -> list[str]:
    """The `YYYY/MM/DD` folders a UUIDv7 thread's rollout can be in; `*/*/*` otherwise.

    >>> _rollout_days("01a249b6-a332-7350-b445-9998cb79cd53")
    ['2026/12/05', '2026/12/06', '2026/12/07']
    >>> _rollout_days("0f0e0d0c-0b0a-4909-8807-060504030201")
    ['*/*/*']
    """
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415 - as above

    if thread_id[14] != "7":
        return ["*/*/*"]
    moment = datetime.fromtimestamp(int(thread_id.replace("-", "")[:12], 16) / 1000, UTC)
    return [(moment + timedelta(days=d)).strftime("%Y/%m/%d") for d in (-1, 0, 1)]
