"""Property: applying a plan and planning again gives an empty plan (the planner converges).

One exception is by design: stops held by the blast-radius rule are measured against
the agents running now, so once the plan's spawns run, a held stop may no longer be a
mass stop; the second plan then holds exactly those stops and nothing else, and the
third is empty.

Apply is simulated on the observed snapshot (plain data: the planner's input), the way
the apply engine changes tmux: a spawn or restart leaves a fresh marked session, a stop
removes it. The real engine is tested against tmux in tests/engine/test_apply.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.desired import DesiredAgent, DesiredFleet
from reconciler.core.plan import ActionKind, Plan
from reconciler.core.planner import PlanOptions, plan
from reconciler.model.observed import Heartbeat, Marks, ObservedFleet, ObservedSession
from tests.core.factories import NOW, beat, desired, foreign, observed, running

FLEET = desired("coding", "build-1")
TENANT = FLEET.tenants["acme"]
AGENTS = list(TENANT.on_host("build-1").values())
STATES = ["absent", "healthy", "stale", "silent", "changed", "dead", "foreign", "young"]


def session_for(agent: DesiredAgent, state: str) -> tuple[ObservedSession | None, Heartbeat | None]:
    if state == "absent":
        return None, None
    if state == "foreign":
        return foreign(agent.name), None
    if state == "dead":
        return running(agent, dead=True), None
    if state == "changed":
        return running(agent, spec_hash="stale-hash", model=agent.ladder[-1]), beat(agent)
    if state == "stale":
        return running(agent), beat(agent, age=timedelta(hours=1))
    if state == "silent":
        return running(agent), None
    if state == "young":
        return running(agent, created=NOW - timedelta(seconds=3)), None
    return running(agent), beat(agent)


def simulate_apply(fleet: DesiredFleet, obs: ObservedFleet, result: Plan) -> ObservedFleet:
    socket = TENANT.socket
    sessions = dict(obs.sockets[socket].sessions)
    for action in result.actions:
        if action.kind == ActionKind.STOP:
            sessions.pop(action.agent, None)
        else:
            assert action.launch is not None
            agent = next(a for a in AGENTS if a.name == action.agent)
            sessions[action.agent] = running(agent, created=NOW)
    return replace(obs, sockets={socket: replace(obs.sockets[socket], sessions=sessions)})


@settings(max_examples=300, deadline=None)
@given(
    states=st.lists(st.sampled_from(STATES), min_size=len(AGENTS), max_size=len(AGENTS)),
    extras=st.integers(min_value=0, max_value=8),
    allow_mass_stop=st.booleans(),
)
def test_apply_then_plan_is_empty(states: list[str], extras: int, allow_mass_stop: bool) -> None:
    sessions, beats = [], []
    for agent, state in zip(AGENTS, states, strict=True):
        session, heartbeat = session_for(agent, state)
        if session is not None:
            sessions.append(session)
        if heartbeat is not None:
            beats.append(heartbeat)
    for i in range(extras):
        sessions.append(replace(running(AGENTS[0]), name=f"gone-{i}", marks=Marks("acme", f"gone-{i}", "build-1", "h", "m")))
    obs = observed({TENANT.socket: sessions}, beats)
    options = PlanOptions(allow_mass_stop=allow_mass_stop)
    first = plan(FLEET, obs, NOW, options)
    after_first = simulate_apply(FLEET, obs, first)
    second = plan(FLEET, after_first, NOW, options)
    held_first = {a for h in first.holds for a in h.actions}
    assert set(second.actions) <= held_first, "only stops the first plan held may remain"
    third = plan(FLEET, simulate_apply(FLEET, after_first, second), NOW, options)
    assert third.actions == ()
    # what could not be done is still reported: every foreign name, every time
    assert second.conflicts == first.conflicts == third.conflicts
    assert sum(s == "foreign" for s in states) == len(first.conflicts)
