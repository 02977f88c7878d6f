"""`fleet ps`: one table of this host's agents, from one read-only engine run.

It observes and plans exactly like `fleet reconcile --dry-run` (engine/run.py's
`observe_run`), so both see the same health, and prints the rows of the one view
(core/fleetview.py) that `fleet serve` renders too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import (
    HostOpt,
    Output,
    OutputOpt,
    RepoArg,
    StateDirOpt,
    TenantOpt,
    command,
    err,
    group,
    out,
    warn,
)
from reconciler.engine.run import request_for
from reconciler.errors import UserError
from reconciler.views.plan import print_errors, to_json
from reconciler.views.users import relay_users

app = group()


@command(app, "ps")
def ps_command(
    repo: RepoArg,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
    all_hosts: Annotated[bool, typer.Option(
        "--all-hosts", help="Every host's agents, read from the register (fleet.yaml `register:`): "
        "every tenant your database role may see.")] = False,
    tasks: Annotated[bool, typer.Option(
        "--tasks", help="With --all-hosts: every host's lane tasks and the agent that holds or reported each, "
        "instead of the agents.")] = False,
) -> None:
    """One table of this host's agents: tmux, systemd, pid, idle, heartbeat, model, health, drift.

    Read-only: it observes and plans like `fleet reconcile --dry-run`, and changes nothing.
    With --all-hosts it reads the register instead, and observes nothing; with --tasks too,
    it lists the lanes' tasks and who holds them.

    Example: fleet ps examples/fleets/minimal --host demo --output json
    """
    json_output = output == Output.JSON
    if tasks and not all_hosts:
        raise UserError("--tasks lists the register's tasks of every host: add --all-hosts "
                        "(this host's lanes are in `fleet ps` without it)")
    if all_hosts:
        _all_hosts(repo, host, tenant, json_output, tasks)
        return
    from reconciler.engine.fleetview import observe_view  # noqa: PLC0415  (kept out of reconcile's start-up)

    result, view = observe_view(request_for(repo, host, tenant, state_dir, json_output=json_output, user_verb=("ps",)))
    tick = result.tick
    for line in result.notes:
        err.print(f"note: {line}", highlight=False, markup=False)
    print_errors(err, result.errors)
    warn(result.warnings)
    from reconciler.core.ps import render_table, row_json  # noqa: PLC0415

    rows = list(view.rows)  # the same view the web view renders (core/fleetview.py)
    if json_output:
        doc = [row_json(row) for row in rows]
        relay_users(out, err, result.users, True, doc)
        print(to_json(doc))
        raise typer.Exit(result.users_code)
    notes = [*view.notes, *view.lane_lines()]
    if not rows:
        hosts = ", ".join(sorted(tick.desired.hosts())) or "none"
        notes.append(f"no agent runs on host {tick.inputs.host} (hosts in the repository: {hosts}); pass --host to see another")
    if rows or not result.users:
        print(render_table(rows, notes))
    relay_users(out, err, result.users, False, None)
    raise typer.Exit(result.users_code)



def _all_hosts(repo: Path, host: str | None, tenants: list[str] | None, json_output: bool, tasks: bool) -> None:
    """`--all-hosts`: the register's rows (what the caller's role may see), narrowed by
    --host and --tenant when given: its agents, or (`--tasks`) its lanes' tasks."""
    from reconciler.engine.register_admin import all_agents, all_tasks  # noqa: PLC0415  (only with a register)
    from reconciler.engine.run import check_repo  # noqa: PLC0415
    from reconciler.views.register import as_json, render, render_tasks  # noqa: PLC0415

    rows = [r for r in (all_tasks if tasks else all_agents)(check_repo(repo))
            if (host is None or r["host"] == host) and (not tenants or r["tenant"] in tenants)]
    if json_output:
        print(to_json(as_json(rows)))
        return
    print(render_tasks(rows) if tasks else render(rows))
    if tasks and not rows:
        err.print("note: the register holds no lane task you may see (do the tenants have lanes with tasks?)",
                  highlight=False, markup=False)
    elif not rows:
        err.print("note: the register holds no agent you may see (has a host with `register:` reconciled yet?)",
                  highlight=False, markup=False)
