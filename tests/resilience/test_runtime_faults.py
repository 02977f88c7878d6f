"""The world failing under the reconciler: tmux dying mid-apply, systemd gone or stopping,
a heartbeat from the future. Each is handled, reported in words, and the next run converges.

All real: a tmux server on a private socket killed from another thread while one apply
spawns 120 agents; a private `systemd --user` (tests/plugins/systemd_user.py) stopped
between observe and apply, and again under agents that run in its units; heartbeat files
stamped ahead of the clock next to a running session.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.core import health
from reconciler.core.ps import ps_notes
from reconciler.drivers import audit, files, tmux
from reconciler.drivers.audit import audit_path, read_audit
from reconciler.drivers.files import write_atomic
from reconciler.drivers.systemd import NO_RUNTIME_DIR, parse_list_units
from reconciler.engine.apply import ApplyReport, apply_plan
from reconciler.engine.reconcile import apply_and_write_back
from reconciler.engine.state import render_history
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.history import RestartRecord
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.systemd_user import (
    SystemdUser,
    SystemdUserUnavailable,
    patched_environ,
    running_systemd_user,
)
from tests.plugins.tmux_server import retry_until
from tests.resilience.conftest import Minimal
from tests.resilience.world import heartbeat_text

pytestmark = pytest.mark.tmux

SLEEP = "sleep 600"
CORE = ["enhancer", "orchestrator"]


def inputs(repo: Path, state: Path) -> TickInputs:
    return TickInputs(repo=repo, host="demo", state_dir=state, command_override=SLEEP)


def running(socket: SocketKey) -> list[str]:
    return sorted(tmux.observe_socket(socket).sessions)


def big_repo(tmp_path: Path, socket: SocketKey, workers: int) -> Path:
    assert socket.name
    repo = example_repo(tmp_path, "minimal", socket.name)
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text() + "".join(f"  - name: worker-{i}\n    role: coder\n" for i in range(workers)))
    return repo


# --- tmux ---------------------------------------------------------------------------------


def _kill_after_first_session(name: str, how: str, killed: list[str]) -> None:
    """Wait for the apply's first session, then end its server (SIGKILL: a crash, or kill-server)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done = subprocess.run(["tmux", "-L", name, "display-message", "-p", "#{pid} #{session_name}"],
                              capture_output=True, text=True, check=False)
        if done.returncode == 0 and len(done.stdout.split()) == 2:  # a server with no session yet prints the pid only
            if how == "SIGKILL":
                os.kill(int(done.stdout.split()[0]), signal.SIGKILL)
            else:
                subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
            killed.append(done.stdout.split()[1])
            return
        time.sleep(0.002)


def _check_outcomes(report: ApplyReport, state: Path) -> None:
    """Every action done or failed in tmux's words, and the audit log says the same."""
    assert len(report.outcomes) == 120 and {o.result for o in report.outcomes} <= {"done", "failed"}
    for outcome in report.failed:
        assert outcome.detail and "Traceback" not in outcome.detail
        assert any(words in outcome.detail for words in ("server exited", "lost server", "did not appear",
                                                          "no server running", "could not start")), outcome.detail
    logged, _ = read_audit(audit_path(state, "demo"))
    assert (sorted(r["what"]["agent"] for r in logged if r["result"] == "failed")
            == sorted(o.action.agent for o in report.failed))


def _converges(repo: Path, state: Path, socket: SocketKey) -> None:
    again = apply_plan(plan_tick(inputs(repo, state)))
    assert not again.failed, again.failed[:3]
    assert len(running(socket)) == 120
    assert plan_tick(inputs(repo, state)).plan.actions == ()


@pytest.mark.parametrize("how", ["SIGKILL", "kill-server"])
def test_tmux_server_dying_mid_apply_is_healed_or_reported_and_the_next_run_converges(
    tmp_path: Path, tmux_socket: SocketKey, how: str
) -> None:
    """The spawn call that meets its server gone waits and starts all its sessions again,
    once; sessions of a batch that had already returned are reported as not appearing.
    A kill-server can also leave a server stuck in its exit: reported, the next run ends it."""
    assert tmux_socket.name
    repo = big_repo(tmp_path, tmux_socket, 118)
    state = tmp_path / "state"
    tick = plan_tick(inputs(repo, state))
    killed: list[str] = []
    killer = threading.Thread(target=_kill_after_first_session, args=(tmux_socket.name, how, killed))
    killer.start()

    report = apply_plan(tick)
    killer.join()

    assert killed, "the server was never seen"
    _check_outcomes(report, state)
    if not report.failed:  # healed within the apply
        assert len(running(tmux_socket)) == 120
    _converges(repo, state, tmux_socket)


def test_a_server_wedged_as_the_apply_starts_fails_clearly_and_the_next_run_ends_it(
    tmp_path: Path, tmux_socket: SocketKey
) -> None:
    """Deterministic: a session-closed hook makes the kill-server (as the apply starts)
    wedge the server (drivers/stuck_server.py), so no spawn of this apply can succeed."""
    assert tmux_socket.name
    repo = big_repo(tmp_path, tmux_socket, 118)
    state = tmp_path / "state"
    tick = plan_tick(inputs(repo, state))
    subprocess.run(["tmux", "-L", tmux_socket.name, "new-session", "-d", "-s", "hook-holder", "sleep 600", ";",
                    "set-hook", "-g", "session-closed", "new-session -d -s straggler 'sleep 600'"], check=True)
    killed: list[str] = []
    killer = threading.Thread(target=_kill_after_first_session, args=(tmux_socket.name, "kill-server", killed))
    killer.start()

    report = apply_plan(tick)
    killer.join()

    assert killed
    _check_outcomes(report, state)
    assert report.failed, "a stuck server let the apply finish"
    snap = tmux.observe_socket(tmux_socket)
    assert snap.stuck_pid is not None
    # the next run ends it (SIGKILL: the hook wedges it again on SIGTERM) and converges
    _converges(repo, state, tmux_socket)
    ended = [r for r in read_audit(audit_path(state, "demo"))[0] if r["what"]["kind"] == "end-server"]
    assert [r["result"] for r in ended] == ["ok"]


# --- systemd --user -------------------------------------------------------------------------


class Absent(NamedTuple):
    test_id: str
    runtime_dir: str | None  # None: unset; "": an empty folder; "dead": a socket nothing listens on


ABSENT = [Absent("no-XDG_RUNTIME_DIR", None), Absent("empty-runtime-dir", ""), Absent("dead-socket", "dead")]


@pytest.mark.parametrize("case", ABSENT, ids=lambda c: c.test_id)
def test_without_a_user_manager_the_fleet_runs_tmux_only_and_says_why(
    tmp_path: Path, minimal: Minimal, monkeypatch: pytest.MonkeyPatch, case: Absent
) -> None:
    if case.runtime_dir is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        runtime = tmp_path / "runtime"
        (runtime / "systemd").mkdir(parents=True)
        if case.runtime_dir == "dead":
            subprocess.run(["python3", "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])",
                            str(runtime / "systemd" / "private")], check=True)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    tick = plan_tick(minimal.inputs())

    report, _ = apply_and_write_back(tick, None)

    snapshot = tick.observed.systemd[None]
    assert not snapshot.available and "tmux-only" in snapshot.reason
    if case.runtime_dir is None:
        assert snapshot.reason == NO_RUNTIME_DIR
    assert not report.failed and running(minimal.socket) == CORE
    assert '"systemd": "tmux-only"' in (minimal.repo / "status/demo/demo.yaml").read_text()
    assert any("running tmux-only" in note for note in ps_notes(tick.desired, tick.observed))


@pytest.fixture
def own_manager() -> Iterator[SystemdUser]:
    """A user manager of this test's own, reachable through os.environ, that the test may
    stop (the session's manager is shared by the tests of this worker)."""
    try:
        with running_systemd_user() as manager, patched_environ(manager.env):
            yield manager
    except SystemdUserUnavailable as exc:
        pytest.skip(f"systemd --user cannot run here: {exc}")


@pytest.mark.systemd
def test_a_user_manager_stopping_mid_run_fails_clearly_then_tmux_only_converges(
    own_manager: SystemdUser, minimal: Minimal
) -> None:
    tick = plan_tick(minimal.inputs())
    assert tick.observed.systemd[None].available
    _stop(own_manager.pid)  # between observe and apply
    report = apply_plan(tick)
    assert [o.result for o in report.outcomes] == ["failed", "failed"]
    assert all("did not start" in o.detail and "Connection refused" in o.detail for o in report.failed)
    assert running(minimal.socket) == []  # no session outside the server unit it could not start

    fallback = plan_tick(minimal.inputs())
    assert "unreachable" in fallback.observed.systemd[None].reason
    assert not apply_plan(fallback).failed and running(minimal.socket) == CORE


@pytest.mark.systemd
def test_agents_under_units_stop_with_their_manager_and_come_back_tmux_only(
    own_manager: SystemdUser, minimal: Minimal
) -> None:
    first = apply_plan(plan_tick(minimal.inputs()))
    assert not first.failed and all(o.detail.startswith("under ") for o in first.outcomes)
    _stop(own_manager.pid)  # stops every unit: the server unit takes the agents with it
    assert retry_until(lambda: running(minimal.socket) == [], 15)

    tick = plan_tick(minimal.inputs())
    assert [(a.kind.value, a.agent) for a in tick.plan.actions] == [("spawn", a) for a in CORE]
    assert not apply_plan(tick).failed and running(minimal.socket) == CORE


def _stop(pid: int) -> None:
    """SIGTERM the manager and wait until it has exited (a zombie until the plugin reaps it)."""
    os.kill(pid, signal.SIGTERM)
    status = Path(f"/proc/{pid}/status")
    assert retry_until(lambda: not status.exists() or "zombie" in status.read_text(), 15)


# --- the clock ----------------------------------------------------------------------------------


class Skew(NamedTuple):
    test_id: str
    ahead: timedelta
    counted: bool  # counted as a fresh answer


SKEWS = [Skew("30s-ahead-tolerated", timedelta(seconds=30), True),
         Skew("1h-ahead", timedelta(hours=1), False),
         Skew("10y-ahead", timedelta(days=3650), False)]


@pytest.mark.parametrize("case", SKEWS, ids=lambda c: c.test_id)
def test_a_heartbeat_from_the_future_is_a_clock_problem_not_health(minimal: Minimal, case: Skew) -> None:
    inp = minimal.inputs()
    assert not apply_plan(plan_tick(inp)).failed
    now = datetime.now(UTC)
    beats = StateLayout(minimal.state).heartbeats("demo")
    write_atomic(beats / "orchestrator.json", heartbeat_text("orchestrator", now + case.ahead))
    write_atomic(beats / "enhancer.json", heartbeat_text("enhancer", now))

    soon = plan_tick(inp, now=now)  # within the start-up grace
    later = plan_tick(inp, now=now + timedelta(seconds=45))  # past the 30 s grace, within the 90 s timeout

    health = {h.agent: (h.health, h.message) for h in later.plan.health}
    clock = [p for p in later.problems if "orchestrator.json" in p]
    assert health["enhancer"][0] == "healthy"
    if case.counted:
        assert health["orchestrator"][0] == "healthy" and clock == []
        assert later.plan.actions == ()
        return
    assert {h.agent: h.health for h in soon.plan.health}["orchestrator"] == "starting"
    assert health["orchestrator"] == ("silent", health["orchestrator"][1])
    assert "in the future; check the host clock" in health["orchestrator"][1]
    assert len(clock) == 1 and "ahead of this host's clock" in clock[0] and "NTP" in clock[0]
    assert [(a.kind.value, a.agent, a.reason.rule) for a in later.plan.actions] == [
        ("restart", "orchestrator", "health-silent")]
    # restarted, the agent is judged again from its next heartbeat, never from the stale future one
    assert not apply_plan(later).failed
    again = plan_tick(inp, now=datetime.now(UTC) + timedelta(seconds=45))
    assert {h.agent: h.health for h in again.plan.health}["orchestrator"] == "silent"
    assert json.loads((beats / "orchestrator.json").read_text())["ts"] > now.isoformat()


def test_doctests_of_the_modules_this_file_relies_on() -> None:
    for module in (health, audit, files):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__


def test_a_restart_history_stamped_a_year_ahead_does_not_hold_a_dead_agent_for_a_year(minimal: Minimal) -> None:
    """The clock was stepped back after a restart: a year-ahead record must not hold the restart."""
    inp = minimal.inputs("sh -c 'exit 3'")
    assert not apply_plan(plan_tick(inp)).failed
    assert retry_until(lambda: all(s.pane_dead for s in tmux.observe_socket(minimal.socket).sessions.values()))
    now = datetime.now(UTC)
    write_atomic(StateLayout(minimal.state).restarts("demo"), render_history({a: RestartRecord(1, now + timedelta(days=365), "dead")
                                                               for a in CORE}))

    tick = plan_tick(inp, now=now + timedelta(seconds=11))

    assert sorted((a.kind.value, a.agent) for a in tick.plan.actions) == [("restart", a) for a in CORE]


@pytest.mark.parametrize("printed", ["[" * 100_000, '[{"unit": ["x"]}]', "{}", "[1]", '[{"unit": "a\udcff"}'])
def test_whatever_systemctl_prints_is_an_error_in_words(printed: str) -> None:
    """The pure parser of `list-units --output=json`: damage is a ValueError (observe_units
    turns it into `available=False` with the reason), never another exception."""
    with pytest.raises(ValueError):
        parse_list_units(printed)


def test_a_host_without_git_still_reconciles_with_no_git(tmp_path: Path, minimal: Minimal) -> None:
    """`--no-git` promises to leave Git alone; a host without git must not end in a traceback."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("tmux", "sleep", "sh"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir), "MOSAIC_AGENT_COMMAND": SLEEP, "XDG_RUNTIME_DIR": str(tmp_path)}

    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(minimal.repo), "--no-git",
                           "--host", "demo", "--state-dir", str(minimal.state)], env=env, capture_output=True,
                          text=True, timeout=60, check=False)

    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    assert done.returncode == 0 and running(minimal.socket) == CORE
