"""The `fleet` command: the root app that mounts one Typer per command group.

User mistakes end as `file:line:col: message` lines or one `error:` line with exit
code 1 (cli/common.py's FleetGroup); anything else is a bug and keeps its traceback.
Shell completion: `fleet --install-completion` (bash, zsh, fish), see docs/guide.md.
"""

from __future__ import annotations

import gc
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
import typer.main
from typer.main import get_command_name
from typer.models import DefaultPlaceholder, TyperInfo

from reconciler.cli import (
    agent,
    budget,
    install,
    ps,
    reconcile,
    register,
    serve,
    simulate,
    task,
    top,
    validate,
)
from reconciler.cli.common import FleetGroup, command

#: The root app's settings, shared by the partial roots FleetApp builds.
ROOT_SETTINGS: dict[str, Any] = {
    "name": "fleet",
    "cls": FleetGroup,
    "help": "Keep fleets of tmux-hosted AI agents matching a Git repository.\n\n"
            "Example: fleet reconcile examples/fleets/minimal --host demo --dry-run",
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": "rich",
}


class FleetApp(typer.Typer):
    """The root Typer. Its click command is built once per process and command line's
    group, not on every call (a resident caller that runs `app(...)` again and again does
    not inspect every command's signature each time), and for a command line that names
    a command, with only that command's group: a one-shot `fleet reconcile` does not
    build the options of every other command. Help, completion and anything else get
    the whole tree. With pretty exceptions off (ours), Typer's own call adds nothing else."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._built: dict[object, Any] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.pretty_exceptions_enable:
            return super().__call__(*args, **kwargs)
        argv = kwargs.get("args", args[0] if args else None)
        group = self._group_of(sys.argv[1:] if argv is None else list(argv))
        key = (self._registered(), id(group))
        if key not in self._built:
            if len(self._built) > 16:
                self._built.clear()
            self._built[key] = typer.main.get_command(self if group is None else self._partial(group))
        return self._built[key](*args, **kwargs)

    def _registered(self) -> tuple[int, ...]:
        return (len(self.registered_commands), len(self.registered_groups),
                *(len(g.typer_instance.registered_commands) for g in self.registered_groups if g.typer_instance))

    def _group_of(self, argv: list[str]) -> TyperInfo | None:
        """The registered group that holds the command `argv` names; None for the whole tree."""
        if not argv or argv[0].startswith("-") or self.registered_commands or any(
                k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
            return None
        for info in self.registered_groups:
            sub = info.typer_instance
            if sub is None:
                continue
            name = _set(info.name) or _set(sub.info.name)
            if name is not None:
                if name == argv[0]:
                    return info
                continue
            names = [c.name or get_command_name(c.callback.__name__) for c in sub.registered_commands if c.callback]
            if argv[0] in names:
                return info
        return None

    def _partial(self, group: TyperInfo) -> typer.Typer:
        """A root with this one group (and the root's own callback: --version)."""
        partial = typer.Typer(**ROOT_SETTINGS)
        partial.registered_callback = self.registered_callback
        partial.registered_groups = [group]
        return partial


def _set(value: object) -> str | None:
    """A Typer setting as given, None where it was left to its default."""
    return None if value is None or isinstance(value, DefaultPlaceholder) else str(value)


app = FleetApp(**ROOT_SETTINGS)


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
for group in (validate.app, reconcile.app, ps.app, serve.app, top.app, install.app):
    app.add_typer(group)
app.add_typer(agent.app, name="agent")
app.add_typer(budget.app, name="budget")
app.add_typer(task.app, name="task")
app.add_typer(register.app, name="register")


def main() -> None:
    # What is loaded by now lives as long as the process: the collector need not walk it
    # again on every full collection of what a run allocates (a one-shot run spends less
    # time collecting, and a --watch loop's ticks too).
    gc.freeze()
    app()
