"""Tenants that run as other Linux users: root reconciles each as its user; others skip.

A tenant with `user:` is reconciled by `fleet` running under that user's uid, with a
clean environment, on a private copy of just its own specs (fleet.yaml, roles/, its
tenant folder and its last status). Root keeps Git and the status files: it pulls before
and commits after, and takes back only the tenant's status document, parsed, checked to
be that tenant's and this host's, and rendered again. So a tenant user can neither read
another tenant's specs nor write anything of root's but its own status.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.core.render import parse_status, render_status
from reconciler.drivers import units, users
from reconciler.drivers.files import write_if_changed
from reconciler.engine.writeback import STATUS_DIR, status_path
from reconciler.errors import UserError
from reconciler.model.status import TenantStatus
from reconciler.spec.repo import FleetRepo

#: A tenant's whole reconcile, lock wait and spawns included.
RUN_TIMEOUT_S = 600.0
#: A status document is a few KB per agent; a larger file is not one.
MAX_STATUS_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UserRun:
    user: str
    tenants: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    document: Any = None  # the run's --output json document, when asked and printed
    statuses: tuple[TenantStatus, ...] = ()
    problems: tuple[str, ...] = ()
    revision: str = ""  # root's spec revision, which the statuses are written back with


def run_for_user(repo: FleetRepo, user: str, tenants: Sequence[str], host: str, verb: Sequence[str],
                 *, json_output: bool, revision: str = "") -> UserRun:
    """`fleet VERB COPY --host HOST --tenant T...` as `user`, on a private copy of its specs."""
    account = users.lookup(user)
    if account is None:
        why = (f"tenant {', '.join(tenants)}: user {user!r} does not exist on this host; "
               f"create it (useradd --create-home {user}) or remove `user:` from the roster")
        return UserRun(user, tuple(tenants), 1, "", "", problems=(why,))
    linger = ensure_linger(account.name) if verb[0] == "reconcile" and "--dry-run" not in verb else ""
    with staged_specs(repo.root, tenants, host, account) as copy:
        argv = [sys.executable, "-m", "reconciler", *verb, str(copy), "--host", host,
                *(arg for t in tenants for arg in ("--tenant", t)), "--output", "json" if json_output else "text"]
        if revision and verb[0] in ("reconcile", "down"):
            argv += ["--spec-revision", revision]
        try:
            done = users.run_as(account, argv, cwd=str(copy), passed=os.environ, timeout=RUN_TIMEOUT_S)
        except OSError as exc:  # the interpreter cannot even be started as the user
            return UserRun(user, tuple(tenants), 1, "", "", problems=(_unreachable(user, str(exc)),))
        except subprocess.TimeoutExpired:
            why = f"user {user}: fleet did not finish within {RUN_TIMEOUT_S:.0f}s; its tenants are retried next run"
            return UserRun(user, tuple(tenants), 1, "", "", problems=(why,))
        problems = [_unreachable(user, done.stderr.strip().splitlines()[-1])] if _not_started(done) else []
        notes = [f"warning: {linger}; its core agents start at boot only once it logs in"] if linger else []
        statuses = _read_statuses(copy, host, tenants, problems) if verb[0] in ("reconcile", "down") else ()
    document = _json_or_none(done.stdout) if json_output else None
    return UserRun(user, tuple(tenants), done.returncode, done.stdout, "\n".join([*notes, done.stderr]).strip(), document,
                   tuple(statuses), tuple(problems), revision)


#: `loginctl` talks to logind over the system bus: without its socket, linger cannot be asked for.
SYSTEM_BUS = Path("/run/dbus/system_bus_socket")


def ensure_linger(user: str) -> str:
    """Root turns linger on for a tenant user (once), so logind starts its systemd --user at
    boot and the user's core agents come back without a login; "" or why not."""
    if not SYSTEM_BUS.exists() or Path("/var/lib/systemd/linger", user).exists():
        return ""
    return units.enable_linger(user)


def hand_over(root: Path, user: str, tenant: str, args: Callable[[Path], list[str]]) -> int:
    """`fleet ARGS` as `user` on a copy of `tenant`'s specs, with this terminal: root's
    `fleet agent watch|attach|send` for a tenant of another user. Its exit code."""
    account = users.lookup(user)
    if account is None:
        raise UserError(f"tenant {tenant}: user {user!r} does not exist on this host")
    with staged_specs(root, [tenant], "", account) as copy:
        try:
            done = users.run_as(account, [sys.executable, "-m", "reconciler", *args(copy)], cwd=str(copy),
                                passed=os.environ, timeout=None, capture=False)
        except OSError as exc:
            raise UserError(_unreachable(user, str(exc))) from None
    return done.returncode


def _not_started(done: subprocess.CompletedProcess[str]) -> bool:
    """Python ran but could not import fleet: the install is not readable by the user."""
    return done.returncode != 0 and any(m in done.stderr for m in ("ModuleNotFoundError", "Permission denied", "can't open file"))


def _unreachable(user: str, said: str) -> str:
    return (f"user {user} cannot run fleet ({sys.executable}: {said}); install fleet where every tenant user can "
            "read it, e.g. a venv made with /usr/bin/python3 -m venv outside /root (docs/operations.md)")


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


@contextmanager
def staged_specs(root: Path, tenants: Sequence[str], host: str, account: users.Account) -> Iterator[Path]:
    """A 0700 folder owned by `account` with fleet.yaml, roles/, the tenants' folders and
    their last status on this host (so conditions keep their `since`). Symbolic links are
    copied as links, never followed: root must not copy a file the user could not read."""
    copy = Path(tempfile.mkdtemp(prefix=f"fleet-{account.name}-"))
    try:
        shutil.copy2(root / "fleet.yaml", copy / "fleet.yaml", follow_symlinks=False)
        if (root / "roles").is_dir():
            shutil.copytree(root / "roles", copy / "roles", symlinks=True)
        for tenant in tenants:
            shutil.copytree(root / "tenants" / tenant, copy / "tenants" / tenant, symlinks=True)
            status = status_path(root, host, tenant)
            if host and status.is_file() and not status.is_symlink():
                target = status_path(copy, host, tenant)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(status, target)
        for path in [copy, *copy.rglob("*")]:
            os.chown(path, account.uid, account.gid, follow_symlinks=False)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def open_beneath(top: Path, parts: Sequence[str]) -> int:
    """Open top/parts... for reading without following a link at any step: the folder is
    the user's, who could swap any component for a link to a file only root may read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(top, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def _read_statuses(copy: Path, host: str, tenants: Sequence[str], problems: list[str]) -> list[TenantStatus]:
    """Each tenant's status as the user's run wrote it, trusted only as data: no links
    followed, size capped, parsed, and for this tenant and host or dropped."""
    found = []
    for tenant in tenants:
        relative = status_path(Path(), host, tenant).parts
        try:
            fd = open_beneath(copy, relative)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"tenant {tenant}: its status could not be read back ({exc.strerror})")
            continue
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                problems.append(f"tenant {tenant}: its status is not a regular file; ignored")
                continue
            data = handle.read(MAX_STATUS_BYTES + 1)
        try:
            if len(data) > MAX_STATUS_BYTES:
                raise ValueError(f"larger than {MAX_STATUS_BYTES} bytes")
            status = parse_status(data.decode("utf-8"))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            problems.append(f"tenant {tenant}: its run wrote an unreadable status ({exc}); the last one is kept")
            continue
        if (status.tenant, status.host) != (tenant, host):
            problems.append(f"tenant {tenant}: its run wrote a status for {status.tenant}@{status.host}; ignored")
            continue
        found.append(status)
    return found


def adopt_statuses(repo: Path, runs: Sequence[UserRun]) -> list[str]:
    """Write the users' status documents into the repository, as root renders them."""
    written = []
    for status, revision in ((s, r.revision) for r in runs for s in r.statuses):
        path = status_path(repo, status.host, status.tenant)
        if write_if_changed(path, render_status(replace(status, revision=revision or status.revision))):
            written.append(f"{STATUS_DIR}/{status.host}/{status.tenant}.yaml")
    return written


def merge_documents(base: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """One --output json document from root's and a user's: lists joined, counts added."""
    for key, value in other.items():
        mine = base.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            mine.extend(value)
        elif isinstance(mine, dict) and isinstance(value, Mapping):
            merge_documents(mine, value)
        elif isinstance(mine, int) and isinstance(value, int) and not isinstance(mine, bool):
            base[key] = mine + value
        elif key not in base:
            base[key] = value
    return base
