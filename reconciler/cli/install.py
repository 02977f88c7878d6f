"""`fleet install`, `fleet uninstall` and `fleet init`: parse options, call engine/install.py, print.

The setting-up half of the CLI: put the reconcile loop on a `systemd --user` timer (or
take it off again), and start a new fleet repository from an example. Each prints one line per
step it took; user mistakes end as one `error:` line on stderr and exit 1.
"""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli.common import RepoArg, StateDirOpt, command, group

if TYPE_CHECKING:
    from reconciler.engine.install import Report

# engine/install.py is imported inside each command: it is not needed by `fleet
# reconcile`, which is started often (a timer, benchmarks against a floor).
app = group()
DEFAULT_INTERVAL = "60s"
DEFAULT_EXAMPLE = "minimal"

IntervalOpt = Annotated[
    str, typer.Option("--interval", help="How often the timer runs a reconcile: a duration such as 60s, 5m or 1h.")
]
EnvOpt = Annotated[
    list[str] | None,
    typer.Option("--env", help="KEY=VALUE for the reconcile service's environment (repeatable), "
                 "e.g. --env MOSAIC_AGENT_COMMAND='sleep 600'.", show_default=False),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user", help="Whose systemd --user gets the timer: the current user (as root, it reconciles every tenant as its user).", show_default=False),
]


def _print(report: Report) -> None:
    for line in report.done:
        print(line)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)


@command(app, "install")
def install_command(
    repo: RepoArg,
    host: Annotated[
        str | None,
        typer.Option("--host", help="The host the loop reconciles. Default: this machine's hostname, "
                     "fixed at install time.", show_default=False),
    ] = None,
    interval: IntervalOpt = DEFAULT_INTERVAL,
    state_dir: StateDirOpt = None,
    no_git: Annotated[
        bool, typer.Option("--no-git", help="Each run writes status and TASKS.md but leaves Git alone.")
    ] = False,
    env: EnvOpt = None,
    user: UserOpt = None,
) -> None:
    """Put `fleet reconcile REPO` on a systemd --user timer, so the loop runs by itself.

    Writes fleet-reconcile.service and fleet-reconcile.timer, enables the timer, and turns
    linger on where that helps. Running it again with the same options changes nothing;
    with other options it rewrites the units. See docs/operations.md.

    Example: fleet install ~/fleet --host w-jarvis --interval 60s
    """
    from reconciler.engine import install  # noqa: PLC0415  (see above)

    install.check_user(user)
    spec = install.loop_spec(repo, host or socket.gethostname(), interval, state_dir, no_git, env or [])
    report = install.install_loop(spec, install.unit_dir())
    print(f"fleet install: `{shlex.join(spec.argv())}` every {install.timing(spec.interval).interval}")
    _print(report)
    print(f"See it with `systemctl --user list-timers {install.TIMER}`; remove it with `fleet uninstall`.")


@command(app, "uninstall")
def uninstall_command(user: UserOpt = None) -> None:
    """Take the loop off its timer: stop, disable and delete what `fleet install` wrote.

    The agents keep running (`fleet down` stops them). Safe to run again: with nothing
    installed it changes nothing.

    Example: fleet uninstall
    """
    from reconciler.engine import install  # noqa: PLC0415  (see above)

    install.check_user(user)
    report = install.uninstall_loop(install.unit_dir())
    _print(report)


@command(app, "init")
def init_command(
    directory: Annotated[Path, typer.Argument(help="The new repository's folder (absent or empty).", show_default=False)],
    example: Annotated[
        str, typer.Option("--example", help="The example to start from: a folder name of examples/fleets (minimal, coding, ...).")
    ] = DEFAULT_EXAMPLE,
    roles: Annotated[
        bool, typer.Option("--roles/--no-roles", help="Add the starter role library (roles/: orchestrator, enhancer, "
                           "coder, reviewers, research, board, operations) when the example has none.")
    ] = True,
) -> None:
    """Create a fleet repository from an example, with git init and a first commit.

    DIRECTORY must be new or empty. The starter role library goes into roles/ (the
    personas the claude and codex adapters give their agents; --no-roles leaves it out).
    The JSON Schemas go into .fleet/schemas, and every YAML file's modeline points
    there, so editors check the specs as you type.

    Example: fleet init ~/fleet --example coding
    """
    from reconciler.engine import fleet_init  # noqa: PLC0415  (see above)

    report = fleet_init.init_repo(directory, example, socket.gethostname(), roles)
    _print(report)
    print(f"Next: fleet validate {directory}, then fleet reconcile {directory} --dry-run")

