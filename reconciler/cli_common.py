"""What every `fleet` command shares: the common arguments and options, and user errors.

Each command module (cli.py, cli_agents.py, ...) takes these from here, so `--host`,
`--tenant`, `--state-dir` and `--output` read and behave the same everywhere.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from reconciler.drivers.files import default_state_dir
from reconciler.engine.tick import Tick, TickInputs, plan_tick
from reconciler.errors import UserError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

RepoArg = Annotated[Path, typer.Argument(help="The fleet repository (a folder with fleet.yaml).", show_default=False)]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="The agents of this host. Default: this machine's hostname.", show_default=False),
]
TenantOpt = Annotated[
    list[str] | None,
    typer.Option("--tenant", help="Only this tenant (repeatable). Default: all.", show_default=False),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Heartbeats, usage and history. Default: $FLEET_STATE_DIR or "
                 "~/.local/state/mosaic-fleet.", show_default=False),
]
OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json.")]


def check_output(value: str) -> str:
    if value not in {"text", "json"}:
        raise UserError(f"--output must be text or json, not {value!r}")
    return value


def check_repo(repo: Path) -> Path:
    if not repo.is_dir():
        raise UserError(f"{repo}: no such folder; give the path of a fleet repository (it holds fleet.yaml)")
    return repo


def state_dir_or_default(value: Path | None) -> Path:
    return value if value is not None else default_state_dir()


def tick_inputs(
    repo: Path, host: str | None, tenant: list[str] | None, state_dir: Path | None, **flags: bool
) -> TickInputs:
    """The options every tick-running command shares, read the same way everywhere, and
    MOSAIC_AGENT_COMMAND taken as reconcile takes it, so spec hashes agree."""
    return TickInputs(
        repo=check_repo(repo),
        host=host or socket.gethostname(),
        state_dir=state_dir_or_default(state_dir),
        tenants=set(tenant) if tenant else None,
        command_override=os.environ.get("MOSAIC_AGENT_COMMAND") or None,
        **flags,
    )


def planned_tick(inputs: TickInputs, tenant: list[str] | None) -> Tick:
    """plan_tick, refusing a --tenant that names no tenant folder of the repository."""
    tick = plan_tick(inputs)
    unknown = sorted(set(tenant or ()) - set(tick.repo.tenants) - set(tick.repo.invalid_tenants))
    if unknown:
        raise UserError(f"--tenant {unknown[0]}: no such tenant in {inputs.repo}/tenants/")
    return tick


@contextmanager
def user_errors() -> Iterator[None]:
    """A UserError becomes `error: ...` and exit 1, so a command behaves the same under
    `fleet` and under any app that mounts it."""
    try:
        yield
    except UserError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
