"""The lanes' memory as JSON: `$state/<tenant>/lanes.json`, read by the tick and written by
apply, the way the budget memory is. Sorted, so the same memory is the same bytes and an
unchanged memory is not rewritten.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from reconciler.core.lanes import Assignment, LaneMemory, Window


def lanes_json(memory: LaneMemory) -> str:
    doc: dict[str, Any] = {
        "last_active": {w: t.isoformat() for w, t in sorted(memory.last_active.items())},
        "assignments": {task: {"agent": a.agent, "since": a.since.isoformat(), "message": a.message,
                               "sent_at": a.sent_at.isoformat() if a.sent_at else None, "attempts": a.attempts,
                               "acked": a.acked}
                        for task, a in sorted(memory.assignments.items())},
    }
    if memory.closed:  # a memory without history keeps the bytes it always had
        doc["closed"] = [{"task": w.task, "agent": w.agent, "since": w.since.isoformat(),
                          "until": w.until.isoformat() if w.until else None} for w in memory.closed]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse_lanes(text: str) -> LaneMemory:
    """The inverse of `lanes_json`; raises ValueError, KeyError or TypeError when malformed.

    >>> from datetime import UTC
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> m = LaneMemory({"coder0-0": t}, {"T1": Assignment("coder0-0", t, "msg-0a0b0c0d", t, 1, True)})
    >>> parse_lanes(lanes_json(m)) == m
    True
    >>> from dataclasses import replace
    >>> m = replace(m, closed=(Window("coder0-1", t, t, "T0"),))
    >>> parse_lanes(lanes_json(m)) == m
    True
    """
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    last = {str(w): _when(t) for w, t in dict(raw.get("last_active", {})).items()}
    held = {str(task): Assignment(str(a["agent"]), _when(a["since"]), str(a.get("message") or ""),
                                  _when(a["sent_at"]) if a.get("sent_at") else None, int(a.get("attempts") or 0),
                                  bool(a.get("acked")))
            for task, a in dict(raw.get("assignments", {})).items()}
    closed = tuple(Window(str(w["agent"]), _when(w["since"]), _when(w["until"]), str(w["task"]))
                   for w in list(raw.get("closed") or []))
    return LaneMemory(last, held, closed)


def _when(value: object) -> datetime:
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r:.40} has no time zone")
    return parsed
