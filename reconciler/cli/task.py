"""`fleet task done|blocked`: an agent reports on its task from inside its pane.

The agent's FLEET_* environment (docs/reference.md, "Runtime contract") says who it is
and where its state directory is; the report lands in its own reports file
(`$FLEET_STATE_DIR/<tenant>/reports/<agent>.json`, drivers/reports.py), never in a spec
file, and the next reconcile shows it as the task's fleet view (docs/lanes.md).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import command, group, out
from reconciler.errors import UserError
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.spec.models import NAME_PATTERN

TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"

app = group("Tasks: an agent reports on its task from inside its pane.\n\n"
            "Example: fleet task done T7 --note \"pagination merged as PR 42\"")

TaskArg = Annotated[str, typer.Argument(metavar="ID", help="The task's id in tasks.yaml, e.g. T7.", show_default=False)]
TenantEnvOpt = Annotated[str | None, typer.Option("--tenant", metavar="NAME", help="Default: $FLEET_TENANT.",
                                                  show_default=False)]
AgentEnvOpt = Annotated[str | None, typer.Option("--agent", metavar="NAME", help="Default: $FLEET_AGENT.",
                                                 show_default=False)]
StateEnvOpt = Annotated[Path | None, typer.Option("--state-dir", metavar="DIR", help=f"Default: ${STATE_DIR_ENV}.",
                                                  show_default=False)]


@command(app, "done")
def done_command(
    task: TaskArg,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="What was done, for people (one line).")] = "",
    tenant: TenantEnvOpt = None,
    agent: AgentEnvOpt = None,
    state_dir: StateEnvOpt = None,
) -> None:
    """Report a task done; the lane frees this worker for the next task.

    Example: fleet task done T7 --note "merged as PR 42"
    """
    _report(task, "done", note, tenant, agent, state_dir)


@command(app, "blocked")
def blocked_command(
    task: TaskArg,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="Why, and what would unblock it (required).",
                                      show_default=False)],
    tenant: TenantEnvOpt = None,
    agent: AgentEnvOpt = None,
    state_dir: StateEnvOpt = None,
) -> None:
    """Report a task blocked, with why; a person sees the note in status and TASKS.md.

    Example: fleet task blocked T7 --note "needs the staging API key"
    """
    if not note.strip():
        raise UserError("--note is empty; say why the task is blocked and what would unblock it")
    _report(task, "blocked", note, tenant, agent, state_dir)


def _report(task: str, verdict: str, note: str, tenant: str | None, agent: str | None, state_dir: Path | None) -> None:
    from reconciler.drivers.reports import record_report  # noqa: PLC0415

    who_tenant = _named("tenant", tenant or os.environ.get("FLEET_TENANT", ""), "FLEET_TENANT")
    who_agent = _named("agent", agent or os.environ.get("FLEET_AGENT", ""), "FLEET_AGENT")
    if not re.fullmatch(TASK_ID, task):
        raise UserError(f"task id {task!r} is not an id of tasks.yaml (letters, digits, '.', '_' and '-')")
    root = state_dir or Path(os.environ.get(STATE_DIR_ENV, ""))
    if not str(root) or str(root) == ".":
        raise UserError(f"no state directory: run this inside the agent's pane (${STATE_DIR_ENV} is set there) "
                        "or pass --state-dir")
    try:
        path = record_report(StateLayout(root), who_tenant, who_agent, task, verdict, note, datetime.now(UTC))
    except OSError as exc:
        raise UserError(f"could not write the report under {root}: {exc.strerror or exc}") from None
    out.print(f"{who_tenant}/{who_agent}: task {task} reported {verdict} ({path})", highlight=False, markup=False)


def _named(what: str, value: str, env: str) -> str:
    if not value:
        raise UserError(f"no {what}: run this inside the agent's pane (${env} is set there) or pass --{what}")
    if not re.fullmatch(NAME_PATTERN, value):
        raise UserError(f"{what} {value!r} is not a fleet name (lower-case letters, digits and '-')")
    return value
