"""The `fleet` command: parses options, runs the engine, prints views.

User mistakes end here as `file:line:col: message` lines or one `error:` line with exit
code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reconciler import views
from reconciler.cli_agents import agent_app, ps_command
from reconciler.cli_budget import budget_app
from reconciler.cli_common import (
    HostOpt,
    OutputOpt,
    RepoArg,
    RevisionOpt,
    StateDirOpt,
    TenantOpt,
    check_output,
    check_repo,
    err,
    one_apply_at_a_time,
    out,
    planned_tick,
    report_users,
    run_users,
    tick_inputs,
)
from reconciler.cli_install import init_command, install_command, uninstall_command
from reconciler.cli_simulate import simulate_command
from reconciler.core.scope import worst_code
from reconciler.engine.tick import Tick, TickInputs, plan_tick
from reconciler.errors import UserError
from reconciler.spec.load import load_repo
from reconciler.spec.models import parse_duration
from reconciler.spec.schemas import render_schemas

if TYPE_CHECKING:
    from reconciler.drivers.git import Checkout

app = typer.Typer(
    name="fleet",
    help="Keep fleets of tmux-hosted AI agents matching a Git repository.\n\n"
    "Example: fleet reconcile examples/fleets/minimal --host demo --dry-run",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

@app.command()
def validate(repo: RepoArg, output: OutputOpt = "text") -> None:
    """Check every spec in REPO; print each problem as file:line:col: message.

    Example: fleet validate examples/fleets/coding
    """
    check_output(output)
    loaded = load_repo(check_repo(repo))
    if output == "json":
        doc = {
            "valid": loaded.ok,
            "tenants": sorted(loaded.tenants),
            "invalid_tenants": sorted(loaded.invalid_tenants),
            "errors": [{"path": e.path, "line": e.line, "col": e.col, "message": e.message, "tenant": e.tenant} for e in loaded.errors],
        }
        out.print_json(json.dumps(doc)) if out.is_terminal else print(views.to_json(doc))
    views.print_errors(err, loaded.errors)
    if loaded.errors:
        n = len(loaded.errors)
        err.print(f"{n} error{'s' if n != 1 else ''}; nothing was applied.", highlight=False)
        raise typer.Exit(1)
    if output == "text":
        agents = sum(len(t.roster.agents) for t in loaded.tenants.values())
        out.print(f"{repo}: valid ({len(loaded.tenants)} tenant(s), {agents} agent(s)).", highlight=False)


@app.command()
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
        typer.Option("--against", help="With --dry-run: plan the specs at this Git revision against what runs now "
                     "(a pull-request preview), e.g. --against origin/feature.", show_default=False),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep reconciling: on a spec change, a new remote revision, and every --interval.")
    ] = False,
    interval: Annotated[str, typer.Option("--interval", help="With --watch: reconcile at least this often (e.g. 60s, 5m).")] = "60s",
    fetch_every: Annotated[str, typer.Option("--fetch-every", help="With --watch: ask the Git remote for a new revision this often.")] = "2s",
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = "text",
    spec_revision: RevisionOpt = None,
) -> None:
    """Make this host's agents match REPO. With --dry-run, only show what would change.

    Example: fleet reconcile examples/fleets/minimal --host demo --dry-run --detailed-exitcode
    """
    check_output(output)
    loaded_repo = check_repo(repo)
    if against is not None:
        if not dry_run:
            raise UserError("--against previews a revision; use it with --dry-run")
        with tempfile.TemporaryDirectory(prefix="fleet-against-") as tmp:
            loaded_repo = _materialize(loaded_repo, against, Path(tmp))
            code = _reconcile(loaded_repo, True, detailed_exitcode, allow_mass_stop, True, host, tenant, state_dir, output, spec_revision)
        raise typer.Exit(code)
    if watch:
        if dry_run:
            raise UserError("--watch applies; it cannot be combined with --dry-run")

        def one_tick(reason: str) -> int:
            err.print(f"[dim]tick: {reason}[/]", highlight=False)
            return _reconcile(loaded_repo, False, False, allow_mass_stop, no_git, host, tenant, state_dir, output, spec_revision)

        try:
            every, fetch = parse_duration(interval).total_seconds(), parse_duration(fetch_every).total_seconds()
        except ValueError as exc:
            raise UserError(f"--interval/--fetch-every: {exc}") from None
        from reconciler.engine.loop import LoopSettings, run_loop  # noqa: PLC0415  (watchfiles: only here)

        run_loop(loaded_repo, one_tick, LoopSettings(interval=every, fetch_every=fetch, watch_remote=not no_git))
        return
    raise typer.Exit(_reconcile(loaded_repo, dry_run, detailed_exitcode, allow_mass_stop, no_git, host, tenant, state_dir, output,
                               spec_revision))


def _materialize(repo: Path, rev: str, dest: Path) -> Path:
    from reconciler.drivers import git  # noqa: PLC0415  (kept out of dry-run start-up)

    checkout = git.open_checkout(repo)
    if checkout is None:
        raise UserError(f"{repo} is not in a Git work tree; --against needs one")
    try:
        git.show_tree_at(checkout, rev, dest)
    except git.GitError as exc:
        raise UserError(f"--against {rev}: {exc}") from None
    return dest


def _reconcile(
    loaded_repo: Path,
    dry_run: bool,
    detailed_exitcode: bool,
    allow_mass_stop: bool,
    no_git: bool,
    host: str | None,
    tenant: list[str] | None,
    state_dir: Path | None,
    output: str,
    revision: str | None = None,
) -> int:
    """One reconcile (or dry-run) of REPO; returns the exit code."""
    checkout = None
    revision_now: Callable[[], str] | None = None  # root's spec revision, for tenant users' statuses
    if not dry_run:
        from reconciler.engine.reconcile import prepare, spec_revision  # noqa: PLC0415  (kept out of dry-run start-up)

        prepared = prepare(loaded_repo, use_git=not no_git)
        checkout = prepared.checkout
        revision_now = functools.partial(spec_revision, loaded_repo, checkout)
        if prepared.pulled and output == "text":
            out.print(f"[dim]git: {prepared.pulled}[/]", highlight=False)
        for problem in prepared.problems:
            err.print(f"warning: {problem}", highlight=False, markup=False)
    loaded = load_repo(loaded_repo)
    inputs = tick_inputs(loaded_repo, host, tenant, state_dir, allow_mass_stop=allow_mass_stop, revision=revision)
    verb = ["reconcile", *(["--dry-run"] if dry_run else ["--no-git"]),
            *(["--detailed-exitcode"] if detailed_exitcode else []), *(["--allow-mass-stop"] if allow_mass_stop else [])]
    inputs, runs = run_users(loaded, inputs, verb, output, applying=not dry_run, revision=revision_now)
    with nullcontext() if dry_run else one_apply_at_a_time(inputs):  # one applying run at a time
        if runs and not dry_run:
            from reconciler.engine.untrusted import adopt_statuses  # noqa: PLC0415

            adopt_statuses(loaded_repo, runs)
        tick = planned_tick(inputs, tenant, loaded)
        views.print_errors(err, tick.repo.errors)
        for problem in tick.problems:
            err.print(f"warning: {problem}", highlight=False, markup=False)
        doc = views.plan_document(tick.plan, tick.repo.errors)
        if output == "text" and not _only_users(inputs, runs):
            views.print_plan(out, tick.plan, len(tick.repo.errors))
        users_code = report_users(runs, output, doc) if output == "json" else 0
        if dry_run:
            if output == "json":
                print(views.to_json(doc))
            else:
                users_code = report_users(runs, output, doc)
            if tick.repo.errors:
                return 1
            own = 2 if detailed_exitcode and tick.plan.has_changes else 0
            return worst_code([own, users_code])
        own = _apply_and_report(tick, doc, output, checkout, write=True)
        if output == "text":
            users_code = report_users(runs, output, doc)
        return worst_code([own, users_code])


def _only_users(inputs: TickInputs, runs: Sequence[object]) -> bool:
    """Every tenant in scope runs as another user: this process's own plan is empty noise."""
    return bool(runs) and inputs.tenants is not None and not inputs.tenants


def _apply_and_report(tick: Tick, doc: dict[str, Any], output: str, checkout: Checkout | None = None, *,
                      write: bool = False) -> int:
    from reconciler.engine.reconcile import apply_and_write_back  # noqa: PLC0415  (kept out of dry-run start-up)

    report, problems = apply_and_write_back(tick, checkout, write=write)
    for problem in problems:
        err.print(f"warning: {problem}", highlight=False, markup=False)
    if output == "json":
        doc["applied"] = [*views.outcomes_json(report.outcomes), *doc.get("applied", [])]
        print(views.to_json(doc))
    elif report.outcomes:
        views.print_outcomes(out, report.outcomes)
    unconverged = report.failed or tick.plan.conflicts or tick.plan.holds
    return 1 if tick.repo.errors or unconverged else 0


@app.command()
def down(
    repo: RepoArg,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = "text",
) -> None:
    """Stop every agent the fleet runs on this host for REPO's tenants (and their units).

    Example: fleet down examples/fleets/minimal --host demo --tenant demo
    """
    check_output(output)
    loaded = load_repo(check_repo(repo))
    inputs, runs = run_users(loaded, tick_inputs(repo, host, tenant, state_dir, allow_mass_stop=True, down=True),
                             ["down"], output, applying=True)
    with one_apply_at_a_time(inputs):
        tick = plan_tick(inputs, repo=loaded)
        views.print_errors(err, tick.repo.errors)
        doc = views.plan_document(tick.plan, tick.repo.errors)
        if output == "text" and not _only_users(inputs, runs):
            views.print_plan(out, tick.plan, len(tick.repo.errors))
        users_code = report_users(runs, output, doc) if output == "json" else 0
        own = _apply_and_report(tick, doc, output)
    if output == "text":
        users_code = report_users(runs, output, doc)
    raise typer.Exit(worst_code([own, users_code]))


@app.command()
def schema(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the *.schema.json files.")] = Path("specs"),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when the files on disk are stale; write nothing.")] = False,
) -> None:
    """Write the JSON Schemas of every kind (for editors and CI).

    Example: fleet schema --out specs --check
    """
    stale = []
    for name, text in render_schemas().items():
        path = out_dir / name
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            from reconciler.drivers.files import write_atomic  # noqa: PLC0415

            write_atomic(path, text)
    if check and stale:
        for path in stale:
            err.print(f"{path}: stale; run `fleet schema --out {out_dir}`", highlight=False)
        raise typer.Exit(1)
    verb = "are current" if not stale else ("written" if not check else "stale")
    out.print(f"{len(render_schemas())} schemas in {out_dir} {verb}.", highlight=False)


app.command("ps")(ps_command)
app.add_typer(agent_app, name="agent")
app.command("install")(install_command)
app.command("uninstall")(uninstall_command)
app.command("init")(init_command)
budget_app.command("simulate")(simulate_command)
app.add_typer(budget_app, name="budget")


def main() -> None:
    try:
        app()
    except UserError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
