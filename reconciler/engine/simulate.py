"""`fleet budget simulate`: the budget policy replayed over a window in simulated time.

The loop is pure (no clock, no files): at each step it builds the usage signals the
accounts would report, asks core/budget.py for its decisions with the memory of the
previous step, records every change (downgrade, restore, queue, release, refuse), then
burns each running agent's share of its account until the next step. Only
`simulate_repo` reads anything (the repository). The property tests in
tests/core/test_budget_property.py drive the same loop with random burn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from reconciler.core.budget import decide_tenant
from reconciler.core.budget_types import (
    AgentMemory,
    Change,
    Decision,
    Rung,
    State,
    TenantBudget,
    TenantInputs,
)
from reconciler.core.desired import build_desired
from reconciler.core.pace import Pace, Tuning
from reconciler.errors import UserError
from reconciler.model.usage import UsageSignal
from reconciler.spec.load import load_repo
from reconciler.spec.models import Account

#: An agent's burn while it runs on a rung: a fraction of its account's limit per second.
BurnFn = Callable[[Decision, datetime], float]


@dataclass(frozen=True, slots=True)
class Event:
    """One change the policy made, with the account's numbers at that moment."""

    at: datetime
    agent: str
    change: Change
    before: Rung
    after: Rung
    account: str | None  # billed after the change
    was_account: str | None  # billed before it: the account whose numbers are shown
    used: float | None
    allowed: float | None
    rule: str
    reason: str
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Step:
    """The policy's answer at one step, and each account's usage when it was asked."""

    at: datetime
    used: Mapping[str, float]
    budget: TenantBudget


@dataclass(frozen=True, slots=True)
class Trace:
    start: datetime
    end: datetime
    steps: tuple[Step, ...]
    events: tuple[Event, ...]
    used: Mapping[str, float]  # each account at `end` (after its last reset in the span)
    peak: Mapping[str, float]  # the most each account reached in any one of its windows


def account_window(account: Account) -> timedelta:
    """Subscription `window` or API `period` (the loader guarantees one of them)."""
    window = account.window or account.period
    assert window is not None, f"account {account.name} has neither window nor period"
    return window


def first_reset(account: Account, start: datetime) -> datetime:
    """The account's first reset after `start`: its `reset_at` rolled by whole windows,
    else one window after `start` (a window with no known reset starts with the replay)."""
    window = account_window(account)
    reset = account.reset_at
    if reset is None:
        return start + window
    while reset <= start:
        reset += window
    while reset - window > start:
        reset -= window
    return reset


def simulate(
    inputs: TenantInputs,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    burn: BurnFn,
    tuning: Tuning | None = None,
) -> Trace:
    """Replay the policy from `start` to `end`, every `step`; every account starts empty."""
    accounts = {a.name: a for a in inputs.budget.accounts}
    resets = {name: first_reset(a, start) for name, a in accounts.items()}
    used = dict.fromkeys(accounts, 0.0)
    peak = dict(used)
    memory: dict[str, AgentMemory] = dict(inputs.memory)
    steps: list[Step] = []
    events: list[Event] = []
    seconds = step.total_seconds()
    t = start
    while t < end:
        for name, account in accounts.items():
            while resets[name] <= t:
                used[name], resets[name] = 0.0, resets[name] + account_window(account)
        usage = {name: _signal(inputs.name, a, used[name], resets[name], t) for name, a in accounts.items()}
        decided = decide_tenant(replace(inputs, usage=usage, memory=memory), t, tuning)
        events += _events(t, decided, memory)
        steps.append(Step(t, dict(used), decided))
        for d in decided.decisions:
            if d.state is State.RUN and d.account in used:
                used[d.account] += burn(d, t) * seconds
                peak[d.account] = max(peak[d.account], used[d.account])
        memory = decided.memory()
        t += step
    return Trace(start, end, tuple(steps), tuple(events), used, peak)


def _signal(tenant: str, account: Account, used: float, reset: datetime, now: datetime) -> UsageSignal:
    """What an ideal ingester would report for the account at `now`."""
    spent = used * account.hard_cap_usd if account.regime == "api" and account.hard_cap_usd else None
    return UsageSignal(tenant, account.name, None if spent is not None else used, spent, reset,
                       account_window(account), "estimated", "simulation", now)


def _events(at: datetime, decided: TenantBudget, memory: Mapping[str, AgentMemory]) -> list[Event]:
    paces: dict[str, Pace] = {p.account: p for p in decided.paces}
    out = []
    for d in decided.decisions:
        if d.change is Change.NONE:
            continue
        old = memory.get(d.agent)
        before = Rung(old.runtime, old.model) if old else d.rungs[0]
        account = old.account if old and old.account else d.account
        pace = paces.get(account or "")
        out.append(Event(at, d.agent, d.change, before, d.rungs[d.rung], d.account, account,
                         pace.used if pace else None, pace.allowed if pace else None, d.rule, d.reason, d.until))
    return out


# --- the command's model of burn, and the repository ------------------------------------


@dataclass(frozen=True, slots=True)
class Replay:
    """One tenant's replay, as `fleet budget simulate` prints it."""

    tenant: str
    account: str
    rate: float
    factor: float
    step: timedelta
    trace: Trace


def pace_burn(inputs: TenantInputs, rate: float, factor: float) -> BurnFn:
    """`rate` times the even pace: with every agent on its desired model, each account
    would be spent after window / rate. Agents share their home account's burn evenly;
    each rung below the top of a runtime's ladder burns `factor` times the one above."""
    accounts = {a.name: a for a in inputs.budget.accounts}
    home: dict[str, str] = {}
    for agent in inputs.agents:
        home_account = next((a.name for a in inputs.budget.accounts if a.runtime == agent.runtime), None)
        if home_account:
            home[agent.name] = home_account
    sharing = {name: sum(1 for h in home.values() if h == name) for name in accounts}
    ladders = {name: rt.ladder for name, rt in inputs.fleet.runtimes.items()}

    def burn(decision: Decision, _at: datetime) -> float:
        own = home.get(decision.agent)
        if own is None or decision.account is None:
            return 0.0
        ladder = ladders.get(decision.runtime, [decision.model])
        top = ladder.index(decision.rungs[0].model) if decision.runtime == decision.rungs[0].runtime else 0
        steps = max(ladder.index(decision.model) - top, 0) if decision.model in ladder else 0
        window = account_window(accounts[decision.account]).total_seconds()
        return rate / sharing[own] * factor**steps / window

    return burn


def simulate_repo(
    repo_path: Path,
    *,
    rate: float,
    now: datetime,
    tenant: str | None = None,
    account: str | None = None,
    step: timedelta = timedelta(minutes=5),
    factor: float = 0.5,
    tuning: Tuning | None = None,
) -> list[Replay]:
    """Replay each budgeted tenant (or `tenant`) over the current window of `account`
    (default: its budget.yaml's first account), from that window's start."""
    repo = load_repo(repo_path)
    if repo.fleet is None:
        raise UserError(f"{repo_path}: fleet.yaml does not load; run `fleet validate {repo_path}`")
    desired = build_desired(repo, host="simulation", state_dir="/nonexistent")
    names = [tenant] if tenant else sorted(n for n, s in repo.tenants.items() if s.budget)
    replays = []
    for name in names:
        spec = repo.tenants.get(name)
        if spec is None or spec.budget is None or not spec.budget.accounts:
            raise UserError(f"tenant {name!r} has no budget.yaml with accounts in {repo_path}")
        chosen = _account(spec.budget.accounts, account, name)
        inputs = TenantInputs(name, desired.tenants[name].agents, spec.budget, repo.fleet, spec.tasks)
        reset = first_reset(chosen, now)
        start = reset - account_window(chosen)
        trace = simulate(inputs, start=start, end=reset, step=step, burn=pace_burn(inputs, rate, factor), tuning=tuning)
        replays.append(Replay(name, chosen.name, rate, factor, step, trace))
    return replays


def _account(accounts: list[Account], wanted: str | None, tenant: str) -> Account:
    if wanted is None:
        return accounts[0]
    for account in accounts:
        if account.name == wanted:
            return account
    known = ", ".join(a.name for a in accounts)
    raise UserError(f"tenant {tenant!r} has no account {wanted!r}; its accounts are {known}")
