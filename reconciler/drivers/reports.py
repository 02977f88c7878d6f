"""Writing an agent's task report, from inside its pane (`fleet task done|blocked`, the stub
agent's `/done` and `/blocked`), and reading every report of a tenant (the observe step).

The file is the agent's own (`<tenant>/reports/<agent>.json`, model/task_report.py):
read, updated and replaced atomically under a lock beside it, so two reports typed at
once both land. A damaged file is started over rather than refused: the report being
written is the agent's latest word. Standard library, drivers/files.py and model/ only,
for the stub agent.
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime
from pathlib import Path

from reconciler.drivers.files import read_capped, scan_records, write_atomic
from reconciler.model.layout import StateLayout
from reconciler.model.task_report import REPORT_STATES, TaskReport, clean_note, parse_reports, render_reports


def record_report(state: StateLayout, tenant: str, agent: str, task: str, verdict: str, note: str,
                  now: datetime) -> Path:
    """Add (or replace) `agent`'s report on `task`; returns the file written."""
    if verdict not in REPORT_STATES:
        raise ValueError(f"a report says one of {', '.join(REPORT_STATES)}, not {verdict!r}")
    path = state.task_report(tenant, agent)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.parent / f".{agent}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            reports = parse_reports(read_capped(path), tenant, agent)
        except (OSError, ValueError, UnicodeDecodeError):
            reports = {}
        reports[task] = TaskReport(agent, task, verdict, clean_note(note), now)
        write_atomic(path, render_reports(tenant, agent, reports), mode=0o600)
    finally:
        os.close(fd)
    return path


def read_reports(state: StateLayout, tenant: str) -> tuple[list[TaskReport], list[str]]:
    """Every report of the tenant's agents (one folder scan), and the files that could not be used."""
    def read_one(path: Path) -> dict[str, TaskReport] | str:
        try:
            return parse_reports(read_capped(path), tenant, path.stem)
        except OSError as exc:
            return f"{path}: unreadable task reports ({exc.strerror or exc}); ignored"
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return f"{path}: damaged task reports ({exc}); ignored until the agent reports again"

    found, problems = scan_records(state.task_reports(tenant), read_one, _first_agent, "task reports")
    return [r for by_task in found.values() for r in by_task.values()], problems


def _first_agent(reports: dict[str, TaskReport]) -> str:
    return next(iter(reports.values())).agent if reports else ""
