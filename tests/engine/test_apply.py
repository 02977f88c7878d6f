"""The apply step against a real tmux server: converge, idempotence, recovery, backoff, the lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.lock import LockBusy, hold_lock
from reconciler.engine.apply import apply_plan
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.tmux_server import retry_until, server_gone

pytestmark = pytest.mark.tmux

SLEEP = "sleep 600"


def inputs(repo: Path, state: Path, host: str = "demo", command: str | None = SLEEP) -> TickInputs:
    return TickInputs(repo=repo, host=host, state_dir=state, command_override=command)


def sessions(socket: SocketKey) -> dict[str, tuple[str, str, bool]]:
    """name -> (tenant mark, agent mark, dead) for every session on the socket."""
    snap = tmux.observe_socket(socket)
    return {n: (s.marks.tenant, s.marks.agent, s.pane_dead) for n, s in snap.sessions.items()}


def converge(inp: TickInputs) -> None:
    report = apply_plan(plan_tick(inp))
    assert not report.failed, report.failed


@pytest.fixture
def repo(tmp_path: Path, tmux_socket: SocketKey) -> Path:
    assert tmux_socket.name
    return example_repo(tmp_path, "coding", tmux_socket.name)


def test_cold_start_converges_and_a_second_apply_changes_nothing(repo: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    inp = inputs(repo, tmp_path / "state", host="build-1")
    tick = plan_tick(inp)
    assert len(tick.plan.actions) == 6
    report = apply_plan(tick)
    assert [o.result for o in report.outcomes] == ["done"] * 6
    running = sessions(tmux_socket)
    assert running == {a.agent: ("acme", a.agent, False) for a in tick.plan.actions}
    again = plan_tick(inp)
    assert again.plan.actions == ()
    # applying the first (now stale) plan again re-checks each precondition: no duplicates
    replay = apply_plan(tick)
    assert {o.result for o in replay.outcomes} == {"skipped"}
    assert sessions(tmux_socket) == running


def test_spec_change_restarts_only_that_agent_and_removal_stops(repo: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    inp = inputs(repo, tmp_path / "state", host="build-1")
    converge(inp)
    before = tmux.observe_socket(tmux_socket).sessions
    roster = repo / "tenants/acme/roster.yaml"
    text = roster.read_text().replace("    alias: Sec\n    model: opus\n", "    alias: Sec\n    model: haiku\n")
    text = text.replace("  - name: coder1-0\n    role: coder\n    lane: web\n    workdir: ~/src/acme-web\n", "")
    roster.write_text(text)
    tasks = repo / "tenants/acme/tasks.yaml"
    tasks.write_text(tasks.read_text().replace("agent: coder1-0", "agent: coder0-0"))
    tick = plan_tick(inp)
    assert tick.repo.errors == ()
    assert sorted((a.kind.value, a.agent) for a in tick.plan.actions) == [("restart", "security-review"), ("stop", "coder1-0")]
    assert not apply_plan(tick).failed
    after = tmux.observe_socket(tmux_socket).sessions
    assert "coder1-0" not in after
    assert after["security-review"].marks.model == "haiku"
    assert after["security-review"].session_id != before["security-review"].session_id
    for name in ("orchestrator", "enhancer", "coder0-0", "code-review"):
        assert after[name].session_id == before[name].session_id, f"{name} must not be touched"
    assert plan_tick(inp).plan.actions == ()


def test_killed_agent_and_killed_server_are_restored(repo: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    inp = inputs(repo, tmp_path / "state", host="build-1")
    converge(inp)
    tmux.kill_sessions(tmux_socket, ["coder0-0"])
    tick = plan_tick(inp)
    assert [(a.kind.value, a.agent) for a in tick.plan.actions] == [("spawn", "coder0-0")]
    assert not apply_plan(tick).failed
    assert tmux_socket.name
    subprocess.run(["tmux", "-L", tmux_socket.name, "kill-server"], check=True)
    assert retry_until(lambda: server_gone(tmux_socket.name or ""))
    converge(inp)
    assert len(sessions(tmux_socket)) == 6


def test_crashing_agent_restarts_with_backoff_then_stalls(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    state = tmp_path / "state"
    inp = inputs(repo, state, command="sh -c 'exit 3'")
    converge(inp)
    assert retry_until(lambda: all(dead for _, _, dead in sessions(tmux_socket).values()))
    first = plan_tick(inp)
    assert {a.reason.rule for a in first.plan.actions} == {"health-dead"}
    assert not apply_plan(first).failed
    history = json.loads(StateLayout(state).restarts("demo").read_text())
    assert {k: v["attempts"] for k, v in history.items()} == {"enhancer": 1, "orchestrator": 1}
    assert retry_until(lambda: all(dead for _, _, dead in sessions(tmux_socket).values()))
    # within the 10 s backoff: no restart, a wait with its deadline
    waiting = plan_tick(inp, now=first.now + timedelta(seconds=5))
    assert waiting.plan.actions == ()
    assert {w.agent for w in waiting.plan.waits} == {"enhancer", "orchestrator"}
    # past it: restart number two
    later = plan_tick(inp, now=first.now + timedelta(seconds=11))
    assert len(later.plan.actions) == 2
    apply_plan(later)
    history = json.loads(StateLayout(state).restarts("demo").read_text())
    assert {v["attempts"] for v in history.values()} == {2}
    # after five restarts in a row the planner reports the agent Stalled
    records = {a: {**v, "attempts": 5} for a, v in history.items()}
    StateLayout(state).restarts("demo").write_text(json.dumps(records))
    assert retry_until(lambda: all(dead for _, _, dead in sessions(tmux_socket).values()))
    stalled = plan_tick(inp, now=later.now + timedelta(seconds=1))
    assert stalled.plan.actions == () and all(w.stalled for w in stalled.plan.waits)


def test_hung_stub_is_restarted(tmp_path: Path, tmux_socket: SocketKey, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    fleet = repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("heartbeat_timeout: 90s", "heartbeat_timeout: 2s\n  startup_grace: 1s"))
    monkeypatch.setenv("FLEET_STUB_INTERVAL", "0.2")
    state = tmp_path / "state"
    inp = inputs(repo, state, command=None)
    converge(inp)
    beat = state / "demo/heartbeats/orchestrator.json"
    assert retry_until(beat.exists, 10)
    tmux.run_tmux(tmux_socket, ["send-keys", "-t", "=orchestrator:", "-l", "/hang"])
    tmux.run_tmux(tmux_socket, ["send-keys", "-t", "=orchestrator:", "Enter"])
    time.sleep(2.5)
    tick = plan_tick(inp)
    assert [(a.agent, a.reason.rule) for a in tick.plan.actions] == [("orchestrator", "health-stale")]
    old = json.loads(beat.read_text())["pid"]
    assert not apply_plan(tick).failed
    assert retry_until(lambda: json.loads(beat.read_text())["pid"] != old, 10)


def test_lock_waits_then_reports_the_holder(tmp_path: Path) -> None:
    path = StateLayout(tmp_path).lock("demo")
    with hold_lock(path), pytest.raises(LockBusy) as busy, hold_lock(path, timeout=0.2):
        pass
    assert f"pid {os.getpid()}" in str(busy.value)


def _hold_forever(path: str) -> None:
    with hold_lock(Path(path)):
        time.sleep(600)


def test_lock_of_a_killed_holder_is_free(tmp_path: Path) -> None:
    path = StateLayout(tmp_path).lock("demo")
    holder = multiprocessing.get_context("spawn").Process(target=_hold_forever, args=(str(path),))
    holder.start()
    assert retry_until(lambda: path.exists() and path.read_text() != "", 10)
    with pytest.raises(LockBusy), hold_lock(path, timeout=0.1):
        pass
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with hold_lock(path, timeout=1):
        pass


def test_sigkill_during_cold_start_then_rerun_converges(tmp_path: Path, tmux_socket: SocketKey) -> None:
    """Chaos: kill the reconciler at random points of a 40-agent cold start, 6 times."""
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    workers = "".join(f"  - name: worker-{i}\n    role: coder\n" for i in range(38))
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text() + workers)
    state = tmp_path / "state"
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": SLEEP}
    cmd = [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--host", "demo", "--state-dir", str(state)]
    rng = random.Random(7)
    for _trial in range(6):
        subprocess.run(["tmux", "-L", tmux_socket.name, "kill-server"], capture_output=True, check=False)
        assert retry_until(lambda: server_gone(tmux_socket.name or ""))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        now = sessions(tmux_socket)
        assert sorted(now) == sorted(["orchestrator", "enhancer", *(f"worker-{i}" for i in range(38))])
        assert all(t == "demo" and a == n and not dead for n, (t, a, dead) in now.items())
