"""The apply step: run a Plan through the drivers, tenant by tenant, under the tenant lock.

Each action re-checks its precondition against a fresh listing of the socket taken
inside the lock, so applying twice, or again after a crash halfway, converges with no
duplicates; the outcome of every action is read back from tmux, not assumed. Restart
history (for backoff) is advanced and written here. Where the tick found our systemd
user manager, engine/systemd_apply.py puts core agents under units and every tmux server under
its socket's unit; without one, apply runs tmux-only.

Budget actions: `downgrade` runs like a restart with the cheaper launch, `queue` like a
stop, and `refuse` starts nothing (its outcome is `skipped`, so it is reported without
adding a run to the status every tick). The budget policy's memory is written here too.

Every outcome, done, skipped or failed, is appended to the tenant's audit log
(drivers/audit.py) inside the lock, right after its group ran; a log that cannot be
written is a problem line, never a reason to stop. A tmux server that dies or hangs
mid-apply fails the actions it took with it, each with tmux's words; the next tick
converges from whatever is left.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from reconciler.core.budget_memory import memory_json
from reconciler.core.desired import Worktree, adapter_run
from reconciler.core.health import Health
from reconciler.core.history import advance
from reconciler.core.plan import Action, ActionKind
from reconciler.drivers import tmux, users
from reconciler.drivers.audit import AuditRecord, AuditResult, Who, append_records, redact, whoami
from reconciler.drivers.files import write_if_changed
from reconciler.drivers.lock import LockBusy, hold_lock
from reconciler.drivers.runtime_config import RuntimeConfigError, write_configs
from reconciler.engine import worktrees
from reconciler.engine.state import write_history, write_lane_memory
from reconciler.engine.systemd_apply import GroupUnits, apply_units, group_units
from reconciler.engine.tick import Tick
from reconciler.engine.tracing import ActionSpans
from reconciler.model.history import RestartRecord
from reconciler.model.launch import LaunchSpec
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey, SocketSnapshot
from reconciler.runtimes import ADAPTERS

Result = Literal["done", "skipped", "failed"]
STARTS = {ActionKind.SPAWN, ActionKind.RESTART, ActionKind.DOWNGRADE}
STOPS = {ActionKind.STOP, ActionKind.QUEUE}
#: Restarts that are not a failure to recover from: they reset the backoff.
FRESH_START_RULES = {"spec-changed", "budget-downgrade", "budget-restore"}
REFUSED = "refused by the budget policy; nothing was started"
NOT_APPEARED = ("the session did not appear, though tmux reported no error (did its server exit during "
                "the apply?); the next run starts it again")
STUCK = ("its tmux server was stuck in its own exit, hanging up on every client while its agents ran on "
         "unreachable; SIGTERM lets it finish, and the plan starts the agents again")
_AUDIT_RESULT: dict[Result, AuditResult] = {"done": "ok", "skipped": "skipped", "failed": "failed"}


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    result: Result
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcomes: tuple[Outcome, ...]
    problems: tuple[str, ...] = ()

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "failed"]


def apply_plan(tick: Tick, *, lock_timeout: float = 30.0) -> ApplyReport:
    """Execute `tick.plan`; never raises over one tenant's trouble, reports it instead."""
    outcomes: list[Outcome] = []
    problems: list[str] = []
    who = whoami("down" if tick.inputs.down else "reconcile")
    problems += _end_stuck_servers(tick, who)
    layout = StateLayout(tick.inputs.state_dir)
    for (tenant, socket), actions in _grouped(tick.plan.actions).items():
        spans = ActionSpans(actions, tick.observed.heartbeats)  # engine/tracing.py: no-ops while traces are off
        try:
            with hold_lock(layout.lock(tenant), timeout=lock_timeout):
                done, notes = _apply_group(socket, actions, group_units(tick, tenant, socket), spans.dress,
                                           worktrees.of_tenant(tick.desired, tenant))
                notes += _remove_worktrees(tick, done)
                spans.finish(done)
                outcomes += done
                problems += notes
                problems += append_records(tick.inputs.state_dir, audit_records(done, who))
                continue
        except LockBusy as exc:
            failed = [Outcome(a, "failed", str(exc)) for a in actions]
        except OSError as exc:  # the lock (or a unit file) could not be written
            where = exc.filename or layout.lock(tenant)
            failed = [Outcome(a, "failed", f"state directory: {where}: {exc.strerror or exc}") for a in actions]
        except BaseException:
            spans.abandon("the apply of this group raised")
            raise
        spans.finish(failed)
        outcomes += failed
        problems += append_records(tick.inputs.state_dir, audit_records(failed, who))
    problems += _record_history(tick, outcomes)
    problems += _record_budget(tick)
    problems += _record_lanes(tick)
    return ApplyReport(tuple(outcomes), tuple(problems))


def _end_stuck_servers(tick: Tick, who: Who) -> list[str]:
    """End each server observed stuck in its exit (drivers/stuck_server.py) before any
    action, so spawns start a fresh one and `down` stops its agents. The socket's tenant
    (spec validation gives each socket one) gets an audit line."""
    problems: list[str] = []
    for key, snap in tick.observed.sockets.items():
        if snap.stuck_pid is None:
            continue
        result: AuditResult = "ok"
        error = ""
        try:
            said = tmux.end_stuck(key, snap.stuck_pid)
        except OSError as exc:
            said, result, error = None, "failed", str(exc)
        if said is None and not error:
            result = "skipped"
            error = f"the tmux server on {key.label()} was no longer stuck (it exited, or answers again): nothing was signalled"
        problems.append(said or error)
        records = [
            AuditRecord(ts=datetime.now(UTC), who=who, kind="end-server", tenant=tenant, agent="", model=None,
                        rule="tmux-server-stuck", why=STUCK, result=result, error=error)
            for tenant in sorted(t.name for t in tick.desired.tenants.values() if t.socket == key)
        ]
        problems += append_records(tick.inputs.state_dir, records)
    return problems


def _grouped(actions: Iterable[Action]) -> dict[tuple[str, SocketKey], list[Action]]:
    groups: dict[tuple[str, SocketKey], list[Action]] = {}
    for action in actions:
        groups.setdefault((action.tenant, action.socket), []).append(action)
    return groups


def _as_is(launch: LaunchSpec) -> LaunchSpec:
    return launch


def _apply_group(socket: SocketKey, actions: list[Action], systemd: GroupUnits | None,
                 dress: Callable[[LaunchSpec], LaunchSpec] = _as_is,
                 trees: Mapping[str, Worktree] | None = None) -> tuple[list[Outcome], list[str]]:
    """One tenant's actions on one socket: re-check, kill, start, then read back.

    With `systemd`, the units step runs between the kills and the direct spawns, so the
    server unit is active before any new-session. `dress` adds the trace context to each
    direct spawn's environment (a unit's file stays as planned: it must not change every
    run). Returns the outcomes and the notes.
    """
    fresh = tmux.observe_socket(socket)
    if fresh.error:
        return [Outcome(a, "failed", fresh.error) for a in actions], []
    skipped: dict[Action, str] = {}
    kills: list[Action] = []
    starts: list[Action] = []
    for action in actions:
        why = _precondition(action, fresh)
        if why:
            skipped[action] = why
            continue
        if action.kind in STOPS or (action.kind in STARTS and action.agent in fresh.sessions):
            kills.append(action)
        if action.kind in STARTS:
            starts.append(action)
    unprepared = worktrees.make(starts, trees or {})  # a lane worker's pane starts in its own worktree
    unprepared.update(_prepare(socket, [a for a in starts if a not in unprepared]))
    starts = [a for a in starts if a not in unprepared]
    errors: list[str] = []
    notes: list[str] = []
    if kills:
        try:
            tmux.kill_sessions(socket, sorted({a.agent for a in kills}))
        except tmux.TMUX_FAILURES as exc:
            errors.append(_said(exc))
    launches = [a.launch for a in starts if a.launch is not None]  # resolved by the observe step: as planned
    under: dict[str, str] = {}
    if systemd is not None:
        leaving = [a.agent for a in kills if a.kind in STOPS]
        leaving += [launch.agent for launch in launches if launch.agent not in systemd.core]
        step = apply_units(systemd, leaving, launches)
        errors += step.errors
        notes += step.problems
        if step.blocked:
            errors.append(step.blocked)
        launches, under = step.spawn_directly, step.under_units
    if launches:
        try:
            tmux.spawn_sessions([dress(launch) for launch in launches])
        except tmux.TMUX_FAILURES as exc:
            errors.append(_said(exc))
    after = tmux.observe_socket(socket)
    outcomes = [
        Outcome(a, "skipped", skipped[a]) if a in skipped
        else Outcome(a, "failed", unprepared[a]) if a in unprepared
        else _read_back(a, after, errors, under.get(a.agent, ""))
        for a in actions
    ]
    return outcomes, notes


def _remove_worktrees(tick: Tick, done: list[Outcome]) -> list[str]:
    """Remove the worktree of each worker whose stop went through (its branches stay)."""
    ended = [(o.action.tenant, o.action.agent) for o in done if o.result == "done" and o.action.kind in worktrees.ENDS]
    return worktrees.remove(tick.inputs.state_dir, ended) if ended else []


def _prepare(socket: SocketKey, starts: list[Action]) -> dict[Action, str]:
    """Write what each adapter runtime's adapter prepares (reconciler/runtimes/: its
    settings, the user's runtime config merged) before its start; returns the starts that
    could not be prepared, with why. Those are not started: a runtime without its hooks
    would never answer the heartbeat, and one stopped on a dialog would be restarted."""
    failed: dict[Action, str] = {}
    for action in starts:
        launch = action.launch
        if launch is None or launch.adapter is None:
            continue
        if not users.is_me(socket.user):  # root hands such a tenant to a run as its user (engine/delegate.py)
            failed[action] = (f"runtime adapter {launch.adapter!r} for user {socket.user}: a runtime's config is "
                              "prepared only by a run as the user who runs the agent; run `fleet reconcile` as root "
                              "(it runs each tenant user's share as that user) or as that user")
            continue
        run, paths = adapter_run(launch, str(Path.home()))
        try:
            write_configs(ADAPTERS[launch.adapter].prepare(run, paths))
        except RuntimeConfigError as exc:
            failed[action] = f"not started: {exc}"
    return failed


def _said(exc: Exception) -> str:
    """A tmux failure in words; a hung server or a missing binary says which."""
    if isinstance(exc, tmux.TmuxTimeout):
        return f"tmux did not answer within {exc.timeout:g} s (a hung server?)"
    return str(exc) or type(exc).__name__


def audit_records(outcomes: Iterable[Outcome], who: Who) -> list[AuditRecord]:
    """The audit log's lines for `outcomes`: the action, its reason and its result."""
    now = datetime.now(UTC)
    return [
        AuditRecord(
            ts=now, who=who, kind=o.action.kind.value, tenant=o.action.tenant, agent=o.action.agent,
            model=o.action.model, rule=o.action.reason.rule, why=o.action.reason.message,
            result=_AUDIT_RESULT[o.result],
            error="" if o.result == "done" else redact(o.detail, o.action.launch.env if o.action.launch else ()),
        )
        for o in outcomes
    ]


def _precondition(action: Action, fresh: SocketSnapshot) -> str:
    """Why `action` must not run now ("" when it may): the world moved since the plan."""
    session = fresh.sessions.get(action.agent)
    ours = session is not None and session.marks.owned and session.marks.tenant == action.tenant \
        and session.marks.agent == action.agent
    if action.kind == ActionKind.REFUSE:
        return REFUSED
    if action.kind in STOPS:
        return "" if ours else "already gone"
    if session is None:
        return ""
    if not ours:
        return "a session that is not the fleet's now has this name; left alone"
    if action.kind == ActionKind.SPAWN and action.launch and session.marks.spec_hash == action.launch.spec_hash:
        return "already running (another reconciler started it)"
    moved = action.kind == ActionKind.DOWNGRADE or action.reason.rule == "budget-restore"
    if moved and action.launch and session.marks.spec_hash == action.launch.spec_hash:
        return f"already runs {action.launch.model} (another reconciler moved it)"
    return ""


def _read_back(action: Action, after: SocketSnapshot, errors: list[str], unit: str = "") -> Outcome:
    """The action's outcome as tmux now shows it; `unit` names the unit that started it."""
    session = after.sessions.get(action.agent)
    if action.kind in STOPS:
        return Outcome(action, "done") if session is None else Outcome(action, "failed", "; ".join(errors) or "still running")
    launch = action.launch
    if session is not None and launch is not None and session.marks.spec_hash == launch.spec_hash and session.marks.owned:
        return Outcome(action, "done", f"under {unit}" if unit else "")
    return Outcome(action, "failed", "; ".join(errors) or NOT_APPEARED)


def _record_history(tick: Tick, outcomes: list[Outcome]) -> list[str]:
    """Advance restart history: healthy resets, a health restart counts, a stop forgets."""
    restarted = {
        (o.action.tenant, o.action.agent): o.action.reason.message
        for o in outcomes
        if o.action.kind == ActionKind.RESTART and o.action.reason.rule.startswith("health-") and o.result != "skipped"
    }
    forgotten = [
        (o.action.tenant, o.action.agent)
        for o in outcomes
        if o.result == "done" and (o.action.kind in STOPS or o.action.reason.rule in FRESH_START_RULES)
    ]
    well = Health.HEALTHY.value
    healthy = [(h.tenant, h.agent) for h in tick.plan.health if h.health == well]
    new = advance(tick.history, healthy=healthy, restarted=restarted, forgotten=forgotten, now=tick.now)
    by_tenant: dict[str, dict[str, RestartRecord]] = {}
    for (t, agent), rec in new.items():
        by_tenant.setdefault(t, {})[agent] = rec
    problems = []
    for tenant in tick.desired.tenants:
        records = by_tenant.get(tenant, {})
        try:
            write_history(tick.inputs.state_dir, tenant, records)
        except OSError as exc:
            problems.append(f"could not write restart history for {tenant}: {exc}")
    return problems



def _record_lanes(tick: Tick) -> list[str]:
    """Persist each lane tenant's memory (workers' last activity, who holds which task)."""
    if tick.inputs.down:
        return []
    problems = []
    for tenant, lanes in tick.lanes.tenants.items():
        try:
            write_lane_memory(tick.inputs.state_dir, tenant, lanes.memory)
        except OSError as exc:
            problems.append(f"could not write lane memory for {tenant}: {exc}")
    return problems


def _record_budget(tick: Tick) -> list[str]:
    """Persist each budgeted tenant's policy memory (rungs, last model changes, queues).

    Written after every apply, whatever the outcomes: the memory is the policy's
    decision, and a session that did not follow it this time is planned again next tick.
    """
    if tick.inputs.down:
        return []
    problems = []
    for tenant, decided in tick.budget.tenants.items():
        path = StateLayout(tick.inputs.state_dir).budget_memory(tenant)
        text = memory_json(decided.memory())
        try:
            write_if_changed(path, text, mode=0o600)
        except OSError as exc:
            problems.append(f"could not write budget memory for {tenant}: {exc}")
    return problems
