"""An agent's reports on its tasks (`fleet task done|blocked`): the record and its JSON.

Agents write `$FLEET_STATE_DIR/<tenant>/reports/<agent>.json` (drivers/reports.py, from
inside their pane), the observe step reads it, and core/lanes.py turns the latest report
of each task into the fleet's view of it. One file per agent, so an agent only ever
rewrites its own; a report never changes a spec file. Standard library only: the stub
agent writes reports too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

#: What an agent may say of a task.
REPORT_STATES = ("done", "blocked")
#: The longest note kept; a longer one is cut (it is shown in status and TASKS.md).
MAX_NOTE_CHARS = 500


@dataclass(frozen=True, slots=True)
class TaskReport:
    """An agent's word on a task, and when it said it."""

    agent: str
    task: str
    state: str  # "done" | "blocked"
    note: str
    ts: datetime


def clean_note(note: str) -> str:
    r"""One printable line of at most MAX_NOTE_CHARS: a note is shown in status and tables.

    >>> clean_note("needs\nan API key\x1b[31m")
    'needs an API key[31m'
    """
    flat = " ".join("".join(ch if ch.isprintable() or ch in "\n\t" else "" for ch in note).split())
    return flat[:MAX_NOTE_CHARS]


def render_reports(tenant: str, agent: str, reports: Mapping[str, TaskReport]) -> str:
    """One agent's reports file, sorted by task id."""
    doc = {"tenant": tenant, "agent": agent, "reports": {
        task: {"state": r.state, "note": r.note, "ts": r.ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        for task, r in sorted(reports.items())}}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def parse_reports(text: str, tenant: str, agent: str) -> dict[str, TaskReport]:
    """The reports of one agent's file; raises ValueError when it is malformed or names
    another tenant or agent (a file is only ever its own agent's word).

    >>> r = parse_reports(render_reports("t", "a", {"T1": TaskReport("a", "T1", "done", "", datetime(2026, 1, 1, tzinfo=UTC))}), "t", "a")
    >>> r["T1"].state, r["T1"].ts.isoformat()
    ('done', '2026-01-01T00:00:00+00:00')
    """
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("tenant") != tenant or doc.get("agent") != agent:
        raise ValueError(f"not a reports file of {tenant}/{agent}")
    raw = doc.get("reports")
    if not isinstance(raw, dict):
        raise ValueError("`reports` is not an object")
    out: dict[str, TaskReport] = {}
    for task, rec in raw.items():
        if not isinstance(rec, dict) or rec.get("state") not in REPORT_STATES:
            raise ValueError(f"{task}: `state` must be one of {', '.join(REPORT_STATES)}")
        ts = datetime.fromisoformat(str(rec.get("ts")))
        if ts.tzinfo is None:
            raise ValueError(f"{task}: `ts` has no time zone")
        out[str(task)] = TaskReport(agent, str(task), str(rec["state"]), clean_note(str(rec.get("note", ""))),
                                    ts.astimezone(UTC))
    return out
