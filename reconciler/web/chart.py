"""The pace chart of one budget account, as coordinates for an inline SVG.

x is time across the account's window (its start at the left, the reset at the right),
y the fraction of the window's limit used (0 at the bottom). The even-spread line runs
from (start, 0) to (reset, 100%); the allowed line is the planner's (core/pace.py: the
elapsed fraction plus the tolerance, capped by the reserve); the used line runs from
the window's start to the usage now, and continues dashed at the same average burn to
the projected exhaustion or the reset. Pure: numbers in, numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.budget_view import AccountView
from reconciler.core.pace import Tuning

WIDTH, HEIGHT, PAD = 480, 200, 28


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template draws, in SVG user units."""

    width: int
    height: int
    pad: int
    even: tuple[float, float, float, float]  # x1 y1 x2 y2
    allowed: str  # an SVG polyline's points
    used: tuple[float, float, float, float] | None  # start of window to now
    projection: tuple[float, float, float, float] | None  # now to exhaustion or reset, same burn
    now_x: float | None
    used_label: str
    timed: bool  # False: no reset known, only the level is drawn


def _x(fraction: float) -> float:
    return round(PAD + (WIDTH - 2 * PAD) * min(max(fraction, 0.0), 1.0) + 0.0, 1)


def _y(fraction: float) -> float:
    return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(max(fraction, 0.0), 1.0) + 0.0, 1)


def pace_chart(view: AccountView, tuning: Tuning | None = None) -> Chart:
    """The chart's coordinates for one account.

    >>> from datetime import datetime, timedelta
    >>> from reconciler.core.pace import Pace, PaceState
    >>> p = Pace("a", "claude", "subscription", PaceState.OVER, "", used=0.5, allowed=0.3, elapsed=0.25,
    ...          reset=datetime(2026, 12, 1))
    >>> c = pace_chart(AccountView("t", p, timedelta(days=4), None, ()))
    >>> c.even, c.used, c.projection
    ((28.0, 172.0, 452.0, 28.0), (28.0, 172.0, 134.0, 100.0), (134.0, 100.0, 240.0, 28.0))
    """
    tuning = tuning or Tuning()
    pace = view.pace
    cap = 1.0 - tuning.reserve
    knee = max(min(cap - tuning.tolerance, 1.0), 0.0)  # where elapsed + tolerance meets the cap
    allowed = " ".join(f"{_x(t)},{_y(v)}" for t, v in ((0.0, tuning.tolerance), (knee, cap), (1.0, cap)))
    even = (_x(0.0), _y(0.0), _x(1.0), _y(1.0))
    label = "no usage signal" if pace.used is None else f"used {pace.used:.0%}"
    if pace.used is None or pace.elapsed is None:
        level = None if pace.used is None else (_x(0.0), _y(pace.used), _x(1.0), _y(pace.used))
        return Chart(WIDTH, HEIGHT, PAD, even, allowed, level, None, None, label, False)
    used = (_x(0.0), _y(0.0), _x(pace.elapsed), _y(pace.used))
    projection = None
    if pace.elapsed > 0 and pace.used > 0:
        rate = pace.used / pace.elapsed  # fraction of the limit per fraction of the window
        end = min(1.0, pace.elapsed + (1.0 - pace.used) / rate)
        projection = (_x(pace.elapsed), _y(pace.used), _x(end), _y(pace.used + rate * (end - pace.elapsed)))
    return Chart(WIDTH, HEIGHT, PAD, even, allowed, used, projection, _x(pace.elapsed), label, True)
