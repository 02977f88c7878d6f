"""Core agents under systemd --user units, every tmux server under its socket's unit.

Real `systemd --user` (tests/plugins/systemd_user.py) and real tmux; no stand-in except
where a docstring says why. The shape under test is ARCHITECTURE.md's "Real parts in
tests": stopping one agent's unit must never end its siblings, and no tmux server may
live in the cgroup of whoever happened to start it (agent-deck #1721).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.drivers import tmux, units
from reconciler.drivers.systemd import observe_units
from reconciler.engine import systemd_apply
from reconciler.engine.apply import ApplyReport, apply_plan
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import ObservedSession, SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import kill_server, retry_until

pytestmark = pytest.mark.tmux

SLEEP = "sleep 600"
CORE = ("enhancer", "enhancer-2", "orchestrator")


def inputs(repo: Path, state: Path, host: str = "demo") -> TickInputs:
    return TickInputs(repo=repo, host=host, state_dir=state, command_override=SLEEP)


def converge(inp: TickInputs) -> ApplyReport:
    report = apply_plan(plan_tick(inp))
    assert not report.failed, report.failed
    return report


def live(socket: SocketKey) -> dict[str, ObservedSession]:
    return dict(tmux.observe_socket(socket).sessions)


def ids(socket: SocketKey) -> dict[str, str]:
    return {name: s.session_id for name, s in live(socket).items()}


def show(manager: SystemdUser, unit: str, *props: str) -> dict[str, str]:
    done = manager.systemctl("show", *(f"--property={p}" for p in props), unit)
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def server_unit(socket: SocketKey) -> str:
    return units.server_unit_name(socket)


def server_pid(socket: SocketKey) -> int:
    assert socket.name
    done = subprocess.run(["tmux", "-L", socket.name, "display-message", "-p", "#{pid}"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def cgroup_procs(control_group: str) -> set[int]:
    """Pids in `control_group`, read from each mounted hierarchy systemd tracks."""
    pids: set[int] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _, options = tail.split(" ", 2)
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options.split(",")):
            procs = Path(fields.split(" ")[4]) / control_group.lstrip("/") / "cgroup.procs"
            if procs.exists():
                pids |= {int(p) for p in procs.read_text().split()}
    return pids


def core_repo(tmp_path: Path, socket: SocketKey, extra: str = "") -> Path:
    """The minimal example with a third core agent (and `extra` roster entries)."""
    assert socket.name
    repo = example_repo(tmp_path, "minimal", socket.name)
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text() + "  - name: enhancer-2\n    role: enhancer\n" + extra)
    return repo


@pytest.fixture
def repo(tmp_path: Path, tmux_socket: SocketKey) -> Path:
    return core_repo(tmp_path, tmux_socket)


@pytest.mark.systemd
def test_stopping_one_agent_unit_never_touches_its_siblings(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    inp = inputs(repo, tmp_path / "state")
    converge(inp)
    before = ids(tmux_socket)
    assert sorted(before) == sorted(CORE)

    systemd_user.systemctl("stop", units.agent_unit_name("demo", "enhancer"))

    assert retry_until(lambda: "enhancer" not in live(tmux_socket))
    time.sleep(0.3)  # give a wrong shape (a server in the stopped unit) time to show
    after = ids(tmux_socket)
    assert after == {n: before[n] for n in ("enhancer-2", "orchestrator")}
    assert show(systemd_user, server_unit(tmux_socket), "ActiveState")["ActiveState"] == "active"
    # the next reconcile brings it back under its unit, and still leaves the others alone
    tick = plan_tick(inp)
    assert [(a.kind.value, a.agent) for a in tick.plan.actions] == [("spawn", "enhancer")]
    assert not apply_plan(tick).failed
    again = ids(tmux_socket)
    assert {n: again[n] for n in ("enhancer-2", "orchestrator")} == after
    unit = units.agent_unit_name("demo", "enhancer")
    assert show(systemd_user, unit, "ActiveState")["ActiveState"] == "active"


@pytest.mark.systemd
def test_cold_start_runs_every_core_agent_and_the_server_under_units(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    inp = inputs(repo, tmp_path / "state")
    tick = plan_tick(inp)
    report = apply_plan(tick)

    assert [o.result for o in report.outcomes] == ["done"] * 3
    for outcome in report.outcomes:
        assert outcome.detail == f"under {units.agent_unit_name('demo', outcome.action.agent)}"
    sessions = live(tmux_socket)
    for action in tick.plan.actions:
        unit = units.agent_unit_name("demo", action.agent)
        assert units.is_ours(units.read_unit(systemd_user.unit_dir, unit))
        state = show(systemd_user, unit, "ActiveState", "UnitFileState", "Requires", "After")
        assert (state["ActiveState"], state["UnitFileState"]) == ("active", "enabled")
        assert server_unit(tmux_socket) in state["Requires"] and server_unit(tmux_socket) in state["After"]
        marks = sessions[action.agent].marks
        assert action.launch is not None
        assert (marks.tenant, marks.agent, marks.spec_hash) == ("demo", action.agent, action.launch.spec_hash)
    assert (systemd_user.unit_dir / "default.target.wants" / units.agent_unit_name("demo", "orchestrator")).is_symlink()
    server = show(systemd_user, server_unit(tmux_socket), "ActiveState", "ControlGroup", "MainPID")
    pid = server_pid(tmux_socket)
    assert server["ActiveState"] == "active" and int(server["MainPID"]) == pid
    in_unit = cgroup_procs(server["ControlGroup"])
    assert pid in in_unit and os.getpid() not in in_unit
    assert {s.pane_pid for s in sessions.values()} <= in_unit  # the agents live there too
    for name in CORE:  # and no agent unit holds anything that its stop would kill
        group = show(systemd_user, units.agent_unit_name("demo", name), "ControlGroup")["ControlGroup"]
        assert not group or not cgroup_procs(group), f"{name}'s unit holds processes"
    # converged: nothing to do, and a second apply of the stale plan skips everything
    assert plan_tick(inp).plan.actions == ()
    assert {o.result for o in apply_plan(tick).outcomes} == {"skipped"}
    assert ids(tmux_socket) == {n: s.session_id for n, s in sessions.items()}


def systemd_run(manager: SystemdUser, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `argv` as a transient service of `manager` and wait until that service ended."""
    setenv = [f"--setenv={key}={value}" for key, value in env.items()]
    unit = f"reconcile-test-{uuid.uuid4().hex[:8]}"
    return subprocess.run(
        ["systemd-run", "--user", "--wait", "--collect", "--quiet", f"--unit={unit}", *setenv, *argv],
        env={**os.environ, **manager.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def reconcile_in_service(manager: SystemdUser, repo: Path, state: Path, host: str) -> subprocess.CompletedProcess[str]:
    cli = [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--host", host, "--state-dir", str(state)]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(Path.home()),
        "MOSAIC_AGENT_COMMAND": SLEEP,
        **manager.env,
    }
    return systemd_run(manager, cli, env)


@pytest.fixture
def other_socket() -> Iterator[SocketKey]:
    key = SocketKey(None, f"fleet-test-{uuid.uuid4().hex[:12]}")
    try:
        yield key
    finally:
        assert key.name
        kill_server(key.name)


@pytest.mark.systemd
def test_a_tmux_server_started_inside_a_service_dies_with_it(
    systemd_user: SystemdUser, other_socket: SocketKey
) -> None:
    """The control for the next tests: the trap is real on this machine."""
    assert other_socket.name
    done = systemd_run(systemd_user, ["/usr/bin/env", "tmux", "-L", other_socket.name, "new-session", "-d", *SLEEP.split()],
                       {"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    assert retry_until(lambda: not tmux.observe_socket(other_socket).running)


@pytest.mark.systemd
def test_reconcile_run_from_a_transient_service_leaves_agents_running(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    done = reconcile_in_service(systemd_user, repo, tmp_path / "state", "demo")
    assert done.returncode == 0, done.stdout + done.stderr

    time.sleep(0.5)  # the service has ended: whatever lived in its cgroup is gone by now
    sessions = live(tmux_socket)
    assert sorted(sessions) == sorted(CORE)
    assert not any(s.pane_dead for s in sessions.values())
    server = show(systemd_user, server_unit(tmux_socket), "ControlGroup")["ControlGroup"]
    assert server_pid(tmux_socket) in cgroup_procs(server)
    assert plan_tick(inputs(repo, tmp_path / "state")).plan.actions == ()


@pytest.mark.systemd
def test_ephemeral_agents_share_the_unit_owned_server_and_survive(
    systemd_user: SystemdUser, tmux_socket: SocketKey, tmp_path: Path
) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "coding", tmux_socket.name)
    done = reconcile_in_service(systemd_user, repo, tmp_path / "state", "build-1")
    assert done.returncode == 0, done.stdout + done.stderr

    time.sleep(0.5)
    before = live(tmux_socket)
    ephemeral = {"coder0-0", "coder1-0", "code-review", "security-review"}
    assert set(before) == ephemeral | {"orchestrator", "enhancer"}
    server = show(systemd_user, server_unit(tmux_socket), "ControlGroup")["ControlGroup"]
    assert {before[n].pane_pid for n in ephemeral} <= cgroup_procs(server)
    written = {p.name for p in systemd_user.unit_dir.glob("fleet-acme.*.service")}
    assert written == {units.agent_unit_name("acme", n) for n in ("orchestrator", "enhancer")}

    systemd_user.systemctl("stop", units.agent_unit_name("acme", "orchestrator"))

    assert retry_until(lambda: "orchestrator" not in live(tmux_socket))
    time.sleep(0.3)
    after = live(tmux_socket)
    assert {n: s.session_id for n, s in after.items()} == {
        n: before[n].session_id for n in (*ephemeral, "enhancer")
    }


@pytest.mark.systemd
def test_removing_a_core_agent_disables_and_deletes_its_unit(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    inp = inputs(repo, tmp_path / "state")
    converge(inp)
    before = ids(tmux_socket)
    unit = units.agent_unit_name("demo", "enhancer-2")
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace("  - name: enhancer-2\n    role: enhancer\n", ""))

    tick = plan_tick(inp)
    assert [(a.kind.value, a.agent) for a in tick.plan.actions] == [("stop", "enhancer-2")]
    assert not apply_plan(tick).failed

    assert not (systemd_user.unit_dir / unit).exists()
    assert not (systemd_user.unit_dir / "default.target.wants" / unit).exists()
    assert show(systemd_user, unit, "LoadState", "ActiveState") == {"LoadState": "not-found", "ActiveState": "inactive"}
    assert ids(tmux_socket) == {n: before[n] for n in ("enhancer", "orchestrator")}


@pytest.mark.systemd
def test_spec_change_rewrites_that_unit_and_restarts_only_that_agent(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    inp = inputs(repo, tmp_path / "state")
    converge(inp)
    before = ids(tmux_socket)
    files = {n: systemd_user.unit_dir / units.agent_unit_name("demo", n) for n in CORE}
    stamps = {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in files.items()}
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace("    alias: Mos\n", "    alias: Mos\n    model: stub-small\n"))

    tick = plan_tick(inp)
    assert [(a.kind.value, a.agent) for a in tick.plan.actions] == [("restart", "orchestrator")]
    report = apply_plan(tick)

    assert not report.failed, report.failed
    launch = tick.plan.actions[0].launch
    assert launch is not None
    assert launch.spec_hash.encode() in files["orchestrator"].read_bytes()
    assert files["orchestrator"].read_bytes() != stamps["orchestrator"][0]
    for name in ("enhancer", "enhancer-2"):
        assert (files[name].read_bytes(), files[name].stat().st_mtime_ns) == stamps[name], f"{name} unit rewritten"
    after = live(tmux_socket)
    assert after["orchestrator"].session_id != before["orchestrator"]
    assert after["orchestrator"].marks.spec_hash == launch.spec_hash
    assert {n: after[n].session_id for n in ("enhancer", "enhancer-2")} == {n: before[n] for n in ("enhancer", "enhancer-2")}
    assert plan_tick(inp).plan.actions == ()


@pytest.mark.systemd
def test_apply_batches_systemctl_whatever_the_number_of_agents(
    systemd_user: SystemdUser, tmux_socket: SocketKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on units.systemctl records each verb and still runs it."""
    extra = "".join(f"  - name: core-{i}\n    role: coder\n    lifecycle: core\n" for i in range(6))
    repo = core_repo(tmp_path, tmux_socket, extra)
    verbs: list[str] = []
    real = units.systemctl

    def spy(*args: str, timeout: float = units.JOB_TIMEOUT_S) -> units.Ran:
        verbs.append(args[0])
        return real(*args, timeout=timeout)

    monkeypatch.setattr(units, "systemctl", spy)
    report = converge(inputs(repo, tmp_path / "state"))

    assert len(report.outcomes) == 9
    assert verbs == ["enable", "daemon-reload", "show", "start", "restart"]


@pytest.mark.systemd
def test_a_lost_daemon_reload_is_caught_before_the_restart(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash between writing a unit and reloading: the reload is skipped once (patched
    out: no signal can land between those two lines reliably), and the next run must
    notice the manager's stale copy instead of restarting the old command forever."""
    inp = inputs(repo, tmp_path / "state")
    converge(inp)
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace("    alias: Mos\n", "    alias: Mos\n    model: stub-small\n"))
    with monkeypatch.context() as patch:
        patch.setattr(systemd_apply, "_reload_if", lambda changed, result: None)
        stale = apply_plan(plan_tick(inp))
    assert [o.result for o in stale.outcomes] == ["failed"]  # the old unit ran: old spec hash

    report = converge(inp)

    assert [(o.action.agent, o.result) for o in report.outcomes] == [("orchestrator", "done")]
    assert plan_tick(inp).plan.actions == ()


@pytest.mark.systemd
def test_a_server_started_outside_its_unit_is_used_and_reported(
    systemd_user: SystemdUser, tmux_socket: SocketKey, repo: Path, tmp_path: Path
) -> None:
    assert tmux_socket.name
    subprocess.run(["tmux", "-L", tmux_socket.name, "new-session", "-d", "-s", "foreign", *SLEEP.split()], check=True)

    report = converge(inputs(repo, tmp_path / "state"))

    assert sorted(live(tmux_socket)) == sorted([*CORE, "foreign"])
    assert any("was not started by" in p for p in report.problems), report.problems
    assert show(systemd_user, server_unit(tmux_socket), "ActiveState")["ActiveState"] == "inactive"
    for name in CORE:  # written and enabled for the next boot, not started now
        state = show(systemd_user, units.agent_unit_name("demo", name), "UnitFileState")
        assert state["UnitFileState"] == "enabled"


@pytest.mark.systemd
def test_a_core_agent_turned_ephemeral_leaves_its_unit(
    systemd_user: SystemdUser, tmux_socket: SocketKey, tmp_path: Path
) -> None:
    repo = core_repo(tmp_path, tmux_socket, "  - name: worker\n    role: coder\n    lifecycle: core\n")
    inp = inputs(repo, tmp_path / "state")
    converge(inp)
    unit = systemd_user.unit_dir / units.agent_unit_name("demo", "worker")
    assert unit.exists()
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace(
        "  - name: worker\n    role: coder\n    lifecycle: core\n",
        "  - name: worker\n    role: coder\n    lifecycle: ephemeral\n    model: stub-small\n",
    ))

    report = converge(inp)

    assert [(o.action.agent, o.result, o.detail) for o in report.outcomes] == [("worker", "done", "")]
    assert not unit.exists()
    assert live(tmux_socket)["worker"].marks.model == "stub-small"


def test_tmux_only_without_a_manager_writes_no_unit(
    tmux_socket: SocketKey, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    tick = plan_tick(inputs(repo, tmp_path / "state"))
    report = apply_plan(tick)

    assert not tick.observed.systemd[None].available
    assert [(o.result, o.detail) for o in report.outcomes] == [("done", "")] * 3
    assert not (tmp_path / "config").exists() and report.problems == ()


@pytest.mark.systemd
def test_only_tests_that_ask_for_systemd_user_can_reach_the_manager(systemd_user_manager: SystemdUser) -> None:
    """The session's manager runs, but this test did not ask for `systemd_user`."""
    assert systemd_user_manager.systemctl("is-system-running", check=False).stdout.strip() in {"running", "degraded"}
    assert not observe_units().available
    assert os.environ.get("XDG_CONFIG_HOME") != str(systemd_user_manager.config_home)


HOSTILE_ARGS = ("a b", "$(id)", "${HOME}", "100%", "%h", ";", "x;", '"q"', "it's", "back\\slash\\", "é✓😀", "\t", "")


def process_facts(socket: SocketKey, agent: str) -> tuple[list[str], str, dict[str, str], tuple[str, ...]]:
    """What runs in the agent's pane: argv, working directory, FLEET_ environment, marks."""
    session = live(socket)[agent]
    assert session.pane_pid is not None
    proc = Path(f"/proc/{session.pane_pid}")
    # Until the pane's child has exec'd, /proc shows the tmux server's own argv (a fork):
    # seen under load. Wait for the agent's program, then read everything.
    assert retry_until(lambda: not proc.joinpath("cmdline").read_bytes().startswith(b"tmux\0"), 10, 0.01)
    argv = proc.joinpath("cmdline").read_bytes().decode().split("\0")[:-1]
    env = dict(item.split("=", 1) for item in proc.joinpath("environ").read_bytes().decode().split("\0") if "=" in item)
    marks = session.marks
    return argv, str((proc / "cwd").readlink()), {k: v for k, v in env.items() if k.startswith("FLEET_")}, (
        marks.tenant, marks.agent, marks.host, marks.spec_hash, marks.model)


@pytest.mark.systemd
def test_the_unit_runs_exactly_what_the_direct_path_runs(
    systemd_user: SystemdUser, tmux_socket: SocketKey, other_socket: SocketKey, tmp_path: Path
) -> None:
    workdir = tmp_path / "w d#1 %h $x"
    workdir.mkdir()
    argv = ("/bin/sh", "-c", "sleep 600", *HOSTILE_ARGS, "two\nlines\n")  # a newline rides as \x0a
    env = (("FLEET_AGENT", "core-x"), ("FLEET_NOTE", 'a "b" $(c) %d ;'), ("FLEET_TENANT", "demo"))

    def launch(socket: SocketKey) -> LaunchSpec:
        return LaunchSpec("demo", "core-x", "demo", socket, argv, env, str(workdir), "m-1", "feedc0de")

    group = systemd_apply.GroupUnits(tmux_socket, "demo", systemd_user.unit_dir, frozenset({"core-x"}), manager=True)
    result = systemd_apply.apply_units(group, [], [launch(tmux_socket)])
    assert (result.errors, result.problems, result.spawn_directly) == ([], [], [])
    tmux.spawn_sessions([launch(other_socket)])

    through_unit = process_facts(tmux_socket, "core-x")
    direct = process_facts(other_socket, "core-x")
    assert through_unit == direct
    assert through_unit[0] == list(argv) and through_unit[1] == str(workdir)
    assert through_unit[2]["FLEET_NOTE"] == 'a "b" $(c) %d ;'
    assert through_unit[3] == ("demo", "core-x", "demo", "feedc0de", "m-1")


@pytest.mark.systemd
def test_a_core_agent_whose_values_no_unit_can_carry_runs_without_one(
    systemd_user: SystemdUser, tmux_socket: SocketKey
) -> None:
    env = (("FLEET_STATE_DIR", "/srv/state\0with a NUL"),)
    launch = LaunchSpec("demo", "core-y", "demo", tmux_socket, ("/bin/sleep", "600"), env, None, "m", "h1")
    group = systemd_apply.GroupUnits(tmux_socket, "demo", systemd_user.unit_dir, frozenset({"core-y"}), manager=True)

    result = systemd_apply.apply_units(group, [], [launch])

    assert result.spawn_directly == [launch] and not result.blocked
    assert len(result.problems) == 1 and "NUL" in result.problems[0]
    assert not (systemd_user.unit_dir / units.agent_unit_name("demo", "core-y")).exists()
    assert show(systemd_user, server_unit(tmux_socket), "ActiveState")["ActiveState"] == "active"


def test_a_stop_whose_marks_name_no_unit_is_left_alone(tmp_path: Path) -> None:
    """Marks are tmux options anyone can set: `../x` must not become a path or a crash."""
    socket = SocketKey(None, "s")
    (tmp_path / "fleet-demo.a.service").write_text("[Unit]\n")  # not ours: kept
    group = systemd_apply.GroupUnits(socket, "../x", tmp_path, frozenset(), manager=False)

    result = systemd_apply.apply_units(group, ["a", "b/../../c"], [])

    assert (result.problems, result.errors, result.blocked) == ([], [], "")
    assert [p.name for p in tmp_path.iterdir()] == ["fleet-demo.a.service"]
