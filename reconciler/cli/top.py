"""`fleet top REPO`: the live terminal table (reconciler/tui, docs/surfaces.md).

This module reads options and starts the Textual app; observing is the engine's
read-only run (engine/fleetview.py), and every key that reaches an agent runs the
existing `fleet agent` verb (drivers/fleet_cli.py), so their refusals hold. Textual
loads only when this command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli.common import HostOpt, RepoArg, StateDirOpt, TenantOpt, command, group
from reconciler.engine.run import request_for
from reconciler.errors import UserError

if TYPE_CHECKING:
    from reconciler.tui.app import FleetTop

app = group()


@command(app, "top")
def top_command(
    repo: RepoArg,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", help="How often the fleet is observed.")] = 2.0,
) -> None:
    """A live table of this host's agents; Enter/arrows select one to see its detail and screen.

    Keys: w watch (read-only), a attach (asks first), s send --verify (asks for the text), t lanes and tasks,
    r refresh, q quit.

    Example: fleet top examples/fleets/minimal --host demo
    """
    if interval <= 0:
        raise UserError(f"--interval must be more than 0 seconds, not {interval:g}")
    top_app(repo, host, tenant, state_dir, interval).run()


def top_app(repo: Path, host: str | None, tenant: list[str] | None, state_dir: Path | None,
            interval: float) -> FleetTop:
    """The app `fleet top` runs, wired to the engine's read-only run and the `fleet agent`
    verbs (tests/tui/test_top_live.py screenshots it on a real fleet)."""
    request = request_for(repo, host, tenant, state_dir, user_verb=("ps",))
    from reconciler.drivers import fleet_cli  # noqa: PLC0415
    from reconciler.engine.fleetview import capture_screen  # noqa: PLC0415
    from reconciler.tui.app import FleetTop, Verbs  # noqa: PLC0415
    from reconciler.web.server import observer_for  # noqa: PLC0415

    common = ["--host", request.host, "--state-dir", str(request.state_dir)]
    verbs = Verbs(
        watch=lambda key: fleet_cli.run_interactive(["agent", "watch", str(repo), key, *common]),
        attach=lambda key: fleet_cli.run_interactive(["agent", "attach", str(repo), key, *common]),
        send=lambda key, text: fleet_cli.run_captured(["agent", "send", str(repo), key, text, "--verify", *common]),
    )
    return FleetTop(lambda: observer_for(request), capture_screen, verbs, interval=interval)
