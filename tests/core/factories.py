"""Builders for the pure core's tests: desired state from the examples, observed snapshots by hand.

Observed snapshots here are plain data the planner reads; they stand in for a recorded
observation (the planner takes no driver), not for tmux itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core.desired import DesiredAgent, DesiredFleet, build_desired
from reconciler.model.observed import (
    Heartbeat,
    Marks,
    ObservedFleet,
    ObservedSession,
    SocketKey,
    SocketSnapshot,
)
from reconciler.spec.load import load_repo

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleets"
NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
STATE_DIR = "/var/lib/fleet-test"


def desired(example: str, host: str, *, command_override: str | None = None, only: set[str] | None = None) -> DesiredFleet:
    repo = load_repo(EXAMPLES / example)
    assert repo.ok, repo.errors
    return build_desired(repo, host=host, state_dir=STATE_DIR, command_override=command_override, only_tenants=only)


def running(agent: DesiredAgent, *, created: datetime | None = None, dead: bool = False, spec_hash: str | None = None,
            model: str | None = None) -> ObservedSession:
    """The session the fleet would have created for `agent`, as observed."""
    return ObservedSession(
        name=agent.name,
        session_id="$1",
        created=created or NOW - timedelta(hours=1),
        activity=None,
        attached=0,
        pane_pid=None if dead else 4242,
        pane_dead=dead,
        dead_status=1 if dead else None,
        current_command="fleet-stub-agent",
        in_mode=False,
        marks=Marks(agent.tenant, agent.name, agent.host, spec_hash or agent.launch.spec_hash, model or agent.model),
    )


def foreign(name: str, marks: Marks | None = None) -> ObservedSession:
    return ObservedSession(name=name, session_id="$9", created=NOW - timedelta(days=1), activity=None, attached=1,
                           pane_pid=999, pane_dead=False, dead_status=None, current_command="bash", in_mode=False,
                           marks=marks or Marks())


def beat(agent: DesiredAgent, age: timedelta = timedelta(seconds=5)) -> Heartbeat:
    return Heartbeat(agent.tenant, agent.host, agent.name, seq=1, ts=NOW - age, state="idle", model=agent.model, pid=4242)


def observed(sockets: Mapping[SocketKey, Iterable[ObservedSession]], beats: Iterable[Heartbeat] = ()) -> ObservedFleet:
    return ObservedFleet(
        taken_at=NOW,
        sockets={k: SocketSnapshot(k, True, {s.name: s for s in v}) for k, v in sockets.items()},
        heartbeats={(b.tenant, b.agent): b for b in beats},
    )


def healthy(fleet: DesiredFleet) -> ObservedFleet:
    """Every agent of the host running as desired and answering heartbeats."""
    sockets: dict[SocketKey, list[ObservedSession]] = {}
    beats = []
    for tenant in fleet.tenants.values():
        sockets.setdefault(tenant.socket, [])
        for agent in tenant.on_host(fleet.host).values():
            sockets[tenant.socket].append(running(agent))
            beats.append(beat(agent))
    return observed(sockets, beats)


def nothing_running(fleet: DesiredFleet) -> ObservedFleet:
    """A fresh host: every tenant socket answered, with no server running."""
    return ObservedFleet(taken_at=NOW, sockets={k: SocketSnapshot(k, False, {}) for k in fleet.sockets})
