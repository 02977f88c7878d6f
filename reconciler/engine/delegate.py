"""Tenants that run as other Linux users: root reconciles each as its user; others skip.

A tenant with `user:` is reconciled by `fleet` running under that user's uid, with a
clean environment, on a private copy of just its own specs (fleet.yaml, roles/, its
tenant folder and its last status). Root keeps Git and the status files: it pulls before
and commits after, and takes back only the tenant's status document, parsed, checked to
be that tenant's and this host's, and rendered again. So a tenant user can neither read
another tenant's specs nor write anything of root's but its own status.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from reconciler.drivers import units, users
from reconciler.engine.untrusted import json_or_none, own_items, printable, read_statuses
from reconciler.engine.writeback import status_path
from reconciler.errors import UserError
from reconciler.model.user_run import UserRun
from reconciler.spec.repo import FleetRepo

#: A tenant's whole reconcile, lock wait and spawns included.
RUN_TIMEOUT_S = 600.0


def run_for_user(repo: FleetRepo, user: str, tenants: Sequence[str], host: str, verb: Sequence[str],
                 *, json_output: bool, revision: str = "") -> UserRun:
    """`fleet VERB COPY --host HOST --tenant T...` as `user`, on a private copy of its specs.

    Never raises: whatever goes wrong with one user's run is that run's problem, and root's
    own tenants and the other users' go on."""
    try:
        return _run_for_user(repo, user, tenants, host, verb, json_output=json_output, revision=revision)
    except Exception as exc:  # a tenant must not stop root's run; the message says what happened
        return UserRun(user, tuple(tenants), 1, "", "", problems=(f"user {user}: {type(exc).__name__}: {exc}",))


def _run_for_user(repo: FleetRepo, user: str, tenants: Sequence[str], host: str, verb: Sequence[str],
                  *, json_output: bool, revision: str) -> UserRun:
    account, refused = tenant_account(user, tenants)
    if account is None:
        return UserRun(user, tuple(tenants), 1, "", "", problems=(refused,))
    applying = verb[0] == "reconcile" and "--dry-run" not in verb
    linger = ensure_linger(account.name) if applying else ""
    with staged_specs(repo.root, tenants, host, account) as copy:
        argv = [*fleet_argv(), *verb, str(copy), "--host", host,
                *(arg for t in tenants for arg in ("--tenant", t)), "--output", "json" if json_output else "text"]
        passed = {k: v for k, v in os.environ.items() if k != users.REGISTER_ADDRESS_ENV}
        if revision and (applying or verb[0] == "down"):  # the runs that write status and the register
            argv += ["--spec-revision", revision]
            passed.update(register_address(repo))
        try:
            done = users.run_as(account, argv, cwd=str(copy), passed=passed, timeout=RUN_TIMEOUT_S,
                                own_scope=applying and users.outlives_our_service(account))
        except OSError as exc:  # the interpreter cannot even be started as the user
            return UserRun(user, tuple(tenants), 1, "", "", problems=(_unreachable(user, str(exc)),))
        except TimeoutError as exc:
            return UserRun(user, tuple(tenants), 1, "", "", problems=(f"user {user}: fleet {exc}; killed, its "
                                                                       "tenants are retried next run",))
        problems = [_unreachable(user, done.stderr.strip().splitlines()[-1])] if _not_started(done.returncode, done.stderr) else []
        notes = [f"warning: {linger}; its core agents start at boot only once it logs in"] if linger else []
        statuses = read_statuses(copy, host, tenants, problems, account.uid) if applying else []
        # Messages name the repository, not the private copy that is gone once we return.
        stdout, stderr = (text.replace(str(copy), str(repo.root)) for text in (done.stdout, done.stderr))
    document = own_items(json_or_none(stdout), tenants) if json_output else None
    return UserRun(user, tuple(tenants), done.returncode, stdout, "\n".join([*notes, stderr]).strip(), document,
                   tuple(statuses), tuple(problems), revision)


def register_address(repo: FleetRepo) -> dict[str, str]:
    """With fleet.yaml `register:`, where the register is (drivers/register.py address_of:
    no user, no password), for the tenant user's run to connect as its own role; handed
    over in its environment, never argv (which every user can read). Nothing when root's
    own connection string cannot be read: the user's run then says so, and spools."""
    config = repo.fleet.register if repo.fleet is not None else None
    if config is None:
        return {}
    from reconciler.drivers import register as pg  # noqa: PLC0415  (only with a register)

    try:
        return {users.REGISTER_ADDRESS_ENV: pg.address_of(pg.read_url(config.url_from))}
    except pg.RegisterError:
        return {}


def fleet_argv() -> list[str]:
    """This fleet, isolated (-I): neither the working folder (the tenant's copy) nor the
    user's site-packages nor PYTHON* variables can put the tenant's code on its path."""
    return [sys.executable, "-I", "-m", "reconciler"]


#: The lowest uid of a person's account (login.defs UID_MIN): lower ones are the system's.
UID_MIN = 1000
#: Groups whose members are root in all but name: a tenant's spec must not pick such a user.
PRIVILEGED_GROUPS = frozenset({"root", "sudo", "wheel", "admin", "docker", "lxd", "disk", "shadow"})


def tenant_account(user: str, tenants: Sequence[str]) -> tuple[users.Account | None, str]:
    """The tenant's account, or None and why root will not run fleet as it."""
    account = users.lookup(user)
    names = ", ".join(tenants)
    if account is None:
        return None, (f"tenant {names}: user {user!r} does not exist on this host; "
                      f"create it (useradd --create-home {user}) or remove `user:` from the roster")
    if account.uid < UID_MIN:
        return None, (f"tenant {names}: user {user!r} is a system account (uid {account.uid}); a tenant runs "
                      f"as a person's account (uid {UID_MIN} or more): create one with useradd --create-home")
    privileged = sorted(PRIVILEGED_GROUPS & users.group_names(account))
    if privileged:
        return None, (f"tenant {names}: user {user!r} is in group {privileged[0]}, which can act as root; a tenant "
                      f"runs as an account without such groups (gpasswd -d {user} {privileged[0]}, or another user)")
    home = Path(account.home)
    if not home.is_dir() or home.stat().st_uid != account.uid:
        return None, (f"tenant {names}: user {user} has no home folder of its own ({account.home}), where its "
                      f"state lives; create it (mkhomedir_helper {user})")
    return account, ""


#: `loginctl` talks to logind over the system bus: without its socket, linger cannot be asked for.
SYSTEM_BUS = Path("/run/dbus/system_bus_socket")


def ensure_linger(user: str) -> str:
    """Root turns linger on for a tenant user (once), so logind starts its systemd --user at
    boot and the user's core agents come back without a login; "" or why not."""
    if not SYSTEM_BUS.exists() or users.lingering(user):
        return ""
    return units.enable_linger(user)


def hand_over(root: Path, user: str, tenant: str, args: Callable[[Path], list[str]], *, interactive: bool,
              stdin: str = "") -> int:
    """`fleet ARGS` as `user` on a copy of `tenant`'s specs: root's `fleet agent
    watch|attach|send` for a tenant of another user. Its exit code.

    Interactive verbs get a pseudo-terminal of their own (users.run_interactive_as), never
    root's; `send` runs like a reconcile, reads `stdin` (its message, kept out of argv)
    and its output is relayed, printable."""
    account, refused = tenant_account(user, [tenant])
    if account is None:
        raise UserError(refused)
    with staged_specs(root, [tenant], "", account) as copy:
        argv = [*fleet_argv(), *args(copy)]
        try:
            if interactive:
                return users.run_interactive_as(account, argv, cwd=str(copy), passed=os.environ)
            done = users.run_as(account, argv, cwd=str(copy), passed=os.environ, timeout=RUN_TIMEOUT_S, stdin=stdin)
        except (OSError, TimeoutError) as exc:
            raise UserError(_unreachable(user, str(exc))) from None
    sys.stdout.write(printable(done.stdout))
    sys.stderr.write(printable(done.stderr))
    return done.returncode


def _not_started(code: int, stderr: str) -> bool:
    """Python failed before fleet ran: the install is not readable by the user."""
    said = stderr.strip()
    if code == 0 or not said:
        return False
    crashed = "Traceback (most recent call last)" in said and said.splitlines()[-1].startswith("PermissionError")
    return "No module named 'reconciler'" in said or "can't open file" in said or crashed


def _unreachable(user: str, said: str) -> str:
    return (f"user {user} cannot run fleet ({sys.executable}: {said}); install fleet where every tenant user can "
            "read it, e.g. a venv made with /usr/bin/python3 -m venv outside /root (docs/operations.md)")


@contextmanager
def staged_specs(root: Path, tenants: Sequence[str], host: str, account: users.Account) -> Iterator[Path]:
    """A 0700 folder owned by `account` with fleet.yaml, roles/, the tenants' folders and
    their last status on this host (so conditions keep their `since`).

    Symbolic links are never followed, at any level (a link as `roles` or as a tenant's
    folder is refused): root must not copy a file the user could not read. The folder
    itself is handed to the user last, so the user cannot enter it while root still
    changes owners inside (and swap a folder for a link to root's files)."""
    for rel in ("fleet.yaml", "roles", *(f"tenants/{t}" for t in tenants)):
        if _linked(root, rel):
            raise UserError(f"{root / rel} is a symbolic link; a fleet repository's specs must be plain files "
                            "and folders when tenants run as their own users")
    copy = Path(tempfile.mkdtemp(prefix=f"fleet-{account.name}-"))
    try:
        shutil.copy2(root / "fleet.yaml", copy / "fleet.yaml", follow_symlinks=False)
        if (root / "roles").is_dir():
            shutil.copytree(root / "roles", copy / "roles", symlinks=True)
        for tenant in tenants:
            shutil.copytree(root / "tenants" / tenant, copy / "tenants" / tenant, symlinks=True)
            status = status_path(root, host, tenant)
            if host and not _linked(root, str(status.relative_to(root))) and status.is_file():
                target = status_path(copy, host, tenant)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(status, target)
        for path in [*copy.rglob("*"), copy]:  # the folder itself last: see above
            os.chown(path, account.uid, account.gid, follow_symlinks=False)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _linked(root: Path, rel: str) -> bool:
    """Whether any component of root/rel is a symbolic link."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False
