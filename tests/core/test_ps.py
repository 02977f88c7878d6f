"""`ps_rows` over hand-built observations: one table-driven case per column rule and drift
flag, plus snapshots of a whole fleet as JSON rows and as the rendered table.

Observations come from tests/core/factories.py (plain data standing in for a recorded
snapshot); the plan is the real planner's, so health is what `fleet reconcile` decides.
Update the snapshots deliberately with `pytest --snapshot-update` and read the diff.
"""

from __future__ import annotations

import doctest
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, NamedTuple

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from reconciler.core import ps
from reconciler.core.desired import DesiredFleet
from reconciler.core.planner import plan
from reconciler.core.ps import (
    DriftFlag,
    PsRow,
    SystemdState,
    TmuxState,
    ps_notes,
    ps_rows,
    render_table,
    row_json,
    unit_name,
)
from reconciler.model.observed import (
    Marks,
    ObservedFleet,
    ObservedSession,
    SocketSnapshot,
    SystemdSnapshot,
    UnitState,
)
from tests.core.factories import NOW, beat, desired, foreign, healthy, running

TMUX_ONLY = SystemdSnapshot(available=False, reason="systemctl not found on PATH; running tmux-only (install systemd)")


def unit(tenant: str, agent: str, *, active: bool = True, enabled: bool = True) -> UnitState:
    return UnitState(unit_name(tenant, agent), "loaded", "active" if active else "inactive",
                     "exited" if active else "dead", "enabled" if enabled else "disabled")


def with_systemd(obs: ObservedFleet, *units: UnitState) -> ObservedFleet:
    """The reconciler's own user manager answered, listing `units`."""
    return replace(obs, systemd={None: SystemdSnapshot(available=True, units={u.name: u for u in units})})


def with_session(fleet: DesiredFleet, obs: ObservedFleet, session: ObservedSession | None, name: str) -> ObservedFleet:
    """`obs` with the session called `name` on the first tenant's socket replaced (or removed)."""
    key = next(iter(fleet.tenants.values())).socket
    sessions = dict(obs.sockets[key].sessions)
    sessions.pop(name, None)
    if session is not None:
        sessions[session.name] = session
    return replace(obs, sockets={**obs.sockets, key: replace(obs.sockets[key], sessions=sessions)})


def rows_for(fleet: DesiredFleet, obs: ObservedFleet) -> dict[str, PsRow]:
    return {f"{r.tenant}/{r.agent}": r for r in ps_rows(fleet, obs, plan(fleet, obs, NOW), NOW)}


MINIMAL = desired("minimal", "demo")
ORCH = MINIMAL.tenants["demo"].on_host("demo")["orchestrator"]
ENH = MINIMAL.tenants["demo"].on_host("demo")["enhancer"]
CODING = desired("coding", "build-1")
CODER = CODING.tenants["acme"].on_host("build-1")["coder0-0"]


class Case(NamedTuple):
    test_id: str
    fleet: DesiredFleet
    build: Callable[[], ObservedFleet]
    row: str
    expect: dict[str, Any]


CASES = [
    Case("healthy-tmux-only", MINIMAL, lambda: replace(healthy(MINIMAL), systemd={None: TMUX_ONLY}), "demo/orchestrator",
         {"tmux": TmuxState.RUNNING, "systemd": SystemdState.TMUX_ONLY, "pid": 4242, "health": "healthy",
          "model": "stub-large", "model_source": "heartbeat", "heartbeat_age_s": 5, "heartbeat_state": "idle",
          "lifecycle": "core", "planned": None, "drift": ()}),
    Case("unit-active-and-enabled", MINIMAL, lambda: with_systemd(healthy(MINIMAL), unit("demo", "orchestrator")),
         "demo/orchestrator",
         {"systemd": SystemdState.ACTIVE, "unit": "fleet-demo.orchestrator.service", "unit_enabled": True, "drift": ()}),
    Case("core-session-without-unit", MINIMAL, lambda: with_systemd(healthy(MINIMAL)), "demo/enhancer",
         {"systemd": SystemdState.NONE, "unit": None,
          "drift": (DriftFlag.SESSION_WITHOUT_UNIT, DriftFlag.NOT_BOOT_ENABLED)}),
    Case("core-unit-not-enabled", MINIMAL,
         lambda: with_systemd(healthy(MINIMAL), unit("demo", "enhancer", enabled=False)), "demo/enhancer",
         {"systemd": SystemdState.ACTIVE, "unit_enabled": False, "drift": (DriftFlag.NOT_BOOT_ENABLED,)}),
    Case("inactive-enabled-unit-is-not-drift", MINIMAL,
         lambda: with_systemd(healthy(MINIMAL), unit("demo", "enhancer", active=False)), "demo/enhancer",
         {"systemd": SystemdState.INACTIVE, "unit_enabled": True, "drift": ()}),
    Case("unit-active-session-missing", MINIMAL,
         lambda: with_session(MINIMAL, with_systemd(healthy(MINIMAL), unit("demo", "enhancer")), None, "enhancer"),
         "demo/enhancer",
         {"tmux": TmuxState.ABSENT, "pid": None, "health": "absent", "planned": "spawn", "model": None,
          "drift": (DriftFlag.UNIT_WITHOUT_SESSION,)}),
    Case("tmux-only-never-flags-units", MINIMAL, lambda: with_session(MINIMAL, healthy(MINIMAL), None, "enhancer"),
         "demo/enhancer", {"systemd": SystemdState.TMUX_ONLY, "tmux": TmuxState.ABSENT, "drift": ()}),
    Case("ephemeral-needs-no-unit", CODING, lambda: with_systemd(healthy(CODING)), "acme/coder0-0",
         {"lifecycle": "ephemeral", "systemd": SystemdState.NONE, "drift": ()}),
    Case("foreign-session", MINIMAL, lambda: with_session(MINIMAL, healthy(MINIMAL), foreign("enhancer"), "enhancer"),
         "demo/enhancer",
         {"tmux": TmuxState.FOREIGN, "health": None, "planned": None, "model": None, "pid": 999, "attached": 1,
          "drift": (DriftFlag.FOREIGN_SESSION,)}),
    Case("session-marked-for-another-agent-is-foreign", MINIMAL,
         lambda: with_session(MINIMAL, healthy(MINIMAL),
                              foreign("enhancer", Marks("demo", "orchestrator", "demo", "x", "stub-large")), "enhancer"),
         "demo/enhancer", {"tmux": TmuxState.FOREIGN, "drift": (DriftFlag.FOREIGN_SESSION,)}),
    Case("model-drift-from-heartbeat", MINIMAL,
         lambda: replace(healthy(MINIMAL), heartbeats={("demo", "orchestrator"): replace(beat(ORCH), model="stub-small"),
                                                       ("demo", "enhancer"): beat(ENH)}),
         "demo/orchestrator",
         {"model": "stub-small", "model_source": "heartbeat", "desired_model": "stub-large", "health": "healthy",
          "drift": (DriftFlag.MODEL,)}),
    Case("spec-changed-restart-pending", MINIMAL,
         lambda: with_session(
             MINIMAL,
             replace(healthy(MINIMAL), heartbeats={("demo", "enhancer"): replace(beat(ENH), model="stub-small")}),
             running(ENH, spec_hash="0123456789abcdef", model="stub-small"), "enhancer"),
         "demo/enhancer",
         {"health": None, "planned": "restart", "drift": (DriftFlag.SPEC_HASH, DriftFlag.MODEL)}),
    Case("dead-pane", MINIMAL, lambda: with_session(MINIMAL, healthy(MINIMAL), running(ENH, dead=True), "enhancer"),
         "demo/enhancer", {"tmux": TmuxState.DEAD, "pid": None, "health": "dead", "planned": "restart"}),
    Case("heartbeat-of-an-earlier-run-does-not-name-the-model", MINIMAL,
         lambda: with_session(
             MINIMAL,
             replace(healthy(MINIMAL), heartbeats={("demo", "orchestrator"): replace(beat(ORCH), model="old"),
                                                   ("demo", "enhancer"): beat(ENH)}),
             running(ORCH, created=NOW - timedelta(seconds=2)), "orchestrator"),
         "demo/orchestrator",
         {"model": "stub-large", "model_source": "mark", "heartbeat_age_s": 5, "health": "starting", "drift": ()}),
    Case("idle-from-session-activity", MINIMAL,
         lambda: with_session(MINIMAL, healthy(MINIMAL),
                              replace(running(ORCH), activity=NOW - timedelta(minutes=3)), "orchestrator"),
         "demo/orchestrator", {"idle_s": 180}),
    Case("socket-unreadable", MINIMAL,
         lambda: replace(healthy(MINIMAL), sockets={
             k: SocketSnapshot(k, False, error="tmux x: access not allowed") for k in MINIMAL.sockets}),
         "demo/orchestrator", {"tmux": TmuxState.UNKNOWN, "health": None, "pid": None}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_row(case: Case) -> None:
    row = rows_for(case.fleet, case.build())[case.row]
    got = {key: getattr(row, key) for key in case.expect}
    assert got == case.expect


def test_a_fleet_session_the_roster_no_longer_names_gets_its_own_row() -> None:
    retired = replace(running(ENH), name="retired", marks=Marks("demo", "retired", "demo", "h", "stub-small"))
    obs = with_session(MINIMAL, healthy(MINIMAL), retired, "retired")
    rows = rows_for(MINIMAL, obs)
    assert list(rows) == ["demo/enhancer", "demo/orchestrator", "demo/retired"]
    row = rows["demo/retired"]
    assert (row.lifecycle, row.desired_model, row.model, row.drift) == (None, None, "stub-small", (DriftFlag.NOT_IN_ROSTER,))
    assert row.planned == "stop"
    assert "roster" in row.health_message


def test_sessions_of_other_hosts_and_frozen_tenants_are_not_rows() -> None:
    elsewhere = replace(running(ENH), name="x", marks=Marks("demo", "x", "other-host", "h", "m"))
    obs = with_session(MINIMAL, healthy(MINIMAL), elsewhere, "x")
    assert sorted(rows_for(MINIMAL, obs)) == ["demo/enhancer", "demo/orchestrator"]
    frozen = desired("minimal", "demo", only=set())
    assert ps_rows(frozen, obs, plan(frozen, obs, NOW), NOW) == []


def test_rows_of_another_host_are_not_shown() -> None:
    fleet = desired("multi-tenant", "w-jarvis")
    rows = rows_for(fleet, healthy(fleet))
    assert sorted(rows) == ["friday/researcher", "jarvis/enhancer", "jarvis/orchestrator"]
    assert {r.host for r in rows.values()} == {"w-jarvis"}


def test_notes_say_tmux_only_with_the_reason() -> None:
    obs = replace(healthy(MINIMAL), systemd={None: TMUX_ONLY})
    assert ps_notes(MINIMAL, obs) == [
        "systemd --user not available: running tmux-only (systemctl not found on PATH; running tmux-only "
        "(install systemd))"
    ]
    assert ps_notes(MINIMAL, with_systemd(obs)) == []


def test_notes_name_an_unreadable_socket() -> None:
    obs = with_systemd(replace(healthy(MINIMAL), sockets={
        k: SocketSnapshot(k, False, error="tmux x: access not allowed") for k in MINIMAL.sockets}))
    assert ps_notes(MINIMAL, obs) == [f"tmux socket {MINIMAL.sockets[0].label()} could not be read: tmux x: access not allowed"]


def test_rows_are_deterministic_and_json_keys_stable() -> None:
    obs = with_systemd(healthy(CODING), unit("acme", "orchestrator"))
    first = ps_rows(CODING, obs, plan(CODING, obs, NOW), NOW)
    assert first == ps_rows(CODING, obs, plan(CODING, obs, NOW), NOW)
    keys = {tuple(row_json(r)) for r in first}
    assert keys == {("agent", "tenant", "host", "lifecycle", "socket", "tmux", "systemd", "unit", "unit_enabled", "pid",
                     "attached", "idle_s", "heartbeat_age_s", "heartbeat_state", "ack", "model", "model_source",
                     "desired_model", "health", "reason", "health_message", "planned", "drift")}


def _mixed() -> ObservedFleet:
    """Coding's agents, one of each: healthy with a unit, stale, dead, foreign, spec drift, a retired one."""
    agents = CODING.tenants["acme"].on_host("build-1")
    obs = with_systemd(healthy(CODING), unit("acme", "orchestrator"), unit("acme", "enhancer", enabled=False),
                       unit("acme", "coder1-0"))
    obs = replace(obs, heartbeats={**obs.heartbeats,
                                   ("acme", "coder0-0"): beat(agents["coder0-0"], age=timedelta(minutes=30))})
    obs = with_session(CODING, obs, None, "coder1-0")
    obs = with_session(CODING, obs, running(agents["code-review"], dead=True), "code-review")
    obs = with_session(CODING, obs, foreign("security-review"), "security-review")
    obs = with_session(CODING, obs, running(agents["enhancer"], spec_hash="0123456789abcdef", model="gpt-5.5-mini"),
                       "enhancer")
    retired = replace(running(CODER), name="retired", marks=Marks("acme", "retired", "build-1", "h", "opus"))
    return with_session(CODING, obs, retired, "retired")


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def test_snapshot_mixed_rows_json(snapshot_json: SnapshotAssertion) -> None:
    obs = _mixed()
    rows = ps_rows(CODING, obs, plan(CODING, obs, NOW), NOW)
    assert [row_json(r) for r in rows] == snapshot_json


def test_snapshot_mixed_table(snapshot: SnapshotAssertion) -> None:
    obs = _mixed()
    table = render_table(ps_rows(CODING, obs, plan(CODING, obs, NOW), NOW), ps_notes(CODING, obs))
    assert table == snapshot


def test_snapshot_tmux_only_table(snapshot: SnapshotAssertion) -> None:
    obs = replace(healthy(MINIMAL), systemd={None: TMUX_ONLY})
    table = render_table(ps_rows(MINIMAL, obs, plan(MINIMAL, obs, NOW), NOW), ps_notes(MINIMAL, obs))
    assert table.splitlines()[-1].startswith("systemd --user not available: running tmux-only (")
    assert table == snapshot


def test_doctests_pass() -> None:
    assert doctest.testmod(ps, raise_on_error=False).failed == 0
