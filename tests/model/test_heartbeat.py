"""Heartbeat parsing by table (model/heartbeat.py): what a record must hold, every error at once.

A heartbeat whose `ts` has no time zone is rejected (not read as UTC or local time):
on another host it would be off by that host's UTC offset, and docs/reference.md writes `Z`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pytest

from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.observed import Heartbeat

VALID: dict[str, Any] = {
    "tenant": "jarvis",
    "host": "w-jarvis",
    "agent": "coder0-0",
    "seq": 42,
    "ts": "2026-11-25T12:00:00Z",
    "pid": 4242,
    "state": "working",
    "model": "opus",
    "ack": "msg-7f3a",
    "usage": {"input_tokens": 1200, "output_tokens": 300},
}
REQUIRED = ("tenant", "host", "agent", "seq", "ts", "state", "model")
NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def beat(**changes: Any) -> str:
    """VALID with `changes` applied; a value of `...` removes the key."""
    record = {**VALID, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})



class GoodCase(NamedTuple):
    test_id: str
    text: str
    expected: Heartbeat


GOOD_CASES = [
    GoodCase(
        "spec-example",
        beat(),
        Heartbeat(
            "jarvis", "w-jarvis", "coder0-0", 42, NOON, "working", "opus", 4242, "msg-7f3a",
            {"input_tokens": 1200, "output_tokens": 300},
        ),
    ),
    GoodCase(
        "optional-fields-absent",
        beat(pid=..., ack=..., usage=...),
        Heartbeat("jarvis", "w-jarvis", "coder0-0", 42, NOON, "working", "opus"),
    ),
    GoodCase(
        "optional-fields-null",
        beat(pid=None, ack=None, usage=None, state="idle"),
        Heartbeat("jarvis", "w-jarvis", "coder0-0", 42, NOON, "idle", "opus"),
    ),
    GoodCase(
        "offset-becomes-utc-unknown-key-ignored",
        beat(ts="2026-11-25T14:00:00+02:00", pid=..., ack=..., usage=..., future="x"),
        Heartbeat("jarvis", "w-jarvis", "coder0-0", 42, NOON, "working", "opus"),
    ),
]


@pytest.mark.parametrize("case", GOOD_CASES, ids=[c.test_id for c in GOOD_CASES])
def test_parse_heartbeat_accepts(case: GoodCase) -> None:
    parsed = parse_heartbeat(case.text)

    assert parsed == case.expected
    assert parsed.ts.tzinfo is not None and parsed.ts.utcoffset() == NOON.utcoffset()


class BadCase(NamedTuple):
    test_id: str
    text: str
    message: str


BAD_CASES = [
    *(BadCase(f"missing-{key}", beat(**{key: ...}), f"missing field {key!r}") for key in REQUIRED),
    BadCase("bad-state", beat(state="sleeping"), "'state' must be one of idle|waiting|working"),
    BadCase("truncated", beat()[:40], "invalid JSON"),
    BadCase("truncated-says-so", beat()[:40], "truncated?"),
    BadCase("empty-file", "", "empty file"),
    BadCase("not-an-object", "[1, 2]", "expected a JSON object, got an array"),
    BadCase("ts-without-zone", beat(ts="2026-11-25T12:00:00"), "'ts' has no time zone"),
    BadCase("ts-not-iso", beat(ts="yesterday"), "'ts' is not an ISO-8601 time"),
    BadCase("ts-a-number", beat(ts=1764072000), "'ts' must be an ISO-8601 string, got 1764072000"),
    BadCase("seq-a-string", beat(seq="42"), "'seq' must be a non-negative integer, got \"42\""),
    BadCase("seq-a-boolean", beat(seq=True), "'seq' must be a non-negative integer, got true"),
    BadCase("seq-negative", beat(seq=-1), "'seq' must be a non-negative integer, got -1"),
    BadCase("pid-a-string", beat(pid="4242"), "'pid' must be a non-negative integer"),
    BadCase("empty-agent", beat(agent=""), "'agent' must be a non-empty string, got \"\""),
    BadCase("ack-a-number", beat(ack=7), "'ack' must be a string or null, got 7"),
    BadCase("usage-not-counts", beat(usage={"input_tokens": "many"}), "'usage' must be an object"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.test_id for c in BAD_CASES])
def test_parse_heartbeat_rejects(case: BadCase) -> None:
    with pytest.raises(ValueError) as caught:
        parse_heartbeat(case.text)

    assert case.message in str(caught.value)


def test_parse_heartbeat_reports_every_error_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        parse_heartbeat(beat(seq=..., state="x", model=7))

    assert str(caught.value) == (
        "missing field 'seq', 'state' must be one of idle|waiting|working, got \"x\", "
        "'model' must be a non-empty string, got 7"
    )
