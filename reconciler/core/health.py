"""Agent health from one observation: heartbeats, dead panes, start-up grace, backoff.

Healthy means the agent answered a heartbeat within `heartbeat_timeout` (docs/reference.md), never
merely that its pane is alive. Pure: `now` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from reconciler.model.history import RestartRecord
from reconciler.model.observed import Heartbeat, ObservedSession

BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_CAP = timedelta(minutes=5)
#: After this many restarts in a row without recovering, an agent is reported Stalled.
STALL_AFTER = 5
#: Heartbeats stamped further ahead than this are not trusted (a skewed clock or a forgery).
FUTURE_SKEW = timedelta(seconds=60)


class Health(StrEnum):
    HEALTHY = "healthy"
    STARTING = "starting"
    STALE = "stale"
    SILENT = "silent"
    DEAD = "dead"
    ABSENT = "absent"
    #: The runtime is alive but stopped on something only a person (or time) clears: a
    #: login refused, a usage limit, a dialog it cannot pass. Never restarted: a restart
    #: would meet the same wall, and a burst of them can log out every agent of the login.
    WAITING = "waiting"

    @property
    def needs_restart(self) -> bool:
        return self in {Health.STALE, Health.SILENT, Health.DEAD}


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    message: str
    #: Why an agent is `waiting` (or what it is held by), a short code: `auth`,
    #: `usage-limit` (from the runtime's own events), `dialog-...` (from its screen).
    reason: str | None = None


#: What a held heartbeat's `held` kind means, and what a person does about it.
HELD_WORDS = {
    "auth": ("the provider refused its login", "fix the login (the key in its env, or /login in "
             "`fleet agent attach`), then `fleet agent send` it a message: its next turn clears the hold"),
    "usage-limit": ("the provider's usage limit stopped its turn",
                    "the fleet types it a resume message once the limit is over (or `fleet agent send` one): "
                    "its next turn clears the hold"),
}


def held_message(held: str, reason: str | None) -> str:
    """Words for a held agent, stable from tick to tick (no ages: the status keeps them).

    >>> print(held_message("usage-limit", "rate_limit: Request rejected (429)"))
    held (usage-limit): the provider's usage limit stopped its turn (rate_limit: Request rejected (429)); not restarted: the fleet types it a resume message once the limit is over (or `fleet agent send` one): its next turn clears the hold
    """
    what, todo = HELD_WORDS.get(held, (f"the runtime reported {held}", "a person looks at it (`fleet agent attach`)"))
    said = f" ({reason})" if reason else ""
    return f"held ({held}): {what}{said}; not restarted: {todo}"


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def assess(
    session: ObservedSession | None,
    heartbeat: Heartbeat | None,
    *,
    now: datetime,
    timeout: timedelta,
    grace: timedelta,
    working_timeout: timedelta | None = None,
) -> Verdict:
    """One agent's health, with the evidence in words.

    With `working_timeout`, the agent's runtime is event-driven (docs/runtimes.md): it
    writes only on its own events, so an old record alone is no fault (`_event_driven`).
    """
    if session is None:
        return Verdict(Health.ABSENT, "no session")
    if session.pane_missing:
        return Verdict(Health.DEAD, f"the agent's pane {session.pane_id} is gone from its session "
                                    "(a pane or window a person added is not the agent)")
    if session.pane_dead:
        status = "" if session.dead_status is None else f" with status {session.dead_status}"
        return Verdict(Health.DEAD, f"pane exited{status}")
    age_of_session = now - session.created
    in_grace = age_of_session < grace
    beat = heartbeat
    if beat is not None and beat.ts < session.created - timedelta(seconds=1):
        beat = None  # a heartbeat from before this session started belongs to an earlier run
    if beat is not None and beat.ts - now > FUTURE_SKEW:
        return Verdict(
            Health.STARTING if in_grace else Health.SILENT,
            f"last heartbeat is stamped {_ago(beat.ts - now)} in the future; check the host clock",
        )
    if beat is None:
        if in_grace:
            return Verdict(Health.STARTING, f"started {_ago(age_of_session)} ago, grace {_ago(grace)}")
        return Verdict(Health.SILENT, f"no heartbeat in {_ago(age_of_session)} since start (timeout {_ago(timeout)})")
    age = max(now - beat.ts, timedelta(0))
    if working_timeout is not None:
        verdict = _event_driven(session, beat, now, timeout, working_timeout)
        if verdict.health in (Health.HEALTHY, Health.WAITING) or not in_grace:
            return verdict
        return Verdict(Health.STARTING, f"started {_ago(age_of_session)} ago, grace {_ago(grace)}; {verdict.message}")
    if age <= timeout:
        return Verdict(Health.HEALTHY, f"heartbeat {_ago(age)} ago, state {beat.state}")
    if in_grace:
        return Verdict(Health.STARTING, f"started {_ago(age_of_session)} ago, grace {_ago(grace)}")
    return Verdict(Health.STALE, f"last heartbeat {_ago(age)} ago, over the {_ago(timeout)} timeout")


def runtime_in_pane(session: ObservedSession, beat: Heartbeat) -> bool:
    """Whether the heartbeat's runtime pid is alive inside the session's pane: the pane's
    process is the pid or one of its ancestors (`lineage`, read by the observe step)."""
    return bool(beat.lineage) and session.pane_pid is not None and session.pane_pid in (beat.lineage or ())


def _event_driven(session: ObservedSession, beat: Heartbeat, now: datetime, timeout: timedelta,
                  working_timeout: timedelta) -> Verdict:
    """Health of a runtime that reports only on its own events (Claude Code, Codex).

    - `working` with no runtime event (a status-line tick is not one) for longer than
      `working_timeout`: stale, a hung turn;
    - a record younger than `timeout` (Claude Code's status line ticks every 2 s): healthy;
    - older, but its runtime pid is alive in the pane's process tree: healthy, since
      an idle or waiting agent has nothing to say (Codex writes only when a turn ends);
    - `held` (a login refused, a usage limit) and the runtime still there: waiting, with
      the held kind as the reason; never restarted;
    - otherwise silent: the runtime that wrote it is gone, or is not the pane's.
    A live pane alone never counts.
    """
    age = max(now - beat.ts, timedelta(0))
    event_age = max(now - (beat.event_ts or beat.ts), timedelta(0))
    said = f"state {beat.state}" + (f" ({beat.event})" if beat.event else "")
    if beat.held and (age <= timeout or runtime_in_pane(session, beat)):
        return Verdict(Health.WAITING, held_message(beat.held, beat.reason), beat.held)
    if beat.state == "working" and event_age > working_timeout:
        return Verdict(Health.STALE, f"{said}, no event from the runtime in {_ago(event_age)}, over the "
                                     f"{_ago(working_timeout)} working_timeout (a hung turn)")
    if age <= timeout:
        return Verdict(Health.HEALTHY, f"heartbeat {_ago(age)} ago, {said}")
    if runtime_in_pane(session, beat):
        return Verdict(Health.HEALTHY, f"{said} {_ago(event_age)} ago; runtime pid {beat.pid} alive in the pane")
    if beat.held:
        said += f", held ({beat.held})"
    if beat.lineage == ():
        why = f"its runtime pid {beat.pid} is gone"
    elif beat.lineage:
        why = f"its runtime pid {beat.pid} is not in the pane's process tree"
    else:
        why = "it names no runtime pid to check"
    return Verdict(Health.SILENT, f"last heartbeat {_ago(age)} ago ({said}) and {why}")


def backoff(attempts: int) -> timedelta:
    """Delay before restart number `attempts + 1`: 10 s doubling, capped at 5 min.

    >>> [int(backoff(n).total_seconds()) for n in range(0, 7)]
    [0, 10, 20, 40, 80, 160, 300]
    """
    if attempts <= 0:
        return timedelta(0)
    delay: timedelta = BACKOFF_BASE * (2 ** min(attempts - 1, 30))
    return min(delay, BACKOFF_CAP)


def next_restart_at(record: RestartRecord | None, now: datetime | None = None) -> datetime | None:
    """When a health restart may happen again, or None when it may happen now.

    Given `now`, a last restart stamped in the future (the clock was stepped back since)
    is not trusted: the restart may happen now, and the history it writes carries a true
    time again. Without that, a clock stepped back a year would hold a dead agent a year.

    >>> from datetime import UTC
    >>> t = datetime(2026, 11, 25, 12, tzinfo=UTC)
    >>> next_restart_at(RestartRecord(1, t, "dead"), now=t) - t
    datetime.timedelta(seconds=10)
    >>> next_restart_at(RestartRecord(1, t + timedelta(days=365), "dead"), now=t) is None
    True
    """
    if record is None or record.attempts <= 0:
        return None
    if now is not None and record.last_at - now > FUTURE_SKEW:
        return None
    return record.last_at + backoff(record.attempts)
