"""The planner: desired + observed (+ restart history, + budget decisions) at `now` -> a sorted Plan.

A pure function, no I/O, no clock, no globals, so dry-run and apply share one code
path and plans are snapshot-tested. Only sessions marked as the fleet's own are ever
stopped or restarted; a plan that would stop most of a tenant is held back.

Budget decisions (core/budget.py, computed by the engine and passed in `PlanOptions`)
change what an agent runs, never whether it is desired: an agent on a cheaper rung is
spawned on it, a session on a more expensive rung is restarted as `downgrade`, one
on a cheaper rung than the decision is restarted with rule `budget-restore`; a queued
worker's session is stopped with `queue` (never held by the blast-radius rule: it is
not a roster change, core agents are never queued, and holding it would overspend);
a refused agent is not started and the plan says so with `refuse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from reconciler.core.budget_types import BudgetPlan, Decision, State, effective_agent
from reconciler.core.desired import DesiredAgent, DesiredFleet, DesiredTenant
from reconciler.core.health import STALL_AFTER, Verdict, assess, next_restart_at
from reconciler.core.held import LOGIN_PACE_S, dialog_verdict, login_of, wants_screen
from reconciler.core.lane_plan import RETIRE_RULE, LanePlan
from reconciler.core.pace import Pace
from reconciler.core.plan import Action, ActionKind, AgentHealth, Conflict, Drift, Hold, Plan, Reason, Wait
from reconciler.model.history import RestartRecord
from reconciler.model.observed import (
    ObservedFleet,
    ObservedSession,
    SocketKey,
    SocketSnapshot,
    program_positions,
)

MASS_STOP_RULE = "blast-radius"
#: The rule of every stop `fleet down` plans.
DOWN_RULE = "down"


@dataclass(frozen=True, slots=True)
class PlanOptions:
    allow_mass_stop: bool = False
    history: Mapping[tuple[str, str], RestartRecord] = field(default_factory=dict)
    budget: BudgetPlan | None = None  # the budget policy's decisions; None: no budget governance
    lanes: LanePlan | None = None  # the lanes' scaling (core/lanes.py): which idle workers retire, and why


@dataclass(slots=True)
class _Draft:
    """The plan being assembled; frozen into a Plan at the end."""

    actions: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    health: list[AgentHealth] = field(default_factory=list)
    budget: list[Decision] = field(default_factory=list)
    paces: list[tuple[str, Pace]] = field(default_factory=list)
    #: (tenant, agent) -> its login (core/held.py), for every adapter agent of this host.
    logins: dict[tuple[str, str], str] = field(default_factory=dict)
    #: login -> the agent whose health restart this plan already holds for it.
    restarting: dict[str, str] = field(default_factory=dict)


def stuck_note(tenant: str, snap: SocketSnapshot) -> str:
    """Why a stuck server's agents are planned as if absent (drivers/stuck_server.py)."""
    return (f"tenant {tenant}: the tmux server on {snap.key.label()} (pid {snap.stuck_pid}) is stuck in its own exit "
            "and hangs up on every client, so its sessions cannot be seen; applying ends it with SIGTERM "
            "and starts the agents again")


def state_dir_notes(desired: DesiredFleet, observed: ObservedFleet) -> list[str]:
    """One line per tenant whose running agents were started with another state directory.

    Such agents write their heartbeats where this run does not look, and their launch
    (FLEET_STATE_DIR is part of it) differs from the desired one: every agent would read as
    silent with spec-hash drift. Said plainly, so a forgotten `--state-dir` or
    `$FLEET_STATE_DIR` is not mistaken for a fleet that changed.

    >>> from reconciler.model.observed import Marks
    >>> from datetime import UTC
    >>> s = ObservedSession("a", "$1", datetime(2026, 1, 1, tzinfo=UTC), None, 0, 1, False, None, "sh", False,
    ...                     Marks("t", "a", "h", "x", "m", "/srv/state"))
    >>> key = SocketKey(None, "s")
    >>> d = DesiredFleet("h", {"t": DesiredTenant("t", None, key, ())}, state_dir="/tmp/other")
    >>> print(*state_dir_notes(d, ObservedFleet(s.created, {key: SocketSnapshot(key, True, {"a": s})})))
    ... # doctest: +NORMALIZE_WHITESPACE
    tenant t: 1 running agent (a) was started with state directory /srv/state, not /tmp/other,
    and writes its heartbeats there; pass --state-dir /srv/state or set FLEET_STATE_DIR
    """
    notes: list[str] = []
    for tenant in desired.tenants.values():
        snap = observed.sockets.get(tenant.socket)
        if snap is None or not desired.state_dir:
            continue
        elsewhere: dict[str, list[str]] = {}
        for session in snap.sessions.values():
            marks = session.marks
            if marks.owned and marks.tenant == tenant.name and marks.state_dir and marks.state_dir != desired.state_dir:
                elsewhere.setdefault(marks.state_dir, []).append(session.name)
        for where, names in sorted(elsewhere.items()):
            count = f"{len(names)} running agent{'s' if len(names) != 1 else ''} ({', '.join(sorted(names))})"
            one = len(names) == 1
            notes.append(f"tenant {tenant.name}: {count} {'was' if one else 'were'} started with state directory "
                         f"{where}, not {desired.state_dir}, and {'writes its' if one else 'write their'} heartbeats "
                         f"there; pass --state-dir {where} or set FLEET_STATE_DIR")
    return notes


def plan(desired: DesiredFleet, observed: ObservedFleet, now: datetime, options: PlanOptions | None = None) -> Plan:
    """Every action that makes this host match the desired state, with its reason."""
    opts = options or PlanOptions()
    draft = _Draft()
    draft.logins = {(a.tenant, a.name): login for t in desired.tenants.values() for a in t.on_host(desired.host).values()
                    if (login := login_of(a.launch)) is not None}
    decisions = opts.budget.by_agent() if opts.budget else {}
    for tenant in desired.tenants.values():
        snap = observed.sockets.get(tenant.socket)
        if snap is None or snap.error:
            why = snap.error if snap else "it was not observed"
            draft.notes.append(f"tenant {tenant.name}: skipped, tmux socket {tenant.socket.label()} could not be read ({why})")
            continue
        if snap.stuck_pid is not None:
            draft.notes.append(stuck_note(tenant.name, snap))
        _plan_tenant(draft, tenant, snap, desired.host, observed, now, opts, decisions)
    _plan_orphans(draft, desired, observed, opts)
    draft.notes += state_dir_notes(desired, observed)
    going_down = all(t.down for t in desired.tenants.values())
    if not any(t.on_host(desired.host) for t in desired.tenants.values()) and desired.tenants and not going_down:
        hosts = ", ".join(sorted(desired.hosts()))
        draft.notes.append(f"no agent is assigned to host {desired.host!r} (hosts in the repository: {hosts}); pass --host to reconcile another")
    return Plan(
        host=desired.host,
        actions=tuple(sorted(draft.actions, key=Action.sort_key)),
        conflicts=tuple(sorted(draft.conflicts, key=lambda c: (c.tenant, c.agent))),
        holds=tuple(sorted(draft.holds, key=lambda h: h.tenant)),
        waits=tuple(sorted(draft.waits, key=lambda w: (w.tenant, w.agent))),
        notes=tuple(draft.notes),
        health=tuple(sorted(draft.health, key=lambda h: (h.tenant, h.agent))),
        budget=tuple(sorted(draft.budget, key=lambda d: (d.tenant, d.agent))),
        paces=tuple(draft.paces),
        lanes=tuple(v for t in sorted(opts.lanes.tenants) for v in opts.lanes.tenants[t].lanes) if opts.lanes else (),
    )


def _source(agent: DesiredAgent) -> str:
    return f"tenants/{agent.tenant}/roster.yaml agents[{agent.name}]"


def _action(kind: ActionKind, agent: DesiredAgent, rule: str, message: str, drift: tuple[Drift, ...] = ()) -> Action:
    return Action(kind, agent.tenant, agent.host, agent.name, agent.launch.socket, agent.model,
                  Reason(rule, message, _source(agent)), agent.launch, drift)


def _plan_tenant(
    draft: _Draft,
    tenant: DesiredTenant,
    snap: SocketSnapshot,
    host: str,
    observed: ObservedFleet,
    now: datetime,
    opts: PlanOptions,
    decisions: Mapping[tuple[str, str], Decision],
) -> None:
    wanted = tenant.on_host(host)
    for desired_agent in wanted.values():
        decision = decisions.get((desired_agent.tenant, desired_agent.name))
        if decision is not None:
            draft.budget.append(decision)
        agent = desired_agent if decision is None else effective_agent(desired_agent, decision)
        _plan_agent(draft, agent, snap.sessions.get(agent.name), observed, now, opts, decision)
    if wanted and opts.budget and tenant.name in opts.budget.tenants:
        draft.paces += [(tenant.name, p) for p in opts.budget.tenants[tenant.name].paces]
    stops = []
    for s in snap.sessions.values():
        if not (s.marks.owned and s.marks.tenant == tenant.name and s.marks.host == host and s.name not in wanted):
            continue
        retire = opts.lanes.retire_reason(tenant.name, s.name) if opts.lanes and not tenant.down else None
        if retire is not None:
            # Scaling a lane down is not a roster change: never held by the blast-radius rule.
            draft.actions.append(_stop(tenant.name, host, tenant.socket, s, RETIRE_RULE, retire))
        else:
            stops.append(_stop(tenant.name, host, tenant.socket, s, *_stop_reason(tenant, s, host)))
    running = sum(1 for s in snap.sessions.values() if s.marks.owned and s.marks.tenant == tenant.name and s.marks.host == host)
    _add_stops(draft, tenant.name, stops, running, opts, asked=tenant.down)


def _plan_agent(draft: _Draft, agent: DesiredAgent, session: ObservedSession | None, observed: ObservedFleet,
                now: datetime, opts: PlanOptions, decision: Decision | None) -> None:
    if session is not None and not _owns(session, agent):
        draft.conflicts.append(_conflict(agent, session))
    elif decision is not None and decision.state is not State.RUN:
        _plan_held(draft, agent, session, decision, observed, now)
    elif session is None and (missing := missing_runtime(agent, observed)):
        draft.health.append(AgentHealth(agent.tenant, agent.name, MISSING, missing, MISSING_REASON))
    elif session is None:
        cheaper = f"; on a cheaper rung by budget: {decision.reason}" if decision and decision.throttled else ""
        lane = opts.lanes.lane_of(agent.tenant, agent.name) if opts.lanes else None
        why = f"; lane {lane.lane} wants {lane.desired} worker{'s' if lane.desired != 1 else ''} ({lane.detail()})" if lane else ""
        action = _action(ActionKind.SPAWN, agent, "absent",
                         f"no session {agent.name!r} on tmux socket {agent.launch.socket.label()}{why}{cheaper}")
        if lane is not None:
            action = replace(action, reason=replace(action.reason, source=f"tenants/{agent.tenant}/roster.yaml lanes[{lane.lane}]"))
        draft.actions.append(action)
    else:
        _plan_running(draft, agent, session, observed, now, opts, decision)


def unhealthy_panes(desired: DesiredFleet, observed: ObservedFleet, now: datetime) -> list[tuple[str, str, SocketKey]]:
    """(tenant, agent, socket) of the adapter agents whose pane the engine should read:
    running as desired but already unhealthy (silent, stale), so a dialog on their screen
    can be named as the reason (core/held.py). Empty for a healthy fleet: observation's
    tmux calls stay constant."""
    found = []
    for tenant in desired.tenants.values():
        for agent in tenant.on_host(desired.host).values():
            session = observed.session(agent.launch.socket, agent.name)
            if (agent.launch.adapter is None or session is None or session.pane_dead or not _owns(session, agent)
                    or session.marks.spec_hash != agent.launch.spec_hash):
                continue
            verdict = assess(session, observed.heartbeats.get((agent.tenant, agent.name)), now=now,
                             timeout=agent.heartbeat_timeout, grace=agent.startup_grace,
                             working_timeout=agent.working_timeout)
            if wants_screen(verdict, agent.launch.adapter):
                found.append((agent.tenant, agent.name, agent.launch.socket))
    return found


def _budget_source(agent: DesiredAgent, decision: Decision) -> str:
    if decision.account is None:
        return _source(agent)
    return f"tenants/{agent.tenant}/budget.yaml accounts[{decision.account}]"


def _plan_held(draft: _Draft, agent: DesiredAgent, session: ObservedSession | None, decision: Decision,
               observed: ObservedFleet, now: datetime) -> None:
    """A queued worker's session stops; a refused agent is never started (a running one is
    left alone: the fleet never stops a core agent over budget, it only stops restarting it).

    Either way a note says until when, in words that do not change from tick to tick,
    so the status (which keeps a tenant's notes) records it without rewriting itself."""
    source = _budget_source(agent, decision)
    draft.notes.append(_held_note(decision))
    if decision.state is State.QUEUED:
        if session is not None:
            rule = "budget-concurrency" if decision.rule == "concurrency" else "budget-queue"
            draft.actions.append(Action(ActionKind.QUEUE, agent.tenant, agent.host, agent.name, agent.launch.socket,
                                        session.marks.model or None, Reason(rule, decision.reason, source)))
        return
    verdict = _assess(agent, session, observed, now) if session is not None else None
    if verdict is not None:
        draft.health.append(_health(agent, verdict))
    if verdict is None or verdict.health.needs_restart:
        draft.actions.append(Action(ActionKind.REFUSE, agent.tenant, agent.host, agent.name, agent.launch.socket,
                                    agent.model, Reason("budget-refuse", decision.reason, source)))


def _held_note(decision: Decision) -> str:
    who = f"tenant {decision.tenant}: {decision.agent}"
    if decision.state is State.REFUSED:
        return (f"{who} is refused by the budget policy ({decision.rule}: {decision.model} is its cheapest rung "
                f"and account {decision.account} is over its hard cap); it is not started until the cap resets")
    if decision.until is not None:
        until = decision.until.isoformat()
    else:
        until = "a concurrency slot frees" if decision.rule == "concurrency" else f"account {decision.account} is back under pace"
    return f"{who} is queued by the budget policy ({decision.rule}) until {until}"


def _owns(session: ObservedSession, agent: DesiredAgent) -> bool:
    return session.marks.owned and session.marks.tenant == agent.tenant and session.marks.agent == agent.name


def _conflict(agent: DesiredAgent, session: ObservedSession) -> Conflict:
    marks = session.marks
    if marks.owned:
        whose = f"it is marked as agent {marks.agent!r} of tenant {marks.tenant!r}"
    else:
        whose = "it has no @fleet-tenant/@fleet-agent marks, so the fleet did not create it"
    return Conflict(
        agent.tenant, agent.name, agent.launch.socket,
        f"session {session.name!r} on tmux socket {agent.launch.socket.label()} is not this agent's: {whose}; "
        f"the fleet will not touch it. Rename or close it by hand (tmux rename-session), or rename the agent",
    )


def _assess(agent: DesiredAgent, session: ObservedSession, observed: ObservedFleet, now: datetime) -> Verdict:
    """The agent's health; an unhealthy adapter runtime whose screen (read only for such
    agents, engine/observe.py `observe_screens`) shows a known dialog is `waiting` on it instead."""
    verdict = assess(session, observed.heartbeats.get((agent.tenant, agent.name)), now=now,
                     timeout=agent.heartbeat_timeout, grace=agent.startup_grace,
                     working_timeout=agent.working_timeout if agent.launch.adapter else None)
    return dialog_verdict(verdict, agent.launch.adapter, observed.screens.get((agent.tenant, agent.name)))


def _health(agent: DesiredAgent, verdict: Verdict) -> AgentHealth:
    return AgentHealth(agent.tenant, agent.name, verdict.health.value, verdict.message, verdict.reason)


def _plan_running(
    draft: _Draft, agent: DesiredAgent, session: ObservedSession, observed: ObservedFleet, now: datetime,
    opts: PlanOptions, decision: Decision | None = None,
) -> None:
    if session.marks.spec_hash != agent.launch.spec_hash:
        move = _budget_move(agent, session, decision)
        if move is not None:
            draft.actions.append(move)
            return
        drift: tuple[Drift, ...] = ()
        if session.marks.model and session.marks.model != agent.model:
            drift = (Drift("model", agent.model, session.marks.model),)
        what = f"model {session.marks.model} -> {agent.model}" if drift else "command, environment or workdir changed"
        draft.actions.append(_action(
            ActionKind.RESTART, agent, "spec-changed",
            f"@fleet-spec-hash {session.marks.spec_hash or '(none)'} differs from desired {agent.launch.spec_hash} ({what})",
            drift,
        ))
        return
    verdict = _assess(agent, session, observed, now)
    if verdict.health.needs_restart and (missing := missing_runtime(agent, observed)):
        draft.health.append(AgentHealth(agent.tenant, agent.name, MISSING, missing, MISSING_REASON))
        return
    draft.health.append(_health(agent, verdict))
    if not verdict.health.needs_restart:
        return
    record = opts.history.get((agent.tenant, agent.name))
    not_before = next_restart_at(record, now)
    if record is not None and not_before is not None and now < not_before:
        stalled = record.attempts >= STALL_AFTER
        draft.waits.append(Wait(
            agent.tenant, agent.name, not_before, record.attempts, stalled,
            f"{verdict.message}; restart {record.attempts + 1} backs off until {not_before.isoformat()}"
            + (f" (Stalled: {record.attempts} restarts without recovering)" if stalled else ""),
        ))
        return
    if (paced := _login_wait(draft, agent, record, opts, now, verdict)) is not None:
        draft.waits.append(paced)
        return
    draft.actions.append(_action(ActionKind.RESTART, agent, f"health-{verdict.health.value}", verdict.message))


def _login_wait(draft: _Draft, agent: DesiredAgent, record: RestartRecord | None, opts: PlanOptions,
                now: datetime, verdict: Verdict) -> Wait | None:
    """Hold a health restart back when its login is busy: at most one restart per login
    in a plan, and none within LOGIN_PACE_S of another agent's restart on it (restart
    history). A burst of restarts on one login is what logs every agent of it out; else
    the restart is claimed for the login and None is returned."""
    key = (agent.tenant, agent.name)
    login = draft.logins.get(key)
    if login is None:
        return None
    attempts = record.attempts if record else 0
    pace = timedelta(seconds=LOGIN_PACE_S)
    first = draft.restarting.get(login)
    if first is not None:
        return Wait(agent.tenant, agent.name, now + pace, attempts, False,
                    f"{verdict.message}; restart waits: {first} restarts first on login {login} "
                    f"(one restart at a time per login)")
    recent = [(other.last_at, who) for who, other in opts.history.items()
              if who != key and draft.logins.get(who) == login and now - pace < other.last_at <= now]
    if recent:
        last_at, who = max(recent)
        return Wait(agent.tenant, agent.name, last_at + pace, attempts, False,
                    f"{verdict.message}; restart waits until {(last_at + pace).isoformat()}: {who[1]} was restarted "
                    f"on login {login} less than {LOGIN_PACE_S}s ago (restarts of one login are paced)")
    draft.restarting[login] = agent.name
    return None


#: The health of an agent whose runtime binary is found nowhere on this host, and its reason code.
MISSING = "missing"
MISSING_REASON = "missing-binary"


def missing_runtime(agent: DesiredAgent, observed: ObservedFleet) -> str | None:
    """Why an adapter runtime's agent is not started: a program of its launch is found
    nowhere on this host (observed while resolving). Starting it would only exit and be
    restarted until Stalled; the agent's health (`missing`, reason `missing-binary`) says
    which program, for which user, and what to do.
    Plain command runtimes are started as before (their failure shows as a dead pane)."""
    if agent.launch.adapter is None:
        return None
    gone = sorted(p for p in (*(agent.launch.argv[at] for at in program_positions(agent.launch.argv)),
                              agent.launch.hook) if p in observed.resolved.missing)
    if not gone:
        return None
    user = agent.launch.socket.user or "the user running fleet"
    return (f"not started: {', '.join(gone)} is not found for {user} on "
            f"this host (PATH, or beside fleet's own Python); install it (docs/runtimes.md, e.g. npm install -g "
            f"@anthropic-ai/claude-code or @openai/codex) or give fleet.yaml's runtime `command:` its absolute path")


def _budget_move(agent: DesiredAgent, session: ObservedSession, decision: Decision | None) -> Action | None:
    """A session on another rung of the agent's ladder than its decision: `downgrade` when
    the decision is cheaper, `restart` (rule budget-restore) when it is back toward desired."""
    if decision is None:
        return None
    at = decision.rung_of(session.marks.model)
    if at is None or at == decision.rung:
        return None
    if decision.change.value in ("down", "up"):
        message = decision.reason
    else:
        message = (f"runs {session.marks.model}, but the budget policy has it on {decision.model} "
                   f"(model changed at {decision.changed_at.isoformat() if decision.changed_at else '-'}): {decision.reason}")
    kind, rule = (ActionKind.DOWNGRADE, "budget-downgrade") if at < decision.rung else (ActionKind.RESTART, "budget-restore")
    return Action(kind, agent.tenant, agent.host, agent.name, agent.launch.socket, agent.model,
                  Reason(rule, message, _budget_source(agent, decision)), agent.launch,
                  (Drift("model", agent.model, session.marks.model),))


def _stop_reason(tenant: DesiredTenant, session: ObservedSession, host: str) -> tuple[str, str]:
    """The rule and message of a stop: `fleet down`, a move to another host, or a removal."""
    if tenant.down:
        return DOWN_RULE, f"`fleet down` stops every agent of tenant {tenant.name} on this host"
    elsewhere = [a.host for a in tenant.agents if a.name == session.name and a.host != host]
    if elsewhere:
        return "not-desired", f"agent {session.name!r} now runs on host {elsewhere[0]!r}, not {host!r}"
    return "not-desired", f"agent {session.name!r} is no longer in tenants/{tenant.name}/roster.yaml"


def _stop(tenant: str, host: str, socket: SocketKey, session: ObservedSession, rule: str, message: str) -> Action:
    return Action(ActionKind.STOP, tenant, host, session.name, socket, session.marks.model or None,
                  Reason(rule, message))


def _add_stops(draft: _Draft, tenant: str, stops: list[Action], running: int, opts: PlanOptions, *,
               asked: bool = False) -> None:
    """Add the stops, or hold them when they would stop most of the tenant, unless a
    person asked for that (`--allow-mass-stop`, or `fleet down`: `asked`)."""
    if not stops:
        return
    if len(stops) * 2 > running and not (opts.allow_mass_stop or asked):
        draft.holds.append(Hold(
            tenant, MASS_STOP_RULE,
            f"tenant {tenant}: the plan would stop {len(stops)} of its {running} running agents on this host "
            f"(more than half), so the stops are held; if that is intended, re-run with --allow-mass-stop",
            tuple(sorted(stops, key=Action.sort_key)),
        ))
        return
    draft.actions.extend(stops)


def _plan_orphans(draft: _Draft, desired: DesiredFleet, observed: ObservedFleet, opts: PlanOptions) -> None:
    """Sessions of tenants that are gone from the repository (not merely invalid or filtered)."""
    known = set(desired.tenants) | set(desired.frozen)
    by_tenant: dict[str, list[Action]] = {}
    for snap in observed.sockets.values():
        for s in snap.sessions.values():
            if s.marks.owned and s.marks.host == desired.host and s.marks.tenant not in known:
                msg = f"tenant {s.marks.tenant!r} is no longer in the repository (no tenants/{s.marks.tenant}/)"
                by_tenant.setdefault(s.marks.tenant, []).append(
                    _stop(s.marks.tenant, desired.host, snap.key, s, "not-desired", msg))
    for tenant, stops in sorted(by_tenant.items()):
        _add_stops(draft, tenant, stops, len(stops), opts)
