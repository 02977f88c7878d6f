"""A Codex turn that failed is read from its rollout (engine/observe.py `observe_codex_failures`).

Real files in a temporary CODEX_HOME, laid out as Codex 0.169.0 writes them
(`sessions/YYYY/MM/DD/rollout-*.jsonl`), with the `task_complete` lines it wrote against
the fake answering 401 and 429 (measured).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.engine.observe import observe_codex_failures
from reconciler.model.observed import Heartbeat
from reconciler.runtimes.codex import turn_failure

LAUNCH = datetime(2026, 12, 6, 4, 50, tzinfo=UTC)
FAILED_401 = {"type": "task_complete", "last_agent_message": None, "error": {
    "message": "unexpected status 401 Unauthorized: Incorrect API key provided (fake)",
    "codex_error_info": {"http_connection_failed": {"http_status_code": 401}}}}
FAILED_429 = {"type": "task_complete", "error": {"message": "exceeded retry limit, last status: 429 Too Many Requests",
              "codex_error_info": {"response_too_many_failed_attempts": {"http_status_code": 429}}}}
DONE = {"type": "task_complete", "last_agent_message": "Done."}


def rollout(home: Path, work: Path, name: str, *events: tuple[datetime, dict[str, object]]) -> Path:
    day = home / "sessions" / "2026" / "12" / "06"
    day.mkdir(parents=True, exist_ok=True)
    lines = [{"timestamp": LAUNCH.isoformat(), "type": "turn_context", "payload": {"cwd": str(work)}}]
    lines += [{"timestamp": at.isoformat().replace("+00:00", "Z"), "type": "event_msg", "payload": p} for at, p in events]
    path = day / f"rollout-2026-12-06T04-50-00-{name}.jsonl"
    path.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    return path


def beat(event_ts: datetime, event: str = "launch") -> Heartbeat:
    return Heartbeat("t", "h", "codex-1", 1, event_ts, "idle", "gpt-5.5", pid=1, event=event, event_ts=event_ts)


@pytest.mark.parametrize(("payload", "held"), [(FAILED_401, "auth"), (FAILED_429, "usage-limit"), (DONE, None)])
def test_the_last_failed_turn_holds_the_agent(tmp_path: Path, payload: dict[str, object], held: str | None) -> None:
    home, work = tmp_path / "codex", tmp_path / "work"
    rollout(home, work, "a", (LAUNCH + timedelta(seconds=5), {"type": "task_started"}),
            (LAUNCH + timedelta(seconds=9), payload))
    facts = [(None, "t", "codex-1", str(home), str(work))]
    found = observe_codex_failures({("t", "codex-1"): beat(LAUNCH)}, facts)
    assert (found[("t", "codex-1")].held if found else None) == held
    if held:
        assert found[("t", "codex-1")].state == "waiting"


def test_only_the_agents_own_newer_rollout_counts(tmp_path: Path) -> None:
    home, work = tmp_path / "codex", tmp_path / "work"
    facts = [(None, "t", "codex-1", str(home), str(work))]
    other = rollout(home, tmp_path / "elsewhere", "b", (LAUNCH + timedelta(seconds=9), FAILED_401))
    assert observe_codex_failures({("t", "codex-1"): beat(LAUNCH)}, facts) == {}, "another workdir's rollout"
    mine = rollout(home, work, "a", (LAUNCH + timedelta(seconds=9), FAILED_401))
    later = LAUNCH + timedelta(minutes=5)
    assert observe_codex_failures({("t", "codex-1"): beat(later, "agent-turn-complete")}, facts) == {}, \
        "a turn completed after the failure: not held"
    old = (LAUNCH - timedelta(hours=1)).timestamp()
    for path in (mine, other):
        os.utime(path, (old, old))
    assert observe_codex_failures({("t", "codex-1"): beat(LAUNCH)}, facts) == {}, "unchanged since the event: not read"


def test_a_turn_started_after_the_failure_is_not_held() -> None:
    lines = [json.dumps({"timestamp": "2026-12-06T04:50:09Z", "type": "event_msg", "payload": FAILED_401}),
             json.dumps({"timestamp": "2026-12-06T04:51:00Z", "type": "event_msg", "payload": {"type": "task_started"}})]
    assert turn_failure(lines[0]) is not None and turn_failure("\n".join(lines)) is None
    assert turn_failure('{"cut line' + "\n" + lines[0])[0] == "auth", "a cut first line is skipped"  # type: ignore[index]
