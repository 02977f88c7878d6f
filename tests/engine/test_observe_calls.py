"""Observe costs a constant number of processes, whatever the number of agents.

Real tmux, real systemctl (whatever the host's user manager answers) and real heartbeat
files; the only stand-in is a spy on `subprocess.Popen` that counts and still runs
every process, so a hidden per-session call anywhere below observe() is caught.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.drivers.tmux import spawn_sessions
from reconciler.engine.observe import OTHER_USER_SYSTEMD, observe
from reconciler.model.launch import LaunchSpec
from reconciler.model.layout import StateLayout
from reconciler.model.observed import ObservedFleet, SocketKey
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import kill_server

TENANT = "jarvis"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class CountingPopen(subprocess.Popen[Any]):
    """A spy, not a mock: records each argv, then starts the real process."""

    calls: list[list[str]] = []  # noqa: RUF012 - shared by design; reset per use

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        CountingPopen.calls.append([str(a) for a in args])
        super().__init__(args, *rest, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The argv of every process started while the fixture is active."""
    CountingPopen.calls = []
    monkeypatch.setattr(subprocess, "Popen", CountingPopen)
    yield CountingPopen.calls


def agents(socket: SocketKey, start: int, stop: int) -> list[LaunchSpec]:
    return [
        LaunchSpec(TENANT, f"coder{i}", "w-jarvis", socket, ("sleep", "600"), (), None, "m", "h")
        for i in range(start, stop)
    ]


def write_beats(folder: Path, start: int, stop: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        beat = {
            "tenant": TENANT,
            "host": "w-jarvis",
            "agent": f"coder{i}",
            "seq": 1,
            "ts": "2026-11-25T11:59:50Z",
            "state": "idle",
            "model": "m",
        }
        (folder / f"coder{i}.json").write_text(json.dumps(beat), encoding="utf-8")


def observe_counted(
    calls: list[list[str]], socket: SocketKey, beats: Path
) -> tuple[ObservedFleet, list[list[str]]]:
    """One observe() of the socket (listed twice: dedup), both managers and the beats."""
    calls.clear()
    fleet = observe([socket, socket], [None, "someone-else", None], StateLayout(beats.parents[1]), [TENANT], NOW)
    return fleet, list(calls)


def write_units(folder: Path | None, prefix: str, start: int, stop: int) -> None:
    """Unit files for the agents, so `list-unit-files` has a fleet to list (or not)."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        unit = "[Service]\nType=oneshot\nExecStart=/bin/true\n"
        (folder / f"{prefix}-coder{i}.service").write_text(unit, encoding="utf-8")


@pytest.fixture(params=["host-systemd", "private-systemd-user"])
def unit_dir(request: pytest.FixtureRequest) -> Iterator[Path | None]:
    """None: whatever the host's user manager says (perhaps nothing); else a real one."""
    if request.param == "host-systemd":
        yield None
        return
    manager: SystemdUser = request.getfixturevalue("systemd_user")
    before = set(manager.unit_dir.glob("*")) if manager.unit_dir.exists() else set()
    yield manager.unit_dir
    for path in set(manager.unit_dir.glob("*")) - before:
        path.unlink()


@pytest.mark.tmux
def test_process_count_is_the_same_for_5_and_100_agents(
    tmux_socket: SocketKey, tmp_path: Path, unit_dir: Path | None, counted: list[list[str]]
) -> None:
    beats = tmp_path / TENANT / "heartbeats"
    prefix = f"fleet-{tmux_socket.name}"
    spawn_sessions(agents(tmux_socket, 0, 5))
    write_beats(beats, 0, 5)
    write_units(unit_dir, prefix, 0, 5)
    small, small_calls = observe_counted(counted, tmux_socket, beats)

    spawn_sessions(agents(tmux_socket, 5, 100))
    write_beats(beats, 5, 100)
    write_units(unit_dir, prefix, 5, 100)
    large, large_calls = observe_counted(counted, tmux_socket, beats)

    assert len(small.sockets[tmux_socket].sessions) == 5
    assert len(large.sockets[tmux_socket].sessions) == 100
    assert all(s.marks.owned for s in large.sockets[tmux_socket].sessions.values())
    assert len(small.heartbeats) == 5 and len(large.heartbeats) == 100
    assert small.systemd["someone-else"].reason == OTHER_USER_SYSTEMD
    if unit_dir is not None:
        mine = [u for u in large.systemd[None].units if u.startswith(prefix)]
        assert large.systemd[None].available and len(mine) == 100
    assert len(large_calls) == len(small_calls), (small_calls, large_calls)
    programs = [call[0] for call in large_calls]
    assert programs.count("tmux") == 1
    assert programs.count("systemctl") == (2 if large.systemd[None].available else len(programs) - 1)


def test_heartbeat_of_another_tenant_is_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "other" / "heartbeats"
    write_beats(folder, 0, 1)  # written for TENANT, found in tenant "other"'s folder

    fleet = observe([], [], StateLayout(tmp_path), ["other"], NOW)

    assert fleet.heartbeats == {}
    assert len(fleet.problems) == 1 and "tenant 'jarvis'" in fleet.problems[0]


def test_unreachable_socket_is_a_problem_not_a_failure() -> None:
    key = SocketKey("no-such-user-fleet-test", "x")

    fleet = observe([key], [], StateLayout(Path("/nonexistent")), [], NOW)

    assert not fleet.sockets[key].running
    assert fleet.problems and "no-such-user-fleet-test" in fleet.problems[0]
    assert fleet.taken_at == NOW


@pytest.mark.tmux
def test_several_servers_are_listed_once_each_in_the_callers_order(
    tmux_socket: SocketKey, counted: list[list[str]], tmp_path: Path
) -> None:
    other = SocketKey(None, f"{tmux_socket.name}-b")
    missing = SocketKey(None, f"{tmux_socket.name}-none")  # no server: a snapshot that says so
    try:
        spawn_sessions(agents(tmux_socket, 0, 3))
        spawn_sessions(agents(other, 3, 5))
        counted.clear()

        fleet = observe([other, missing, tmux_socket, other], [], StateLayout(tmp_path), [], NOW)

        assert list(fleet.sockets) == [other, missing, tmux_socket]
        assert sorted(fleet.sockets[tmux_socket].sessions) == ["coder0", "coder1", "coder2"]
        assert sorted(fleet.sockets[other].sessions) == ["coder3", "coder4"]
        assert not fleet.sockets[missing].running
        listed = sorted(call[call.index("-L") + 1] for call in counted if call[0] == "tmux")
        assert listed == sorted(str(k.name) for k in (other, missing, tmux_socket))
    finally:
        for key in (other, missing):
            kill_server(str(key.name))
