"""When `fleet agent send` may type, and what a retry may still do: pure decisions.

Where it sits: engine/agent_verbs.py reads the agent's heartbeat and its outbox (the ids
`send` typed to it and when, never the text: StateLayout `outbox`), asks `readiness`
whether typing now would land in the middle of a turn, and for a retry (`--id`) asks
`retry_step` what is still to be done, so a message is never typed twice. Nothing here
does I/O; `parse_outbox` and `outbox_text` are the file's format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from reconciler.model.observed import Heartbeat

#: A typed message that was never acked stops counting as "the agent is on it" after
#: this long (a message lost on the way must not hold every later one forever).
PENDING_MAX = timedelta(minutes=30)
#: How many typed ids the outbox keeps (newest last).
OUTBOX_KEEP = 16
#: A message id as `send` makes them (`new_message_id`).
MESSAGE_ID = re.compile(r"msg-[0-9a-f]{8}")
#: Heartbeat times are whole seconds (the hook truncates them).
_TS_RESOLUTION = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class Typed:
    """One message `send` typed into the agent's pane: its id, when (UTC), and the `seq`
    of the agent's heartbeat just before (None: there was none), so "the agent has
    reported nothing since" is exact, not a comparison of clocks."""

    id: str
    at: datetime
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether typing now is safe, and why (shown when `send` waits or gives up)."""

    ready: bool
    reason: str


def acked(beat: Heartbeat | None, msg_id: str) -> bool:
    """Whether the agent's record says it took `msg_id`: its `ack`, or one of `fleet-hook`'s
    `acks` (a Codex turn that took two messages acks both there).

    >>> t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    >>> beat = Heartbeat("t", "h", "a", 3, t0, "idle", "gpt", ack="msg-2", acks=("msg-1", "msg-2"))
    >>> acked(beat, "msg-1"), acked(beat, "msg-2"), acked(beat, "msg-3"), acked(None, "msg-1")
    (True, True, False, False)
    """
    return beat is not None and (beat.ack == msg_id or msg_id in beat.acks)


def _ago(delta: timedelta) -> str:
    return f"{max(0, int(delta.total_seconds()))} s ago"


def readiness(beat: Heartbeat | None, typed: Sequence[Typed], *, session_created: datetime,
              now: datetime, failed_at: datetime | None = None) -> Readiness:
    """Is the agent between turns, so a typed message starts a turn instead of landing in one?

    Busy when its heartbeat says `working` or `waiting` (a dialog would take the keys),
    or when the last message `send` typed is not acked and the agent has reported nothing
    since (Codex has no event when a turn starts: its ack comes when the turn ends).
    Ready when there is no record of this run, or it says `idle`, or it is held by a
    failed turn (`held`: auth, usage limit; the runtime waits at its prompt, and a
    message is what a person sends to clear it). `failed_at`: when the runtime recorded
    its last turn as failed, only in its own files (Codex runs no `notify` then), which
    also ends the wait for a message typed before it.

    >>> t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    >>> beat = Heartbeat("t", "h", "a", 3, t0, "working", "opus", ack="msg-00000001")
    >>> readiness(beat, [], session_created=t0 - timedelta(hours=1), now=t0).reason
    'its heartbeat says working'
    >>> idle = Heartbeat("t", "h", "a", 4, t0, "idle", "opus", ack="msg-00000001")
    >>> readiness(idle, [Typed("msg-00000001", t0)], session_created=t0, now=t0).ready
    True
    >>> later = [Typed("msg-00000002", t0 + timedelta(seconds=5), seq=4)]
    >>> readiness(idle, later, session_created=t0, now=t0 + timedelta(seconds=9))
    Readiness(ready=False, reason='msg-00000002, typed 4 s ago, is not acked and the agent has reported nothing since: it is still on that turn')
    """
    if beat is None:
        return Readiness(True, "no heartbeat says it is working")
    if beat.ts < session_created - _TS_RESOLUTION:
        return Readiness(True, "its heartbeat is from an earlier run")
    if typed:
        last = typed[-1]
        unheard = beat.seq <= last.seq if last.seq is not None else beat.ts + _TS_RESOLUTION <= last.at
        unheard = unheard and not (failed_at is not None and failed_at > last.at)
        if (last.at >= session_created and not acked(beat, last.id) and unheard
                and now - last.at < PENDING_MAX):
            return Readiness(False, f"{last.id}, typed {_ago(now - last.at)}, is not acked and the agent has "
                                    "reported nothing since: it is still on that turn")
    if beat.state == "idle":
        return Readiness(True, "its heartbeat says idle")
    if beat.held:
        return Readiness(True, f"held ({beat.held}): its last turn failed and it waits at its prompt")
    return Readiness(False, f"its heartbeat says {beat.state}")


class RetryStep(StrEnum):
    """What a retry of an earlier message (`send --id ID`) does."""

    ACKED = "acked"  # the agent took it: type nothing
    PRESS_ENTER = "press_enter"  # still on the agent's input line: only submit it
    RETYPE = "retype"  # neither acked nor on the line: type it again, same id
    UNKNOWN = "unknown"  # a message typed after it is acked: the last ack cannot tell; type nothing


def retry_step(beat: Heartbeat | None, typed: Sequence[Typed], msg_id: str, *, on_line: bool) -> RetryStep:
    """The one safe step for a retry of `msg_id`, checked before anything is typed.

    When a message typed after `msg_id` is acked and `msg_id` is not, it was not taken
    only if the record's `acks` reach back far enough to show it: they hold an id typed
    before `msg_id` (acks are kept in order). Otherwise (an agent that writes only `ack`,
    or `acks` that dropped it) whether it was taken cannot be told: UNKNOWN, and a person
    looks, never a second copy.

    >>> t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    >>> sent = [Typed("msg-00000001", t0), Typed("msg-00000002", t0 + timedelta(seconds=1))]
    >>> beat = Heartbeat("t", "h", "a", 3, t0, "idle", "opus", ack="msg-00000002")
    >>> [retry_step(beat, sent, i, on_line=False) for i in ("msg-00000002", "msg-00000001", "msg-00000009")]
    [<RetryStep.ACKED: 'acked'>, <RetryStep.UNKNOWN: 'unknown'>, <RetryStep.RETYPE: 'retype'>]
    >>> retry_step(None, sent, "msg-00000001", on_line=True)
    <RetryStep.PRESS_ENTER: 'press_enter'>
    """
    if acked(beat, msg_id):
        return RetryStep.ACKED
    if on_line:
        return RetryStep.PRESS_ENTER
    ids = [t.id for t in typed]
    if msg_id not in ids:
        return RetryStep.RETYPE
    at = ids.index(msg_id)
    if not any(acked(beat, later) for later in ids[at + 1:]):
        return RetryStep.RETYPE
    acks = beat.acks if beat is not None else ()
    shown = any(earlier in acks for earlier in ids[:at])
    return RetryStep.RETYPE if shown else RetryStep.UNKNOWN


def remember(typed: Sequence[Typed], new: Typed, keep: int = OUTBOX_KEEP) -> list[Typed]:
    """The outbox after typing `new`: a retried id moves to the end; the newest `keep`.

    >>> t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    >>> [t.id for t in remember([Typed("msg-a", t0), Typed("msg-b", t0)], Typed("msg-a", t0), keep=2)]
    ['msg-b', 'msg-a']
    """
    return [*(t for t in typed if t.id != new.id), new][-keep:]


def parse_outbox(text: str) -> list[Typed]:
    """The outbox file's entries, oldest first; a damaged file or entry counts as none
    (the outbox only ever holds the wait back, it is never needed to send).

    >>> parse_outbox('{"typed": [{"id": "msg-0000000a", "at": "2026-12-01T12:00:00.5+00:00", "seq": 7}, {"id": 3}]}')
    [Typed(id='msg-0000000a', at=datetime.datetime(2026, 12, 1, 12, 0, 0, 500000, tzinfo=datetime.timezone.utc), seq=7)]
    >>> parse_outbox("not json")
    []
    """
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    entries = doc.get("typed") if isinstance(doc, dict) else None
    found: list[Typed] = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            at = datetime.fromisoformat(entry["at"])
            seq = entry.get("seq")
            if isinstance(entry["id"], str) and at.utcoffset() is not None:
                found.append(Typed(entry["id"], at.astimezone(UTC), seq if type(seq) is int else None))
        except (TypeError, KeyError, ValueError):
            continue
    return found


def outbox_text(typed: Sequence[Typed]) -> str:
    """The outbox file: ids and times only, never a message's text."""
    return json.dumps({"typed": [{"id": t.id, "at": t.at.isoformat(), "seq": t.seq} for t in typed]}) + "\n"
