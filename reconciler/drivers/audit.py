"""The audit log: `$FLEET_STATE_DIR/<tenant>/audit.jsonl`, one JSON line per act on an agent.

Written by the apply step for every action it ran, skipped or failed (spawn, stop,
restart, downgrade, queue, refuse), and by the verbs that type into or take over an
agent (`fleet agent send`, `fleet agent attach`); `watch` and dry-runs write nothing.
Each line says when (`ts`, UTC), who (user, uid, pid, host and the fleet command), what
(kind, tenant, agent, model), why (the plan's rule and message) and the result.

Append-only and never rewritten: each record is one `write` on an `O_APPEND`
descriptor, so concurrent writers (two reconcilers of different tenants, a reconcile
and a `send`) never interleave within a line. The file is mode 0600, and a symlink in
its place is refused rather than followed. No environment value ever enters a record:
messages are built from the plan, and spec `env:` values that appear in an error are
redacted.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import pwd
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from reconciler.drivers.files import DAMAGED, damage, read_capped
from reconciler.model.layout import StateLayout

#: A record is a few hundred bytes; a longer `why` or `error` is cut to this many characters.
MAX_TEXT = 2000
#: Values shorter than this are not redacted (they would blank out ordinary words).
MIN_SECRET = 6
#: Reading the log back (tests, `fleet` tools) stops at this size.
MAX_AUDIT_BYTES = 64 << 20

AuditResult = Literal["ok", "failed", "skipped"]


def audit_path(state_dir: Path, tenant: str) -> Path:
    return StateLayout(state_dir).audit(tenant)


@dataclass(frozen=True, slots=True)
class Who:
    """Who acted: the process's user and the `fleet` command it runs."""

    user: str
    uid: int
    pid: int
    host: str
    command: str
    run_by: str = ""  # root's run that started this one as the tenant's user ("root pid 4242")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    ts: datetime
    who: Who
    kind: str  # an action kind (spawn, stop...) or a verb (send, attach)
    tenant: str
    agent: str
    model: str | None
    rule: str
    why: str
    result: AuditResult
    error: str = ""


#: Set by root for a tenant user's run (drivers/users.py), so that user's audit log says
#: whose run acted for it.
RUN_BY = "FLEET_RUN_BY"


def whoami(command: str) -> Who:
    """This process as the audit log names it (effective uid: what the kernel checks)."""
    uid = os.geteuid()
    return Who(_user_name(uid), uid, os.getpid(), socket.gethostname(), command, os.environ.get(RUN_BY, ""))


@functools.lru_cache(maxsize=8)
def _user_name(uid: int) -> str:
    """The passwd name of `uid`, looked up once (apply asks on every tick)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (a container): the number says it all
        return str(uid)


def redact(text: str, env: Iterable[tuple[str, str]]) -> str:
    """`text` with every spec environment value in it replaced by `[redacted]`.

    The fleet's own `FLEET_*` variables are not secrets (tenant, agent, state dir...),
    and values shorter than MIN_SECRET characters are left, or every "demo" would go.

    >>> redact("tmux: bad value s3cr3t-token", [("API_KEY", "s3cr3t-token"), ("FLEET_TENANT", "demo")])
    'tmux: bad value [redacted]'
    """
    for key, value in env:
        if not key.startswith("FLEET_") and len(value) >= MIN_SECRET:
            text = text.replace(value, "[redacted]")
    return text


def render_record(record: AuditRecord) -> str:
    """One JSON line, fields in a fixed order, time in UTC with Z; long texts are cut.

    >>> who = Who("root", 0, 42, "w-1", "reconcile")
    >>> print(render_record(AuditRecord(datetime(2026, 11, 25, 12, tzinfo=UTC), who, "spawn", "demo",
    ...       "orchestrator", "stub-large", "missing", "desired but not running", "ok")), end="")
    {"ts": "2026-11-25T12:00:00Z", "who": {"user": "root", "uid": 0, "pid": 42, "host": "w-1", "command": "reconcile"}, "what": {"kind": "spawn", "tenant": "demo", "agent": "orchestrator", "model": "stub-large"}, "why": {"rule": "missing", "message": "desired but not running"}, "result": "ok", "error": null}
    """
    doc = {
        "ts": record.ts.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "who": {"user": record.who.user, "uid": record.who.uid, "pid": record.who.pid,
                "host": record.who.host, "command": record.who.command,
                **({"run_by": record.who.run_by} if record.who.run_by else {})},
        "what": {"kind": record.kind, "tenant": record.tenant, "agent": record.agent, "model": record.model},
        "why": {"rule": record.rule, "message": _cut(record.why)},
        "result": record.result,
        "error": _cut(record.error) or None,
    }
    return json.dumps(doc, ensure_ascii=True) + "\n"


def append_records(state_dir: Path, records: Iterable[AuditRecord]) -> list[str]:
    """Append `records` to their tenants' logs; returns problem lines, never raises.

    One `open` per tenant and one `write` per record. A log that cannot be written (a
    read-only or full state directory, a symlink or a folder in its place) is reported
    with what was lost; the reconciler's actions themselves are not undone by it.
    """
    by_tenant: dict[str, list[AuditRecord]] = {}
    for record in records:
        by_tenant.setdefault(record.tenant, []).append(record)
    problems = []
    for tenant, mine in sorted(by_tenant.items()):
        path = audit_path(state_dir, tenant)
        try:
            _append_lines(path, [render_record(r).encode() for r in mine])
        except OSError as exc:
            lost = ", ".join(f"{r.kind} {r.agent}" for r in mine)
            problems.append(f"{path}: could not append to the audit log ({exc.strerror or exc}); "
                            f"not recorded: {lost}")
    return problems


def read_audit(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record of one log (as decoded JSON objects), and a problem per damaged line."""
    try:
        text = read_capped(path, MAX_AUDIT_BYTES)
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{path}: cannot read the audit log ({exc})"]
    records: list[dict[str, Any]] = []
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            records.append(doc)
        except DAMAGED as exc:
            problems.append(f"{path}:{number}: unreadable audit line ({damage(exc)})")
    return records, problems


def _append_lines(path: Path, lines: list[bytes]) -> None:
    """Open the log for appending (0600, no symlinks, regular files only); one write per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        kind = os.fstat(fd)
        if not stat.S_ISREG(kind.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if stat.S_IMODE(kind.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        for line in lines:
            written = os.write(fd, line)
            if written != len(line):  # only a full disk does this; the rest would interleave
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."
