"""The observe step: ask each driver once and freeze the answers into one ObservedFleet.

It sits between load and plan in every tick, and it is the tick's only reader of the
world: tmux, systemd, the state directory and this host's programs and folders. The
number of external calls is constant per socket, systemd manager and tenant, never per
agent: one tmux listing per distinct socket, one `observe_units()` per systemd manager,
one directory scan per tenant for heartbeats and one for usage records, one read each
of a tenant's restart history and budget memory (`observe_stored`); the exception is
an agent on Claude Code: its kept conversation id and its transcript (one small read
and one folder listing each, `observe_conversations`), an agent on Codex: the
rollout files of the threads its heartbeat names (`observe_read_back`), and the listing
of its two newest rollout folders, with the end of a rollout only when one changed
since its last event (`observe_codex_failures`); and an adapter agent already unhealthy
(silent or stale): one `capture-pane` each (`observe_screens`), so that a dialog can be
named as the reason; a healthy fleet captures nothing. It persists
nothing; what could not be read becomes a line in `problems`, never a failed tick.

Several tmux servers are listed at the same time (threads), while the state directory
is read; a resident loop re-reads only the heartbeats whose stat changed and re-parses
only the listing lines that changed (drivers/files.py, drivers/tmux/client.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from reconciler.core.budget_types import AgentMemory
from reconciler.core.desired import (
    DesiredFleet,
    codex_facts,
    conversation_facts,
    default_session_id,
    host_facts,
    next_session_id,
    read_back_facts,
)
from reconciler.core.health import FUTURE_SKEW
from reconciler.core.held import held_by_failure
from reconciler.drivers import host, systemd, tmux, usage, users
from reconciler.drivers.files import scan_heartbeats
from reconciler.engine.memo import LastResult
from reconciler.engine.state import read_budget_memory, read_history, read_lane_memory, read_resumes
from reconciler.model.history import RestartRecord
from reconciler.model.layout import StateLayout
from reconciler.model.observed import (
    HOME_WORKDIR,
    Conversation,
    Heartbeat,
    ObservedFleet,
    Resolved,
    SocketKey,
    SocketSnapshot,
    SystemdSnapshot,
)
from reconciler.model.usage import UsageSignal
from reconciler.runtimes.codex import turn_failure

if TYPE_CHECKING:  # lane memory and task reports: only tenants with lanes have them (core/lane_plan.py)
    from reconciler.core.lanes import LaneMemory
    from reconciler.core.resume import ResumeRecord  # resume records: only after a usage limit
    from reconciler.model.task_report import TaskReport

A = TypeVar("A")
R = TypeVar("R")

#: Why another user's manager is not asked yet (SystemdSnapshot.reason).
OTHER_USER_SYSTEMD = "another user's systemd --user: that user's own fleet run drives it"


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the reconciler itself kept in the state directory, read in the observe step
    beside the `ObservedFleet`: restart history and budget memory, keyed (tenant, agent)."""

    history: Mapping[tuple[str, str], RestartRecord] = field(default_factory=dict)
    budget_memory: Mapping[tuple[str, str], AgentMemory] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    lanes: Mapping[str, LaneMemory] = field(default_factory=dict)  # tenants with lanes on this host
    reports: Mapping[str, tuple[TaskReport, ...]] = field(default_factory=dict)  # likewise: the agents' task reports
    resumes: Mapping[tuple[str, str], ResumeRecord] = field(default_factory=dict)  # core/resume.py


def observe_tick(
    desired: DesiredFleet, state: StateLayout, now: datetime, budgeted: Collection[str]
) -> tuple[ObservedFleet, StoredState]:
    """Everything one tick reads, for `desired`'s tenants: the host (`observe`, with the
    programs and workdirs its launches name resolved) and the reconciler's own records
    (`observe_stored`; budget memory only for the `budgeted` tenants)."""
    users_ = sorted({t.socket.user for t in desired.tenants.values()}, key=lambda u: u or "")
    programs, workdirs = _host_facts(desired)
    observed = observe(desired.sockets, users_, state, desired.tenants, now, programs=programs, workdirs=workdirs)
    conversations = observe_conversations(state, conversation_facts(desired))
    if conversations:
        observed = replace(observed, resolved=replace(observed.resolved, conversations=conversations))
    read_back = observe_read_back(observed, read_back_facts(desired))
    if read_back:
        observed = replace(observed, resolved=replace(observed.resolved, read_back=read_back))
    if held := observe_codex_failures(observed.heartbeats, codex_facts(desired)):
        observed = replace(observed, heartbeats={**observed.heartbeats, **held})
    laned = [n for n, t in sorted(desired.tenants.items()) if any(lane.host == desired.host for lane in t.lanes)]
    return observed, observe_stored(state, sorted(desired.tenants), budgeted, laned)


def observe_codex_failures(heartbeats: Mapping[tuple[str, str], Heartbeat],
                           facts: Iterable[tuple[str | None, str, str, str, str]]) -> dict[tuple[str, str], Heartbeat]:
    """The Codex agents' heartbeats held by a failed turn (core/held.py `held_by_failure`):
    Codex runs no `notify` when a turn fails, so its rollout is read, only the rollouts
    changed since the agent's last event and only the newest one of the agent's workdir
    (drivers/host.py `codex_rollout_tails`). Only our own user's agents."""
    found: dict[tuple[str, str], Heartbeat] = {}
    for user, tenant, agent, codex_home, workdir in sorted(facts, key=lambda f: (f[0] or "", *f[1:])):
        beat = heartbeats.get((tenant, agent))
        if beat is None or beat.event is None or not users.is_me(user):
            continue
        held = held_by_failure(beat, codex_turn_failure(codex_home, workdir, beat))
        if held is not beat:
            found[(tenant, agent)] = held
    return found


def codex_turn_failure(codex_home: str, workdir: str, beat: Heartbeat) -> tuple[str, str, str] | None:
    """The failed turn (runtimes/codex.py `turn_failure`) in the newest rollout of
    `workdir` changed since the agent's last event, if the last turn there failed."""
    try:
        cwd = '"cwd":' + json.dumps(str(Path(workdir).expanduser()), ensure_ascii=False)
    except RuntimeError:  # no home to expand `~` against
        return None
    since = (beat.event_ts or beat.ts).timestamp()
    tail = next((t for t in host.codex_rollout_tails(codex_home, since) if cwd in t), None)
    return turn_failure(tail) if tail is not None else None


#: What host_facts said of the last desired fleet asked about: a resident loop gets the
#: very same DesiredFleet back while no spec changed (engine/tick.py).
_FACTS: LastResult[tuple[frozenset[str], frozenset[tuple[str | None, str]]]] = LastResult()


def _host_facts(desired: DesiredFleet) -> tuple[frozenset[str], frozenset[tuple[str | None, str]]]:
    """host_facts, or (same desired object) what it said last time."""
    return _FACTS.get(desired, None, lambda: host_facts(desired))


def observe_stored(state: StateLayout, tenants: Iterable[str], budgeted: Collection[str],
                   laned: Collection[str] = ()) -> StoredState:
    """Every tenant's restart history, each budgeted tenant's budget memory, and each
    tenant with lanes here its lane memory and its agents' task reports; an unreadable
    file is a problem line and starts over (engine/state.py)."""
    tenants = list(tenants)
    history, history_problems = read_history(state.root, tenants)
    resumes, resume_problems = read_resumes(state.root, tenants)
    memory, memory_problems = read_budget_memory(state.root, [t for t in tenants if t in budgeted])
    lanes, lane_problems = read_lane_memory(state.root, [t for t in tenants if t in laned])
    reports: dict[str, tuple[TaskReport, ...]] = {}
    report_problems: list[str] = []
    if laned:
        from reconciler.drivers.reports import read_reports  # noqa: PLC0415  (only for tenants with lanes)
    for tenant in (t for t in tenants if t in laned):
        found, problems = read_reports(state, tenant)
        reports[tenant] = tuple(found)
        report_problems += problems
    return StoredState(history, memory, (*history_problems, *memory_problems, *lane_problems, *report_problems,
                                         *resume_problems), lanes, reports, resumes)


def observe(
    sockets: Iterable[SocketKey],
    systemd_users: Iterable[str | None],
    state: StateLayout,
    tenants: Iterable[str],
    now: datetime,
    *,
    programs: Iterable[str] = (),
    workdirs: Iterable[tuple[str | None, str]] = (),
) -> ObservedFleet:
    """One snapshot of this host: tmux servers, systemd managers, heartbeats and usage by
    tenant (from `state`), and where `programs` and `workdirs` are here (`resolve_host`).

    `now` is the caller's clock reading, stored as `taken_at` so the snapshot replays
    exactly.
    """
    tenants = list(dict.fromkeys(tenants))
    sockets = list(dict.fromkeys(sockets))
    with _meanwhile(_observe_sockets, sockets, alone=len(sockets) <= 1) as listing:
        # Several tmux servers: they answer while the state directory is read.
        heartbeats, beat_problems = _observe_heartbeats(state, tenants, now)
        signals, usage_problems = _observe_usage(state, tenants, now)
        systemd_snapshots = {user: _observe_systemd(user) for user in dict.fromkeys(systemd_users)}
        snapshots = listing()
    problems = [snap.error for snap in snapshots.values() if snap.error]
    return ObservedFleet(
        taken_at=now,
        sockets=snapshots,
        systemd=systemd_snapshots,
        heartbeats=heartbeats,
        problems=(*problems, *beat_problems, *usage_problems),
        usage=signals,
        resolved=resolve_host(programs, workdirs),
    )


def observe_screens(panes: Iterable[tuple[str, str, SocketKey]], observed: ObservedFleet) -> dict[tuple[str, str], str]:
    """The visible text of each (tenant, agent, socket) pane the planner asked for
    (core/planner.py `unhealthy_panes`): one tmux call each, on the agent's own pane as
    `observed` saw it (never a pane a person split off); one that cannot be read is left
    out (the agent is then judged without it)."""
    found = {}
    for tenant, agent, socket in panes:
        session = observed.session(socket, agent)
        text = tmux.capture_pane(socket, agent, session.pane_id if session else "")
        if text is not None:
            found[(tenant, agent)] = text
    return found


#: How many started-but-empty conversations are skipped before giving up (then the start
#: fails and is retried with backoff, saying so in the pane).
MAX_EMPTY_SESSIONS = 32


def observe_conversations(state: StateLayout, facts: Iterable[tuple[str | None, str, str, str]]
                          ) -> dict[tuple[str, str], Conversation]:
    """Each agent's conversation: the id kept in the state directory (else the derived
    default), resumed when the runtime's transcript of it holds a message. A transcript
    without one (the runtime was killed before it wrote its records) can be neither
    resumed nor started again, so the conversation moves on to the next id (nothing lost). Only our own user's agents:
    another user's runtime files are that user's run's to read."""
    found: dict[tuple[str, str], Conversation] = {}
    for user, tenant, agent, config_dir in sorted(facts, key=lambda f: (f[0] or "", *f[1:])):
        if not users.is_me(user):
            continue
        session_id = host.kept_session_id(state.conversation(tenant, agent)) or \
            default_session_id(str(state.root), tenant, agent)
        kept = host.claude_transcript(config_dir, session_id)
        for _ in range(MAX_EMPTY_SESSIONS):  # an id taken but with nothing to resume: the next one
            if kept != "empty":
                break
            session_id = next_session_id(session_id)
            kept = host.claude_transcript(config_dir, session_id)
        found[(tenant, agent)] = Conversation(session_id, kept == "conversation")
    return found


def observe_read_back(observed: ObservedFleet, facts: Iterable[tuple[str | None, str, str, str, str, str]]
                      ) -> dict[tuple[str, str, str], str]:
    """Each Codex agent's conversation, read back: the newest thread its runtime named in
    a `notify` (kept in the agent's heartbeat by fleet-hook, so it is this agent's own
    runtime that named it) whose rollout file says it was started in the agent's workdir.
    A side thread (Codex's per-turn title) has no rollout and is skipped; no match, no
    resume. At most a few small reads per Codex agent. Only our own user's agents."""
    found: dict[tuple[str, str, str], str] = {}
    for user, tenant, agent, adapter, home, workdir in sorted(facts, key=lambda f: (f[0] or "", *f[1:])):
        beat = observed.heartbeats.get((tenant, agent))
        if beat is None or not beat.threads or not users.is_me(user):
            continue
        cwd = _expand(observed.resolved.workdirs.get((user, workdir), workdir))
        for thread in reversed(beat.threads):
            started_in = host.codex_rollout_cwd(home, thread)
            if started_in is not None and _expand(started_in) == cwd:
                found[(tenant, agent, adapter)] = thread
                break
    return found


def _expand(folder: str) -> str:
    """`folder` with `~` expanded and made absolute, for comparing two spellings of it."""
    try:
        return os.path.normpath(Path(folder).expanduser())
    except RuntimeError:
        return folder


def resolve_host(programs: Iterable[str], workdirs: Iterable[tuple[str | None, str]]) -> Resolved:
    """Where each program is (drivers/host.py) and which workdirs exist. A workdir of our
    own user that does not exist becomes `~`; another user's is checked by that user's
    own run, so it is kept as it is."""
    found = {program: host.program_path(program) for program in sorted(set(programs))}
    missing = frozenset(p for p in found if not host.program_found(p))
    usable = {
        (user, workdir): workdir if host.workdir_exists(workdir) else HOME_WORKDIR
        for user, workdir in sorted(set(workdirs), key=lambda k: (k[0] or "", k[1]))
        if users.is_me(user)
    }
    return Resolved({p: path for p, path in found.items() if path != p}, missing, usable,
                    pane_path=host.pane_path(os.environ.get("PATH", "")))


@contextmanager
def _meanwhile(work: Callable[[A], R], arg: A, *, alone: bool) -> Iterator[Callable[[], R]]:
    """`work(arg)` on a thread of its own while the body runs (`alone`: first, on this
    thread); the body gets the function that gives its result."""
    if alone:
        done = work(arg)
        yield lambda: done
        return
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415  (only with several servers)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-observe") as pool:
        future = pool.submit(work, arg)
        yield future.result


def _observe_sockets(sockets: Iterable[SocketKey]) -> dict[SocketKey, SocketSnapshot]:
    """One tmux listing per distinct socket, in the caller's order (the servers are
    asked at the same time: drivers/tmux, `observe_sockets`)."""
    return tmux.observe_sockets(sockets)


def _observe_systemd(user: str | None) -> SystemdSnapshot:
    """Our own user manager (a tenant whose `user:` is who runs this process included);
    another user's is observed by that user's own run (root runs it as the user)."""
    if not users.is_me(user):
        return SystemdSnapshot(available=False, reason=OTHER_USER_SYSTEMD)
    return systemd.observe_units()


def _observe_heartbeats(
    state: StateLayout, tenants: Iterable[str], now: datetime
) -> tuple[dict[tuple[str, str], Heartbeat], list[str]]:
    """One scan per tenant folder; a heartbeat naming another tenant is a problem.

    Such a file is not trusted for either tenant: an agent writes only its own tenant's
    folder, so a mismatch means a misconfigured agent or a copied file. A heartbeat
    stamped further ahead of `now` than health.FUTURE_SKEW is kept (core/health.py does
    not count it as an answer) and reported as a clock problem.
    """
    beats: dict[tuple[str, str], Heartbeat] = {}
    problems: list[str] = []
    for tenant in tenants:
        directory = state.heartbeats(tenant)
        found, scan_problems = scan_heartbeats(directory)
        problems += scan_problems
        for agent, beat in sorted(found.items()):
            if beat.tenant != tenant:
                problems.append(
                    f"{state.heartbeat(tenant, agent)}: tenant {beat.tenant!r} does not match "
                    f"the folder's tenant {tenant!r}; ignored until the agent writes its "
                    f"own tenant's folder"
                )
                continue
            if beat.ts - now > FUTURE_SKEW:
                problems.append(
                    f"{state.heartbeat(tenant, agent)}: stamped {beat.ts.isoformat()}, "
                    f"{int((beat.ts - now).total_seconds())}s ahead of this host's clock; not counted as "
                    "an answer, so the agent is restarted once its grace is over: check both clocks (NTP)"
                )
            beats[(tenant, agent)] = with_lineage(beat)
    return beats, problems


def with_lineage(beat: Heartbeat) -> Heartbeat:
    """A `fleet-hook` record (it has an `event`) with its runtime pid's ancestry from /proc,
    for core/health.py's event-driven rule; other agents' records are left as they are."""
    if beat.event is None or beat.pid is None:
        return beat
    return replace(beat, lineage=host.lineage(beat.pid))


def _observe_usage(
    state: StateLayout, tenants: Iterable[str], now: datetime
) -> tuple[dict[tuple[str, str], UsageSignal], list[str]]:
    """One scan per tenant's usage folder; each record's confidence aged to `now`.

    Aging here (drivers/usage.py, `aged`) means the policy sees what a reading is still
    worth at this tick: a provider figure from three hours ago counts as `estimated`.
    """
    signals: dict[tuple[str, str], UsageSignal] = {}
    problems: list[str] = []
    for tenant in tenants:
        directory = state.usage(tenant)
        found, scan_problems = usage.scan_usage(directory)
        problems += scan_problems
        for account, signal in sorted(found.items()):
            if signal.tenant != tenant:
                problems.append(f"{state.usage_record(tenant, account)}: tenant {signal.tenant!r} does not match "
                                f"the folder's tenant {tenant!r}; ignored")
                continue
            signals[(tenant, account)] = usage.aged(signal, now)
    return signals, problems
