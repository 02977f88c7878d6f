"""The `fleet` command: the root app that mounts one Typer per command group.

User mistakes end as `file:line:col: message` lines or one `error:` line with exit
code 1 (cli/common.py's FleetGroup); anything else is a bug and keeps its traceback.
Shell completion: `fleet --install-completion` (bash, zsh, fish), see docs/guide.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
import typer.main

from reconciler.cli import agent, budget, install, ps, reconcile, simulate, validate
from reconciler.cli.common import FleetGroup, command


class FleetApp(typer.Typer):
    """The root Typer, whose click command is built once per process and set of
    registered commands: a process that runs `app(...)` again and again (a resident
    caller, the benchmarks) does not inspect every command's signature each time.
    With pretty exceptions off (ours), Typer's own call adds nothing else."""

    _built: tuple[tuple[int, ...], Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.pretty_exceptions_enable:
            return super().__call__(*args, **kwargs)
        key = (len(self.registered_commands), len(self.registered_groups),
               *(len(g.typer_instance.registered_commands) for g in self.registered_groups if g.typer_instance))
        if self._built is None or self._built[0] != key:
            self._built = (key, typer.main.get_command(self))
        return self._built[1](*args, **kwargs)


app = FleetApp(
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
