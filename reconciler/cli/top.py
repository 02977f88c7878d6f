"""`fleet top REPO`: the live terminal table (reconciler/tui, docs/surfaces.md).

This module reads options and starts the Textual app; observing is the engine's
read-only run (engine/fleetview.py), and every key that reaches an agent runs the
existing `fleet agent` verb (drivers/fleet_cli.py), so their refusals hold. Textual
loads only when this command runs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from reconciler.cli.common import HostOpt, RepoArg, StateDirOpt, TenantOpt, command, group
from reconciler.engine.run import request_for
from reconciler.errors import UserError

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
    FleetTop(lambda: observer_for(request), capture_screen, verbs, interval=interval).run()
