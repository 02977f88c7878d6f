"""What every `fleet` command shares: the common arguments and options, the consoles, and
the Typer classes that turn a user's mistake into one `error:` line and exit code 1.

Each command group (cli/reconcile.py, cli/agent.py, ...) takes these from here, so
`--host`, `--tenant`, `--state-dir` and `--output` read and behave the same everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from reconciler.errors import UserError

out = Console(soft_wrap=True, emoji=False)  # `:smile:` in a spec value prints as written
err = Console(stderr=True, soft_wrap=True, emoji=False)


class Output(StrEnum):
    TEXT = "text"
    JSON = "json"


RepoArg = Annotated[Path, typer.Argument(metavar="REPO", help="The fleet repository (a folder with fleet.yaml).",
                                         show_default=False)]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", metavar="NAME", help="The agents of this host. Default: this machine's hostname.",
                 show_default=False),
]
TenantOpt = Annotated[
    list[str] | None,
    typer.Option("--tenant", metavar="NAME", help="Only this tenant (repeatable). Default: all.", show_default=False),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", metavar="DIR", help="Heartbeats, usage and history. Default: $FLEET_STATE_DIR or "
                 "~/.local/state/mosaic-fleet.", show_default=False),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", metavar="text|json",
                                           help="text for people, json for scripts.")]
#: Internal: root passes its spec revision to a tenant user's run of a copy of the specs.
RevisionOpt = Annotated[str | None, typer.Option("--spec-revision", hidden=True)]


def say_error(message: str) -> None:
    err.print(f"error: {message}", highlight=False, markup=False)


def warn(lines: Any) -> None:
    for line in lines:
        err.print(f"warning: {line}", highlight=False, markup=False)


def note(line: str) -> None:
    err.print(line, highlight=False, markup=False)


def _conventional(params: list[Any]) -> list[Any]:
    """Help that reads like every other Unix tool's: a flag shows no `<bool>`, a value its
    name in capitals (`--host HOST`), unless the option names its own metavar."""
    for param in params:
        if getattr(param, "metavar", "set") is not None:
            continue
        if getattr(param, "is_bool_flag", False):
            param.metavar = ""
        elif param.name:
            param.metavar = param.name.upper()
    return params


class FleetCommand(TyperCommand):
    """Usage lines in the conventional form: `fleet ps [OPTIONS] REPO`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}(\.\.\.)?$", r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]


class FleetGroup(TyperGroup):
    """A command group: conventional help, and, at the root, a UserError from any command
    becomes `error: ...` and exit 1, for `fleet` and for a test's CliRunner alike; anything
    else is a bug and keeps its traceback."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _conventional(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            say_error(str(exc))
            raise typer.Exit(1) from None


def group(help_text: str | None = None) -> typer.Typer:
    """A command group with the project's settings (one per module of cli/)."""
    return typer.Typer(help=help_text, cls=FleetGroup, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode="rich")


def command(app: typer.Typer, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`app.command`, with usage lines in the conventional form."""
    return app.command(name, cls=FleetCommand)


def as_tenant_user(repo: Path, user: str | None, tenant: str, args: Callable[[Path], list[str]], *,
                   interactive: bool, what: str, stdin: str = "") -> None:
    """A command about another user's tenant: as root, run it as that user (its state, its
    audit log; `interactive` on a terminal of its own) and exit with its code; as anyone
    else, refuse. Returns when the tenant is this process's own."""
    from reconciler.drivers import users  # noqa: PLC0415

    if users.is_me(user):
        return
    if not users.is_root():
        raise UserError(f"{what} runs as user {user}; run this as {user}, or as root")
    from reconciler.engine.delegate import hand_over  # noqa: PLC0415

    raise typer.Exit(hand_over(repo, str(user), tenant, args, interactive=interactive, stdin=stdin))


# --- spec edits: `fleet task add|set-state`, `fleet agent add|remove` --------------------

BranchOpt = Annotated[str | None, typer.Option(
    "--branch", metavar="NAME", help="Commit on this new branch (for a pull request) instead of the current one; "
    "the work tree and the current branch stay as they are.", show_default=False)]
PushOpt = Annotated[bool, typer.Option("--push", help="Push the commit to origin (with --branch: that branch).")]
NoCommitOpt = Annotated[bool, typer.Option("--no-commit", help="Only edit the file; commit nothing.")]
EditTenantOpt = Annotated[str | None, typer.Option(
    "--tenant", metavar="NAME", help="The tenant whose file is edited. Default: $FLEET_TENANT.", show_default=False)]


def run_edit(repo: Path, tenant: str, file: str, change: Any, *, branch: str | None, push: bool,
             no_commit: bool) -> None:
    """Apply one spec edit through engine/spec_edit.py and say what was done; an edit that
    does not validate prints every error as file:line:col, writes nothing and exits 1."""
    import os  # noqa: PLC0415
    import socket  # noqa: PLC0415

    from reconciler.engine.run import check_repo  # noqa: PLC0415
    from reconciler.engine.spec_edit import EditRequest, InvalidEdit, edit  # noqa: PLC0415
    from reconciler.views.plan import print_errors  # noqa: PLC0415

    agent = os.environ.get("FLEET_AGENT", "")
    by = f"{os.environ.get('FLEET_TENANT', '')}/{agent}" if agent and os.environ.get("FLEET_TENANT") else ""
    request = EditRequest(check_repo(repo), tenant, file, change, socket.gethostname(), commit=not no_commit,
                          branch=branch, push=push, requested_by=by)
    try:
        result = edit(request)
    except InvalidEdit as exc:
        print_errors(err, exc.errors)
        raise UserError(f"the edit would leave the fleet invalid ({len(exc.errors)} error(s) above); "
                        "nothing was written") from None
    out.print(result.summary, highlight=False, markup=False)
    for line in result.lines:
        note(line)


def edit_tenant(tenant: str | None) -> str:
    """--tenant, else $FLEET_TENANT (an agent's own tenant), else a clear error."""
    import os  # noqa: PLC0415

    from reconciler.spec.models import NAME_PATTERN  # noqa: PLC0415

    value = tenant or os.environ.get("FLEET_TENANT", "")
    if not value:
        raise UserError("no tenant: pass --tenant NAME (inside an agent's pane $FLEET_TENANT is the default)")
    if not re.fullmatch(NAME_PATTERN, value):
        raise UserError(f"tenant {value!r} is not a fleet name (lower-case letters, digits and '-')")
    return value
