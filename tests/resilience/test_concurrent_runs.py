"""Two applying runs at once (the timer and a person, or watch mode): one after the other.

`fleet reconcile` and `fleet down` hold the state directory's run lock
(drivers/lock.py) from their observation to their write-back. Without it both planned
from the same observation and both acted: every agent that needed a restart was
restarted twice (found by an independent review). Here the test holds the lock while
two reconciles start, so both must wait for it; real tmux, stub agents, the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.audit import audit_path, read_audit
from reconciler.drivers.lock import hold_lock
from reconciler.engine.run import run_lock
from reconciler.engine.tick import TickInputs
from reconciler.errors import UserError
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.test_ps_and_agent_verbs import AGENTS, HOST, Fleet, wait_healthy
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux


def start(fleet: Fleet, verb: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "reconciler.cli", verb, str(fleet.repo), "--host", HOST,
            "--state-dir", str(fleet.state_dir)]
    with log.open("wb") as sink:
        return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=fleet.env)


def restarts(fleet: Fleet) -> list[str]:
    records, problems = read_audit(audit_path(fleet.state_dir, "demo"))
    assert problems == []
    return sorted(r["what"]["agent"] for r in records if r["what"]["kind"] == "restart")


def test_two_reconciles_at_once_restart_each_agent_once(running: Fleet, tmp_path: Path) -> None:
    roster = running.repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace("    role: enhancer\n", "    role: enhancer\n    env: {ROUND: '2'}\n")
                      .replace("    alias: Mos\n", "    alias: Mos\n    env: {ROUND: '2'}\n"))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with hold_lock(StateLayout(running.state_dir).run_lock()):
        runs = [start(running, "reconcile", log) for log in logs]
        assert retry_until(lambda: all("another reconcile is running" in log.read_text() for log in logs), 30), \
            [log.read_text() for log in logs]
        assert all(run.poll() is None for run in runs), "a run went ahead without the lock"
    codes = [run.wait(timeout=120) for run in runs]
    said = [log.read_text() for log in logs]
    assert codes == [0, 0], said
    assert restarts(running) == sorted(AGENTS), said  # once each, not twice
    assert sum("No changes" in text for text in said) == 1, said
    wait_healthy(running, *AGENTS)


def test_down_during_a_reconcile_waits_and_then_stops_what_it_started(fleet: Fleet, tmp_path: Path) -> None:
    log_up, log_down = tmp_path / "up.log", tmp_path / "down.log"
    with hold_lock(StateLayout(fleet.state_dir).run_lock()):
        up = start(fleet, "reconcile", log_up)
        assert retry_until(lambda: "another reconcile is running" in log_up.read_text(), 30)
    lock_text = (StateLayout(fleet.state_dir).run_lock())
    assert retry_until(lambda: f'"pid": {up.pid}' in lock_text.read_text() or up.poll() is not None, 30)
    down = start(fleet, "down", log_down)
    assert up.wait(timeout=120) == 0, log_up.read_text()
    assert down.wait(timeout=120) == 0, log_down.read_text()
    said = log_down.read_text()
    assert "0 to spawn, 0 to restart, 2 to stop" in said, said  # it planned from what the reconcile left
    assert tmux.observe_socket(SocketKey(None, fleet.socket)).sessions == {}


def test_only_taking_the_run_lock_is_reported_as_a_lock_problem(tmp_path: Path) -> None:
    """An error of the run itself is not relabelled "cannot take reconcile.lock"."""
    inputs = TickInputs(repo=tmp_path, host=HOST, state_dir=tmp_path / "state")
    with pytest.raises(OSError, match="the run's own"), run_lock(inputs):
        raise OSError("the run's own failure")
    (tmp_path / "blocked").write_text("a file, not a folder")
    with pytest.raises(UserError, match=r"cannot take reconcile\.lock"), \
            run_lock(TickInputs(repo=tmp_path, host=HOST, state_dir=tmp_path / "blocked")):
        pass
