"""Linux users: who runs this process, who a tenant's `user:` is, and running as them.

A tenant with `user:` runs under that user's uid, on a tmux socket in that user's own
0700 folder, with its `systemd --user` and its state under its home. Root reconciles
such a tenant by running `fleet` as the user (`run_as`): root never starts a tmux server
or writes a state file for another user, so nothing the tenant owns is root's, and
nothing of one tenant is reachable from another's uid.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.drivers.audit import RUN_BY
from reconciler.spec import dsn

#: A PATH a tenant user can use: fleet's own scripts first (the agent launchers), then
#: the system's. The caller's PATH may name folders of root's that the user cannot read.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Where root tells a tenant user's run which register to connect to, as its own role:
#: the address only (socket or host, port, database), never a user name or password.
REGISTER_ADDRESS_ENV = dsn.REGISTER_ADDRESS_ENV
#: Variables root hands to a tenant's run; everything else of root's environment stays.
PASSED_THROUGH = ("MOSAIC_AGENT_COMMAND", "LANG", "LC_ALL", "TZ", RUN_BY, REGISTER_ADDRESS_ENV)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def current_user() -> str:
    """The name of this process's effective user (looked up once per uid: every tmux
    call asks, and the passwd lookup reads /etc/passwd)."""
    return _user_name(os.geteuid())


@functools.lru_cache(maxsize=8)
def _user_name(uid: int) -> str:
    return pwd.getpwuid(uid).pw_name


def is_me(user: str | None) -> bool:
    """True when `user` is this process's user (or no user: the reconciler's own)."""
    return user is None or user == current_user()


def lingering(user: str) -> bool:
    """Whether logind already starts `user`'s systemd --user at boot (linger is on)."""
    return Path("/var/lib/systemd/linger", user).exists()


def is_root() -> bool:
    return os.geteuid() == 0


def lookup(user: str) -> Account | None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def group_names(account: Account) -> set[str]:
    """The names of every group the account is in, its primary group included."""
    names = set()
    for gid in os.getgrouplist(account.name, account.gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.add(str(gid))
    return names


def runtime_dir(account: Account) -> str | None:
    """`/run/user/UID` when it exists and is the user's: where its systemd --user listens."""
    path = Path(f"/run/user/{account.uid}")
    try:
        info = path.stat()
    except OSError:
        return None
    return str(path) if info.st_uid == account.uid else None


def login_shell(account: Account) -> str:
    """The user's shell, unless it is one that refuses to run commands (nologin, false):
    tmux runs a one-word command through the default shell, which is $SHELL."""
    shell = account.shell
    usable = shell and os.access(shell, os.X_OK) and Path(shell).name not in ("nologin", "false")
    return shell if usable else "/bin/sh"


def environment_for(account: Account, passed: Mapping[str, str]) -> dict[str, str]:
    """A clean login-like environment for `account`: none of root's variables but the
    few in PASSED_THROUGH, so no secret of root's and no TMUX_TMPDIR or FLEET_STATE_DIR
    of root's reaches the tenant (its state is under its own home)."""
    env = {
        "HOME": account.home,
        "USER": account.name,
        "LOGNAME": account.name,
        "SHELL": login_shell(account),
        "PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}",
        "LANG": "C.UTF-8",
    }
    env.update({k: v for k, v in passed.items() if k in PASSED_THROUGH and v})
    if (run := runtime_dir(account)) is not None:
        env["XDG_RUNTIME_DIR"] = run
        if Path(run, "bus").exists():
            env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={run}/bus"
    return env


def run_as(account: Account, argv: Sequence[str], *, cwd: str, passed: Mapping[str, str],
           timeout: float, own_scope: bool = False, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `argv` under `account`'s uid, gid and groups, in a clean environment, and
    return what it said (each stream capped at MAX_OUTPUT; the rest is read and dropped).

    Python sets the groups, gid and uid in the child before exec (in that order), so
    the program never runs with root's privileges. umask 077: everything the run creates
    (state, the tmux socket folder, agents' files) is the tenant's alone, even in a home
    that useradd made world-readable. A new session: the child has no controlling
    terminal, so nothing running as the tenant can open root's /dev/tty (or push input
    into it). On timeout the child's process group is killed; raises TimeoutError.

    `own_scope` (see outlives_our_service): the run starts in a transient scope of our own
    systemd --user, so a tmux server it starts is not in our service's cgroup, which
    systemd empties when the service's run ends.

    `stdin` is what the run reads on its standard input, through a pipe (never argv,
    which every user can read in /proc)."""
    passed = {**passed, RUN_BY: f"{current_user()} pid {os.getpid()}"}
    env = environment_for(account, passed)
    # Python becomes the account in the child (groups, gid, uid, then exec) unless setpriv does, later.
    uid: int | None = account.uid
    gid: int | None = account.gid
    groups: list[int] | None = os.getgrouplist(account.name, account.gid)
    if own_scope:  # systemd-run (as us) reaches our manager with our runtime dir; the run drops it and us
        argv = ["systemd-run", "--user", "--scope", "--quiet", "--collect",
                f"--unit=fleet-{account.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}", "--",
                "env", "-u", "XDG_RUNTIME_DIR", *_setpriv(account), *argv]
        env = {**env, "XDG_RUNTIME_DIR": os.environ.get("XDG_RUNTIME_DIR", "")}
        uid = gid = groups = None
    given = _stdin_fd(stdin)
    try:
        process = subprocess.Popen(
            list(argv), user=uid, group=gid, extra_groups=groups, env=env, cwd=cwd, umask=0o077,
            start_new_session=True, stdin=given, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    finally:
        if given != subprocess.DEVNULL:
            os.close(given)
    try:
        return _communicate(process, time.monotonic() + timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise TimeoutError(f"did not finish within {timeout:.0f}s") from None


def _stdin_fd(text: str) -> int:
    """A read-only descriptor holding `text` for a run's stdin (DEVNULL when empty): a
    pipe, filled and closed for writing first, so the run cannot block root or write to
    anything of root's. `text` must fit the pipe (64 KiB; a message is at most 16 KB)."""
    if not text:
        return subprocess.DEVNULL
    data = text.encode()
    if len(data) > PIPE_BYTES:
        raise ValueError(f"{len(data)} bytes do not fit a pipe of {PIPE_BYTES}")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


#: What a pipe holds without a reader on Linux (its default size).
PIPE_BYTES = 65536
#: What root keeps of a tenant run's stdout or stderr: a plan of thousands of agents fits.
MAX_OUTPUT = 4 * 1024 * 1024


def _communicate(process: subprocess.Popen[bytes], deadline: float) -> subprocess.CompletedProcess[str]:
    """Read both streams (capped; the rest is drained and dropped) and wait, all before
    `deadline`: a process outside the child's group that still holds a pipe cannot keep
    root waiting past it. Raises TimeoutError."""
    assert process.stdout is not None and process.stderr is not None
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    kept: dict[int, bytearray] = {out_fd: bytearray(), err_fd: bytearray()}
    try:
        with selectors.DefaultSelector() as selector:
            for fd in kept:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                    else:
                        kept[key.fd] += chunk[: max(0, MAX_OUTPUT - len(kept[key.fd]))]
        try:
            code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise TimeoutError from None
    finally:
        process.stdout.close()
        process.stderr.close()
    out, err = (kept[fd].decode("utf-8", errors="replace") for fd in (out_fd, err_fd))
    return subprocess.CompletedProcess(process.args, code, out, err)


def interactive(account: Account, argv: Sequence[str], passed: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """`argv` as `account`, on a pseudo-terminal of its own that `script` relays to ours:
    the tenant's processes never hold root's terminal (which they could read, or type
    into with TIOCSTI, long after the verb ends). Returns script's argv and environment:
    the tenant's clean one (passed as the environment, not on a command line that every
    user sees in /proc), with SHELL=/bin/sh for script's `-c`, and TERM if it is a plain name."""
    env = environment_for(account, {**passed, RUN_BY: f"{current_user()} pid {os.getpid()}"})
    term = passed.get("TERM", "")
    if re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", term):
        env["TERM"] = term
    command = f"umask 077; exec {shlex.join([*_setpriv(account), *argv])}"
    return ["script", "--quiet", "--return", "--command", command, "/dev/null"], {**env, "SHELL": "/bin/sh"}


def run_interactive_as(account: Account, argv: Sequence[str], *, cwd: str, passed: Mapping[str, str]) -> int:
    """Run `argv` as `account` on this terminal through `interactive()`'s relay; its exit status."""
    script, env = interactive(account, argv, passed)
    return subprocess.run(script, env=env, cwd=cwd, check=False).returncode


def _setpriv(account: Account) -> list[str]:
    """Become the account (uid, gid and its groups) where another program starts the run
    as root (script, systemd-run); the environment is already the account's."""
    return ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--init-groups", "--"]


def outlives_our_service(account: Account) -> bool:
    """Whether a tenant user's run must start outside our cgroup: we run as a systemd
    service (the timer's oneshot, whose end stops every process left in its cgroup), we
    reach our own manager to ask for a scope, and the user has no manager of its own
    whose units would own its tmux server."""
    ours = os.environ.get("XDG_RUNTIME_DIR")
    return (bool(os.environ.get("INVOCATION_ID")) and ours is not None
            and Path(ours, "systemd", "private").exists() and runtime_dir(account) is None
            and shutil.which("systemd-run") is not None)
