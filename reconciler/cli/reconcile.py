"""`fleet reconcile` and `fleet down`: options in, one engine run (engine/run.py), the result out.

Both build a RunRequest and render the RunResult with views/run.py; watch mode runs the
same request again on every tick (engine/loop.py). Nothing here decides or acts.
"""

from __future__ import annotations

from typing import Annotated

import typer

from reconciler.cli.common import (
    HostOpt,
    Output,
    OutputOpt,
    RepoArg,
    RevisionOpt,
    StateDirOpt,
    TenantOpt,
    command,
    err,
    group,
    note,
    out,
)
from reconciler.engine.run import RunRequest, request_for, run
from reconciler.errors import UserError
from reconciler.spec.models import parse_duration
from reconciler.views.run import render_run

app = group()


def run_and_render(request: RunRequest, output: Output) -> int:
    """One run, rendered; its exit code."""
    result = run(request, say=note)
    render_run(out, err, result, json_output=output == Output.JSON)
    return result.exit_code


@command(app)
def reconcile(
    repo: RepoArg,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="With --dry-run: exit 0 when nothing would change, 2 when something would, 1 on error.")
    ] = False,
    allow_mass_stop: Annotated[
        bool, typer.Option("--allow-mass-stop", help="Apply a plan that stops more than half of a tenant's running agents.")
    ] = False,
    no_git: Annotated[
        bool, typer.Option("--no-git", help="Write status and TASKS.md but leave Git alone (no pull, commit or push).")
    ] = False,
    against: Annotated[
        str | None,
        typer.Option("--against", metavar="REV", help="With --dry-run: plan the specs at this Git revision against "
                     "what runs now (a pull-request preview), e.g. --against origin/feature.", show_default=False),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep reconciling: on a spec change, a new remote revision, another host's write to the register, "
                             "and every --interval.")
    ] = False,
    interval: Annotated[str, typer.Option("--interval", metavar="DURATION",
                                          help="With --watch: reconcile at least this often (e.g. 60s, 5m).")] = "60s",
    fetch_every: Annotated[str, typer.Option("--fetch-every", metavar="DURATION",
                                             help="With --watch: ask the Git remote for a new revision this often.")] = "2s",
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
    spec_revision: RevisionOpt = None,
) -> None:
    """Make this host's agents match REPO. With --dry-run, only show what would change.

    Example: fleet reconcile examples/fleets/minimal --host demo --dry-run --detailed-exitcode
    """
    request = request_for(repo, host, tenant, state_dir, dry_run=dry_run, detailed_exitcode=detailed_exitcode,
                          allow_mass_stop=allow_mass_stop, use_git=not no_git, against=against,
                          json_output=output == Output.JSON, revision=spec_revision)
    if not watch:
        raise typer.Exit(run_and_render(request, output))
    if dry_run:
        raise UserError("--watch applies; it cannot be combined with --dry-run")
    try:
        every, fetch = parse_duration(interval).total_seconds(), parse_duration(fetch_every).total_seconds()
    except ValueError as exc:
        raise UserError(f"--interval/--fetch-every: {exc}") from None
    from reconciler.engine.loop import LoopSettings, run_loop  # noqa: PLC0415  (watchfiles: only here)
    from reconciler.engine.register_wake import RegisterWake  # noqa: PLC0415

    waiting = [False]
    register = RegisterWake()

    def one_tick(reason: str) -> int:
        err.print(f"[dim]tick: {reason}[/]", highlight=False)
        result = run(request, say=note)
        render_run(out, err, result, json_output=output == Output.JSON)
        waiting[0] = result.tick.briefs_waiting
        fleet = result.tick.repo.fleet
        register.follow(fleet.register if fleet is not None else None, result.tick.inputs.host)
        return result.exit_code

    try:
        run_loop(request.repo, one_tick, LoopSettings(interval=every, fetch_every=fetch, watch_remote=not no_git),
                 again_soon=lambda: waiting[0], wake=register.reason)
    finally:
        register.close()


@command(app)
def down(
    repo: RepoArg,
    no_git: Annotated[
        bool, typer.Option("--no-git", help="Write status and TASKS.md but leave Git alone (no pull, commit or push).")
    ] = False,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
    spec_revision: RevisionOpt = None,
) -> None:
    """Stop every agent the fleet runs on this host for REPO's tenants (and their units).

    The same run as `fleet reconcile`, with every agent of the tenants in scope desired
    stopped: status and TASKS.md are written back and say so.

    Example: fleet down examples/fleets/minimal --host demo --tenant demo
    """
    request = request_for(repo, host, tenant, state_dir, down=True, use_git=not no_git,
                          json_output=output == Output.JSON, revision=spec_revision)
    raise typer.Exit(run_and_render(request, output))
