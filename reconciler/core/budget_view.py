"""`fleet budget show` as data: per account, used against the even pace, a small chart of
the window, the projected exhaustion and what the ladder does next.

Pure: reads the tick's budget plan (core/budget.py) and the specs; renders text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler.core.budget_types import BudgetPlan, Change, State
from reconciler.core.pace import Pace
from reconciler.spec.repo import FleetRepo

BAR = 40


@dataclass(frozen=True, slots=True)
class AccountView:
    tenant: str
    pace: Pace
    window: timedelta | None
    exhaustion: datetime | None  # when the window runs out at the average burn so far
    next_steps: tuple[str, ...]


def projected_exhaustion(pace: Pace, window: timedelta | None) -> datetime | None:
    """At the window's average burn so far, when used reaches 100% (None: not before reset).

    >>> from reconciler.core.pace import PaceState
    >>> p = Pace("a", "claude", "subscription", PaceState.OVER, "", used=0.5, allowed=0.3,
    ...          elapsed=0.25, reset=datetime(2026, 12, 1))
    >>> projected_exhaustion(p, timedelta(days=4))
    datetime.datetime(2026, 11, 29, 0, 0)
    """
    if pace.used is None or pace.elapsed is None or pace.reset is None or window is None:
        return None
    if pace.used <= 0 or pace.elapsed <= 0:
        return None
    at = pace.elapsed / pace.used  # fraction of the window at which used reaches 1
    if at >= 1:
        return None
    return pace.reset - window + window * at


def bar(pace: Pace, width: int = BAR) -> str:
    """The window as a bar: `#` used, `|` where the even pace is now, `.` the rest.

    >>> from reconciler.core.pace import PaceState
    >>> bar(Pace("a", "c", "subscription", PaceState.OVER, "", used=0.5, elapsed=0.25), 20)
    '[#####|#####..........]'
    """
    if pace.used is None:
        return "[" + "?" * width + "]"
    used = min(max(pace.used, 0.0), 1.0)
    cells = ["#" if i < round(used * width) else "." for i in range(width)]
    if pace.elapsed is not None:
        cells.insert(min(round(pace.elapsed * width), width), "|")
    return "[" + "".join(cells) + "]"


def account_views(repo: FleetRepo, budget: BudgetPlan) -> list[AccountView]:
    views = []
    for name, tenant in sorted(budget.tenants.items()):
        spec = repo.tenants.get(name)
        accounts = {a.name: a for a in spec.budget.accounts} if spec and spec.budget else {}
        for pace in tenant.paces:
            account = accounts.get(pace.account)
            window = (account.window or account.period) if account else None
            steps = tuple(
                f"{d.agent}: {_step(d.change, d.state, d.model)} ({d.rule})"
                for d in tenant.decisions
                if d.account == pace.account and (d.change is not Change.NONE or d.state is not State.RUN)
            )
            views.append(AccountView(name, pace, window, projected_exhaustion(pace, window), steps))
    return views


def _step(change: Change, state: State, model: str) -> str:
    if state is State.QUEUED:
        return "queued until the window resets"
    if state is State.REFUSED:
        return "refused"
    return {Change.DOWN: f"down to {model}", Change.UP: f"back up to {model}"}.get(change, f"runs {model}")


def render(views: list[AccountView]) -> str:
    if not views:
        return "No tenant has a budget.yaml with accounts."
    lines = []
    for v in views:
        p = v.pace
        used = "no usage signal" if p.used is None else f"used {p.used:.0%}"
        allowed = "" if p.allowed is None else f" of {p.allowed:.0%} allowed now"
        reset = f", resets {p.reset.isoformat(timespec='minutes')}" if p.reset else ""
        lines.append(f"{v.tenant}/{p.account} ({p.runtime}, {p.regime}): {used}{allowed}{reset} -> {p.state.value}")
        lines.append(f"  {bar(p)}  {p.confidence or 'unknown'} from {p.source or '-'}")
        if v.exhaustion is not None:
            lines.append(f"  at this burn the window runs out at {v.exhaustion.isoformat(timespec='minutes')}")
        nexts = v.next_steps or (("nothing: on pace",) if p.used is not None else ("nothing: no usage signal",))
        lines.extend(f"  next: {s}" for s in nexts)
    return "\n".join(lines)
