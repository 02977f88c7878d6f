"""An agent's reports on its tasks (`fleet task done|blocked`): the record and its JSON.

Agents write `$FLEET_STATE_DIR/<tenant>/reports/<agent>.json` (drivers/reports.py, from
inside their pane), the observe step reads it, and core/lanes.py turns the latest report
of each task into the fleet's view of it. One file per agent, so an agent only ever
rewrites its own; a report never changes a spec file. A person's `fleet task reopen`
goes to a file of its own beside them, `_reopened.json` (no agent can have that name),
as a record whose state is `reopened`, whose `by` says who and whose `reopens` names the
report it reopens (its agent and time): it stands until an agent reports on the task
again (core/lanes.py). Standard library only: the stub agent writes reports too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

#: What an agent may say of a task.
REPORT_STATES = ("done", "blocked")
#: What a person's reopen says of a task (only in the file `REOPEN_FILE`).
REOPENED = "reopened"
#: The name of the reopens' file among the agents' (`_` starts no fleet name, so no agent's file).
REOPEN_FILE = "_reopened"
#: The longest note kept; a longer one is cut (it is shown in status and TASKS.md).
MAX_NOTE_CHARS = 500


@dataclass(frozen=True, slots=True)
class TaskReport:
    """An agent's word on a task, and when it said it."""

    agent: str  # the agent that reported; for a reopen, who reopened (a person or an agent)
    task: str
    state: str  # "done" | "blocked" | "reopened"
    note: str
    ts: datetime
    reopens: tuple[str, datetime] | None = None  # a reopen's: the report it reopens (agent, ts)


def clean_note(note: str) -> str:
    r"""One printable line of at most MAX_NOTE_CHARS: a note is shown in status and tables.

    >>> clean_note("needs\nan API key\x1b[31m")
    'needs an API key[31m'
    """
    flat = " ".join("".join(ch if ch.isprintable() or ch in "\n\t" else "" for ch in note).split())
    return flat[:MAX_NOTE_CHARS]


def render_reports(tenant: str, agent: str, reports: Mapping[str, TaskReport]) -> str:
    """One agent's reports file (or the reopens' file, `agent` REOPEN_FILE), sorted by task id."""
    doc = {"tenant": tenant, "agent": agent, "reports": {
        task: {"state": r.state, "note": r.note, "ts": _stamp(r.ts), **(_reopen_fields(r) if agent == REOPEN_FILE else {})}
        for task, r in sorted(reports.items())}}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _stamp(ts: datetime) -> str:
    """To the microsecond: a reopen names the report it reopens by agent and time, and an
    agent may report twice in one second (done, then blocked)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reopen_fields(r: TaskReport) -> dict[str, object]:
    return {"by": r.agent, "reopens": {"agent": r.reopens[0], "ts": _stamp(r.reopens[1])} if r.reopens else None}


def parse_reports(text: str, tenant: str, agent: str) -> dict[str, TaskReport]:
    """The reports of one agent's file; raises ValueError when it is malformed or names
    another tenant or agent (a file is only ever its own agent's word).

    >>> r = parse_reports(render_reports("t", "a", {"T1": TaskReport("a", "T1", "done", "", datetime(2026, 1, 1, tzinfo=UTC))}), "t", "a")
    >>> r["T1"].state, r["T1"].ts.isoformat()
    ('done', '2026-01-01T00:00:00+00:00')
    >>> again = TaskReport("alice", "T1", REOPENED, "", datetime(2026, 1, 2, tzinfo=UTC),
    ...                    ("a", datetime(2026, 1, 1, tzinfo=UTC)))
    >>> r = parse_reports(render_reports("t", REOPEN_FILE, {"T1": again}), "t", REOPEN_FILE)
    >>> r["T1"] == again
    True
    """
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("tenant") != tenant or doc.get("agent") != agent:
        raise ValueError(f"not a reports file of {tenant}/{agent}")
    raw = doc.get("reports")
    if not isinstance(raw, dict):
        raise ValueError("`reports` is not an object")
    states = (REOPENED,) if agent == REOPEN_FILE else REPORT_STATES
    out: dict[str, TaskReport] = {}
    for task, rec in raw.items():
        if not isinstance(rec, dict) or rec.get("state") not in states:
            raise ValueError(f"{task}: `state` must be one of {', '.join(states)}")
        ts = _when(rec.get("ts"), task)
        who, of = agent, None
        if agent == REOPEN_FILE:
            who = clean_note(str(rec.get("by") or "someone"))[:64]
            if isinstance(was := rec.get("reopens"), dict):
                of = (str(was.get("agent")), _when(was.get("ts"), task))
        out[str(task)] = TaskReport(who, str(task), str(rec["state"]), clean_note(str(rec.get("note", ""))), ts, of)
    return out


def _when(value: object, task: object) -> datetime:
    ts = datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        raise ValueError(f"{task}: `ts` has no time zone")
    return ts.astimezone(UTC)
