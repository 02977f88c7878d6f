"""`fleet ps`: one table of this host's agents, from one read-only engine run.

It observes and plans exactly like `fleet reconcile --dry-run` (engine/run.py's
`observe_run`), so both see the same health, and prints the rows of the one view
(core/fleetview.py) that `fleet serve` renders too.
"""

from __future__ import annotations

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
from reconciler.engine.fleetview import observe_view
from reconciler.engine.run import request_for
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
) -> None:
    """One table of this host's agents: tmux, systemd, pid, idle, heartbeat, model, health, drift.

    Read-only: it observes and plans like `fleet reconcile --dry-run`, and changes nothing.

    Example: fleet ps examples/fleets/minimal --host demo --output json
    """
    json_output = output == Output.JSON
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

