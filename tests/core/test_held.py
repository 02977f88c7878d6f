"""Held, not looped (core/held.py, core/health.py, core/planner.py): pure rules, no runtime.

Several Claude agents share one login: their health restarts go one at a time and are
paced; a held heartbeat or a known dialog on an unhealthy agent's screen is `waiting`,
never restarted; a missing binary is the agent's own `missing` condition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.core.desired import DesiredAgent, DesiredFleet, build_desired
from reconciler.core.health import Health, Verdict
from reconciler.core.held import LOGIN_PACE_S, dialog_verdict, login_of, match_dialog
from reconciler.core.plan import ActionKind, Plan
from reconciler.core.planner import PlanOptions, plan, unhealthy_panes
from reconciler.core.ps import ps_rows, table_cells
from reconciler.core.status import agent_conditions
from reconciler.model.history import RestartRecord
from reconciler.model.observed import (
    Heartbeat,
    Marks,
    ObservedFleet,
    ObservedSession,
    Resolved,
    SocketKey,
    SocketSnapshot,
)
from reconciler.spec.load import load_repo
from tests.spec.support import build_repo

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: held
defaults:
  socket_name: held
  runtime: claude
  model: opus
  heartbeat_timeout: 90s
  startup_grace: 30s
runtimes:
  claude:
    adapter: claude
    ladder: [opus]
  stub:
    command: "fleet-stub-agent --model {model}"
    ladder: [stub-large]
"""
ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: demo
host: h
agents:
  - {name: a1, role: coder}
  - {name: a2, role: coder}
  - {name: a3, role: coder}
  - {name: other, role: coder, env: {CLAUDE_CONFIG_DIR: /srv/other-login}}
  - {name: s1, role: orchestrator, runtime: stub}
  - {name: s2, role: enhancer, runtime: stub}
"""
T = "demo"
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
STARTED = NOW - timedelta(hours=1)


@pytest.fixture
def fleet(tmp_path: Path) -> DesiredFleet:
    root = build_repo(tmp_path, {"fleet.yaml": FLEET, "tenants/demo/roster.yaml": ROSTER})
    return build_desired(load_repo(root), host="h", state_dir="/state")


def agents(fleet: DesiredFleet) -> dict[str, DesiredAgent]:
    return fleet.tenants[T].on_host("h")


def session(agent: DesiredAgent, *, dead: bool = False, pid: int = 100) -> ObservedSession:
    marks = Marks(T, agent.name, "h", agent.launch.spec_hash, agent.model, "/state")
    return ObservedSession(agent.name, "$1", STARTED, None, 0, pid, dead, 1 if dead else None, "claude", False, marks)


def observed(fleet: DesiredFleet, sessions: dict[str, ObservedSession], beats: dict[str, Heartbeat] | None = None,
             screens: dict[str, str] | None = None, missing: frozenset[str] = frozenset()) -> ObservedFleet:
    key = SocketKey(None, "held")
    return ObservedFleet(NOW, {key: SocketSnapshot(key, True, sessions)},
                         heartbeats={(T, n): b for n, b in (beats or {}).items()},
                         resolved=Resolved(missing=missing),
                         screens={(T, n): s for n, s in (screens or {}).items()})


def restarted(result: Plan) -> list[str]:
    return sorted(a.agent for a in result.actions if a.kind is ActionKind.RESTART)


def test_logins_are_the_runtime_config_dir_per_user(fleet: DesiredFleet) -> None:
    found = {name: login_of(a.launch) for name, a in agents(fleet).items()}
    assert found["a1"] == found["a2"] == found["a3"] == "claude ~/.claude of the user running fleet"
    assert found["other"] == "claude /srv/other-login of the user running fleet"
    assert found["s1"] is None and found["s2"] is None, "plain commands have no login the fleet knows"


def test_one_health_restart_at_a_time_per_login(fleet: DesiredFleet) -> None:
    everyone = {name: session(a, dead=True) for name, a in agents(fleet).items()}
    result = plan(fleet, observed(fleet, everyone), NOW)
    # a1 takes the login's one restart; a2, a3 wait; `other` has its own login; stubs have none.
    assert restarted(result) == ["a1", "other", "s1", "s2"]
    waits = {w.agent: w for w in result.waits}
    assert sorted(waits) == ["a2", "a3"]
    assert "a1 restarts first on login claude ~/.claude" in waits["a2"].message
    assert not waits["a2"].stalled and waits["a2"].until == NOW + timedelta(seconds=LOGIN_PACE_S)


class PaceCase(NamedTuple):
    test_id: str
    a1_restarted_s_ago: int
    restarts: list[str]


@pytest.mark.parametrize("case", [
    PaceCase("within-the-pace", 10, []),
    PaceCase("after-the-pace", LOGIN_PACE_S + 1, ["a2"]),
], ids=lambda c: c.test_id)
def test_restarts_of_one_login_are_paced_by_the_history(fleet: DesiredFleet, case: PaceCase) -> None:
    """a1 was restarted a moment ago and is healthy again; a2 and a3 are dead."""
    mine = agents(fleet)
    sessions = {n: session(mine[n], dead=n != "a1") for n in ("a1", "a2", "a3")}
    beat = Heartbeat(T, "h", "a1", 1, NOW, "idle", "opus", pid=4242, event="SessionStart", event_ts=NOW,
                     lineage=(4242, 100))
    history = {(T, "a1"): RestartRecord(1, NOW - timedelta(seconds=case.a1_restarted_s_ago), "dead")}
    result = plan(fleet, observed(fleet, sessions, {"a1": beat}), NOW, PlanOptions(history=history))
    assert restarted(result) == case.restarts
    if not case.restarts:
        assert {w.agent for w in result.waits} == {"a2", "a3"}
        assert all("restarts of one login are paced" in w.message for w in result.waits)


def held_beat(name: str, *, pid_alive: bool = True) -> Heartbeat:
    return Heartbeat(T, "h", name, 4, NOW - timedelta(minutes=10), "waiting", "opus", pid=4242,
                     event="StopFailure", event_ts=NOW - timedelta(minutes=10),
                     lineage=(4242, 100, 1) if pid_alive else (), held="auth",
                     reason="authentication_failed: Invalid API key · Fix external API key")


def test_a_held_agent_waits_with_its_reason_and_is_never_restarted(fleet: DesiredFleet) -> None:
    mine = agents(fleet)
    obs = observed(fleet, {"a1": session(mine["a1"])}, {"a1": held_beat("a1")})
    for _ in range(3):  # tick after tick: no restart, no backoff, no Stalled
        result = plan(fleet, obs, NOW)
        assert restarted(result) == [] and result.waits == ()
    verdict = next(h for h in result.health if h.agent == "a1")
    assert (verdict.health, verdict.reason) == ("waiting", "auth")
    assert "Invalid API key" in verdict.message and "not restarted" in verdict.message
    row = next(r for r in ps_rows(fleet, obs, result, NOW) if r.agent == "a1")
    assert row.reason == "auth" and "waiting (auth)" in table_cells(row)
    health, conditions = agent_conditions(mine["a1"], result, obs, {}, {})
    by_type = {c.type: c for c in conditions}
    assert health == "waiting" and by_type["Healthy"].reason == "AuthFailed"
    assert by_type["Ready"].status == "False" and by_type["Stalled"].status == "False"


def test_a_held_agent_whose_runtime_is_gone_is_restarted_within_the_login_rule(fleet: DesiredFleet) -> None:
    mine = agents(fleet)
    obs = observed(fleet, {"a1": session(mine["a1"]), "a2": session(mine["a2"])},
                   {"a1": held_beat("a1", pid_alive=False), "a2": held_beat("a2", pid_alive=False)})
    result = plan(fleet, obs, NOW)
    assert restarted(result) == ["a1"] and [w.agent for w in result.waits] == ["a2"]
    assert "held (auth)" in next(h for h in result.health if h.agent == "a1").message


TRUST = """ Accessing workspace:
 /work/src
 Quick safety check: Is this a project you created or one you trust? (Like your own code, a well-known open
 source project, or work from your team). If not, take a moment to review what's in this folder first.
 ❯ No, exit
   Yes, I trust this folder
"""


def test_a_dialog_on_an_unhealthy_agents_screen_is_its_reason(fleet: DesiredFleet) -> None:
    mine = agents(fleet)
    sessions = {"a1": session(mine["a1"]), "a2": session(mine["a2"])}
    assert unhealthy_panes(fleet, observed(fleet, sessions), NOW) == [
        (T, "a1", SocketKey(None, "held")), (T, "a2", SocketKey(None, "held"))], "silent past grace"
    obs = observed(fleet, sessions, screens={"a1": TRUST, "a2": "❯ \n some other screen"})
    result = plan(fleet, obs, NOW)
    verdicts = {h.agent: h for h in result.health}
    assert (verdicts["a1"].health, verdicts["a1"].reason) == ("waiting", "dialog-trust")
    assert "trust_workdir" in verdicts["a1"].message
    assert verdicts["a2"].health == "silent", "an unknown screen adds nothing"
    assert restarted(result) == ["a2"], "the agent on a dialog is not restarted"


def test_a_healthy_fleet_reads_no_screen(fleet: DesiredFleet) -> None:
    mine = agents(fleet)
    names = ("a1", "a2", "other")
    beats = {n: Heartbeat(T, "h", n, 1, NOW - timedelta(seconds=5), "idle", "opus", pid=4242, event="statusline",
                          event_ts=NOW, lineage=(4242, 100)) for n in names}
    assert unhealthy_panes(fleet, observed(fleet, {n: session(mine[n]) for n in names}, beats), NOW) == []
    young = {n: session(mine[n]) for n in names}
    young = {n: ObservedSession(s.name, s.session_id, NOW, None, 0, 100, False, None, "claude", False, s.marks)
             for n, s in young.items()}
    assert unhealthy_panes(fleet, observed(fleet, young), NOW) == [], "starting within grace: not yet unhealthy"


def test_the_screen_only_adds_a_reason_to_an_unhealthy_verdict() -> None:
    healthy = Verdict(Health.HEALTHY, "heartbeat 2s ago")
    assert dialog_verdict(healthy, "claude", TRUST) is healthy
    assert dialog_verdict(Verdict(Health.DEAD, "pane exited"), "claude", TRUST).health is Health.DEAD
    assert dialog_verdict(Verdict(Health.SILENT, "x"), None, TRUST).health is Health.SILENT, "plain commands: no"
    codex = "  Trust this folder? Codex can read, edit, and run files here\n› 1. Trust and continue"
    assert match_dialog("codex", codex) is not None and match_dialog("claude", codex) is None


def test_a_missing_binary_is_the_agents_condition(fleet: DesiredFleet) -> None:
    mine = agents(fleet)
    obs = observed(fleet, {}, missing=frozenset({"claude"}))
    for _ in range(2):
        result = plan(fleet, obs, NOW)
        assert {a.agent for a in result.actions} == {"s1", "s2"}, "never started, so never looped"
    verdict = next(h for h in result.health if h.agent == "a1")
    assert (verdict.health, verdict.reason) == ("missing", "missing-binary")
    assert "claude is not found for the user running fleet" in verdict.message and "npm install" in verdict.message
    assert not any("a1" in note for note in result.notes), "the agent's condition, not a tenant note"
    row = next(r for r in ps_rows(fleet, obs, result, NOW) if r.agent == "a1")
    assert row.health == "missing" and "missing (missing-binary)" in table_cells(row)
    _, conditions = agent_conditions(mine["a1"], result, obs, {}, {})
    ready = conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "MissingBinary")
    assert "never looped" in ready.message
