"""The systemd driver: pure parsing by table, observation against a real `systemd --user`.

No mock systemctl: unreachable managers are made real (an empty XDG_RUNTIME_DIR, a PATH
without systemctl); the only stand-in is a Popen spy that counts and still runs.
"""

from __future__ import annotations

import doctest
import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from reconciler.drivers import systemd
from reconciler.drivers.systemd import (
    join_units,
    observe_units,
    parse_list_unit_files,
    parse_list_units,
)
from reconciler.model.observed import UnitState
from tests.plugins.systemd_user import SystemdUser, running_systemd_user

ONESHOT = """\
[Unit]
Description=fleet driver test unit
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
[Install]
WantedBy=default.target
"""


def test_doctests_pass() -> None:
    assert doctest.testmod(systemd, raise_on_error=False).failed == 0


class UnitsCase(NamedTuple):
    test_id: str
    json_text: str
    expected: dict[str, tuple[str, str, str]]


UNITS_CASES = [
    UnitsCase("empty-list", "[]", {}),
    UnitsCase("blank-output", "\n", {}),
    UnitsCase(
        "states-and-extra-keys",
        '[{"unit": "fleet-a.service", "load": "loaded", "active": "active", "sub": "exited",'
        ' "description": "a"},'
        ' {"unit": "fleet-nf.service", "load": "not-found", "active": "inactive", "sub": "dead",'
        ' "description": "fleet-nf.service"},'
        ' {"unit": "fleet-bad.service", "load": "loaded", "active": "failed", "sub": "failed",'
        ' "description": "x"}]',
        {
            "fleet-a.service": ("loaded", "active", "exited"),
            "fleet-nf.service": ("not-found", "inactive", "dead"),
            "fleet-bad.service": ("loaded", "failed", "failed"),
        },
    ),
]


@pytest.mark.parametrize("case", UNITS_CASES, ids=[c.test_id for c in UNITS_CASES])
def test_parse_list_units(case: UnitsCase) -> None:
    assert parse_list_units(case.json_text) == case.expected


class FilesCase(NamedTuple):
    test_id: str
    json_text: str
    expected: dict[str, str]


FILES_CASES = [
    FilesCase("empty-list", "[]", {}),
    FilesCase(
        "states",
        '[{"unit_file": "fleet-a.service", "state": "enabled", "preset": "enabled"},'
        ' {"unit_file": "fleet-agent@.service", "state": "indirect", "preset": "enabled"},'
        ' {"unit_file": "fleet-m.service", "state": "masked", "preset": null}]',
        {
            "fleet-a.service": "enabled",
            "fleet-agent@.service": "indirect",
            "fleet-m.service": "masked",
        },
    ),
    FilesCase(
        "path-is-reduced-to-name",
        '[{"unit_file": "/home/u/.config/systemd/user/fleet-a.service", "state": "linked"}]',
        {"fleet-a.service": "linked"},
    ),
]


@pytest.mark.parametrize("case", FILES_CASES, ids=[c.test_id for c in FILES_CASES])
def test_parse_list_unit_files(case: FilesCase) -> None:
    assert parse_list_unit_files(case.json_text) == case.expected


class BadOutputCase(NamedTuple):
    test_id: str
    json_text: str
    message: str


BAD_OUTPUT_CASES = [
    BadOutputCase("truncated", '[{"unit": "fleet-a.service", "lo', "invalid JSON"),
    BadOutputCase("object-not-list", '{"unit": "x"}', "not a list of objects"),
    BadOutputCase("list-of-strings", '["fleet-a.service"]', "not a list of objects"),
    BadOutputCase("missing-field", '[{"unit": "fleet-a.service", "unit_file": "x"}]', "no string"),
]


@pytest.mark.parametrize("case", BAD_OUTPUT_CASES, ids=[c.test_id for c in BAD_OUTPUT_CASES])
def test_parsers_reject_bad_output(case: BadOutputCase) -> None:
    with pytest.raises(ValueError, match=case.message):
        parse_list_units(case.json_text)
    with pytest.raises(ValueError, match=case.message):
        parse_list_unit_files(case.json_text)


class JoinCase(NamedTuple):
    test_id: str
    loaded: dict[str, tuple[str, str, str]]
    files: dict[str, str]
    expected: list[UnitState]


JOIN_CASES = [
    JoinCase("nothing", {}, {}, []),
    JoinCase(
        "loaded-with-file",
        {"fleet-a.service": ("loaded", "active", "exited")},
        {"fleet-a.service": "enabled"},
        [UnitState("fleet-a.service", "loaded", "active", "exited", "enabled")],
    ),
    JoinCase(
        "file-only-is-inactive",
        {},
        {"fleet-b.service": "disabled"},
        [UnitState("fleet-b.service", "loaded", "inactive", "dead", "disabled")],
    ),
    JoinCase(
        "file-only-masked",
        {},
        {"fleet-m.service": "masked"},
        [UnitState("fleet-m.service", "masked", "inactive", "dead", "masked")],
    ),
    JoinCase(
        "loaded-without-file",
        {"fleet-nf.service": ("not-found", "inactive", "dead")},
        {},
        [UnitState("fleet-nf.service", "not-found", "inactive", "dead", None)],
    ),
    JoinCase(
        "instance-takes-template-state-template-left-out",
        {"fleet-agent@x.y.service": ("loaded", "active", "exited")},
        {"fleet-agent@.service": "indirect"},
        [UnitState("fleet-agent@x.y.service", "loaded", "active", "exited", "indirect")],
    ),
]


@pytest.mark.parametrize("case", JOIN_CASES, ids=[c.test_id for c in JOIN_CASES])
def test_join_units(case: JoinCase) -> None:
    units = join_units(case.loaded, case.files)
    assert list(units.values()) == case.expected
    assert list(units) == sorted(units)


def write_unit(manager: SystemdUser, name: str, text: str = ONESHOT) -> None:
    (manager.unit_dir / name).write_text(text, encoding="utf-8")
    manager.systemctl("daemon-reload")


@pytest.mark.systemd
def test_started_and_enabled_unit_is_active_and_enabled(systemd_user: SystemdUser) -> None:
    write_unit(systemd_user, "fleet-test-x.service")
    systemd_user.systemctl("start", "fleet-test-x.service")
    systemd_user.systemctl("enable", "fleet-test-x.service")

    snapshot = observe_units("fleet-test-x*")

    assert snapshot.available, snapshot.reason
    unit = snapshot.units["fleet-test-x.service"]
    assert (unit.load_state, unit.active_state, unit.sub_state) == ("loaded", "active", "exited")
    assert unit.active and unit.enabled and unit.file_state == "enabled"


@pytest.mark.systemd
def test_stopped_and_never_started_units_are_inactive(systemd_user: SystemdUser) -> None:
    write_unit(systemd_user, "fleet-test-stopped.service")
    write_unit(systemd_user, "fleet-test-idle.service")
    systemd_user.systemctl("start", "fleet-test-stopped.service")
    systemd_user.systemctl("stop", "fleet-test-stopped.service")

    snapshot = observe_units("fleet-test-[si]*")

    assert snapshot.available, snapshot.reason
    assert set(snapshot.units) == {"fleet-test-stopped.service", "fleet-test-idle.service"}
    for unit in snapshot.units.values():
        assert (unit.active_state, unit.active, unit.enabled) == ("inactive", False, False)
        assert unit.file_state == "disabled"


@pytest.mark.systemd
def test_no_matching_unit_is_an_empty_available_snapshot(systemd_user: SystemdUser) -> None:
    snapshot = observe_units("fleet-test-nothing-matches-*")

    assert snapshot.available and snapshot.units == {}


class CountingPopen(subprocess.Popen[Any]):
    """A spy, not a mock: records each argv, then starts the real process."""

    calls: list[list[str]] = []  # noqa: RUF012 - shared by design; reset per use

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        CountingPopen.calls.append([str(a) for a in args])
        super().__init__(args, *rest, **kwargs)


@pytest.mark.systemd
def test_observe_is_exactly_two_systemctl_calls(
    systemd_user: SystemdUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        write_unit(systemd_user, f"fleet-test-count{i}.service")
    CountingPopen.calls = []
    monkeypatch.setattr(subprocess, "Popen", CountingPopen)

    snapshot = observe_units("fleet-test-count*")

    assert len(snapshot.units) == 5
    assert [call[:3] for call in CountingPopen.calls] == [
        ["systemctl", "--user", "list-units"],
        ["systemctl", "--user", "list-unit-files"],
    ]


@pytest.mark.systemd
def test_two_managers_keep_same_named_units_apart(systemd_user: SystemdUser) -> None:
    """Each manager runs in its own cgroup, so stopping x in one leaves x of the other."""
    sleeper = "[Service]\nExecStart=/bin/sleep 600\n"
    write_unit(systemd_user, "fleet-test-twin.service", sleeper)
    systemd_user.systemctl("start", "fleet-test-twin.service")
    with running_systemd_user() as other:
        write_unit(other, "fleet-test-twin.service", sleeper)
        other.systemctl("start", "fleet-test-twin.service")

        other.systemctl("stop", "fleet-test-twin.service")

        mine = observe_units("fleet-test-twin*").units["fleet-test-twin.service"]
        assert (mine.active_state, mine.sub_state) == ("active", "running")
        theirs = other.systemctl("is-active", "fleet-test-twin.service", check=False)
        assert theirs.stdout.strip() == "inactive"
    systemd_user.systemctl("stop", "fleet-test-twin.service")


class UnreachableCase(NamedTuple):
    """`{empty}` in env values and reason stands for an empty temporary folder."""

    test_id: str
    env: dict[str, str | None]
    reason: str


UNREACHABLE_CASES = [
    UnreachableCase(
        "empty-runtime-dir", {"XDG_RUNTIME_DIR": "{empty}"}, "XDG_RUNTIME_DIR={empty}"
    ),
    UnreachableCase("no-runtime-dir", {"XDG_RUNTIME_DIR": None}, "XDG_RUNTIME_DIR is not set"),
    UnreachableCase("no-systemctl", {"PATH": "{empty}"}, "systemctl not found on PATH"),
]


@pytest.mark.parametrize("case", UNREACHABLE_CASES, ids=[c.test_id for c in UNREACHABLE_CASES])
def test_unreachable_manager_is_unavailable_with_a_reason(
    case: UnreachableCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in case.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value.format(empty=tmp_path))

    snapshot = observe_units()

    assert not snapshot.available and snapshot.units == {}
    assert case.reason.format(empty=tmp_path) in snapshot.reason
    assert "\n" not in snapshot.reason


def test_unreachable_reason_quotes_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    reason = observe_units().reason

    assert "Failed to connect to bus" in reason, reason
    assert os.fspath(tmp_path) in reason
