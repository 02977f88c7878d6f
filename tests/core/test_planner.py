"""The pure planner, case by case: each rule of ARCHITECTURE.md's plan step."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from reconciler.core.plan import ActionKind, Plan
from reconciler.core.planner import PlanOptions, plan
from reconciler.model.history import RestartRecord
from reconciler.model.observed import Marks, ObservedFleet, SocketKey, SocketSnapshot
from tests.core.factories import NOW, beat, desired, foreign, healthy, nothing_running, observed, running


def kinds(p: Plan) -> list[tuple[str, str, str]]:
    return [(a.kind.value, a.tenant, a.agent) for a in p.actions]


def test_fresh_host_spawns_every_agent_of_this_host_only() -> None:
    fleet = desired("multi-tenant", "w-jarvis")
    p = plan(fleet, nothing_running(fleet), NOW)
    assert kinds(p) == [
        ("spawn", "friday", "researcher"),
        ("spawn", "jarvis", "enhancer"),
        ("spawn", "jarvis", "orchestrator"),
    ]
    assert all(a.host == "w-jarvis" for a in p.actions)
    assert p.actions[0].launch is not None and p.actions[0].launch.socket == SocketKey(None, "fleet-friday")
    assert p.actions[0].reason.rule == "absent"


def test_converged_host_has_an_empty_plan() -> None:
    fleet = desired("coding", "build-1")
    p = plan(fleet, healthy(fleet), NOW)
    assert p.actions == () and p.conflicts == () and p.holds == () and not p.has_changes


def test_unknown_host_is_explained() -> None:
    fleet = desired("minimal", "elsewhere")
    p = plan(fleet, nothing_running(fleet), NOW)
    assert p.actions == ()
    assert any("no agent is assigned to host 'elsewhere'" in n and "demo" in n for n in p.notes)


def test_foreign_session_is_a_conflict_never_an_action() -> None:
    fleet = desired("minimal", "demo")
    orch = fleet.tenants["demo"].on_host("demo")["orchestrator"]
    enh = fleet.tenants["demo"].on_host("demo")["enhancer"]
    obs = observed({orch.launch.socket: [foreign("orchestrator"), running(enh)]}, [beat(enh)])
    p = plan(fleet, obs, NOW)
    assert p.actions == ()
    assert [(c.tenant, c.agent) for c in p.conflicts] == [("demo", "orchestrator")]
    assert "no @fleet-tenant/@fleet-agent marks" in p.conflicts[0].message


def test_session_marked_for_another_tenant_is_a_conflict() -> None:
    fleet = desired("minimal", "demo")
    orch = fleet.tenants["demo"].on_host("demo")["orchestrator"]
    enh = fleet.tenants["demo"].on_host("demo")["enhancer"]
    other = foreign("orchestrator", Marks("someone", "orchestrator", "demo", "x", "m"))
    p = plan(fleet, observed({orch.launch.socket: [other, running(enh)]}, [beat(enh)]), NOW)
    assert [c.agent for c in p.conflicts] == ["orchestrator"]
    assert "tenant 'someone'" in p.conflicts[0].message
    # and the other tenant's session is not stopped as an orphan from a tenant that vanished
    assert p.holds[0].tenant == "someone" and p.actions == ()


def test_spec_hash_change_restarts_with_model_drift() -> None:
    fleet = desired("minimal", "demo")
    agents = fleet.tenants["demo"].on_host("demo")
    orch, enh = agents["orchestrator"], agents["enhancer"]
    obs = observed({orch.launch.socket: [running(orch, spec_hash="0ld", model="stub-small"), running(enh)]},
                   [beat(orch), beat(enh)])
    p = plan(fleet, obs, NOW)
    assert kinds(p) == [("restart", "demo", "orchestrator")]
    action = p.actions[0]
    assert action.reason.rule == "spec-changed"
    assert "stub-small -> stub-large" in action.reason.message
    assert [(d.field, d.desired, d.observed) for d in action.drift] == [("model", "stub-large", "stub-small")]


def test_command_override_changes_the_hash() -> None:
    plain = desired("minimal", "demo")
    sleepy = desired("minimal", "demo", command_override="sleep 600")
    a = plain.tenants["demo"].agents[0]
    b = sleepy.tenants["demo"].agents[0]
    assert b.launch.argv == ("sleep", "600")
    assert a.launch.spec_hash != b.launch.spec_hash


def test_dead_pane_restarts() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    p = plan(fleet, observed({orch.launch.socket: [running(orch, dead=True), running(enh)]}, [beat(enh)]), NOW)
    assert kinds(p) == [("restart", "demo", orch.name)]
    assert p.actions[0].reason.rule == "health-dead"


def test_the_agents_pane_gone_beside_a_split_restarts_saying_so() -> None:
    """tmux lists the session by a person's split only: the marked pane is gone (parse.py)."""
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    gone = replace(running(orch), pane_id="%7", pane_missing=True, pane_dead=True, pane_pid=None)
    p = plan(fleet, observed({orch.launch.socket: [gone, running(enh)]}, [beat(orch), beat(enh)]), NOW)
    assert kinds(p) == [("restart", "demo", orch.name)]
    assert p.actions[0].reason.rule == "health-dead"
    assert "the agent's pane %7 is gone from its session" in p.actions[0].reason.message


def test_stale_heartbeat_restarts_after_grace_only() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    sock = orch.launch.socket
    stale = beat(orch, age=timedelta(minutes=10))
    old = plan(fleet, observed({sock: [running(orch), running(enh)]}, [stale, beat(enh)]), NOW)
    assert kinds(old) == [("restart", "demo", orch.name)] and old.actions[0].reason.rule == "health-stale"
    young = running(orch, created=NOW - timedelta(seconds=10))
    assert plan(fleet, observed({sock: [young, running(enh)]}, [beat(enh)]), NOW).actions == ()


def test_silent_agent_restarts_and_an_earlier_runs_heartbeat_does_not_count() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    sock = orch.launch.socket
    session = running(orch, created=NOW - timedelta(minutes=5))
    before_start = beat(orch, age=timedelta(minutes=6))
    p = plan(fleet, observed({sock: [session, running(enh)]}, [before_start, beat(enh)]), NOW)
    assert kinds(p) == [("restart", "demo", orch.name)] and p.actions[0].reason.rule == "health-silent"


def test_future_heartbeat_is_not_trusted() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    future = beat(orch, age=-timedelta(hours=1))
    p = plan(fleet, observed({orch.launch.socket: [running(orch), running(enh)]}, [future, beat(enh)]), NOW)
    assert kinds(p) == [("restart", "demo", orch.name)]
    assert "in the future" in p.actions[0].reason.message


def test_backoff_defers_health_restarts_but_not_spec_changes() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    obs = observed({orch.launch.socket: [running(orch, dead=True), running(enh)]}, [beat(enh)])
    recent = {("demo", orch.name): RestartRecord(attempts=2, last_at=NOW - timedelta(seconds=5))}
    waiting = plan(fleet, obs, NOW, PlanOptions(history=recent))
    assert waiting.actions == ()
    assert waiting.waits[0].until == NOW + timedelta(seconds=15) and not waiting.waits[0].stalled
    later = plan(fleet, obs, NOW + timedelta(seconds=16), PlanOptions(history=recent))
    assert kinds(later) == [("restart", "demo", orch.name)]
    stalled = {("demo", orch.name): RestartRecord(attempts=6, last_at=NOW)}
    assert plan(fleet, obs, NOW, PlanOptions(history=stalled)).waits[0].stalled
    changed = observed({orch.launch.socket: [running(orch, spec_hash="x"), running(enh)]}, [beat(enh), beat(orch)])
    assert kinds(plan(fleet, changed, NOW, PlanOptions(history=recent))) == [("restart", "demo", orch.name)]


def test_removed_agent_is_stopped() -> None:
    fleet = desired("coding", "build-1")
    obs = healthy(fleet)
    sock = next(iter(obs.sockets))
    extra = replace(running(fleet.tenants["acme"].agents[2]), name="coder9-9",
                    marks=Marks("acme", "coder9-9", "build-1", "h", "sonnet"))
    snap = obs.sockets[sock]
    obs2 = replace(obs, sockets={sock: replace(snap, sessions={**snap.sessions, "coder9-9": extra})})
    p = plan(fleet, obs2, NOW)
    assert kinds(p) == [("stop", "acme", "coder9-9")]
    assert "no longer in tenants/acme/roster.yaml" in p.actions[0].reason.message


def test_mass_stop_is_held_unless_allowed() -> None:
    fleet = desired("minimal", "demo")
    sock = fleet.tenants["demo"].socket
    orch, enh = fleet.tenants["demo"].agents
    gone = [replace(running(orch), name=f"old{i}", marks=Marks("demo", f"old{i}", "demo", "h", "m")) for i in range(3)]
    obs = observed({sock: [running(orch), running(enh), *gone]}, [beat(orch), beat(enh)])
    held = plan(fleet, obs, NOW)
    assert held.actions == ()
    assert held.holds[0].rule == "blast-radius" and len(held.holds[0].actions) == 3
    assert "3 of its 5 running agents" in held.holds[0].message and "--allow-mass-stop" in held.holds[0].message
    allowed = plan(fleet, obs, NOW, PlanOptions(allow_mass_stop=True))
    assert kinds(allowed) == [("stop", "demo", "old0"), ("stop", "demo", "old1"), ("stop", "demo", "old2")]


def test_other_hosts_sessions_and_frozen_tenants_are_left_alone() -> None:
    fleet = desired("multi-tenant", "w-jarvis", only={"jarvis"})
    assert fleet.frozen == {"friday"}
    jarvis = fleet.tenants["jarvis"]
    here = jarvis.on_host("w-jarvis")
    coder_elsewhere = replace(running(jarvis.agents[2]), marks=Marks("jarvis", "coder0-0", "dragon-lin", "h", "m"))
    friday_session = foreign("orchestrator-f", Marks("friday", "orchestrator", "w-jarvis", "h", "m"))
    obs = observed({jarvis.socket: [running(a) for a in here.values()] + [coder_elsewhere, friday_session]},
                   [beat(a) for a in here.values()])
    p = plan(fleet, obs, NOW)
    assert p.actions == () and p.holds == ()


def test_moved_agent_is_stopped_with_the_new_host_named() -> None:
    fleet = desired("multi-tenant", "w-jarvis")
    jarvis = fleet.tenants["jarvis"]
    here = list(jarvis.on_host("w-jarvis").values())
    coder = replace(running(jarvis.agents[2]), marks=Marks("jarvis", "coder0-0", "w-jarvis", "h", "m"))
    friday = fleet.tenants["friday"]
    obs = observed({jarvis.socket: [*(running(a) for a in here), coder],
                    friday.socket: [running(a) for a in friday.on_host("w-jarvis").values()]},
                   [beat(a) for a in here] + [beat(a) for a in friday.on_host("w-jarvis").values()])
    p = plan(fleet, obs, NOW)
    assert kinds(p) == [("stop", "jarvis", "coder0-0")]
    assert "now runs on host 'dragon-lin'" in p.actions[0].reason.message


def test_unreadable_socket_skips_the_tenant_with_a_note() -> None:
    fleet = desired("minimal", "demo")
    sock = fleet.tenants["demo"].socket
    obs = ObservedFleet(taken_at=NOW, sockets={sock: SocketSnapshot(sock, False, {}, error="permission denied")})
    p = plan(fleet, obs, NOW)
    assert p.actions == ()
    assert "permission denied" in p.notes[0]


def test_server_not_running_means_spawn_everything() -> None:
    fleet = desired("minimal", "demo")
    sock = fleet.tenants["demo"].socket
    obs = ObservedFleet(taken_at=NOW, sockets={sock: SocketSnapshot(sock, False, {})})
    assert [a.kind for a in plan(fleet, obs, NOW).actions] == [ActionKind.SPAWN, ActionKind.SPAWN]


def test_plan_is_deterministic_and_sorted() -> None:
    fleet = desired("coding", "build-1")
    first, second = plan(fleet, nothing_running(fleet), NOW), plan(fleet, nothing_running(fleet), NOW)
    assert first == second and len(first.actions) == 6
    assert [a.agent for a in first.actions] == sorted(a.agent for a in first.actions)
