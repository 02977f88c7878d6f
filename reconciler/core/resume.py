"""Resume after a usage limit: when an agent held by `usage-limit` gets its message typed again.

A held agent is never restarted (core/held.py); its hold clears on the runtime's next
turn. For an always-on fleet somebody has to start that turn once the limit is over:
this planner step types one short resume message (`RESUME_TEXT`) to the agent when the
limit is known to have reset: at the account's `reset` from the budget's usage readings
when they name one after the hold (or after the last resume), else after a back-off
counted from the hold (fleet.yaml `defaults.usage_limit_retry`, 15 min, then doubling,
at most 8 times that). An agent the budget policy has queued or refused gets none.

Each resume is recorded per agent (`$state/<tenant>/resumes.json`) with its message id
*before* apply types it, and when it was typed after (engine/resume.py), the way the
dispatcher records briefs: a crash between the two types the same id again, never a
second one; a record typed waits for the next step. The record goes once the agent is
no longer held and has finished a turn (or is gone), so the next hold starts over.
Pure: heartbeats, verdicts, budget and records are arguments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from reconciler.core.budget_types import BudgetPlan, Decision, State
from reconciler.core.held import USAGE_LIMIT
from reconciler.core.plan import AgentHealth
from reconciler.model.observed import Heartbeat

HELD = USAGE_LIMIT
#: What the resume types (one line: `fleet agent send`'s path appends its `[fleet:msg-…]` id).
RESUME_TEXT = "The usage limit has reset; continue where you left off."
#: The back-off grows to at most this many times the first step.
MAX_FACTOR = 8


@dataclass(frozen=True, slots=True)
class ResumeRecord:
    """One held agent's resumes so far: the hold's time, how many were planned, the last
    one's id and when it was typed (None: recorded, not typed yet)."""

    since: datetime
    attempts: int = 0
    message: str = ""
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """One resume message to type: to `agent`, as message `message`."""

    tenant: str
    agent: str
    message: str
    attempt: int
    reason: str


def backoff(first: timedelta, attempt: int) -> timedelta:
    """The wait before resume `attempt` (1, 2, ...): `first`, doubling, at most 8 × `first`.

    >>> [int(backoff(timedelta(minutes=15), n).total_seconds() // 60) for n in (1, 2, 3, 4, 5, 9)]
    [15, 30, 60, 120, 120, 120]
    """
    return min(first * int(2 ** max(min(attempt, 16) - 1, 0)), first * MAX_FACTOR)


def due_at(record: ResumeRecord, reset: datetime | None, first: timedelta) -> tuple[datetime, str]:
    """When the next resume is due, and why: the account's reset when it comes after the
    hold (or the last resume), else the back-off from there.

    >>> from datetime import UTC
    >>> t = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    >>> due_at(ResumeRecord(t), None, timedelta(minutes=15))[0].isoformat()
    '2026-12-06T09:15:00+00:00'
    >>> due_at(ResumeRecord(t, 1, "msg-1", t + timedelta(minutes=15)), None, timedelta(minutes=15))[0].time()
    datetime.time(9, 45)
    >>> print(due_at(ResumeRecord(t), t + timedelta(hours=2), timedelta(minutes=15))[1])
    its account's usage window resets at 2026-12-06T11:00:00+00:00 (budget usage readings)
    """
    base = record.sent_at or record.since
    if reset is not None and reset > base:
        return reset, f"its account's usage window resets at {reset.isoformat()} (budget usage readings)"
    step = backoff(first, record.attempts + 1)
    return base + step, (f"retry back-off {_span(step)} after the {'last resume' if record.sent_at else 'hold'} "
                         f"({base.isoformat()}; no reset time known)")


def message_id(tenant: str, agent: str, now: datetime, attempt: int) -> str:
    """A resume's message id, from the tick's own values (the core draws no random numbers).

    >>> from datetime import UTC
    >>> message_id("shop", "a", datetime(2026, 1, 1, tzinfo=UTC), 1)[:4]
    'msg-'
    """
    digest = hashlib.sha256(f"resume:{tenant}:{agent}:{now.isoformat()}:{attempt}".encode()).hexdigest()
    return f"msg-{digest[:8]}"


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """This tick's resume records (what apply writes before typing) and the resumes to type,
    and for each held agent the words on when its next resume comes (for its health)."""

    records: Mapping[tuple[str, str], ResumeRecord]
    resumes: tuple[Resume, ...] = ()
    notes: Mapping[tuple[str, str], str] = field(default_factory=dict)


def plan_resumes(health: tuple[AgentHealth, ...], heartbeats: Mapping[tuple[str, str], Heartbeat],
                 records: Mapping[tuple[str, str], ResumeRecord], budget: BudgetPlan | None,
                 first: Mapping[tuple[str, str], timedelta], now: datetime) -> ResumePlan:
    """The resumes due at `now` for the agents whose verdict is `waiting` held by a usage
    limit, and the records kept: those of held agents, and of agents still in the turn a
    resume started (working, not held), and of tenants not planned this run (their
    socket could not be read); the others are dropped.

    `first`: each agent's first back-off step (fleet.yaml `defaults.usage_limit_retry`)."""
    decisions = budget.by_agent() if budget else {}
    kept: dict[tuple[str, str], ResumeRecord] = {}
    out: list[Resume] = []
    notes: dict[tuple[str, str], str] = {}
    held = {(h.tenant, h.agent) for h in health if h.health == "waiting" and h.reason == HELD}
    planned = {h.tenant for h in health}
    for key, record in records.items():
        beat = heartbeats.get(key)
        if key[0] not in planned or (key not in held and beat is not None and beat.state == "working"
                                     and not beat.held):
            kept[key] = record  # its tenant was not planned (socket unread), or the resumed turn runs
    for key in sorted(held):
        beat = heartbeats.get(key)
        since = min(now, (beat.event_ts or beat.ts) if beat else now)
        record = records.get(key) or ResumeRecord(since)
        decision = decisions.get(key)
        if decision is not None and decision.state is not State.RUN:
            kept[key] = record
            notes[key] = f"no resume while the budget policy has it {decision.state.value}"
            continue
        if record.message and record.sent_at is None:  # recorded, maybe typed: the same message again
            kept[key] = record
            out.append(Resume(key[0], key[1], record.message, record.attempts,
                              f"resume {record.message} was recorded but not typed (attempt {record.attempts})"))
            notes[key] = f"the fleet types resume message {record.message} now (attempt {record.attempts})"
            continue
        step = first.get(key, timedelta(minutes=15))
        when, why = due_at(record, account_reset(budget, decision), step)
        if now < when:
            kept[key] = record
            notes[key] = f"the fleet types a resume message at {when.isoformat()}: {why}"
            continue
        attempt = record.attempts + 1
        msg = message_id(key[0], key[1], now, attempt)
        kept[key] = replace(record, attempts=attempt, message=msg, sent_at=None)
        out.append(Resume(key[0], key[1], msg, attempt, f"usage limit over: {why} (resume {attempt})"))
        notes[key] = f"the fleet types resume message {msg} now (attempt {attempt}): {why}"
    return ResumePlan(kept, tuple(out), notes)


def account_reset(budget: BudgetPlan | None, decision: Decision | None) -> datetime | None:
    """The reset of the account the budget policy runs the agent on, when its usage readings know it."""
    if budget is None or decision is None or decision.account is None:
        return None
    tenant = budget.tenants.get(decision.tenant)
    paces = tenant.paces if tenant else ()
    return next((p.reset for p in paces if p.account == decision.account and p.reset is not None), None)


def typed(records: Mapping[str, ResumeRecord], message: str, now: datetime) -> dict[str, ResumeRecord]:
    """One tenant's records once apply has typed `message` at `now`."""
    return {a: replace(r, sent_at=now) if r.message == message and r.sent_at is None else r for a, r in records.items()}


def resumes_json(records: Mapping[str, ResumeRecord]) -> str:
    """One tenant's records as JSON, sorted: the same records are the same bytes."""
    doc = {a: {"since": r.since.isoformat(), "attempts": r.attempts, "message": r.message,
               "sent_at": r.sent_at.isoformat() if r.sent_at else None} for a, r in sorted(records.items())}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse_resumes(text: str) -> dict[str, ResumeRecord]:
    """The inverse of `resumes_json`; raises ValueError, KeyError or TypeError when malformed.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> r = {"a": ResumeRecord(t, 2, "msg-0a0b0c0d", t), "b": ResumeRecord(t)}
    >>> parse_resumes(resumes_json(r)) == r
    True
    """
    raw: Any = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return {str(a): ResumeRecord(_when(r["since"]), int(r.get("attempts") or 0), str(r.get("message") or ""),
                                 _when(r["sent_at"]) if r.get("sent_at") else None) for a, r in raw.items()}


def _when(value: object) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r:.40} has no time zone")
    return parsed


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
