"""The systemd `--user` driver: the observe step's view of the fleet's units.

`observe_units` asks the user manager exactly twice per tick (`list-units` and
`list-unit-files`, both JSON) and joins the answers into one frozen `SystemdSnapshot`;
it never raises, so a host without systemd simply runs tmux-only and says why. Parsing
is pure and apart from the one function that runs `systemctl`, which the apply step
reuses to write, start, stop and enable units.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from reconciler.model.observed import SystemdSnapshot, UnitState

#: Long enough for a loaded manager, short enough that a wedged one cannot stall a tick.
TIMEOUT_S = 10.0

#: `load` to report for a unit that exists only as a file (not in the manager's memory):
#: what `systemctl status` would show once it loads the file.
_FILE_ONLY_LOAD = {"masked": "masked", "masked-runtime": "masked", "bad": "error"}


def systemctl_user(
    *args: str, timeout: float = TIMEOUT_S, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `systemctl --user ARGS...` and return its result without checking it.

    Raises what `subprocess.run` raises (FileNotFoundError without systemctl,
    TimeoutExpired); callers decide what a failure means for them.
    """
    return subprocess.run(
        ["systemctl", "--user", *args],
        capture_output=True,
        text=True,
        errors="replace",  # a unit name in another encoding must not end the tick
        timeout=timeout,
        check=False,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
    )


def parse_list_units(json_text: str) -> dict[str, tuple[str, str, str]]:
    """Map each unit of `list-units --output=json` to its (load, active, sub) states.

    >>> parse_list_units('[{"unit": "fleet-a.service", "load": "loaded",'
    ...                  ' "active": "active", "sub": "exited", "description": "a"}]')
    {'fleet-a.service': ('loaded', 'active', 'exited')}
    >>> parse_list_units("[]")
    {}
    """
    rows = _json_rows(json_text, "list-units")
    return {
        _field(row, "unit"): (_field(row, "load"), _field(row, "active"), _field(row, "sub"))
        for row in rows
    }


def parse_list_unit_files(json_text: str) -> dict[str, str]:
    """Map each unit file of `list-unit-files --output=json` to its state.

    >>> parse_list_unit_files('[{"unit_file": "fleet-a.service", "state": "enabled",'
    ...                       ' "preset": "enabled"}]')
    {'fleet-a.service': 'enabled'}
    >>> parse_list_unit_files("[]")
    {}
    """
    rows = _json_rows(json_text, "list-unit-files")
    return {PurePosixPath(_field(row, "unit_file")).name: _field(row, "state") for row in rows}


def join_units(
    loaded: Mapping[str, tuple[str, str, str]], files: Mapping[str, str]
) -> dict[str, UnitState]:
    """Join both listings into one `UnitState` per unit, sorted by name.

    A unit only on disk (never started, so not in the manager's memory) is inactive.
    An instance `a@x.service` takes its template's file state (typically `indirect`):
    the two listings cannot tell whether that one instance is enabled. Templates
    themselves are left out; they never run.

    >>> units = join_units({"fleet-a.service": ("loaded", "active", "exited")},
    ...                    {"fleet-a.service": "enabled", "fleet-b.service": "masked"})
    >>> units["fleet-a.service"].enabled, units["fleet-b.service"].load_state
    (True, 'masked')
    """
    units: dict[str, UnitState] = {}
    for name in sorted(loaded.keys() | files.keys()):
        if _is_template(name):
            continue
        file_state = files.get(name, files.get(_template_of(name) or ""))
        if name in loaded:
            load, active, sub = loaded[name]
        else:
            load, active, sub = _FILE_ONLY_LOAD.get(file_state or "", "loaded"), "inactive", "dead"
        units[name] = UnitState(name, load, active, sub, file_state)
    return units


NO_RUNTIME_DIR = (
    "systemd --user manager unreachable (XDG_RUNTIME_DIR is not set); start one (systemd --user, "
    "or loginctl enable-linger) or run tmux-only"
)


def observe_units(pattern: str = "fleet*") -> SystemdSnapshot:
    """Snapshot the fleet's units with two `systemctl --user` calls; never raises.

    When the manager cannot be asked, the snapshot is `available=False` with a one-line
    reason that says what to check, so status can report "tmux-only" instead of failing.
    """
    if not (os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("DBUS_SESSION_BUS_ADDRESS")):
        # systemctl --user finds its manager only through these; without them it can only
        # fail ("No medium found"), so say so without paying for the process.
        return SystemdSnapshot(available=False, reason=NO_RUNTIME_DIR)
    listing = _ask("list-units", "--all", "--output=json", "--no-pager", pattern)
    if isinstance(listing, _Unavailable):
        return SystemdSnapshot(available=False, reason=listing.reason)
    file_listing = _ask("list-unit-files", "--output=json", "--no-pager", pattern)
    if isinstance(file_listing, _Unavailable):
        return SystemdSnapshot(available=False, reason=file_listing.reason)
    try:
        units = join_units(parse_list_units(listing), parse_list_unit_files(file_listing))
    except ValueError as exc:
        return SystemdSnapshot(available=False, reason=f"systemctl --user: {exc}")
    return SystemdSnapshot(available=True, units=units)


@dataclass(frozen=True, slots=True)
class _Unavailable:
    """Why a `systemctl` call gave no usable answer (a value, not an exception)."""

    reason: str


def _ask(verb: str, *args: str) -> str | _Unavailable:
    """Run one listing and return its stdout, or why the manager could not answer.

    `list-unit-files` exits 1 with `[]` when nothing matches, so the output, not the
    exit code, decides: any output is handed to the parser.
    """
    try:
        done = systemctl_user(verb, *args)
    except FileNotFoundError:
        return _Unavailable("systemctl not found on PATH; running tmux-only (install systemd)")
    except subprocess.TimeoutExpired:
        return _Unavailable(f"systemctl --user {verb} timed out after {TIMEOUT_S:g} s")
    except OSError as exc:
        return _Unavailable(f"systemctl --user {verb} could not run: {exc}")
    if done.stdout.strip():
        return done.stdout
    return _Unavailable(_unreachable_reason(verb, done))


def _unreachable_reason(verb: str, done: subprocess.CompletedProcess[str]) -> str:
    """One line naming systemctl's own complaint and the runtime dir it looked in."""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    said = lines[0] if lines else f"exit status {done.returncode}, no output"
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    where = f"XDG_RUNTIME_DIR={runtime_dir}" if runtime_dir else "XDG_RUNTIME_DIR is not set"
    return (
        f"systemd --user manager unreachable ({where}): systemctl --user {verb}: {said}; "
        "start one (systemd --user, or loginctl enable-linger) or run tmux-only"
    )


def _json_rows(json_text: str, verb: str) -> list[Mapping[str, object]]:
    """Decode a systemctl JSON listing into its rows; blank output means no rows."""
    if not json_text.strip():
        return []
    try:
        decoded = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{verb} printed invalid JSON ({exc.msg})") from exc
    except RecursionError:
        raise ValueError(f"{verb} printed JSON nested too deeply to read") from None
    if not isinstance(decoded, list) or not all(isinstance(row, dict) for row in decoded):
        raise ValueError(f"{verb} printed JSON that is not a list of objects")
    rows: list[Mapping[str, object]] = decoded
    return rows


def _field(row: Mapping[str, object], key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise ValueError(f"a row has no string {key!r}: {row!r}")
    return value


def _is_template(name: str) -> bool:
    """`a@.service` is a template; `a@x.service` is one of its instances."""
    return name.rpartition(".")[0].endswith("@")


def _template_of(name: str) -> str | None:
    """`a@x.service` -> `a@.service`; None for a unit that is not an instance."""
    prefix, at, rest = name.partition("@")
    if not at or "." not in rest:
        return None
    return f"{prefix}@.{rest.rpartition('.')[2]}"
