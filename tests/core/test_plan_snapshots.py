"""Plans of every bundled example, snapshot-tested as JSON so a reviewer reads the plan itself.

Update deliberately with `pytest --snapshot-update` and review the diff.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, NamedTuple

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from reconciler.core.plan import plan_json
from reconciler.core.planner import plan
from reconciler.model.observed import Marks, ObservedFleet
from tests.core.factories import NOW, beat, desired, foreign, healthy, nothing_running, observed, running


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


class Case(NamedTuple):
    test_id: str
    example: str
    host: str


CASES = [
    Case("minimal-fresh", "minimal", "demo"),
    Case("coding-fresh", "coding", "build-1"),
    Case("multi-tenant-w-jarvis", "multi-tenant", "w-jarvis"),
    Case("multi-tenant-dragon-lin", "multi-tenant", "dragon-lin"),
    Case("spec-reference-w-jarvis", "spec-reference", "w-jarvis"),
    Case("spec-reference-dragon-lin", "spec-reference", "dragon-lin"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_fresh_host_plan(case: Case, snapshot_json: SnapshotAssertion) -> None:
    fleet = desired(case.example, case.host)
    doc = plan_json(plan(fleet, nothing_running(fleet), NOW))
    assert doc["actions"], "a fresh host has something to spawn"
    assert doc == snapshot_json


def _mixed(example: str, host: str) -> ObservedFleet:
    """One of each: a stale agent, a changed spec, a dead pane, a foreign session, a removed agent."""
    fleet = desired(example, host)
    obs = healthy(fleet)
    tenant = next(iter(fleet.tenants.values()))
    agents = list(tenant.on_host(host).values())
    sock = tenant.socket
    sessions: dict[str, Any] = dict(obs.sockets[sock].sessions)
    beats = dict(obs.heartbeats)
    beats[(tenant.name, agents[0].name)] = beat(agents[0], age=timedelta(minutes=30))
    sessions[agents[1].name] = running(agents[1], spec_hash="0123456789abcdef", model=agents[1].ladder[-1])
    sessions[agents[2].name] = running(agents[2], dead=True)
    sessions[agents[3].name] = foreign(agents[3].name)
    sessions["retired"] = replace(running(agents[4]), name="retired", marks=Marks(tenant.name, "retired", host, "h", "opus"))
    return replace(obs, sockets={sock: replace(obs.sockets[sock], sessions=sessions)}, heartbeats=beats)


def test_mixed_drift_plan(snapshot_json: SnapshotAssertion) -> None:
    fleet = desired("coding", "build-1")
    doc = plan_json(plan(fleet, _mixed("coding", "build-1"), NOW))
    assert {a["action"] for a in doc["actions"]} == {"restart", "stop"}
    assert len(doc["conflicts"]) == 1
    assert doc == snapshot_json


def test_snapshot_of_unobserved_note(snapshot_json: SnapshotAssertion) -> None:
    fleet = desired("minimal", "demo")
    doc = plan_json(plan(fleet, observed({}), NOW))
    assert doc["actions"] == [] and doc["notes"]
    assert doc == snapshot_json
