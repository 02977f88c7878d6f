"""The budget policy's memory as JSON: `$state/<tenant>/budget.json`, read by the tick
and written by apply, the way restart history is. Sorted, so the same memory is the same
bytes and an unchanged memory is not rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reconciler.core.budget_types import AgentMemory, State


def memory_json(records: Mapping[str, AgentMemory]) -> str:
    """One tenant's memory, sorted, so the same memory is the same bytes."""
    doc: dict[str, Any] = {}
    for agent, m in sorted(records.items()):
        doc[agent] = {"runtime": m.runtime, "model": m.model, "account": m.account,
                      "changed_at": m.changed_at.isoformat() if m.changed_at else None,
                      "state": m.state.value, "cause": m.cause, "until": m.until.isoformat() if m.until else None}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse_memory(text: str) -> dict[str, AgentMemory]:
    """The inverse of `memory_json`; raises ValueError, KeyError or TypeError when malformed.

    >>> parse_memory(memory_json({"a": AgentMemory("stub", "stub-small")}))
    {'a': AgentMemory(runtime='stub', model='stub-small', account=None, changed_at=None, state=<State.RUN: 'run'>, cause='', until=None)}
    """
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return {str(agent): _memory_record(rec) for agent, rec in raw.items()}


def _memory_record(rec: Mapping[str, Any]) -> AgentMemory:
    def when(key: str) -> datetime | None:
        value = rec.get(key)
        if value is None:
            return None
        parsed = datetime.fromisoformat(str(value))
        if parsed.tzinfo is None:
            raise ValueError(f"{key} has no time zone")
        return parsed

    account = rec.get("account")
    return AgentMemory(str(rec["runtime"]), str(rec["model"]), None if account is None else str(account),
                       when("changed_at"), State(rec.get("state", "run")), str(rec.get("cause", "")), when("until"))
