"""core/fleetview.py: the one view every surface renders, over hand-built observations and
the real planner (tests/core/factories.py), so its rows are exactly `fleet ps`'s."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from reconciler.core.fleetview import Filters, build_view, choices, view_json
from reconciler.core.planner import plan
from reconciler.core.ps import ps_notes, ps_rows, row_json
from reconciler.model.history import RestartRecord
from tests.core.factories import NOW, beat, desired, healthy, running
from tests.core.test_ps import _mixed

CODING = desired("coding", "build-1")


def test_rows_and_notes_are_fleet_ps_rows_and_notes() -> None:
    obs = _mixed()
    the_plan = plan(CODING, obs, NOW)
    view = build_view(CODING, obs, the_plan, NOW)
    assert list(view.rows) == ps_rows(CODING, obs, the_plan, NOW)
    assert list(view.notes) == ps_notes(CODING, obs)
    assert sorted(view.agents) == sorted(f"{r.tenant}/{r.agent}" for r in view.rows)
    doc = view_json(view)
    assert doc["rows"] == [row_json(r) for r in view.rows]
    assert sum(view.summary().values()) == len(view.rows)


def test_conditions_carry_the_planners_words() -> None:
    obs = _mixed()
    view = build_view(CODING, obs, plan(CODING, obs, NOW), NOW)
    dead = view.agents["acme/code-review"]
    healthy_ = dead.conditions[0]
    assert (healthy_.type, healthy_.ok, healthy_.reason) == ("Healthy", False, "dead")
    assert healthy_.message == dead.row.health_message and healthy_.message
    drifted = view.agents["acme/enhancer"].conditions[1]
    assert (drifted.type, drifted.ok, drifted.reason) == ("InSync", False, "Drift")
    ok = view.agents["acme/orchestrator"].conditions
    assert [(c.type, c.ok) for c in ok] == [("Healthy", True), ("InSync", True)]


def test_restarts_and_backoff_come_from_history_and_the_plans_waits() -> None:
    agent = CODING.tenants["acme"].on_host("build-1")["code-review"]
    obs = healthy(CODING)
    key = next(iter(CODING.tenants.values())).socket
    sessions = {**obs.sockets[key].sessions, agent.name: running(agent, dead=True)}
    obs = replace(obs, sockets={key: replace(obs.sockets[key], sessions=sessions)})
    history = {("acme", "code-review"): RestartRecord(3, NOW - timedelta(seconds=5), "pane died")}
    from reconciler.core.planner import PlanOptions  # noqa: PLC0415

    the_plan = plan(CODING, obs, NOW, PlanOptions(history=history))
    detail = build_view(CODING, obs, the_plan, NOW, history=history).agents["acme/code-review"]
    assert detail.restarts.attempts == 3
    assert detail.restarts.backoff_until is not None and detail.restarts.message
    assert any(c.type == "NotBackingOff" and not c.ok for c in detail.conditions)


def test_heartbeat_and_models_in_the_detail() -> None:
    fleet = desired("minimal", "demo")
    obs = healthy(fleet)
    orch = fleet.tenants["demo"].on_host("demo")["orchestrator"]
    obs = replace(obs, heartbeats={**obs.heartbeats, ("demo", "orchestrator"): beat(orch, timedelta(seconds=7))})
    detail = build_view(fleet, obs, plan(fleet, obs, NOW), NOW).agents["demo/orchestrator"]
    assert detail.heartbeat is not None and detail.heartbeat.ts == NOW - timedelta(seconds=7)
    assert (detail.desired_model, detail.rung) == ("stub-large", None)


def test_filters_match_tenant_health_and_drift() -> None:
    obs = _mixed()
    view = build_view(CODING, obs, plan(CODING, obs, NOW), NOW)
    shown = lambda f: sorted(r.agent for r in view.rows if f.matches(r))  # noqa: E731
    assert shown(Filters(health="dead")) == ["code-review"]
    assert "enhancer" in shown(Filters(drift="spec-hash"))
    assert "orchestrator" in shown(Filters(drift="no")) and "orchestrator" not in shown(Filters(drift="yes"))
    assert shown(Filters(tenant="nobody")) == []
    assert len(shown(Filters())) == len(view.rows)
    assert "dead" in choices(view.rows)["health"]
