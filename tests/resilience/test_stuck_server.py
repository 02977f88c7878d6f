"""A tmux server stuck in its own exit (drivers/stuck_server.py), made on purpose.

tmux 3.3a wedges when a command creates a session after `kill-server` destroyed them
all: the server hangs up on every client ("server exited unexpectedly") and never exits,
its agents unreachable. CI met it by chance (kill-server racing the 120 spawns of
test_runtime_faults.py); here a `session-closed` hook creates that late session every
time. Real tmux, real stub agents, the real CLI: dry-run and ps only tell; reconcile and
down end it and audit that they did.
"""

from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from reconciler.drivers import stuck_server, tmux
from reconciler.drivers.audit import audit_path, read_audit
from reconciler.engine.apply import apply_plan
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.observed import SocketKey
from tests.e2e.test_ps_and_agent_verbs import AGENTS, Fleet, wait_healthy
from tests.plugins.tmux_server import retry_until, socket_path

pytestmark = pytest.mark.tmux


def client_says(fleet: Fleet) -> str:
    done = subprocess.run(["tmux", "-L", fleet.socket, "list-sessions"], capture_output=True, text=True,
                          timeout=10, env=fleet.env, stdin=subprocess.DEVNULL, check=False)
    return done.stderr.strip()


def alive(pid: int) -> bool:
    """Running, not a zombie (this container's pid 1 may not reap the servers we end)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False


def wedge(fleet: Fleet, *, again: bool = False) -> int:
    """kill-server with a hook that starts a session as the others close: the server stays.

    The hook removes itself first, as the chance race of CI does not recur; `again` keeps
    it, so the server wedges once more on SIGTERM.
    """
    pid = int(fleet.tmux("display-message", "-p", "#{pid}"))
    late = "new-session -d -s straggler 'sleep 600'"
    fleet.tmux("set-hook", "-g", "session-closed", late if again else f"set-hook -gu session-closed ; {late}")
    fleet.tmux("kill-server")
    assert retry_until(lambda: client_says(fleet) == "server exited unexpectedly"), client_says(fleet)
    assert not stuck_server.settle(socket_path(fleet.socket), 1.5), "the server exited: not stuck"
    assert alive(pid)
    return pid


def test_observe_names_the_stuck_server_by_pid_and_does_not_touch_it(running: Fleet) -> None:
    pid = wedge(running)
    snap = tmux.observe_socket(SocketKey(None, running.socket))
    assert (snap.running, snap.error, snap.stuck_pid, dict(snap.sessions)) == (False, None, pid, {})
    assert alive(pid)


def test_dry_run_and_ps_say_it_is_stuck_and_leave_it(running: Fleet) -> None:
    pid = wedge(running)
    dry = running.fleet("reconcile", str(running.repo), "--dry-run", module="reconciler.cli")
    assert dry.returncode == 0, dry.stderr
    assert f"(pid {pid}) is stuck in its own exit" in dry.stdout + dry.stderr
    assert "applying ends it with SIGTERM" in dry.stdout + dry.stderr
    rows = running.ps()
    assert {rows[f"demo/{a}"]["tmux"] for a in AGENTS} == {"unknown"}
    text = running.fleet("ps", str(running.repo))
    assert f"its server (pid {pid}) is stuck" in text.stdout + text.stderr
    assert alive(pid), "a dry-run or ps must not act"
    assert not audit_path(running.state_dir, "demo").exists() or all(
        r["what"]["kind"] != "end-server" for r in read_audit(audit_path(running.state_dir, "demo"))[0])


def test_reconcile_ends_it_audits_it_and_converges(running: Fleet) -> None:
    pid = wedge(running)
    done = running.reconcile()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ended the stuck tmux server (pid {pid})" in done.stderr and "with SIGTERM" in done.stderr
    assert retry_until(lambda: not alive(pid))
    assert sorted(running.tmux("list-sessions", "-F", "#{session_name}").split()) == sorted(AGENTS)
    wait_healthy(running, *AGENTS)
    ended = [r for r in read_audit(audit_path(running.state_dir, "demo"))[0] if r["what"]["kind"] == "end-server"]
    assert [(r["why"]["rule"], r["result"]) for r in ended] == [("tmux-server-stuck", "ok")]

    again = running.fleet("reconcile", str(running.repo), "--dry-run", "--output", "json", module="reconciler.cli")
    assert json.loads(again.stdout)["actions"] == []


def test_a_stale_observation_never_signals_the_healthy_server_that_replaced_it(running: Fleet) -> None:
    pid = wedge(running)
    tick = plan_tick(TickInputs(repo=running.repo, host="demo", state_dir=running.state_dir))
    assert tick.observed.sockets[SocketKey(None, running.socket)].stuck_pid == pid
    os.kill(pid, signal.SIGKILL)  # someone else ended it, and a new server started on the socket
    assert retry_until(lambda: not alive(pid))
    running.tmux("new-session", "-d", "-s", "bystander", "sleep 600")
    healthy = int(running.tmux("display-message", "-p", "#{pid}"))

    assert tmux.end_stuck(SocketKey(None, running.socket), healthy) is None
    report = apply_plan(tick)
    assert alive(healthy) and "bystander" in running.tmux("list-sessions", "-F", "#{session_name}").split()
    assert any("was no longer stuck" in p and "nothing was signalled" in p for p in report.problems), report.problems
    ended = [r for r in read_audit(audit_path(running.state_dir, "demo"))[0] if r["what"]["kind"] == "end-server"]
    assert [r["result"] for r in ended] == ["skipped"]


def test_a_server_that_waits_for_a_stopped_client_is_not_called_stuck(running: Fleet) -> None:
    """Leaving, not stuck: no panes left, it only waits for a client to go. Not signalled."""
    pid = int(running.tmux("display-message", "-p", "#{pid}"))
    viewer = 0
    client = subprocess.Popen(["script", "-qfc", f"tmux -L {running.socket} attach -r -t =orchestrator", "/dev/null"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=running.env, start_new_session=True)
    try:
        assert retry_until(lambda: running.tmux("list-clients").strip() != "")
        viewer = int(running.tmux("list-clients", "-F", "#{client_pid}").split()[0])
        os.kill(viewer, signal.SIGSTOP)
        running.tmux("kill-server")
        assert retry_until(lambda: client_says(running) == "server exited unexpectedly")
        snap = tmux.observe_socket(SocketKey(None, running.socket))
        assert (snap.running, snap.stuck_pid) == (False, None)
        assert snap.error and "is exiting but still listens" in snap.error and "the next run looks again" in snap.error
        assert alive(pid)
    finally:
        os.kill(viewer, signal.SIGKILL)
        os.killpg(client.pid, signal.SIGKILL)
        client.wait()
    assert retry_until(lambda: not alive(pid))


def test_down_ends_it_too_with_sigkill_if_it_wedges_again(running: Fleet) -> None:
    pid = wedge(running, again=True)
    done = running.fleet("down", str(running.repo), module="reconciler.cli")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ended the stuck tmux server (pid {pid})" in done.stderr and "with SIGKILL" in done.stderr
    assert retry_until(lambda: not alive(pid))
    assert "no server running" in client_says(running) or "error connecting" in client_says(running)


def test_doctests() -> None:
    assert doctest.testmod(stuck_server, raise_on_error=False).failed == 0
