"""Writing an agent's task report, from inside its pane (`fleet task done|blocked`, the stub
agent's `/done` and `/blocked`), a person's reopen (`fleet task reopen`, its own file
`_reopened.json`), and reading every report of a tenant (the observe step).

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
from reconciler.model.task_report import (
    REOPEN_FILE,
    REOPENED,
    REPORT_STATES,
    TaskReport,
    clean_note,
    parse_reports,
    render_reports,
)


def record_report(state: StateLayout, tenant: str, agent: str, task: str, verdict: str, note: str,
                  now: datetime) -> Path:
    """Add (or replace) `agent`'s report on `task`; returns the file written."""
    if verdict not in REPORT_STATES:
        raise ValueError(f"a report says one of {', '.join(REPORT_STATES)}, not {verdict!r}")
    return _update(state, tenant, agent, TaskReport(agent, task, verdict, clean_note(note), now))


def record_reopen(state: StateLayout, tenant: str, task: str, by: str, note: str, now: datetime,
                  reopens: TaskReport | None = None) -> Path:
    """Record that `by` reopened `task` (`reopens`: the agent's report it reopens), in the
    tenant's reopens file (`task_reopens`, never an agent's own).

    Run by root for a tenant whose folder another user owns (a tenant with `user:`), the
    file and its lock are handed to that owner, so that user's reconcile can read them."""
    of = (reopens.agent, reopens.ts) if reopens is not None else None
    return _update(state, tenant, REOPEN_FILE, TaskReport(clean_note(by)[:64] or "someone", task, REOPENED,
                                                          clean_note(note), now, of))


def _update(state: StateLayout, tenant: str, name: str, report: TaskReport) -> Path:
    """Add (or replace) `report` in the reports file `name`, under its lock."""
    path = state.task_report(tenant, name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.parent / f".{name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            reports = parse_reports(read_capped(path), tenant, name)
        except (OSError, ValueError, UnicodeDecodeError):
            reports = {}
        reports[report.task] = report
        write_atomic(path, render_reports(tenant, name, reports), mode=0o600)
        _same_owner(path.parent, path, lock)
    finally:
        os.close(fd)
    return path


def _same_owner(folder: Path, *paths: Path) -> None:
    """Give `paths` to `folder`'s owner when root wrote them into another user's folder."""
    if os.geteuid() != 0:
        return
    owner = folder.stat()
    for path in paths:
        if path.stat().st_uid != owner.st_uid:
            os.chown(path, owner.st_uid, owner.st_gid)


def read_reports(state: StateLayout, tenant: str) -> tuple[list[TaskReport], list[str]]:
    """Every report of the tenant's agents and every reopen (one folder scan), and the files
    that could not be used."""
    def read_one(path: Path) -> tuple[str, dict[str, TaskReport]] | str:
        try:
            return path.stem, parse_reports(read_capped(path), tenant, path.stem)
        except OSError as exc:
            return f"{path}: unreadable task reports ({exc.strerror or exc}); ignored"
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return f"{path}: damaged task reports ({exc}); ignored until the agent reports again"

    found, problems = scan_records(state.task_reports(tenant), read_one, _file_name, "task reports")
    return [r for _, by_task in found.values() for r in by_task.values()], problems


def _file_name(found: tuple[str, dict[str, TaskReport]]) -> str:
    return found[0]
