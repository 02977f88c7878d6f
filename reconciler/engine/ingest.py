"""Ingest usage: turn what the runtimes write into usage records and spend-ledger entries.

It runs in every tick of `fleet reconcile` before the observe step reads the usage
records (engine/tick.py, for tenants with a budget.yaml), and on demand as `fleet budget
ingest`: for every tenant it reads the Codex rollouts and Claude Code transcripts under
that tenant's homes, each from its cursor (drivers/ingest_cursors.py: a tick's cost
follows what the runtimes wrote since the last tick, not their whole history), the
status-line records and heartbeats in the state directory, then (1) writes
`usage/<account>.json` for each subscription account a provider reported on, keeping
whichever reading `merge_signals` prefers, (2) appends to `ledger.jsonl` the increase of
every spend counter since its last entry, so ingesting the same files twice appends
nothing, and (3) saves the moved cursors. With `commit=False` (a dry-run) it reads the
same and returns the readings it would write, but writes nothing and moves no cursor.
The folders are read by drivers/transcripts.py and the state-directory drivers (paths
from model/layout.py); the file formats are parsed by the pure functions of
drivers/runtime_usage.py. This module does no I/O itself.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from reconciler.core.desired import DesiredFleet
from reconciler.drivers import users
from reconciler.drivers.files import scan_heartbeats
from reconciler.drivers.ingest_cursors import append_keys, read_book, read_keys, write_book
from reconciler.drivers.ledger_fold import update_ledger_fold
from reconciler.drivers.runtime_usage import (
    ClaudeSum,
    CodexSession,
    RateReading,
    best_window,
)
from reconciler.drivers.transcripts import expand_home, read_statusline_dir, scan_claude_home, scan_codex_home
from reconciler.drivers.usage import merge_signals, scan_usage, write_usage
from reconciler.model.layout import StateLayout
from reconciler.model.ledger import LedgerEntry
from reconciler.model.observed import Heartbeat
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Account, Fleet, Role, format_duration
from reconciler.spec.repo import FleetRepo, TenantSpec
from reconciler.spec.resolve import lane_agent, resolve_agent

CODEX, CLAUDE = "codex", "claude"
SOURCE_CODEX, SOURCE_STATUSLINE = "codex-rollout", "claude-statusline"
SOURCE_TRANSCRIPT, SOURCE_HEARTBEAT = "claude-transcript", "heartbeat"


@dataclass(frozen=True, slots=True)
class Homes:
    """Where one tenant's runtimes keep their files on this host; None: not read."""

    codex: Path | None = None
    claude: Path | None = None


@dataclass(frozen=True, slots=True)
class SpendCounter:
    """A cumulative spend counter read from a runtime's files, before it becomes a delta.

    `restarts`: a lower total than last time means the counter started over (a restarted
    agent's heartbeat), so its whole value is new; otherwise a lower total means files
    went away (old transcripts cleaned up) and nothing new is recorded.
    """

    source: str
    stream: str
    model: str
    total_tokens: int
    total_usd: float | None
    ts: datetime
    agent: str | None
    account: str | None
    confidence: str
    restarts: bool = False


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    """What became of one reading: `written`, `unchanged` (same reading again) or `kept`
    (the record already holds a reading that `merge_signals` prefers)."""

    signal: UsageSignal
    status: str


@dataclass(frozen=True, slots=True)
class TenantIngest:
    tenant: str
    signals: tuple[SignalOutcome, ...] = ()
    ledger: tuple[LedgerEntry, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IngestReport:
    tenants: tuple[TenantIngest, ...] = ()

    @property
    def problems(self) -> list[str]:
        return [p for t in self.tenants for p in t.problems]


def ingest_all(
    repo: FleetRepo,
    state_dir: Path,
    homes: Mapping[str, Homes],
    now: datetime,
    *,
    host: str,
    only: Collection[str] | None = None,
    commit: bool = True,
) -> IngestReport:
    """Ingest every valid tenant of `repo` (or those in `only`) once.

    `homes` maps a tenant to its runtime folders on this host; a tenant not in it is
    ingested from the state directory alone (status-line records and heartbeats).
    `commit=False`: read only (see the module's docstring).
    """
    if repo.fleet is None:
        return IngestReport()
    return IngestReport(tuple(
        ingest_tenant(TenantView.build(spec, repo.fleet, repo.roles), state_dir, homes.get(name, Homes()), now, host,
                      commit=commit)
        for name, spec in sorted(repo.tenants.items())
        if only is None or name in only
    ))


# --- one tenant ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the ledger needs to know of one roster agent."""

    name: str
    role: str
    runtime: str
    kind: str
    workdir: str | None
    task: str | None


@dataclass(frozen=True, slots=True)
class TenantView:
    """A tenant's specs, with the lookups the ingesters need (which agent, which account)."""

    spec: TenantSpec
    fleet: Fleet
    agents: Mapping[str, AgentInfo] = field(default_factory=dict)

    @classmethod
    def build(cls, spec: TenantSpec, fleet: Fleet, roles: Mapping[str, Role]) -> TenantView:
        view = cls(spec, fleet)
        tasks = _single_tasks(spec)
        agents = {}
        names = spec.roster.lane_workers()
        workers = [lane_agent(lane, name) for lane in spec.roster.lanes for name in names.get(lane.name, ())]
        for agent in (*spec.roster.agents, *workers):  # a lane's worker has no task of its own: its windows say
            res = resolve_agent(agent, fleet, dict(roles))
            agents[agent.name] = AgentInfo(agent.name, agent.role, res.runtime, view.kind_of(res.runtime),
                                           expand_home(res.workdir, spec.roster.user), tasks.get(agent.name))
        return cls(spec, fleet, agents)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def accounts(self) -> list[Account]:
        return list(self.spec.budget.accounts) if self.spec.budget else []

    def kind_of(self, runtime: str) -> str:
        """`codex` or `claude` when the runtime is named so, has that adapter, or its command runs that program."""
        if runtime in (CODEX, CLAUDE):
            return runtime
        spec = self.fleet.runtimes.get(runtime)
        if spec is not None and spec.adapter in (CODEX, CLAUDE):
            return spec.adapter
        try:
            program = Path(shlex.split(spec.command_line())[0]).name if spec else ""
        except (ValueError, IndexError):
            program = ""
        return program if program in (CODEX, CLAUDE) else runtime

    def accounts_of(self, kind: str, regime: str | None = None) -> list[Account]:
        return [a for a in self.accounts
                if self.kind_of(a.runtime) == kind and (regime is None or a.regime == regime)]

    def ledger_account(self, kind: str) -> str | None:
        """The account a runtime's spend is booked to: its only account, else none."""
        found = self.accounts_of(kind)
        return found[0].name if len(found) == 1 else None

    def agent_at(self, kind: str, cwd: str | None) -> AgentInfo | None:
        """The one agent of that runtime whose workdir is `cwd`; None when none or several."""
        if not cwd:
            return None
        here = os.path.normpath(cwd)
        found = [a for a in self.agents.values()
                 if a.kind == kind and a.workdir and os.path.normpath(a.workdir) == here]
        return found[0] if len(found) == 1 else None


def ingest_tenant(tenant: TenantView, state_dir: Path, homes: Homes, now: datetime, host: str,
                  *, commit: bool = True) -> TenantIngest:
    """Read every source of one tenant (runtime files from their cursors), write its usage
    records, append its ledger, save the cursors; with `commit=False` only read."""
    problems: list[str] = []
    notes: list[str] = []
    readings: list[tuple[str, str, RateReading]] = []
    counters: list[SpendCounter] = []
    layout = StateLayout(state_dir)
    book = read_book(layout.ingest_cursors(tenant.name), problems)
    moved = {}
    counted: list[tuple[str, str, str]] = []
    if homes.codex is not None:
        sessions, codex_book = scan_codex_home(homes.codex, book, problems)
        moved.update(codex_book)
        counters += codex_counters(tenant, sessions, now)
        if latest := latest_limits(s.limits for s in sessions):
            readings.append((CODEX, SOURCE_CODEX, latest))
    if homes.claude is not None:
        keys = layout.ingest_keys(tenant.name)
        sums, claude_book, counted = scan_claude_home(homes.claude, book, problems, lambda: read_keys(keys, problems))
        moved.update(claude_book)
        counters += claude_counters(tenant, sums, now)
    statusline = read_statusline_dir(layout.statusline(tenant.name), tenant.name, problems)
    if latest := latest_limits(r.reading for r in statusline):
        readings.append((CLAUDE, SOURCE_STATUSLINE, latest))
    beats, beat_problems = scan_heartbeats(layout.heartbeats(tenant.name))
    problems += beat_problems
    counters += heartbeat_counters(tenant, beats.values())

    signals = [s for kind, source, reading in readings
               for s in signals_from_reading(tenant, kind, source, reading, notes, problems)]
    outcomes = record_signals(state_dir, tenant.name, signals, now, problems, write=commit)
    if not commit:  # the ledger does not move a plan: a dry-run leaves it, and the cursors, alone
        return TenantIngest(tenant.name, tuple(outcomes), (), tuple(problems), tuple(notes))
    appended: list[LedgerEntry] = []
    ledger_problems: list[str] = []
    if counters:  # no spend counter at all (a tenant of stub agents without usage): no ledger file
        appended, ledger_problems = update_ledger_fold(
            layout.ledger(tenant.name), layout.ledger_fold(tenant.name),
            lambda old: ledger_deltas(old, counters, tenant=tenant.name, host=host, agents=tenant.agents),
        )
    try:  # after the ledger: cursors lost or stale only cost a longer read, never a double booking
        append_keys(layout.ingest_keys(tenant.name), counted)
        if moved or book:
            write_book(layout.ingest_cursors(tenant.name), moved)
    except OSError as exc:
        problems.append(f"{layout.ingest_cursors(tenant.name)}: could not save the ingest cursors "
                        f"({exc.strerror or exc}); the next tick reads the runtimes' files from the old ones")
    return TenantIngest(tenant.name, tuple(outcomes), tuple(appended), (*problems, *ledger_problems), tuple(notes))


# --- usage records ---------------------------------------------------------------------------


def latest_limits(readings: Iterable[RateReading | None]) -> RateReading | None:
    """The freshest reading that reports at least one window."""
    present = [r for r in readings if r is not None and r.windows]
    return max(present, key=lambda r: r.observed_at) if present else None


def signals_from_reading(
    tenant: TenantView, kind: str, source: str, reading: RateReading, notes: list[str], problems: list[str]
) -> list[UsageSignal]:
    """The usage record a provider reading gives each subscription account of its runtime.

    One home is one login, so a reading belongs to one account: with two subscription
    accounts on the same runtime it is ambiguous and nothing is written. The account's
    window picks the provider window (`best_window`): a 7d account takes the weekly one.
    """
    accounts = tenant.accounts_of(kind, "subscription")
    if not accounts:
        notes.append(f"{tenant.name}: {source} reports rate limits but no subscription account "
                     f"runs {kind}; add one to budget.yaml to pace on it")
        return []
    if len(accounts) > 1:
        names = ", ".join(a.name for a in accounts)
        problems.append(f"{tenant.name}: {source} reading not recorded: accounts {names} all run {kind} "
                        "and one home is one login; ingest each login's home with its own tenant")
        return []
    account = accounts[0]
    assert account.window is not None  # a subscription account has one (spec/models.py)
    window = best_window(reading.windows, account.window)
    if window is None:
        offered = ", ".join(f"{w.name} {format_duration(w.window)}" for w in reading.windows if w.window)
        notes.append(f"{tenant.name}/{account.name}: no {source} window matches its {format_duration(account.window)} "
                     f"window (offered: {offered or 'none'}); nothing recorded")
        return []
    return [UsageSignal(tenant.name, account.name, window.used_fraction, None, window.reset_at,
                        window.window, "provider", source, reading.observed_at)]


def record_signals(
    state_dir: Path, tenant: str, signals: Sequence[UsageSignal], now: datetime, problems: list[str],
    *, write: bool = True,
) -> list[SignalOutcome]:
    """Write each reading unless the account's record already holds a better one
    (`write=False`: say `written` of what would be, and write nothing)."""
    if not signals:
        return []
    existing, scan_problems = scan_usage(StateLayout(state_dir).usage(tenant))
    problems += scan_problems
    outcomes = []
    for signal in signals:
        old = existing.get(signal.account)
        if old == signal:
            outcomes.append(SignalOutcome(signal, "unchanged"))
            continue
        winner = merge_signals([signal] if old is None else [old, signal], now)
        if winner is not signal:
            outcomes.append(SignalOutcome(signal, "kept"))
            continue
        if write:
            write_usage(state_dir, signal)
        existing[signal.account] = signal
        outcomes.append(SignalOutcome(signal, "written"))
    return outcomes


# --- spend counters --------------------------------------------------------------------------


def codex_counters(tenant: TenantView, sessions: Iterable[CodexSession], now: datetime) -> list[SpendCounter]:
    """One counter per rollout session: its cumulative `total_tokens`, on its latest model."""
    account = tenant.ledger_account(CODEX)
    counters = []
    for session in sessions:
        if session.total_tokens <= 0:
            continue
        agent = tenant.agent_at(CODEX, session.cwd)
        counters.append(SpendCounter(SOURCE_CODEX, session.session, session.model, session.total_tokens, None,
                                session.last_event or now, agent.name if agent else None, account, "provider"))
    return counters


def claude_counters(tenant: TenantView, sums: Iterable[ClaudeSum], now: datetime) -> list[SpendCounter]:
    """One counter per (session, model): the sum over its transcript files (each file's
    messages counted once, drivers/runtime_usage.py `fold_claude`).

    Subagent transcripts carry their parent's `sessionId`, so their spend joins the
    session that started them. A session is attributed by the first `cwd` it reports.
    """
    account = tenant.ledger_account(CLAUDE)
    groups: dict[tuple[str, str], list[ClaudeSum]] = {}
    for part in sums:
        groups.setdefault((part.session, part.model), []).append(part)
    counters = []
    for (session, model), group in sorted(groups.items()):
        cwd = next((g.cwd for g in group if g.cwd), None)
        agent = tenant.agent_at(CLAUDE, cwd)
        costs = [g.usd for g in group if g.usd is not None]
        latest = max((g.ts for g in group if g.ts), default=now)
        counters.append(SpendCounter(SOURCE_TRANSCRIPT, session, model, sum(g.tokens for g in group),
                                     round(sum(costs), 6) if costs else None, latest,
                                     agent.name if agent else None, account, "provider"))
    return counters


def heartbeat_counters(tenant: TenantView, beats: Iterable[Heartbeat]) -> list[SpendCounter]:
    """One counter per agent process (`agent@pid`): the token usage its heartbeat reports.

    The counts are the agent's own estimate, so they are `estimated`; they are booked
    to the only account of the agent's runtime, if it has exactly one.
    """
    counters = []
    for beat in beats:
        total = sum(beat.usage.values())
        if total <= 0 or beat.tenant != tenant.name:
            continue
        agent = tenant.agents.get(beat.agent)
        account = tenant.ledger_account(agent.kind) if agent else None
        stream = f"{beat.agent}@{beat.pid}" if beat.pid is not None else beat.agent
        counters.append(SpendCounter(SOURCE_HEARTBEAT, stream, beat.model, total, None, beat.ts, beat.agent,
                                account, "estimated", restarts=True))
    return counters


def ledger_deltas(
    old: Sequence[LedgerEntry], counters: Iterable[SpendCounter], *, tenant: str, host: str,
    agents: Mapping[str, AgentInfo],
) -> list[LedgerEntry]:
    """The entries to append: each counter's increase since its last entry (pure).

    A counter is (source, stream, model); its last entry's `total_tokens`/`total_usd`
    is the cursor, so reading the same files again yields no entry at all.
    """
    last: dict[tuple[str, str, str], LedgerEntry] = {}
    for entry in old:
        if entry.tenant == tenant:
            last[entry.counter] = entry
    entries = []
    for counter in sorted(counters, key=lambda c: (c.source, c.stream, c.model)):
        prev = last.get((counter.source, counter.stream, counter.model))
        tokens, dollars = _increase(counter, prev)
        if tokens <= 0 and not dollars:
            continue
        agent = agents.get(counter.agent) if counter.agent else None
        entries.append(LedgerEntry(
            ts=counter.ts, tenant=tenant, host=host, agent=counter.agent,
            role=agent.role if agent else None, task=agent.task if agent else None,
            account=counter.account, model=counter.model, source=counter.source, stream=counter.stream,
            tokens=max(tokens, 0), dollars=dollars, total_tokens=counter.total_tokens,
            total_usd=counter.total_usd, confidence=counter.confidence,
        ))
    return entries


def _increase(counter: SpendCounter, prev: LedgerEntry | None) -> tuple[int, float | None]:
    prev_tokens = prev.total_tokens if prev else 0
    prev_usd = prev.total_usd if prev and prev.total_usd is not None else 0.0
    if counter.restarts and counter.total_tokens < prev_tokens:
        prev_tokens, prev_usd = 0, 0.0  # the process started over: all of it is new
    tokens = counter.total_tokens - prev_tokens
    if counter.total_usd is None:
        return tokens, None
    dollars = round(counter.total_usd - prev_usd, 6)
    return tokens, dollars if dollars > 0 else None


def _single_tasks(spec: TenantSpec) -> dict[str, str]:
    """Each agent's task when tasks.yaml gives it exactly one; spend of an agent with
    several tasks cannot be split between them, so it stays unattributed."""
    assigned: dict[str, list[str]] = {}
    for mission in spec.tasks.missions if spec.tasks else ():
        for task in mission.tasks:
            if task.agent:
                assigned.setdefault(task.agent, []).append(task.id)
    return {agent: ids[0] for agent, ids in assigned.items() if len(ids) == 1}


# --- each tick -------------------------------------------------------------------------------


def tick_homes(desired: DesiredFleet, tenants: Iterable[str], problems: list[str]) -> dict[str, Homes]:
    """Where each tenant's adapter runtimes keep their files on this host: for each agent
    of its desired runtime, its `CODEX_HOME` / `CLAUDE_CONFIG_DIR`, else `~/.codex` /
    `~/.claude` of this process's user (another user's agents are that user's own run's
    to ingest; an agent moved to another runtime by the budget writes into that
    runtime's home, which is read when some agent of the tenant runs it by desire).

    One home is one login and is booked to one tenant: a home that several tenants in
    scope (or several homes of one kind that one tenant) would read is a problem, and it
    is not read (`fleet budget ingest --tenant T --codex-home DIR` reads it by hand).
    """
    claims: dict[tuple[str, str], set[str]] = {}
    for name in tenants:
        tenant = desired.tenants.get(name)
        for agent in tenant.on_host(desired.host).values() if tenant else ():
            recipe = agent.recipe
            if not users.is_me(recipe.socket.user):
                continue
            env, kind = dict(recipe.env), recipe.adapter(agent.runtime)  # its desired runtime's home
            if kind == CODEX:
                claims.setdefault((CODEX, _home(env.get("CODEX_HOME"), "~/.codex")), set()).add(name)
            elif kind == CLAUDE:
                claims.setdefault((CLAUDE, _home(env.get("CLAUDE_CONFIG_DIR"), "~/.claude")), set()).add(name)
    found: dict[str, dict[str, list[str]]] = {}
    for (kind, folder), owners in sorted(claims.items()):
        if len(owners) > 1:
            problems.append(f"{folder}: tenants {', '.join(sorted(owners))} all run {kind} from this one home (one "
                            "login); its usage is not ingested: give each tenant's agents their own "
                            f"{'CODEX_HOME' if kind == CODEX else 'CLAUDE_CONFIG_DIR'} in `env:`")
            continue
        found.setdefault(next(iter(owners)), {}).setdefault(kind, []).append(folder)
    homes = {}
    for name, kinds in found.items():
        for kind, folders in kinds.items():
            if len(folders) > 1:
                problems.append(f"{name}: its {kind} agents use several homes ({', '.join(folders)}); none is "
                                "ingested, since one tenant's account is one login")
        homes[name] = Homes(codex=_only(kinds.get(CODEX)), claude=_only(kinds.get(CLAUDE)))
    return homes


def _home(explicit: str | None, default: str) -> str:
    return str(Path(explicit or default).expanduser())


def _only(folders: list[str] | None) -> Path | None:
    return Path(folders[0]) if folders and len(folders) == 1 else None


def ingest_tick(repo: FleetRepo, desired: DesiredFleet, state_dir: Path, now: datetime, *, host: str,
                tenants: Collection[str], commit: bool) -> tuple[dict[tuple[str, str], UsageSignal], list[str]]:
    """A tick's ingest of `tenants` (those with a budget.yaml): the usage readings it
    wrote, or with `commit=False` would write, by (tenant, account), and its problems.

    A dry-run passes the readings to the plan as if written, so it plans what an apply
    would: the same files, read from the same cursors.
    """
    problems: list[str] = []
    homes = tick_homes(desired, tenants, problems)
    report = ingest_all(repo, state_dir, homes, now, host=host, only=tenants, commit=commit)
    fresh = {(t.tenant, o.signal.account): o.signal for t in report.tenants for o in t.signals
             if o.status == "written"}
    return fresh, [*problems, *report.problems]
