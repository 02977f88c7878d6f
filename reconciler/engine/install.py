"""`fleet install` and `fleet uninstall`: the loop on a timer of the user's systemd manager.

These sit beside the loop rather than in it. `install` puts one `fleet reconcile REPO`
run on a `systemd --user` timer of the current user, so the loop keeps running with
nobody at a terminal; it persists two unit files in the user manager's folder,
`fleet-reconcile.service` and `fleet-reconcile.timer`, both opening with the fleet's
header so that `uninstall` removes only files the fleet wrote (`fleet init`, which writes
a new fleet repository, is engine/fleet_init.py). Rendering is pure and doctested; the
functions below `# --- effectful` write files and run systemctl through drivers/units.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from reconciler.drivers import units
from reconciler.drivers.systemd import observe_units
from reconciler.drivers.users import current_user, lingering
from reconciler.engine.systemd_apply import linger_wanted
from reconciler.errors import UserError
from reconciler.model.observed import SystemdSnapshot
from reconciler.spec.models import parse_duration

SERVICE = "fleet-reconcile.service"
TIMER = "fleet-reconcile.timer"
UNITS = (SERVICE, TIMER)
DEFAULT_INTERVAL = "60s"
#: How long one run may take before systemd kills it and the next timer tick tries
#: again: above the slowest honest run (a fetch and up to five pushes at 60 s each,
#: systemctl jobs at 90 s), far below "wedged forever".
RUN_TIMEOUT = "10min"
#: The first run after boot waits at most this long (the network may still be coming up);
#: core agents do not wait for it, their own units start them at boot.
_MAX_FIRST_RUN_MS = 60_000
#: The random delay is a tenth of the interval, at most this: hosts sharing a remote do
#: not all pull and push at the same second.
_MAX_JITTER_MS = 300_000


# --- pure: what the units say -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoopSpec:
    """Everything the two unit files say: what runs, where, how often, with what environment.

    `environment` is sorted, so the same arguments always render the same bytes.
    """

    repo: Path
    host: str
    interval: timedelta
    program: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    no_git: bool = False

    def argv(self) -> list[str]:
        """The reconcile command the service runs (`--host=H`, so no host reads as an option).

        >>> LoopSpec(Path("/r"), "demo", timedelta(seconds=60), ("/v/bin/fleet",), no_git=True).argv()
        ['/v/bin/fleet', 'reconcile', '/r', '--host=demo', '--no-git']
        """
        return [*self.program, "reconcile", str(self.repo), f"--host={self.host}", *(["--no-git"] if self.no_git else [])]


@dataclass(frozen=True, slots=True)
class Timing:
    """The timer's settings as systemd time spans."""

    on_boot: str
    interval: str
    jitter: str
    accuracy: str


def timespan(ms: int) -> str:
    """A systemd time span in the largest unit that divides `ms` exactly.

    >>> timespan(3_600_000), timespan(120_000), timespan(90_000), timespan(200)
    ('1h', '2min', '90s', '200ms')
    """
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def timing(interval: timedelta) -> Timing:
    """When the timer fires: first `min(interval, 1 min)` after boot (at once when started
    later), then `interval` after each start, plus a random tenth of it (at most 5 min).
    AccuracySec is small (systemd's default of 1 min would swallow short intervals).

    >>> timing(timedelta(seconds=60))
    Timing(on_boot='1min', interval='1min', jitter='6s', accuracy='1s')
    >>> timing(timedelta(seconds=2))
    Timing(on_boot='2s', interval='2s', jitter='200ms', accuracy='200ms')
    >>> timing(timedelta(hours=2))
    Timing(on_boot='1min', interval='2h', jitter='5min', accuracy='1s')
    """
    ms = int(interval.total_seconds() * 1000)
    jitter = max(1, min(ms // 10, _MAX_JITTER_MS))
    return Timing(timespan(min(ms, _MAX_FIRST_RUN_MS)), timespan(ms), timespan(jitter), timespan(min(jitter, 1000)))


def parse_interval(text: str) -> timedelta:
    """`--interval`: a duration of whole seconds, at least 1 s (`90s`, `5m`, `1h`).

    >>> parse_interval("2s"), parse_interval("1m30s")
    (datetime.timedelta(seconds=2), datetime.timedelta(seconds=90))
    """
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--interval: {exc}") from None


def parse_env(values: Sequence[str]) -> dict[str, str]:
    """`--env KEY=VALUE` options; a malformed one is a UserError naming it.

    >>> parse_env(["MOSAIC_AGENT_COMMAND=sleep 600", "A=x=y"])
    {'MOSAIC_AGENT_COMMAND': 'sleep 600', 'A': 'x=y'}
    >>> parse_env(["1X=a"])
    Traceback (most recent call last):
    reconciler.errors.UserError: --env '1X=a': environment variable name '1X' is invalid
    """
    parsed: dict[str, str] = {}
    for value in values:
        key, eq, rest = value.partition("=")
        if not eq:
            raise UserError(f"--env {value!r}: write KEY=VALUE, e.g. --env MOSAIC_AGENT_COMMAND='sleep 600'")
        try:
            units.environment_line(key, rest)
        except ValueError as exc:
            raise UserError(f"--env {value!r}: {exc}") from None
        parsed[key] = rest
    return parsed


def loop_environment(
    environ: Mapping[str, str], program_dir: str, state_dir: Path | None, extra: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The service's environment: the user manager's own is not the installing shell's.

    PATH is fleet's own bin folder first (the stub agent lives there), then the PATH
    `fleet install` ran with, so the timer finds the same tmux, git and agent CLIs as
    a reconcile run by hand. TMUX_TMPDIR is carried over when set (the same sockets);
    FLEET_STATE_DIR comes from `--state-dir`. `--env` values win over all of these.

    >>> loop_environment({"PATH": "/usr/bin:/v/bin", "HOME": "/h"}, "/v/bin", Path("/s"), {"X": "1"})
    (('FLEET_STATE_DIR', '/s'), ('PATH', '/v/bin:/usr/bin'), ('X', '1'))
    """
    path = [program_dir, *(p for p in environ.get("PATH", "").split(":") if p)]
    env = {"PATH": ":".join(dict.fromkeys(path))}
    if environ.get("TMUX_TMPDIR"):
        env["TMUX_TMPDIR"] = environ["TMUX_TMPDIR"]
    if state_dir is not None:
        if "FLEET_STATE_DIR" in extra:
            raise UserError("give the state folder once: --state-dir or --env FLEET_STATE_DIR=..., not both")
        env["FLEET_STATE_DIR"] = str(state_dir)
    return tuple(sorted({**env, **extra}.items()))


def path_setting(path: Path) -> str:
    r"""A path for a setting systemd reads literally but for `%` specifiers (WorkingDirectory=).

    No quotes there: systemd would keep them as part of the name.

    >>> path_setting(Path("/srv/my fleet/100%"))
    '/srv/my fleet/100%%'
    >>> path_setting(Path("/a\tb"))
    Traceback (most recent call last):
    ValueError: '/a\tb': a unit file cannot carry this path (control characters, or blanks or a backslash at its end)
    """
    text = str(path)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text) or text != text.strip() or text.endswith("\\"):
        raise ValueError(f"{text!r}: a unit file cannot carry this path (control characters, or blanks or a backslash at its end)")
    return units.specifier_escape(text)


def _comment(text: str) -> str:
    """Text for a `#` line: the one thing it cannot hold is a line break."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"{text!r}: a unit file cannot carry a line break here")
    return text


def service_text(spec: LoopSpec) -> str:
    """`fleet-reconcile.service`: one oneshot run of the reconcile command in REPO.

    Raises ValueError for a value a unit file cannot carry (a newline in a path).
    """
    return units.render_template(
        "fleet-reconcile.service.j2",
        repo_comment=_comment(str(spec.repo)),
        host_comment=_comment(spec.host),
        repo=units.specifier_escape(_comment(str(spec.repo))),
        host=units.specifier_escape(_comment(spec.host)),
        interval=timing(spec.interval).interval,
        working_directory=path_setting(spec.repo),
        environment=[units.environment_line(key, value) for key, value in spec.environment],
        exec_start=units.exec_line(spec.argv()),
        timeout=RUN_TIMEOUT,
    )


def timer_text(spec: LoopSpec) -> str:
    """`fleet-reconcile.timer`: starts the service every interval, enabled for timers.target."""
    when = timing(spec.interval)
    return units.render_template(
        "fleet-reconcile.timer.j2",
        repo_comment=_comment(str(spec.repo)),
        repo=units.specifier_escape(_comment(str(spec.repo))),
        on_boot=when.on_boot,
        interval=when.interval,
        jitter=when.jitter,
        accuracy=when.accuracy,
    )


# --- effectful: the timer ------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """What a verb did, one line per step for people, and what went wrong without failing it."""

    done: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_user(requested: str | None) -> str:
    """The user whose manager gets the timer: the current one. A host with tenant users
    installs once, as root: root's loop reconciles each tenant as its `user:`."""
    me = current_user()
    if requested is not None and requested != me:
        raise UserError(
            f"--user {requested}: the timer goes into the current user's systemd --user; for a host with "
            f"tenant users, run `fleet install REPO` once as root (each tenant is reconciled as its user), "
            f"or as {requested}: `runuser -l {requested} -c 'fleet install REPO'` for its tenants alone"
        )
    return me


def fleet_program() -> tuple[str, ...]:
    """This installation's `fleet`, by absolute path: the `fleet` script beside the running
    Python (a venv's bin folder, symlinks kept), else that Python with `-m reconciler.cli`."""
    bin_dir = Path(sys.executable).absolute().parent
    script = bin_dir / "fleet"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (str(bin_dir / Path(sys.executable).name), "-m", "reconciler.cli")


def loop_spec(
    repo: Path, host: str, interval: str, state_dir: Path | None, no_git: bool, env: Sequence[str]
) -> LoopSpec:
    """Check the arguments of `fleet install` and turn them into the units' contents."""
    root = repo.resolve()
    if not (root / "fleet.yaml").is_file():
        raise UserError(f"{repo}: no fleet.yaml there; give the path of a fleet repository (or create one with `fleet init`)")
    program = fleet_program()
    state = state_dir.resolve() if state_dir is not None else None
    environment = loop_environment(os.environ, str(Path(program[0]).parent), state, parse_env(env))
    spec = LoopSpec(root, host, parse_interval(interval), program, environment, no_git)
    try:
        service_text(spec), timer_text(spec)
    except ValueError as exc:
        raise UserError(f"cannot write the units: {exc}") from None
    return spec


def unit_dir() -> Path:
    """The current user's unit folder, as the agents' units use it."""
    return units.user_unit_dir(os.environ, str(Path.home()))


def _manager(instead: str) -> SystemdSnapshot:
    """The user manager's view of our two units; a UserError ending with `instead` when
    no manager answers."""
    snapshot = observe_units("fleet-reconcile.*")
    if not snapshot.available:
        raise UserError(f"{snapshot.reason}. {instead}")
    return snapshot


def _refuse_foreign(directory: Path) -> None:
    for name in UNITS:
        text = units.read_unit(directory, name)
        if text is not None and not units.is_ours(text):
            raise UserError(
                f"{directory / name} exists and was not written by fleet (its first line is not "
                f"{units.HEADER!r}); move it away, then run fleet install again"
            )


def _run(report: Report, *args: str) -> None:
    """One systemctl call, recorded; a failure is a UserError (every step is safe to
    repeat, so running the same command again once it is fixed picks up from there)."""
    ran = units.systemctl(*args)
    if not ran.ok:
        raise UserError(f"systemctl --user {' '.join(args)} failed: {ran.said}; run the command again once that is fixed")
    report.done.append(f"ran systemctl --user {' '.join(args)}")


def install_loop(spec: LoopSpec, directory: Path) -> Report:
    """Write both units (only when their bytes change), reload only then, and leave the
    timer enabled and active: running it twice with the same spec changes nothing."""
    snapshot = _manager(f"No timer was installed; without systemd, run the loop as `fleet reconcile {shlex.quote(str(spec.repo))} --watch`")
    _refuse_foreign(directory)
    report = Report()
    texts = {SERVICE: service_text(spec), TIMER: timer_text(spec)}
    wrote = [name for name, text in texts.items() if units.write_unit(directory, name, text)]
    report.done += [f"wrote {directory / name}" for name in wrote]
    if wrote or units.need_reload(list(UNITS)):
        _run(report, "daemon-reload")
    timer = snapshot.units.get(TIMER)
    if TIMER in wrote and timer is not None and timer.active:
        if not timer.enabled:
            _run(report, "enable", TIMER)
        _run(report, "restart", TIMER)
    elif timer is None or not (timer.enabled and timer.active):
        _run(report, "enable", "--now", TIMER)
    if not report.done:
        report.done.append(f"unchanged: {SERVICE} and {TIMER} are current, the timer is enabled and active")
    _linger(report)
    return report


def _linger(report: Report) -> None:
    """Try `loginctl enable-linger` where it helps (logind's manager, not lingering yet),
    so the timer runs with nobody logged in; a failure is a warning."""
    user, runtime_dir = current_user(), os.environ.get("XDG_RUNTIME_DIR")
    if lingering(user):
        return
    if not linger_wanted(runtime_dir, os.geteuid(), False):
        report.done.append(f"linger: not tried; this manager (XDG_RUNTIME_DIR={runtime_dir}) is not logind's")
        return
    note = units.enable_linger(user)
    if note:
        report.warnings.append(f"{note}; the timer runs only while {user} is logged in (as root: loginctl enable-linger {user})")
    else:
        report.done.append(f"linger: enabled for {user}; the timer runs at boot without a login")


def uninstall_loop(directory: Path) -> Report:
    """Stop and disable the timer, delete the fleet's two files, reload. Files without
    the fleet's header are left alone (a warning); nothing installed is not an error."""
    report = Report()
    present = {name: units.read_unit(directory, name) for name in UNITS}
    ours = [name for name, text in present.items() if units.is_ours(text)]
    report.warnings += [
        f"{directory / name} was not written by fleet; left alone"
        for name, text in present.items() if text is not None and name not in ours
    ]
    if not ours:
        report.done.append(f"nothing to remove: no {SERVICE} or {TIMER} written by fleet in {directory}")
        return report
    _manager("Nothing was removed; run fleet uninstall again where the manager answers")
    ran = units.systemctl("disable", "--now", "--no-reload", *ours)
    if not ran.ok:
        raise UserError(f"could not stop and disable {', '.join(ours)} ({ran.said}); nothing was removed")
    report.done.append(f"stopped and disabled {', '.join(ours)}")
    if TIMER in ours:  # Persistent= keeps a stamp of the last run; leave no trace behind
        units.systemctl("clean", "--what=state", TIMER)
    for name in ours:
        if units.remove_unit(directory, name):
            report.done.append(f"removed {directory / name}")
    _run(report, "daemon-reload")
    units.systemctl("reset-failed", SERVICE)  # forget a failed last run; absent is fine
    return report
