"""The resume decision (core/resume.py): when an agent held by a usage limit gets its message typed again."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.budget_types import BudgetPlan, Change, Decision, Rung, State, TenantBudget
from reconciler.core.pace import Pace, PaceState
from reconciler.core.plan import AgentHealth
from reconciler.core.resume import ResumePlan, ResumeRecord, backoff, plan_resumes, typed
from reconciler.model.observed import Heartbeat

HOLD = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
KEY = ("jarvis", "orchestrator")
STEP = {KEY: timedelta(minutes=15)}


def held(reason: str = "usage-limit") -> tuple[AgentHealth, ...]:
    return (AgentHealth(*KEY, "waiting", "held (usage-limit): ...", reason),)


def beat(state: str = "waiting", held_by: str | None = "usage-limit") -> dict[tuple[str, str], Heartbeat]:
    return {KEY: Heartbeat(*KEY[:1], "h", KEY[1], 3, HOLD + timedelta(minutes=1), state, "opus", event="StopFailure",
                           event_ts=HOLD, held=held_by, reason="rate_limit: Request rejected (429)")}


def run(now: datetime, records: dict[tuple[str, str], ResumeRecord] | None = None,
        budget: BudgetPlan | None = None, health: tuple[AgentHealth, ...] | None = None,
        beats: dict[tuple[str, str], Heartbeat] | None = None) -> ResumePlan:
    return plan_resumes(held() if health is None else health, beat() if beats is None else beats, records or {},
                        budget, STEP, now)


def budget(state: State, reset: datetime | None = None) -> BudgetPlan:
    decision = Decision(*KEY, "persistent", state, Change.NONE, (Rung("claude", "opus"),), 0, "max-1", "pace", "why")
    pace = Pace("max-1", "claude", "subscription", PaceState.ON, "", 0.5, 0.5, 0.5, reset)
    return BudgetPlan({"jarvis": TenantBudget("jarvis", (pace,), (decision,))})


def test_nothing_is_typed_before_the_back_off_and_the_health_says_when() -> None:
    planned = run(HOLD + timedelta(minutes=14))
    assert planned.resumes == ()
    assert planned.records == {KEY: ResumeRecord(HOLD)}
    assert "resume message at 2026-12-06T09:15:00+00:00" in planned.notes[KEY]


def test_after_the_back_off_one_resume_is_recorded_untyped_then_typed_once() -> None:
    now = HOLD + timedelta(minutes=15)
    planned = run(now)
    [resume] = planned.resumes
    record = planned.records[KEY]
    assert (resume.attempt, record.attempts, record.message, record.sent_at) == (1, 1, resume.message, None)
    assert f"types resume message {resume.message} now (attempt 1)" in planned.notes[KEY]
    # A crash before it was typed: the next run types the same id, not a new one.
    again = run(now + timedelta(minutes=1), dict(planned.records))
    assert [r.message for r in again.resumes] == [resume.message]
    # Typed: nothing more until the doubled back-off from the resume.
    done = {KEY: typed({KEY[1]: record}, resume.message, now)[KEY[1]]}
    assert run(now + timedelta(minutes=29), done).resumes == ()
    [second] = run(now + timedelta(minutes=30), done).resumes
    assert second.attempt == 2 and second.message != resume.message


def test_the_accounts_reset_from_the_usage_readings_comes_first() -> None:
    reset = HOLD + timedelta(hours=3)
    assert run(HOLD + timedelta(hours=2), budget=budget(State.RUN, reset)).resumes == ()
    [resume] = run(reset, budget=budget(State.RUN, reset)).resumes
    assert "resets at 2026-12-06T12:00:00+00:00" in resume.reason
    # A reset already behind the hold is no news: the back-off decides.
    assert run(HOLD + timedelta(minutes=15), budget=budget(State.RUN, HOLD - timedelta(hours=1))).resumes


def test_an_agent_the_budget_has_queued_gets_no_resume() -> None:
    planned = run(HOLD + timedelta(hours=5), budget=budget(State.QUEUED))
    assert planned.resumes == () and "queued" in planned.notes[KEY]


def test_other_holds_get_no_resume() -> None:
    planned = run(HOLD + timedelta(hours=5), health=held("auth"))
    assert planned.resumes == () and planned.records == {}


def test_the_record_stays_through_the_resumed_turn_and_goes_once_it_finished() -> None:
    record = ResumeRecord(HOLD, 1, "msg-1", HOLD + timedelta(minutes=15))
    healthy = (AgentHealth(*KEY, "healthy", "", None),)
    working = run(HOLD + timedelta(minutes=16), {KEY: record}, health=healthy, beats=beat("working", None))
    assert working.records == {KEY: record}, "a turn that fails again doubles the back-off"
    assert run(HOLD + timedelta(minutes=20), {KEY: record}, health=healthy, beats=beat("idle", None)).records == {}
    assert run(HOLD + timedelta(minutes=20), {KEY: record}, health=(), beats={}).records == {KEY: record}, \
        "a tenant not planned (its socket unread) keeps its records"


@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_a_hold_gets_at_most_one_resume_per_step_whatever_crashes(typed_steps: list[bool]) -> None:
    """Each run either types what it planned or crashes before typing: the attempts only
    grow when a resume was typed, and an untyped one is always typed again with its id."""
    records: dict[tuple[str, str], ResumeRecord] = {}
    now = HOLD
    ids: list[str] = []
    for ok in typed_steps:
        now += timedelta(hours=3)  # past any back-off (capped at 2 h)
        planned = run(now, records)
        [resume] = planned.resumes
        records = dict(planned.records)
        if ids and records[KEY].attempts == len(set(ids)):
            assert resume.message == ids[-1]
        ids.append(resume.message)
        if ok:
            records[KEY] = replace(records[KEY], sent_at=now)
    assert records[KEY].attempts == len(set(ids)) == sum(typed_steps) + (0 if typed_steps[-1] else 1)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(timedelta(seconds=2), n) for n in (1, 2, 4, 5)] == [timedelta(seconds=s) for s in (2, 4, 16, 16)]
