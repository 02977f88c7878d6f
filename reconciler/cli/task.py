"""`fleet task add|set-state`: the orchestrator's hands on tasks.yaml; `fleet task
done|blocked`: an agent reports on its task from inside its pane; `fleet task reopen`: a
person (or the orchestrator) opens a reported task again, on the lane's host.

add and set-state edit tasks.yaml round-trip and commit it (engine/spec_edit.py), so a
task is delegated through the repository like any reviewed change (docs/lanes.md).

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

from reconciler.cli.common import (
    BranchOpt,
    EditTenantOpt,
    NoCommitOpt,
    PushOpt,
    RepoArg,
    command,
    edit_tenant,
    group,
    out,
    run_edit,
)
from reconciler.errors import SpecError, UserError
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.spec.models import NAME_PATTERN

TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"

app = group("Tasks: add one or set its state (a commit to tasks.yaml); an agent reports on its task; "
            "a person reopens a reported one (on the lane's host).\n\n"
            "Example: fleet task add REPO --tenant shop --lane api --title \"Paginate\" --brief-file brief.md\n\n"
            "Example: fleet task done T7 --note \"pagination merged as PR 42\"\n\n"
            "Example: fleet task reopen T7 --tenant shop --note \"the tests fail on main\"")

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


@command(app, "reopen")
def reopen_command(
    task: TaskArg,
    note: Annotated[str, typer.Option("--note", metavar="TEXT", help="Why, for the worker and people (one line).")] = "",
    tenant: TenantEnvOpt = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", metavar="DIR", help=f"The state directory of the "
                                                   f"lane's reconcile. Default: ${STATE_DIR_ENV}, else "
                                                   "~/.local/state/mosaic-fleet.", show_default=False)] = None,
    repo: Annotated[Path | None, typer.Option("--repo", metavar="REPO", help="The fleet repository: check the task "
                                              "against its tasks.yaml first.", show_default=False)] = None,
) -> None:
    """Open a task reported done or blocked again: the lane hands it out again, with its brief.

    Run it on the host of the task's lane, as the user its reconcile runs as (for a tenant with `user:`, that user): the reports are in that host's state directory.

    A later report of the task wins over the reopen. A task set done or cancelled in tasks.yaml is opened there instead: fleet task set-state REPO ID open.

    Example: fleet task reopen T7 --tenant shop --note "the tests fail on main"
    """
    from reconciler.core.lanes import latest_reports, reopen_refusal  # noqa: PLC0415
    from reconciler.drivers.files import default_state_dir  # noqa: PLC0415
    from reconciler.drivers.reports import read_reports, record_reopen  # noqa: PLC0415

    who_tenant = edit_tenant(tenant)
    if not re.fullmatch(TASK_ID, task):
        raise UserError(f"task id {task!r} is not an id of tasks.yaml (letters, digits, '.', '_' and '-')")
    spec_state, known = _spec_state(repo, who_tenant, task) if repo is not None else (None, True)
    root = state_dir or default_state_dir()
    state = StateLayout(root)
    reports, problems = read_reports(state, who_tenant)
    for problem in problems:
        out.print(f"warning: {problem}", highlight=False, markup=False)
    latest = latest_reports(reports).get(task)
    refusal = reopen_refusal(task, latest, spec_state, known=known, where=f"the state directory {root}")
    if refusal is not None or latest is None:
        raise UserError(refusal or f"task {task}: nothing to reopen")
    try:
        record_reopen(state, who_tenant, task, _reopener(who_tenant), note, datetime.now(UTC), latest)
    except OSError as exc:
        raise UserError(f"could not write the reopen under {state.task_reports(who_tenant)}: {exc.strerror or exc}; "
                        "run it as the user the lane's reconcile runs as") from None
    out.print(f"{who_tenant}: task {task} reopened (it was {latest.state}, by {latest.agent}); the next reconcile "
              "on this host gives it to a worker of its lane, with its brief", highlight=False, markup=False)


def _spec_state(repo: Path, tenant: str, task: str) -> tuple[str | None, bool]:
    """The state people set for `task` in the tenant's tasks.yaml, and whether it has the task."""
    from reconciler.spec import edit  # noqa: PLC0415
    from reconciler.spec.yamlsource import read_source  # noqa: PLC0415

    path = repo / "tenants" / tenant / "tasks.yaml"
    if not path.is_file():
        raise UserError(f"{path}: no such file; tenant {tenant} has no tasks in {repo}")
    source = read_source(path, str(path))
    if isinstance(source, SpecError):
        raise UserError(str(source))
    states = edit.task_states(source.data)
    return states.get(task), task in states


def _reopener(tenant: str) -> str:
    """Who reopens: the agent whose pane this is (an orchestrator), else the login name."""
    import getpass  # noqa: PLC0415

    agent = os.environ.get("FLEET_AGENT", "")
    if agent and os.environ.get("FLEET_TENANT") == tenant and re.fullmatch(NAME_PATTERN, agent):
        return agent
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _named(what: str, value: str, env: str) -> str:
    if not value:
        raise UserError(f"no {what}: run this inside the agent's pane (${env} is set there) or pass --{what}")
    if not re.fullmatch(NAME_PATTERN, value):
        raise UserError(f"{what} {value!r} is not a fleet name (lower-case letters, digits and '-')")
    return value


@command(app, "add")
def add_command(
    repo: RepoArg,
    lane: Annotated[str, typer.Option("--lane", metavar="LANE", help="The lane whose workers take the task.",
                                      show_default=False)],
    title: Annotated[str, typer.Option("--title", metavar="TEXT", help="One line.", show_default=False)],
    brief_file: Annotated[Path, typer.Option("--brief-file", metavar="FILE", help="What the worker is told "
                                             "(- reads standard input).", show_default=False)],
    tenant: EditTenantOpt = None,
    projected_tokens: Annotated[int | None, typer.Option("--projected-tokens", metavar="N", min=0,
                                                         help="Tokens the task is expected to take.",
                                                         show_default=False)] = None,
    urgency: Annotated[str | None, typer.Option("--urgency", metavar="normal|high|critical",
                                                help="Default: normal.", show_default=False)] = None,
    task_id: Annotated[str | None, typer.Option("--id", metavar="ID", help="Default: made from the title "
                                                "(its words joined by '-'; -2, -3... when taken).",
                                                show_default=False)] = None,
    mission: Annotated[str | None, typer.Option("--mission", metavar="ID", help="The mission to add it to (a new "
                                                "one if no mission has that id). Default: the file's only mission.",
                                                show_default=False)] = None,
    depends_on: Annotated[list[str] | None, typer.Option("--depends-on", metavar="ID", help="A task that must be "
                                                         "done first (repeatable).", show_default=False)] = None,
    branch: BranchOpt = None,
    push: PushOpt = False,
    no_commit: NoCommitOpt = False,
) -> None:
    """Add an open task to a lane: tasks.yaml edited (comments kept), validated, committed.

    Example: fleet task add ~/fleet --tenant shop --lane api --title "Add ETags" --brief-file etag.md --branch fleet/etags --push
    """
    from reconciler.spec import edit  # noqa: PLC0415

    who = edit_tenant(tenant)
    if urgency is not None and urgency not in {"normal", "high", "critical"}:
        raise UserError(f"--urgency {urgency!r}: use normal, high or critical")
    if task_id is not None and not re.fullmatch(TASK_ID, task_id):
        raise UserError(f"--id {task_id!r} is not a task id (letters, digits, '.', '_' and '-'; at most 40)")
    new = edit.NewTask(title=title, lane=lane, brief=_brief_text(brief_file), id=task_id or "",
                       mission=mission or "", projected_tokens=projected_tokens, urgency=urgency,
                       depends_on=tuple(depends_on or ()))

    def change(text: str | None) -> tuple[str, str]:
        after, added = edit.add_task(text if text is not None else edit.new_tasks_file(who), new)
        return after, f"fleet task add: {who}/{added} on lane {lane}: {title}"

    run_edit(repo, who, "tasks.yaml", change, branch=branch, push=push, no_commit=no_commit)


@command(app, "set-state")
def set_state_command(
    repo: RepoArg,
    task: TaskArg,
    state: Annotated[str, typer.Argument(metavar="done|cancelled|open", help="The state people set.",
                                         show_default=False)],
    tenant: Annotated[str | None, typer.Option("--tenant", metavar="NAME", help="Default: the one tenant whose "
                                               "tasks.yaml has the task.", show_default=False)] = None,
    branch: BranchOpt = None,
    push: PushOpt = False,
    no_commit: NoCommitOpt = False,
) -> None:
    """Set a task's `state:` in tasks.yaml (done, cancelled, or open again), and commit it.

    Example: fleet task set-state ~/fleet T7 cancelled --tenant shop
    """
    from reconciler.spec import edit  # noqa: PLC0415
    from reconciler.spec.models import TASK_STATES  # noqa: PLC0415

    if state not in TASK_STATES:
        raise UserError(f"state {state!r}: use {', '.join(TASK_STATES)} (the fleet's own view is in status)")
    who = edit_tenant(tenant) if tenant else _tenant_of(repo, task)

    def change(text: str | None) -> tuple[str, str]:
        if text is None:
            raise UserError(f"tenant {who} has no tasks.yaml, so it has no task {task}")
        after, old = edit.set_task_state(text, task, state)
        return after, f"fleet task set-state: {who}/{task} {old} -> {state}"

    run_edit(repo, who, "tasks.yaml", change, branch=branch, push=push, no_commit=no_commit)


def _tenant_of(repo: Path, task: str) -> str:
    """The one tenant whose tasks.yaml names `task`."""
    from reconciler.spec import edit  # noqa: PLC0415
    from reconciler.spec.yamlsource import read_source  # noqa: PLC0415

    found = []
    for path in sorted((repo / "tenants").glob("*/tasks.yaml")):
        source = read_source(path, str(path))
        if not isinstance(source, SpecError) and task in edit.task_ids(source.data):
            found.append(path.parent.name)
    if len(found) != 1:
        where = f"tenants {', '.join(found)} all have it" if found else "no tenant's tasks.yaml has it"
        raise UserError(f"task {task}: {where}; pass --tenant NAME")
    return found[0]


def _brief_text(path: Path) -> str:
    import sys  # noqa: PLC0415

    from reconciler.drivers.files import read_capped  # noqa: PLC0415

    try:
        if str(path) == "-":
            return sys.stdin.read()
        return read_capped(path, 1 << 20)
    except UnicodeDecodeError:
        raise UserError(f"--brief-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"--brief-file {path}: {exc.strerror or exc}") from None
