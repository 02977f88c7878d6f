"""What every `fleet` command shares: the common arguments and options, and user errors.

Each command module (cli.py, cli_agents.py, ...) takes these from here, so `--host`,
`--tenant`, `--state-dir` and `--output` read and behave the same everywhere.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from reconciler.drivers.files import default_state_dir
from reconciler.engine.tick import Tick, TickInputs, plan_tick
from reconciler.errors import UserError
from reconciler.spec.repo import FleetRepo

if TYPE_CHECKING:
    from reconciler.model.user_run import UserRun

out = Console(soft_wrap=True, emoji=False)  # `:smile:` in a spec value prints as written
err = Console(stderr=True, soft_wrap=True, emoji=False)

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
#: Internal: root passes its spec revision to a tenant user's run of a copy of the specs.
RevisionOpt = Annotated[str | None, typer.Option("--spec-revision", hidden=True)]


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
    repo: Path, host: str | None, tenant: list[str] | None, state_dir: Path | None, **flags: Any
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


def planned_tick(inputs: TickInputs, tenant: list[str] | None, repo: FleetRepo | None = None) -> Tick:
    """plan_tick, refusing a --tenant that names no tenant folder of the repository."""
    tick = plan_tick(inputs, repo=repo)
    unknown = sorted(set(tenant or ()) - set(tick.repo.tenants) - set(tick.repo.invalid_tenants))
    if unknown:
        raise UserError(f"--tenant {unknown[0]}: no such tenant in {inputs.repo}/tenants/")
    return tick


#: How long an applying run waits for another one to finish before it gives up (exit 1).
RUN_LOCK_WAIT_S = 300.0


@contextmanager
def one_apply_at_a_time(inputs: TickInputs) -> Iterator[None]:
    """Hold the state directory's run lock (drivers/lock.py) for what follows: observe,
    plan, apply, write back. Taken after the state directory was found writable."""
    from reconciler.drivers.lock import RUN_LOCK, LockBusy, tenant_lock  # noqa: PLC0415

    def waiting(holder: str) -> None:
        err.print(f"note: another reconcile is running ({holder}); waiting up to {RUN_LOCK_WAIT_S:.0f}s for it",
                  highlight=False, markup=False)

    with ExitStack() as held:
        try:  # only taking the lock is translated here: what the body raises passes as it is
            held.enter_context(tenant_lock(inputs.state_dir / RUN_LOCK, timeout=RUN_LOCK_WAIT_S, on_wait=waiting))
        except LockBusy as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # the lock could not be created: say so, act on nothing
            raise UserError(f"state directory {inputs.state_dir}: cannot take {RUN_LOCK} ({exc.strerror or exc}); "
                            "nothing was changed") from None
        yield


@contextmanager
def user_errors() -> Iterator[None]:
    """A UserError becomes `error: ...` and exit 1, so a command behaves the same under
    `fleet` and under any app that mounts it."""
    try:
        yield
    except UserError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None


def check_state_writable(loaded: FleetRepo, inputs: TickInputs) -> None:
    """Before anything is applied: a read-only or full state directory is a UserError
    (exit 1) that names it, and nothing is touched."""
    from reconciler.drivers.files import check_state_writable as probe  # noqa: PLC0415

    tenants = inputs.tenants if inputs.tenants is not None else loaded.tenants
    if (problem := probe(inputs.state_dir, [t for t in tenants if t in loaded.tenants])) is not None:
        raise UserError(problem)


def run_users(loaded: FleetRepo, inputs: TickInputs, verb: Sequence[str], output: str,
              revision: Callable[[], str] | None = None, *, applying: bool = False) -> tuple[TickInputs, list[UserRun]]:
    """Tenants with another `user:`: as root, run VERB for them as their users; else skip
    them with a note. Returns the inputs narrowed to this process's own tenants.
    `applying`: first check this process's own state directory, so a broken one stops the
    run before any tenant, ours or a user's, is touched."""
    from reconciler.core.scope import split_scope  # noqa: PLC0415
    from reconciler.drivers.users import current_user, is_root  # noqa: PLC0415

    scope = split_scope(loaded, inputs.tenants, me=current_user(), root=is_root())
    for note in scope.skipped:
        err.print(f"note: {note}", highlight=False, markup=False)
    if applying:
        check_state_writable(loaded, inputs if scope.local is None else replace(inputs, tenants=scope.local))
    if scope.local is None:
        return inputs, []
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415  (only when a tenant has a user)

    from reconciler.engine.delegate import run_for_user  # noqa: PLC0415

    rev = revision() if revision is not None and scope.delegated else ""
    # Users are independent (own uid, socket, state, lock): their runs overlap, in a stable order.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(scope.delegated)))) as pool:
        runs = list(pool.map(lambda item: run_for_user(loaded, item[0], item[1], inputs.host, verb,
                                                       json_output=output == "json", revision=rev),
                             scope.delegated.items()))
    return replace(inputs, tenants=scope.local), runs


def report_users(runs: Sequence[UserRun], output: str, doc: Any) -> int:
    """Print what each user's run said (text), or fold it into `doc` (json); its exit code."""
    if not runs:  # the usual case: nothing to import for it
        return 0
    from reconciler.core.scope import worst_code  # noqa: PLC0415
    from reconciler.engine.untrusted import merge_documents, printable, recount  # noqa: PLC0415

    for run in runs:
        if output == "text" and run.stdout:
            out.print(f"[bold]── tenant {', '.join(run.tenants)}, as user {run.user} ──[/]", highlight=False)
            for line in printable(run.stdout).splitlines():  # marked as relayed: no fake header passes
                sys.stdout.write(f"│ {line}\n")
        elif isinstance(doc, list) and isinstance(run.document, list):
            doc.extend(run.document)
        elif isinstance(doc, dict) and isinstance(run.document, dict):
            merge_documents(doc, run.document)
            recount(doc)
        for line in printable(run.stderr).splitlines():
            err.print(f"[{run.user}] {line}", highlight=False, markup=False)
        for problem in run.problems:
            err.print(f"error: {printable(problem)}", highlight=False, markup=False)
    return worst_code([1 if r.problems else r.code for r in runs])


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
