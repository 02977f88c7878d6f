"""Every hostile value in every field of every spec kind: refused where it stands, or kept verbatim.

The pure half of issue 6's "validated and quoted" test. Each field that `spec_fields()`
finds in the models (scalars, list items, mapping keys, and an unknown key in every
mapping) gets every value of `hostile_values()`, in a repository that is otherwise
valid. Then either the loader refuses it, with an error on the field's own line whose
message is one line of printable text, or it keeps the value verbatim and the field
is listed in SINKS, which says where the value goes; those that reach a process are
followed into the launch (one argv element, one environment value, the workdir) and
into the systemd unit. `test_hostile_apply.py` runs them in real tmux and systemd.
"""

from __future__ import annotations

import io
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from reconciler.core.desired import DesiredAgent, build_desired
from reconciler.core.render import markdown_cell, render_tasks
from reconciler.drivers import units
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo
from reconciler.views.plan import print_errors
from tests.security.hostile import (
    FULL,
    Field,
    Hostile,
    base_document,
    dump,
    field_text,
    hostile_values,
    spec_fields,
    value_at,
    write_repo,
)

FIELDS = spec_fields()
#: Nothing runs in this module; a payload that did would create this file.
PWNED = Path("/nonexistent/fleet-security/pwned")
HOSTILE = hostile_values(PWNED)
HOST = units.Host("/usr/bin/tmux", None, "/home/demo")

# Where a field's accepted value goes.
ARGV = "the runtime's command, split like a shell line into argv (no shell runs it)"
WORKDIR = "the pane's working folder (tmux new-session -c)"
ENV = "one environment value of the pane (tmux new-session -e)"
LAUNCHER = "one fleet-env-exec argument, --file NAME=PATH"
TASKS_MD = "status and TASKS.md text"
REASON = "the text of a budget decision's reason"
SPEC_ONLY = "nowhere: read by no code yet"
READ = "a file the reconciler itself reads (the register's connection string); passed to no process"
WORKTREE = "the lane's code repository, a path git opens (no shell), whose worktree is each worker's workdir"

#: Every field that accepts some hostile value, and where that value goes. A field that
#: starts accepting hostile text without an entry here fails the test below.
SINKS: dict[str, str] = {
    "Fleet.runtimes.stub.command": ARGV,
    "Fleet.register.url_from.file": READ,
    "Role.persona": SPEC_ONLY,
    "Role.skills[]": SPEC_ONLY,
    "Role.defaults.workdir": WORKDIR,
    "Roster.agents[].alias": TASKS_MD,
    "Roster.agents[].workdir": WORKDIR,
    "Roster.agents[].env.LOG_LEVEL": ENV,
    "Roster.agents[].env_from[].file": LAUNCHER,
    # FULL's lane has `worktree:`, so its workers work in their worktrees and the lane's
    # `workdir` is unused; without it, it is an agent's workdir (Roster.agents[].workdir).
    "Roster.lanes[].workdir": SPEC_ONLY,
    "Roster.lanes[].worktree.repo": WORKTREE,
    "Roster.lanes[].env.LANE": ENV,
    "Roster.lanes[].env_from[].file": LAUNCHER,
    "Budget.authorized_by": REASON,
    "Tasks.missions[].title": TASKS_MD,
    "Tasks.missions[].tasks[].title": TASKS_MD,
    "Tasks.missions[].tasks[].brief": SPEC_ONLY,  # only into the worker's brief file (core/render.render_brief), never typed
}


def loaded_document(repo: FleetRepo, kind: str) -> object:
    tenant = repo.tenants["demo"]
    return {"Fleet": repo.fleet, "Role": repo.roles.get("enhancer"), "Roster": tenant.roster,
            "Budget": tenant.budget, "Tasks": tenant.tasks}[kind]


def refusal_problems(repo: FleetRepo, field: Field, line: int) -> list[str]:
    """An error on the field's line; every message one printable line, printed as is."""
    problems = []
    if not any(e.path == str(repo.root / field.file) and e.line == line for e in repo.errors):
        problems.append(f"no error at {field.file}:{line}; got {[str(e) for e in repo.errors]}")
    problems += [f"message is not one printable line: {e.message!r}" for e in repo.errors if not e.message.isprintable()]
    printed = io.StringIO()
    print_errors(Console(file=printed, soft_wrap=True, width=120), repo.errors)
    if printed.getvalue() != "".join(f"{e}\n" for e in repo.errors):
        problems.append(f"`fleet validate` would print {printed.getvalue()!r}")
    return problems


def agents(repo: FleetRepo) -> dict[str, DesiredAgent]:
    desired = build_desired(repo, host="demo", state_dir="/state")
    return {a.name: a for a in desired.tenants["demo"].pool()}


def launch_problems(repo: FleetRepo, field: Field, value: str) -> list[str]:
    """Follow an accepted value into the launch and the agent's systemd unit."""
    sink = SINKS[str(field)]
    by_name = agents(repo)
    lane = str(field).startswith("Roster.lanes")
    agent = by_name["enhancer" if field.kind == "Role" else "coder0-0" if lane else "orchestrator"]
    launch = agent.launch
    argv = launch.argv
    var, key = ("LANE", "LANE_KEY") if lane else ("LOG_LEVEL", "API_KEY")
    got: object
    want: object
    if sink == WORKDIR:
        got, want = launch.workdir, value
    elif sink == WORKTREE:
        got, want = agent.worktree.repo if agent.worktree else None, value
    elif sink == ENV:
        got, want = [v for k, v in launch.env if k == var], [value]
    elif sink == LAUNCHER:
        got, want = argv[argv.index(f"{key}={value}") - 1], "--file"
    elif sink == ARGV:
        got, want = argv[argv.index("--") + 1 :], tuple(shlex.split(value))
    elif sink == TASKS_MD:
        got, want = markdown_cell(value) in render_tasks(repo, [], revision="r1"), True  # in a table cell
    else:
        return []
    problems = [f"{sink}: got {got!r}, want {want!r}"] if got != want else []
    for each in by_name.values():
        try:  # as our own user: units for another user's manager are not written yet
            units.agent_unit_text(replace(each.launch, socket=SocketKey(None, each.launch.socket.name)), HOST)
        except ValueError as exc:
            problems.append(f"{each.name}: no systemd unit can carry it: {exc}")
    return problems


def case_problems(repo: FleetRepo, field: Field, case: Hostile, line: int) -> list[str]:
    if not repo.ok:
        problems = refusal_problems(repo, field, line)
    elif str(field) not in SINKS:
        problems = ["accepted, but SINKS does not say where this field's value goes"]
    else:
        held = value_at(loaded_document(repo, field.kind), field)
        problems = [f"held as {held!r}"] if held != case.value else launch_problems(repo, field, case.value)
    return [f"{case.test_id}: {p}" for p in problems]


@pytest.fixture(scope="module")
def full_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FULL on disk, once: each case rewrites one file and the test puts it back."""
    return write_repo(tmp_path_factory.mktemp("full"), FULL)


def test_full_repo_is_valid_and_sets_every_field(full_repo: Path) -> None:
    repo = load_repo(full_repo)
    assert repo.ok, [str(e) for e in repo.errors]
    for field in FIELDS:
        if not field.is_key:
            assert value_at(base_document(field), field) is not None, f"FULL does not set {field}"
    assert not set(SINKS) - {str(f) for f in FIELDS}, "SINKS names a field the models no longer have"


@pytest.mark.parametrize("field", FIELDS, ids=str)
def test_hostile_value_is_refused_on_its_line_or_kept_verbatim(field: Field, full_repo: Path) -> None:
    path = full_repo / field.file
    problems: list[str] = []
    try:
        for case in HOSTILE:
            text, line = field_text(field, case.value)
            path.write_text(text, encoding="utf-8")
            problems += case_problems(load_repo(full_repo), field, case, line)
    finally:
        path.write_text(dump(FULL[field.file]), encoding="utf-8")
    assert not problems, f"{field}:\n" + "\n".join(problems)
