"""core/messages.py: when `send` may type, and what a retry may still do (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest

from reconciler.core.messages import (
    OUTBOX_KEEP,
    PENDING_MAX,
    Readiness,
    RetryStep,
    Typed,
    outbox_text,
    parse_outbox,
    readiness,
    remember,
    retry_step,
)
from reconciler.model.observed import Heartbeat

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STARTED = T0 - timedelta(hours=1)  # the agent's session
A, B, C = "msg-0000000a", "msg-0000000b", "msg-0000000c"


def beat(state: str = "idle", ack: str | None = None, seq: int = 5, ts: datetime = T0,
         acks: tuple[str, ...] = (), held: str | None = None) -> Heartbeat:
    return Heartbeat("t", "h", "a", seq, ts, state, "opus", ack=ack, acks=acks, held=held)


def typed(msg_id: str = A, seconds: float = 0.0, seq: int | None = 5) -> Typed:
    return Typed(msg_id, T0 + timedelta(seconds=seconds), seq)


class ReadyCase(NamedTuple):
    test_id: str
    beat: Heartbeat | None
    typed: list[Typed]
    now_s: float
    ready: bool
    reason: str
    failed_s: float | None = None  # the runtime recorded its last turn as failed, seconds after T0


READY_CASES = [
    ReadyCase("no-heartbeat", None, [], 0, True, "no heartbeat says it is working"),
    ReadyCase("idle", beat(), [], 0, True, "its heartbeat says idle"),
    ReadyCase("working", beat("working"), [], 0, False, "its heartbeat says working"),
    ReadyCase("waiting-on-a-dialog", beat("waiting"), [], 0, False, "its heartbeat says waiting"),
    ReadyCase("working-but-from-an-earlier-run", beat("working", ts=STARTED - timedelta(minutes=5)), [], 0, True,
              "its heartbeat is from an earlier run"),
    # Codex: typed at seq 5, the record is still seq 5 and idle (no event at a turn's start)
    ReadyCase("typed-unacked-nothing-since", beat(), [typed()], 3, False,
              f"{A}, typed 3 s ago, is not acked and the agent has reported nothing since: it is still on that turn"),
    ReadyCase("typed-and-acked", beat(ack=A, seq=6), [typed()], 3, True, "its heartbeat says idle"),
    ReadyCase("typed-acked-but-still-working", beat("working", ack=A, seq=6), [typed()], 3, False,
              "its heartbeat says working"),
    ReadyCase("typed-unacked-but-reported-since", beat(seq=6), [typed()], 3, True, "its heartbeat says idle"),
    ReadyCase("typed-unacked-too-long-ago", beat(), [typed()], PENDING_MAX.total_seconds(), True,
              "its heartbeat says idle"),
    ReadyCase("typed-into-an-earlier-run", beat(ts=T0 + timedelta(seconds=9)), [typed()], 10, True,
              "its heartbeat says idle"),
    ReadyCase("typed-and-acked-in-acks-only", beat(ack=B, acks=(A, B)), [typed(A), typed(B, 1)], 3, True,
              "its heartbeat says idle"),
    # a failed turn: held at its prompt (a message is what clears it), and it ends the wait
    ReadyCase("held-by-a-failed-turn", beat("waiting", held="auth"), [], 0, True,
              "held (auth): its last turn failed and it waits at its prompt"),
    ReadyCase("typed-then-its-turn-failed", beat("waiting", held="auth"), [typed()], 3, True,
              "held (auth): its last turn failed and it waits at its prompt", failed_s=2),
    ReadyCase("an-older-failure-does-not-end-the-wait", beat("waiting", held="auth"), [typed(seconds=2)], 3, False,
              f"{A}, typed 1 s ago, is not acked and the agent has reported nothing since: it is still on that turn",
              failed_s=1),
    ReadyCase("only-the-last-typed-counts", beat(ack=B, seq=7), [typed(A), typed(B, 1, seq=6)], 3, True,
              "its heartbeat says idle"),
    ReadyCase("no-seq-recorded-falls-back-to-time", beat(ts=T0 - timedelta(seconds=5)), [typed(seq=None)], 3, False,
              f"{A}, typed 3 s ago, is not acked and the agent has reported nothing since: it is still on that turn"),
]


@pytest.mark.parametrize("case", READY_CASES, ids=lambda c: c.test_id)
def test_readiness(case: ReadyCase) -> None:
    started = T0 + timedelta(seconds=5) if case.test_id == "typed-into-an-earlier-run" else STARTED
    failed = None if case.failed_s is None else T0 + timedelta(seconds=case.failed_s)
    got = readiness(case.beat, case.typed, session_created=started, now=T0 + timedelta(seconds=case.now_s),
                    failed_at=failed)
    assert got == Readiness(case.ready, case.reason)


class RetryCase(NamedTuple):
    test_id: str
    beat: Heartbeat | None
    typed: list[Typed]
    msg_id: str
    on_line: bool
    step: RetryStep


RETRY_CASES = [
    RetryCase("acked", beat(ack=A), [typed(A)], A, False, RetryStep.ACKED),
    RetryCase("acked-wins-over-the-screen", beat(ack=A), [typed(A)], A, True, RetryStep.ACKED),
    RetryCase("on-the-input-line", beat(), [typed(A)], A, True, RetryStep.PRESS_ENTER),
    RetryCase("not-acked-not-on-the-line", beat(), [typed(A)], A, False, RetryStep.RETYPE),
    RetryCase("no-heartbeat", None, [typed(A)], A, False, RetryStep.RETYPE),
    RetryCase("a-later-one-acked", beat(ack=B), [typed(A), typed(B, 1)], A, False, RetryStep.UNKNOWN),
    RetryCase("an-earlier-one-acked", beat(ack=B), [typed(B), typed(A, 1)], A, False, RetryStep.RETYPE),
    RetryCase("never-typed-here", beat(ack=B), [typed(B)], A, False, RetryStep.RETYPE),
    # fleet-hook's `acks`: a Codex turn that took two messages acks both
    RetryCase("acked-in-acks-not-last", beat(ack=B, acks=(A, B)), [typed(A), typed(B, 1)], A, False, RetryStep.ACKED),
    RetryCase("acks-reach-back-past-it", beat(ack=B, acks=(C, B)), [typed(C), typed(A, 1), typed(B, 2)], A, False,
              RetryStep.RETYPE),
    RetryCase("acks-do-not-reach-back", beat(ack=B, acks=(B,)), [typed(C), typed(A, 1), typed(B, 2)], A, False,
              RetryStep.UNKNOWN),
]


@pytest.mark.parametrize("case", RETRY_CASES, ids=lambda c: c.test_id)
def test_retry_step(case: RetryCase) -> None:
    assert retry_step(case.beat, case.typed, case.msg_id, on_line=case.on_line) == case.step


def test_the_outbox_keeps_the_newest_ids_and_no_text_and_survives_damage() -> None:
    entries: list[Typed] = []
    for i in range(OUTBOX_KEEP + 3):
        entries = remember(entries, typed(f"msg-{i:08x}", i, seq=i))
    assert len(entries) == OUTBOX_KEEP and entries[-1].id == f"msg-{OUTBOX_KEEP + 2:08x}"
    assert parse_outbox(outbox_text(entries)) == entries
    for damaged in ("", "[]", '{"typed": 3}', '{"typed": [{"id": "x", "at": "yesterday"}, {"at": "2026-12-01T12:00:00"}]}'):
        assert parse_outbox(damaged) == []
