"""`fleet ps` as data: one row per agent of this host, joining everything one tick observed.

It sits beside the planner in the pure core and reads what a tick already produced
(engine/tick.py): the desired state, the one observed snapshot (tmux, systemd,
heartbeats) and the Plan. It decides nothing and persists nothing. Health is the
planner's verdict (`Plan.health`), never recomputed here, so `fleet ps` and `fleet
reconcile` cannot disagree about an agent; the drift flags name differences a person
should know about, whether or not the planner acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from reconciler.core.budget_types import Decision, effective_agent
from reconciler.core.desired import DesiredAgent, DesiredFleet, DesiredTenant
from reconciler.core.plan import Plan
from reconciler.core.planner import state_dir_notes
from reconciler.model.observed import (
    Heartbeat,
    ObservedFleet,
    ObservedSession,
    SocketSnapshot,
    SystemdSnapshot,
    UnitState,
)

#: A heartbeat stamped this much before its session was created belongs to an earlier
#: run (the same tolerance as core/health.py).
_EARLIER_RUN = timedelta(seconds=1)
#: What text cells show for "nothing to show".
NONE = "—"


def unit_name(tenant: str, agent: str) -> str:
    """The systemd `--user` unit that keeps a core agent up across reboots.

    >>> unit_name("jarvis", "orchestrator")
    'fleet-jarvis.orchestrator.service'
    """
    return f"fleet-{tenant}.{agent}.service"


class TmuxState(StrEnum):
    """What tmux says about the agent's session."""

    RUNNING = "running"
    DEAD = "dead"  # the pane's process exited; remain-on-exit keeps the pane
    ABSENT = "absent"
    FOREIGN = "foreign"  # a session the fleet did not create holds the agent's name
    UNKNOWN = "unknown"  # the tmux server could not be read


class SystemdState(StrEnum):
    """The agent's unit, as the systemd `--user` manager of its tenant reports it."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    NONE = "none"  # the manager answered: there is no such unit
    TMUX_ONLY = "tmux-only"  # no manager to ask: the fleet runs on tmux alone


class DriftFlag(StrEnum):
    """A difference between what should run and what runs; flags are sorted by this order."""

    FOREIGN_SESSION = "foreign-session"
    NOT_IN_ROSTER = "not-in-roster"
    SPEC_HASH = "spec-hash"
    MODEL = "model"
    UNIT_WITHOUT_SESSION = "unit-active-no-session"
    SESSION_WITHOUT_UNIT = "session-no-unit"
    NOT_BOOT_ENABLED = "not-boot-enabled"


_FLAG_ORDER = {flag: i for i, flag in enumerate(DriftFlag)}


@dataclass(frozen=True, slots=True)
class PsRow:
    """One agent of this host as `fleet ps` shows it; durations are whole seconds."""

    tenant: str
    agent: str
    host: str
    lifecycle: str | None  # None for a session the roster no longer names
    socket: str
    tmux: TmuxState
    systemd: SystemdState
    unit: str | None
    unit_enabled: bool | None
    pid: int | None
    attached: int
    idle_s: int | None
    heartbeat_age_s: int | None
    heartbeat_state: str | None
    ack: str | None
    model: str | None
    model_source: str | None  # "heartbeat" or "mark"
    desired_model: str | None
    health: str | None  # the planner's verdict; None when it gave none
    health_message: str
    planned: str | None  # the plan's action for this agent, if any
    drift: tuple[DriftFlag, ...]
    reason: str | None = None  # why it waits or is not started: `auth`, `dialog-trust`, `missing-binary`...


@dataclass(frozen=True, slots=True)
class _PlanFacts:
    """The plan's per-agent facts, keyed (tenant, agent), looked up once per row."""

    verdicts: Mapping[tuple[str, str], tuple[str, str, str | None]]
    planned: Mapping[tuple[str, str], tuple[str, str]]
    decisions: Mapping[tuple[str, str], Decision]

    @classmethod
    def of(cls, plan: Plan) -> _PlanFacts:
        """Index the plan: verdicts, and for each agent the action (or why none runs)."""
        planned: dict[tuple[str, str], tuple[str, str]] = {}
        for conflict in plan.conflicts:
            planned[(conflict.tenant, conflict.agent)] = ("conflict", conflict.message)
        for wait in plan.waits:
            planned[(wait.tenant, wait.agent)] = ("backoff", wait.message)
        for hold in plan.holds:
            for action in hold.actions:
                planned[(action.tenant, action.agent)] = (f"{action.kind.value} (held)", hold.message)
        for action in plan.actions:
            planned[(action.tenant, action.agent)] = (action.kind.value, action.reason.message)
        verdicts = {(h.tenant, h.agent): (h.health, h.message, h.reason) for h in plan.health}
        return cls(verdicts, planned, {(d.tenant, d.agent): d for d in plan.budget})

    def health(self, key: tuple[str, str], tmux: TmuxState) -> tuple[str | None, str, str | None]:
        """The verdict (health, message, reason), or (None, why there is none, None) when
        the planner did not assess it."""
        if key in self.verdicts:
            return self.verdicts[key]
        why = self.planned.get(key, ("", ""))[1]
        return ("absent" if tmux == TmuxState.ABSENT else None), why, None

    def action(self, key: tuple[str, str]) -> str | None:
        found = self.planned.get(key)
        return None if found is None or found[0] == "conflict" else found[0]


def ps_rows(desired: DesiredFleet, observed: ObservedFleet, plan: Plan, now: datetime) -> list[PsRow]:
    """Every agent of `desired.host`, plus the fleet's sessions the roster no longer names.

    Sorted by tenant, then agent. Tenants that were not reconciled (invalid specs, left
    out by `--tenant`) are left out: their desired state is unknown.
    """
    facts = _PlanFacts.of(plan)
    rows = [
        _desired_row(agent, tenant, observed, facts, now)
        for tenant in desired.tenants.values()
        for agent in tenant.on_host(desired.host).values()
    ]
    named = {(row.tenant, row.agent) for row in rows}
    rows += _orphan_rows(desired, observed, facts, now, named)
    return sorted(rows, key=lambda row: (row.tenant, row.agent))


def ps_notes(desired: DesiredFleet, observed: ObservedFleet) -> list[str]:
    """Lines under the table: managers that could not be asked, servers that could not be read."""
    notes: list[str] = []
    for user in dict.fromkeys(t.user for t in desired.tenants.values()):
        manager = _manager(observed, user)
        if not manager.available:
            whose = "" if user is None else f" of user {user}"
            notes.append(f"systemd --user{whose} not available: running tmux-only ({manager.reason})")
    for key in desired.sockets:
        snap = observed.sockets.get(key)
        if snap is not None and snap.error:
            notes.append(f"tmux socket {key.label()} could not be read: {snap.error}")
        if snap is not None and snap.stuck_pid is not None:
            notes.append(f"tmux socket {key.label()}: its server (pid {snap.stuck_pid}) is stuck in its own exit and "
                         "hangs up on every client; `fleet reconcile` ends it and starts the agents again")
    return notes + state_dir_notes(desired, observed)


def _manager(observed: ObservedFleet, user: str | None) -> SystemdSnapshot:
    found = observed.systemd.get(user)
    return found if found is not None else SystemdSnapshot(available=False, reason="not observed")


def _desired_row(
    agent: DesiredAgent, tenant: DesiredTenant, observed: ObservedFleet, facts: _PlanFacts, now: datetime
) -> PsRow:
    snap = observed.sockets.get(tenant.socket)
    session = snap.sessions.get(agent.name) if snap is not None else None
    tmux = _tmux_state(snap, session, agent)
    manager = _manager(observed, tenant.user)
    unit = manager.units.get(unit_name(agent.tenant, agent.name)) if manager.available else None
    beat = observed.heartbeats.get((agent.tenant, agent.name))
    mine = session if tmux in {TmuxState.RUNNING, TmuxState.DEAD} else None
    model, source = _model(mine, beat)
    decision = facts.decisions.get((agent.tenant, agent.name))
    # A throttled agent is compared with the launch its budget decision names, not the roster's.
    effective = agent if decision is None else effective_agent(agent, decision)
    drift = [
        *_session_drift(effective, mine, tmux, model),
        *_unit_drift(agent.lifecycle, tmux, manager.available, unit),
    ]
    key = (agent.tenant, agent.name)
    health, message, reason = facts.health(key, tmux)
    return PsRow(
        tenant=agent.tenant, agent=agent.name, host=agent.host, lifecycle=agent.lifecycle,
        socket=tenant.socket.label(), tmux=tmux, systemd=_systemd_state(manager, unit),
        unit=unit.name if unit else None, unit_enabled=unit.enabled if unit else None,
        pid=session.pane_pid if session else None, attached=session.attached if session else 0,
        idle_s=_idle(session, now), heartbeat_age_s=_age(beat, now),
        heartbeat_state=beat.state if beat else None, ack=beat.ack if beat else None,
        model=model, model_source=source, desired_model=agent.model,
        health=health, health_message=message, planned=facts.action(key), drift=_sorted(drift), reason=reason,
    )


def _orphan_rows(
    desired: DesiredFleet, observed: ObservedFleet, facts: _PlanFacts, now: datetime,
    named: set[tuple[str, str]],
) -> list[PsRow]:
    """The fleet's own sessions on this host that no desired agent accounts for."""
    rows = []
    for snap in observed.sockets.values():
        for session in snap.sessions.values():
            marks = session.marks
            key = (marks.tenant, session.name)
            if not marks.owned or marks.host != desired.host or key in named or marks.tenant in desired.frozen:
                continue
            manager = _manager(observed, snap.key.user)
            unit = manager.units.get(unit_name(*key)) if manager.available else None
            tmux = TmuxState.DEAD if session.pane_dead else TmuxState.RUNNING
            beat = observed.heartbeats.get(key)
            model, source = _model(session, beat)
            health, message, reason = facts.health(key, tmux)
            rows.append(PsRow(
                tenant=marks.tenant, agent=session.name, host=marks.host, lifecycle=None,
                socket=snap.key.label(), tmux=tmux, systemd=_systemd_state(manager, unit),
                unit=unit.name if unit else None, unit_enabled=unit.enabled if unit else None,
                pid=session.pane_pid, attached=session.attached, idle_s=_idle(session, now),
                heartbeat_age_s=_age(beat, now), heartbeat_state=beat.state if beat else None,
                ack=beat.ack if beat else None, model=model, model_source=source, desired_model=None,
                health=health, health_message=message, planned=facts.action(key),
                drift=(DriftFlag.NOT_IN_ROSTER,), reason=reason,
            ))
    return rows


def _tmux_state(snap: SocketSnapshot | None, session: ObservedSession | None, agent: DesiredAgent) -> TmuxState:
    if session is None:
        return TmuxState.UNKNOWN if snap is None or snap.error or snap.stuck_pid is not None else TmuxState.ABSENT
    marks = session.marks
    if not (marks.owned and marks.tenant == agent.tenant and marks.agent == agent.name):
        return TmuxState.FOREIGN
    return TmuxState.DEAD if session.pane_dead else TmuxState.RUNNING


def _systemd_state(manager: SystemdSnapshot, unit: UnitState | None) -> SystemdState:
    if not manager.available:
        return SystemdState.TMUX_ONLY
    if unit is None:
        return SystemdState.NONE
    return SystemdState.ACTIVE if unit.active else SystemdState.INACTIVE


def _model(session: ObservedSession | None, beat: Heartbeat | None) -> tuple[str | None, str | None]:
    """What the agent runs: its own heartbeat's word if that heartbeat is from this run,
    else the model the session was started with (its `@fleet-model` mark)."""
    if session is None:
        return None, None
    if beat is not None and beat.model and beat.ts >= session.created - _EARLIER_RUN:
        return beat.model, "heartbeat"
    if session.marks.model:
        return session.marks.model, "mark"
    return None, None


def _session_drift(
    agent: DesiredAgent, mine: ObservedSession | None, tmux: TmuxState, model: str | None
) -> list[DriftFlag]:
    flags = []
    if tmux == TmuxState.FOREIGN:
        flags.append(DriftFlag.FOREIGN_SESSION)
    if mine is not None and mine.marks.spec_hash != agent.launch.spec_hash:
        flags.append(DriftFlag.SPEC_HASH)
    if model is not None and model != agent.model:
        flags.append(DriftFlag.MODEL)
    return flags


def _unit_drift(lifecycle: str, tmux: TmuxState, available: bool, unit: UnitState | None) -> list[DriftFlag]:
    """Drift between the unit and the session; asked only when there is a manager to ask."""
    if not available:
        return []
    flags = []
    if unit is not None and unit.active and tmux == TmuxState.ABSENT:
        flags.append(DriftFlag.UNIT_WITHOUT_SESSION)
    if lifecycle == "core":
        if unit is None and tmux in {TmuxState.RUNNING, TmuxState.DEAD}:
            flags.append(DriftFlag.SESSION_WITHOUT_UNIT)
        if unit is None or not unit.enabled:
            flags.append(DriftFlag.NOT_BOOT_ENABLED)
    return flags


def _sorted(flags: Iterable[DriftFlag]) -> tuple[DriftFlag, ...]:
    return tuple(sorted(set(flags), key=_FLAG_ORDER.__getitem__))


def _seconds(delta: timedelta) -> int:
    return max(int(delta.total_seconds()), 0)


def _idle(session: ObservedSession | None, now: datetime) -> int | None:
    return _seconds(now - session.activity) if session is not None and session.activity else None


def _age(beat: Heartbeat | None, now: datetime) -> int | None:
    return _seconds(now - beat.ts) if beat is not None else None


# --- presentation: JSON for scripts, an aligned table for people ----------------------


def row_json(row: PsRow) -> dict[str, Any]:
    """One row with stable keys, in table order (the `--output json` contract)."""
    return {
        "agent": row.agent, "tenant": row.tenant, "host": row.host, "lifecycle": row.lifecycle,
        "socket": row.socket, "tmux": row.tmux.value, "systemd": row.systemd.value, "unit": row.unit,
        "unit_enabled": row.unit_enabled, "pid": row.pid, "attached": row.attached, "idle_s": row.idle_s,
        "heartbeat_age_s": row.heartbeat_age_s, "heartbeat_state": row.heartbeat_state, "ack": row.ack,
        "model": row.model, "model_source": row.model_source, "desired_model": row.desired_model,
        "health": row.health, "reason": row.reason, "health_message": row.health_message, "planned": row.planned,
        "drift": [flag.value for flag in row.drift],
    }


def human_age(seconds: int | None) -> str:
    """A short age for a table cell.

    >>> [human_age(s) for s in (None, 0, 59, 119, 120, 7199, 7200, 172800)]
    ['—', '0s', '59s', '119s', '2m', '119m', '2h', '2d']
    """
    if seconds is None:
        return NONE
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


HEADERS = ("AGENT", "TENANT", "HOST", "TMUX", "SYSTEMD", "PID", "IDLE", "HEARTBEAT", "MODEL", "HEALTH", "DRIFT")


def _systemd_cell(row: PsRow) -> str:
    if row.systemd == SystemdState.NONE:
        return NONE
    return f"{row.systemd.value},enabled" if row.unit_enabled else row.systemd.value


def table_cells(row: PsRow) -> tuple[str, ...]:
    """The row's text cells, in HEADERS order."""
    beat = NONE if row.heartbeat_age_s is None else f"{human_age(row.heartbeat_age_s)} {row.heartbeat_state}"
    return (
        row.agent, row.tenant, row.host, row.tmux.value, _systemd_cell(row),
        NONE if row.pid is None else str(row.pid), human_age(row.idle_s), beat, row.model or NONE,
        health_cell(row), ",".join(flag.value for flag in row.drift) or NONE,
    )


def health_cell(row: PsRow) -> str:
    """The verdict, with its reason when it has one: `waiting (auth)`, `missing (missing-binary)`."""
    if row.health is None:
        return NONE
    return f"{row.health} ({row.reason})" if row.reason else row.health


def render_table(rows: Iterable[PsRow], notes: Iterable[str] = ()) -> str:
    """Columns padded to their widest cell (stable: no colours, no terminal width), then the notes.

    >>> print(render_table([], ["systemd --user not available: running tmux-only (x)"]))
    AGENT  TENANT  HOST  TMUX  SYSTEMD  PID  IDLE  HEARTBEAT  MODEL  HEALTH  DRIFT
    systemd --user not available: running tmux-only (x)
    """
    lines = [HEADERS, *(table_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join([*text, *notes])
