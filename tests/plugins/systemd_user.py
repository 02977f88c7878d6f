"""pytest plugin: a real `systemd --user` manager per test session (one per xdist worker).

ARCHITECTURE.md's recipe, plus what these machines taught us. `systemctl --user` talks
to `$XDG_RUNTIME_DIR/systemd/private` directly, so no D-Bus session bus is needed. A
user manager started in the root cgroup moves every process of that cgroup (PID 1
included) into its own `init.scope`, and two managers there share `app.slice`, so
stopping `x.service` in one kills `x.service` of the other. Each manager therefore
starts in a private cgroup (`fleet-test-<id>` below our own, in each hierarchy systemd
tracks), which it takes as its root, and which is removed at the end.

The manager lives for the whole session (one per xdist worker), but only tests that ask
for `systemd_user` can reach it: that fixture sets the environment for one test and, at
its end, stops, disables and deletes every unit file the test added. Every other test
sees no user manager at all (`no_host_systemd`, autouse), so which path the reconciler
takes, tmux-only or systemd, never depends on test order or on the host's own manager.

Outside pytest (benchmarks, the demo): `with running_systemd_user() as manager: ...`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.drivers.users import Account

SYSTEMD = Path("/lib/systemd/systemd")
#: systemd --user refuses to start ("not booted with systemd") unless this exists.
BOOTED_MARKER = Path("/run/systemd/system")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
#: sun_path holds 108 bytes; the manager's socket is `$XDG_RUNTIME_DIR/systemd/private`.
_MAX_SOCKET_PATH = 107
#: Inherited from a parent manager, these would confuse ours.
_PARENT_MANAGER_VARS = (
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "MANAGERPID",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "SYSTEMD_EXEC_PID",
)


class SystemdUserUnavailable(RuntimeError):
    """A manager could not be started here; the message is the precise reason."""


@dataclass(frozen=True, slots=True)
class SystemdUser:
    """A running user manager: where it listens, where its unit files go."""

    pid: int
    runtime_dir: Path
    config_home: Path
    log: Path
    cgroups: tuple[Path, ...]
    account: Account | None = None  # whose manager; None: ours (root's)

    @property
    def unit_dir(self) -> Path:
        """`$XDG_CONFIG_HOME/systemd/user`: unit files written here are the manager's."""
        return self.config_home / "systemd" / "user"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs to reach this manager (set in os.environ by the fixture)."""
        return {"XDG_RUNTIME_DIR": str(self.runtime_dir), "XDG_CONFIG_HOME": str(self.config_home)}

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`systemctl --user ARGS` against this manager, whatever os.environ says."""
        uid, gid = (None, None) if self.account is None else (self.account.uid, self.account.gid)
        return subprocess.run(  # a manager answers its own uid only: root is refused too
            ["systemctl", "--user", *args],
            env={**os.environ, **self.env},
            user=uid,
            group=gid,
            extra_groups=None if self.account is None else [],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
            stdin=subprocess.DEVNULL,
        )


@contextmanager
def running_systemd_user(base_dir: Path | None = None, account: Account | None = None) -> Iterator[SystemdUser]:
    """Start a private `systemd --user`, wait until it runs, stop and clean it up after.

    Raises SystemdUserUnavailable (before yielding) with the reason it cannot start.
    `base_dir` (default: a new temporary folder, removed afterwards) holds the runtime
    dir, XDG_CONFIG_HOME and the manager's log. With `account`, the manager is that
    user's, as logind would start it: under its uid, listening in /run/user/UID, its
    units in ~/.config/systemd/user, its private cgroups delegated to it.
    """
    _preflight()
    with ExitStack() as cleanup:
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="fleet-sd-"))
            cleanup.callback(shutil.rmtree, base_dir, ignore_errors=True)
        name = f"fleet-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        cleanup.callback(_remove_cgroups, name)
        cgroups = _create_cgroups(name)
        if account is not None:
            runtime = Path(f"/run/user/{account.uid}")
            cleanup.callback(shutil.rmtree, runtime, ignore_errors=True)
            manager, process = _start_as(account, base_dir, runtime, cgroups)
        else:
            manager, process = _start(base_dir, cgroups)
        cleanup.callback(_stop, process)
        _wait_running(manager, process)
        yield manager


def _start_as(account: Account, base: Path, runtime: Path,
              cgroups: tuple[Path, ...]) -> tuple[SystemdUser, subprocess.Popen[bytes]]:
    """The user's manager: root delegates the cgroups and moves the waiting process into
    them (a user may not move itself out of root's cgroup), then lets it exec."""
    runtime.mkdir(parents=True, exist_ok=True)
    os.chown(runtime, account.uid, account.gid)
    runtime.chmod(0o700)
    config_home = Path(account.home) / ".config"
    for group in cgroups:
        for path in (group, *(group / f for f in ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads"))):
            if path.exists():
                os.chown(path, account.uid, account.gid)
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_MANAGER_VARS}
    env |= {"XDG_RUNTIME_DIR": str(runtime), "HOME": account.home, "USER": account.name, "LOGNAME": account.name}
    env.pop("XDG_CONFIG_HOME", None)
    log = base / "manager.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            ["/bin/sh", "-c", 'read go; exec "$0" --user', str(SYSTEMD)],
            env=env, user=account.uid, group=account.gid, extra_groups=[], cwd=account.home,
            stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    assert process.stdin is not None
    for group in cgroups:
        (group / "cgroup.procs").write_text(str(process.pid))
    process.stdin.write(b"go\n")
    process.stdin.close()
    return SystemdUser(process.pid, runtime, config_home, log, cgroups, account), process


@contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` in os.environ for the block, then restore what was there before."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def systemd_user_manager() -> Iterator[SystemdUser]:
    """A real user manager for the session; skips (with the reason) where none can run.

    Tests take `systemd_user` instead: this one does not point os.environ at it.
    """
    with ExitStack() as stack:
        try:
            manager = stack.enter_context(running_systemd_user())
        except SystemdUserUnavailable as exc:
            pytest.skip(f"systemd --user cannot run here: {exc}")
        yield manager


@pytest.fixture(scope="session")
def _no_manager_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty XDG_RUNTIME_DIR: `systemctl --user` finds no manager there."""
    return tmp_path_factory.mktemp("no-systemd-user")


@pytest.fixture(autouse=True)
def no_host_systemd(_no_manager_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without a reachable user manager (the host's included), so the
    reconciler runs tmux-only unless the test asks for `systemd_user`."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(_no_manager_dir))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)


@pytest.fixture
def systemd_user(
    systemd_user_manager: SystemdUser, no_host_systemd: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SystemdUser]:
    """The session's manager, reachable (os.environ) for this one test only.

    Units whose files the test added are stopped, disabled and deleted afterwards, so the
    next test on this worker finds the manager as this one did.
    """
    manager = systemd_user_manager
    for key, value in manager.env.items():
        monkeypatch.setenv(key, value)
    before = _unit_files(manager)
    try:
        yield manager
    finally:
        _remove_units(manager, sorted(_unit_files(manager) - before))


def _unit_files(manager: SystemdUser) -> set[str]:
    return {path.name for path in manager.unit_dir.glob("*") if path.is_file() and not path.is_symlink()}


def _remove_units(manager: SystemdUser, names: list[str]) -> None:
    """Stop, disable and delete `names`, then reload; never raises (warns instead)."""
    try:
        if names:
            manager.systemctl("disable", "--now", "--no-reload", *names, check=False)
            for name in names:
                (manager.unit_dir / name).unlink(missing_ok=True)
        manager.systemctl("daemon-reload", check=False)
        manager.systemctl("reset-failed", check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.warn(f"systemd_user cleanup: {exc}", stacklevel=1)


def _preflight() -> None:
    """Fail early, with the fix, on what the recipe needs from the machine."""
    if not os.access(SYSTEMD, os.X_OK):
        raise SystemdUserUnavailable(f"{SYSTEMD} is missing (apt-get install systemd)")
    if shutil.which("systemctl") is None:
        raise SystemdUserUnavailable("systemctl is not on PATH (apt-get install systemd)")
    try:
        BOOTED_MARKER.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SystemdUserUnavailable(
            f"cannot create {BOOTED_MARKER} ({exc.strerror}); without it systemd --user "
            "refuses to start (run as root, or where systemd is PID 1)"
        ) from exc


def _start(base: Path, cgroups: tuple[Path, ...]) -> tuple[SystemdUser, subprocess.Popen[bytes]]:
    """Launch the manager inside its private cgroups (a shell moves itself, then execs)."""
    runtime_dir, config_home = base / "runtime", base / "config"
    runtime_dir.mkdir(mode=0o700)
    runtime_dir.chmod(0o700)  # mkdir's mode is filtered by the umask
    (config_home / "systemd" / "user").mkdir(parents=True)
    if len(str(runtime_dir / "systemd" / "private")) > _MAX_SOCKET_PATH:
        raise SystemdUserUnavailable(f"{runtime_dir} is too long for a unix socket path")
    env = {k: v for k, v in os.environ.items() if k not in _PARENT_MANAGER_VARS}
    env |= {"XDG_RUNTIME_DIR": str(runtime_dir), "XDG_CONFIG_HOME": str(config_home)}
    log = base / "manager.log"
    script = 'for procs do echo $$ > "$procs" || exit 97; done; exec "$0" --user'
    argv = ["/bin/sh", "-c", script, str(SYSTEMD), *(str(c / "cgroup.procs") for c in cgroups)]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches pytest, whose teardown stops us
        )
    manager = SystemdUser(process.pid, runtime_dir, config_home, log, cgroups)
    return manager, process


def _wait_running(manager: SystemdUser, process: subprocess.Popen[bytes]) -> None:
    """Poll `is-system-running` until `running` or `degraded`; explain any failure."""
    deadline = time.monotonic() + START_TIMEOUT_S
    state = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemdUserUnavailable(
                f"systemd --user exited with status {process.returncode}: {_log_tail(manager)}"
            )
        done = manager.systemctl("is-system-running", check=False)
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        state = said[-1] if said else "no answer"
        if state in {"running", "degraded"}:
            return
        time.sleep(0.05)
    raise SystemdUserUnavailable(
        f"systemd --user did not reach running within {START_TIMEOUT_S:g} s "
        f"(last: {state}): {_log_tail(manager)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM makes a user manager stop its units and exit; SIGKILL if it hangs.

    Never raises: a teardown must not hide the test's own failure.
    """
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        warnings.warn(f"systemd --user {process.pid} ignored SIGTERM; killing it", stacklevel=1)
        process.kill()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            warnings.warn(f"systemd --user {process.pid} survived SIGKILL", stacklevel=1)


def _cgroup_dirs() -> tuple[list[Path], list[Path]]:
    """Our own cgroup's folder in each mounted hierarchy: (tracked by systemd, all).

    systemd tracks processes in the cgroup2 hierarchy and the v1 `name=systemd` one;
    it may also create folders in v1 controller hierarchies, so cleanup visits all.
    """
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    tracked: list[Path] = []
    every: list[Path] = []  # a hierarchy mounted twice is listed twice: harmless
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _, super_options = tail.split(" ", 2)
        if fstype not in {"cgroup", "cgroup2"}:
            continue
        root, mount_point = fields.split(" ")[3:5]
        options = super_options.split(",")
        key = "" if fstype == "cgroup2" else next(
            (o for o in options if o in own or o.startswith("name=")), None
        )
        if key is None or key not in own:
            continue
        folder = Path(mount_point) / own[key].removeprefix(root).lstrip("/")
        every.append(folder)
        if key in {"", "name=systemd"}:
            tracked.append(folder)
    return tracked, every


def _create_cgroups(name: str) -> tuple[Path, ...]:
    """A private `name` cgroup under ours in every hierarchy systemd tracks."""
    tracked, _ = _cgroup_dirs()
    if not tracked:
        raise SystemdUserUnavailable("no cgroup2 or name=systemd hierarchy is mounted")
    created = []
    for parent in tracked:
        try:
            (parent / name).mkdir()
        except OSError as exc:
            raise SystemdUserUnavailable(
                f"cannot create a private cgroup in {parent} ({exc.strerror}); a manager in a "
                "shared cgroup would adopt its processes and clash with other managers"
            ) from exc
        created.append(parent / name)
    return tuple(created)


def _remove_cgroups(name: str) -> None:
    """Kill whatever is left in our private cgroups and remove them; never raises."""
    try:
        _, every = _cgroup_dirs()
    except OSError as exc:
        warnings.warn(f"systemd_user cleanup: cannot read cgroups: {exc}", stacklevel=1)
        return
    for root in (parent / name for parent in every):
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while root.exists():
            _kill_members(root)
            if _rmdir_tree(root) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if root.exists():
            warnings.warn(f"systemd_user cleanup: {root} is still busy", stacklevel=1)


def _kill_members(root: Path) -> None:
    """SIGKILL every process still in `root` or below (ours only: it is our cgroup)."""
    try:
        pids = [pid for procs in root.rglob("cgroup.procs") for pid in _read_pids(procs)]
    except OSError:  # a folder vanished while we walked: the next round sees the rest
        return
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _read_pids(procs: Path) -> list[str]:
    try:
        return procs.read_text().split()
    except OSError:
        return []


def _rmdir_tree(root: Path) -> bool:
    """rmdir a cgroup folder bottom-up (its files are virtual); True when it is gone."""
    for folder, _, _ in os.walk(root, topdown=False):
        try:
            Path(folder).rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


def _log_tail(manager: SystemdUser) -> str:
    """The manager's last log lines, joined on one line for a skip reason."""
    try:
        lines = manager.log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    return " | ".join(line.strip() for line in lines[-3:] if line.strip()) or "empty log"
