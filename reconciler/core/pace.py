"""Even-spread pace: where one budget account stands at `now`, with the evidence in words.

The first half of the budget policy (core/budget.py is the second): from an account of
budget.yaml and its usage signal (docs/reference.md, "Usage signals"), the used and allowed
fractions of its window and one of five states. At time t in [reset - window, reset)
the allowed fraction is the elapsed fraction plus a tolerance, capped by a reserve kept
back at the top; API accounts count spent_usd / hard_cap_usd over `period` the same
way. Pure: `now` is an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Account, Policy, format_duration


@dataclass(frozen=True, slots=True)
class Tuning:
    """The budget policy's constants. Fractions are of an account's limit for its window.

    The margin equals the tolerance, so agents return only once usage is back on the
    even line itself; the reserve is what a reactive policy needs for the burn between
    two ticks and for signals that lag; the hysteresis is long enough for one step's
    effect to show in a cumulative usage figure before the next step is judged.
    """

    tolerance: float = 0.05  # how far ahead of the even line still counts as on pace
    restore_margin: float = 0.05  # how far under `allowed` before agents return up the ladder
    reserve: float = 0.02  # kept back at the top of every window
    hysteresis: timedelta = timedelta(minutes=30)  # least time between two model changes of an agent

    @classmethod
    def of(cls, policy: Policy) -> Tuning:
        """The tuning a budget.yaml's `policy:` sets (its defaults are this class's)."""
        return cls(policy.tolerance, policy.margin, policy.reserve, policy.hysteresis)


class PaceState(StrEnum):
    NO_SIGNAL = "no-signal"
    UNDER = "under"  # used <= allowed - margin: agents may return up the ladder
    ON = "on-pace"  # the dead band: nothing moves
    OVER = "over"  # used > allowed: the ladder
    SPENT = "spent"  # used >= 1 - reserve: every worker is queued


@dataclass(frozen=True, slots=True)
class Pace:
    """One account at `now`: its used and allowed fractions and the evidence in words."""

    account: str
    runtime: str
    regime: str
    state: PaceState
    evidence: str
    used: float | None = None
    allowed: float | None = None
    elapsed: float | None = None
    reset: datetime | None = None
    confidence: str = ""
    source: str = ""

    @property
    def headroom(self) -> float | None:
        return None if self.used is None or self.allowed is None else self.allowed - self.used

    @property
    def over_cap(self) -> bool:
        """An API account at or past its hard dollar cap."""
        return self.regime == "api" and self.used is not None and self.used >= 1.0


def account_pace(account: Account, signal: UsageSignal | None, now: datetime, tuning: Tuning) -> Pace:
    """Where one account stands against its even-spread pace at `now`."""
    base = Pace(account.name, account.runtime, account.regime, PaceState.NO_SIGNAL,
                f"{account.name}: no usage signal, so its agents are not throttled")
    used = None if signal is None else _used_fraction(account, signal)
    if signal is None or used is None:
        if signal is not None:
            base = replace(base, evidence=f"{account.name}: no usage signal (the record has neither "
                                          f"used_fraction nor spent_usd), so its agents are not throttled")
        return base
    window = signal.window or account.window or account.period
    reset = _current_reset(signal.reset_at or account.reset_at, window, now)
    earlier = _signal_predates_window(signal, reset, window, now)
    used = 0.0 if earlier else used
    elapsed = _elapsed(reset, window, now)
    allowed = min((1.0 if elapsed is None else elapsed) + tuning.tolerance, 1.0 - tuning.reserve)
    pace = Pace(account.name, account.runtime, account.regime, _state(used, allowed, tuning), "", used, allowed,
                elapsed, reset, signal.confidence, signal.source)
    return replace(pace, evidence=_evidence(pace, account, signal, window, earlier, tuning))


def _used_fraction(account: Account, signal: UsageSignal) -> float | None:
    """Subscription: used_fraction. API: spent_usd / hard_cap_usd (either as a fallback)."""
    spent = None
    if signal.spent_usd is not None and account.hard_cap_usd:
        spent = signal.spent_usd / account.hard_cap_usd
    first, second = (spent, signal.used_fraction) if account.regime == "api" else (signal.used_fraction, spent)
    return first if first is not None else second


def _current_reset(reset: datetime | None, window: timedelta | None, now: datetime) -> datetime | None:
    """The end of the window `now` falls in: a past reset rolls forward by whole windows."""
    if reset is None or reset > now:
        return reset
    if window is None:
        return None
    return reset + window * (math.floor((now - reset) / window) + 1)


def _signal_predates_window(signal: UsageSignal, reset: datetime | None, window: timedelta | None, now: datetime) -> bool:
    """A record from before the current window counts nothing: that usage has reset."""
    if signal.reset_at is not None and signal.reset_at <= now:
        return True
    return reset is not None and window is not None and signal.observed_at < reset - window


def _elapsed(reset: datetime | None, window: timedelta | None, now: datetime) -> float | None:
    if reset is None or window is None:
        return None
    return min(max((now - (reset - window)) / window, 0.0), 1.0)


def _state(used: float, allowed: float, tuning: Tuning) -> PaceState:
    if used >= 1.0 - tuning.reserve:
        return PaceState.SPENT
    if used > allowed:
        return PaceState.OVER
    if used <= allowed - tuning.restore_margin:
        return PaceState.UNDER
    return PaceState.ON


def pct(value: float) -> str:
    """A fraction as people read it.

    >>> pct(0.4213)
    '42.1%'
    """
    return f"{value * 100:.1f}%"


def _evidence(pace: Pace, account: Account, signal: UsageSignal, window: timedelta | None, was_reset: bool,
              tuning: Tuning) -> str:
    """`used, allowed, reset, confidence, source`, as every decision's reason carries them."""
    assert pace.used is not None and pace.allowed is not None
    if account.regime == "api" and signal.spent_usd is not None and account.hard_cap_usd and not was_reset:
        used = f"spent ${signal.spent_usd:.2f} of the ${account.hard_cap_usd:.2f} cap ({pct(pace.used)})"
    else:
        used = f"used {pct(pace.used)}" + (" (the recorded usage is from an earlier window)" if was_reset else "")
    span = f"{format_duration(window)} window" if window else "window"
    if pace.elapsed is None:
        allowed = f"allowed {pct(pace.allowed)} (reset unknown: only the cap counts)"
    elif pace.allowed < pace.elapsed + tuning.tolerance:
        allowed = f"allowed {pct(pace.allowed)} ({pct(pace.elapsed)} of the {span} elapsed, capped by the {pct(tuning.reserve)} reserve)"
    else:
        allowed = f"allowed {pct(pace.allowed)} ({pct(pace.elapsed)} of the {span} elapsed + {pct(tuning.tolerance)} tolerance)"
    reset = f"resets {pace.reset.isoformat()}" if pace.reset else "reset unknown"
    return f"{account.name}: {used}, {allowed}, {reset}, confidence {signal.confidence}, source {signal.source}"
