"""The `fleet` command: the root app that mounts one Typer per command group.

User mistakes end as `file:line:col: message` lines or one `error:` line with exit
code 1 (cli/common.py's FleetGroup); anything else is a bug and keeps its traceback.
Shell completion: `fleet --install-completion` (bash, zsh, fish), see docs/guide.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from reconciler.cli import agent, budget, install, ps, reconcile, simulate, validate
from reconciler.cli.common import FleetGroup, command

app = typer.Typer(
    name="fleet",
    cls=FleetGroup,
    help="Keep fleets of tmux-hosted AI agents matching a Git repository.\n\n"
    "Example: fleet reconcile examples/fleets/minimal --host demo --dry-run",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        try:
            print(f"fleet {version('mosaic-fleet')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("fleet (not installed)")
        raise typer.Exit


@app.callback()
def root(
    _version_flag: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print fleet's version and exit.")] = False,
) -> None:
    """Keep fleets of tmux-hosted AI agents matching a Git repository."""


command(budget.app, "simulate")(simulate.simulate_command)
for group in (validate.app, reconcile.app, ps.app, install.app):
    app.add_typer(group)
app.add_typer(agent.app, name="agent")
app.add_typer(budget.app, name="budget")


def main() -> None:
    app()
