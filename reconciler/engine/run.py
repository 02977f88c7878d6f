"""The one reconcile run: pull -> load -> other users' tenants -> run lock -> plan -> apply -> write back.

Every surface calls `run()`: `fleet reconcile` (with or without --dry-run or --against),
`fleet down`, watch mode, the systemd timer (which is `fleet reconcile`), and whatever
reads a plan (`ps`, `budget show`, the coming web view and dispatcher) through
`observe_run()`. The CLI builds a `RunRequest` from its options and renders the
`RunResult`; nothing here prints. Status is written back in a `finally`, so a failed
apply is reported too; a dry-run stops before apply and writes nothing.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.plan import Plan
from reconciler.core.scope import worst_code
from reconciler.core.traces import run_attrs, run_name, scope_attrs
from reconciler.drivers import telemetry
from reconciler.engine.tick import Tick, TickInputs, plan_tick
from reconciler.errors import SpecError, UserError
from reconciler.model.layout import StateLayout
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo

if TYPE_CHECKING:
    from reconciler.engine.apply import Outcome
    from reconciler.model.user_run import UserRun

#: How long an applying run waits for another one to finish before it gives up (exit 1).
RUN_LOCK_WAIT_S = 300.0

Say = Callable[[str], None]


def _silent(_line: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What one run is asked to do; every surface fills it from its own options."""

    repo: Path
    host: str
    state_dir: Path
    tenants: frozenset[str] | None = None  # None: every tenant of the repository
    dry_run: bool = False
    down: bool = False  # desire no agent at all for the tenants in scope (`fleet down`)
    use_git: bool = True  # pull before, commit and push after (applying runs only)
    allow_mass_stop: bool = False
    against: str | None = None  # with dry_run: plan the specs at this Git revision
    detailed_exitcode: bool = False  # with dry_run: exit 2 when the plan has changes
    json_output: bool = False  # how other users' runs are asked to answer
    command_override: str | None = None  # MOSAIC_AGENT_COMMAND
    revision: str | None = None  # the spec revision, when the specs are root's copy (a tenant user's run)
    user_verb: tuple[str, ...] = ()  # what a tenant user runs for its share (default: this same run)

    @property
    def applying(self) -> bool:
        return not self.dry_run

    def verb(self) -> list[str]:
        """The same run as a `fleet` command line, for a tenant user's share of it."""
        if self.user_verb:
            return list(self.user_verb)
        if self.down:
            return ["down", "--no-git"]
        return ["reconcile", *(["--dry-run"] if self.dry_run else ["--no-git"]),
                *(["--detailed-exitcode"] if self.detailed_exitcode else []),
                *(["--allow-mass-stop"] if self.allow_mass_stop else [])]


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run did, for a surface to render; `exit_code` is the CLI contract's."""

    request: RunRequest
    repo: FleetRepo
    tick: Tick
    outcomes: tuple[Outcome, ...] = ()
    applied: bool = False
    pulled: str = ""
    notes: tuple[str, ...] = ()  # who was skipped, and why (not a problem of this run)
    warnings: tuple[str, ...] = ()  # what went wrong without stopping the run
    users: tuple[UserRun, ...] = ()
    exit_code: int = 0

    @property
    def plan(self) -> Plan:
        return self.tick.plan

    @property
    def errors(self) -> tuple[SpecError, ...]:
        return self.tick.repo.errors

    @property
    def users_code(self) -> int:
        """The worst exit code of the tenant users' runs (0 without any)."""
        return _users_code(self.users)

    @property
    def only_users(self) -> bool:
        """Every tenant in scope runs as another user: this process's own plan is empty noise."""
        return bool(self.users) and self.tick.inputs.tenants is not None and not self.tick.inputs.tenants


def request_for(repo: Path, host: str | None, tenants: Collection[str] | None, state_dir: Path | None,
                **options: object) -> RunRequest:
    """A request with the defaults every command shares: this machine's hostname, the
    default state directory, MOSAIC_AGENT_COMMAND as reconcile takes it (so spec hashes agree)."""
    from reconciler.drivers.files import default_state_dir  # noqa: PLC0415

    return RunRequest(
        repo=check_repo(repo), host=host or socket.gethostname(),
        state_dir=state_dir if state_dir is not None else default_state_dir(),
        tenants=frozenset(tenants) if tenants else None,
        command_override=os.environ.get("MOSAIC_AGENT_COMMAND") or None,
        **options,  # type: ignore[arg-type]
    )


def check_repo(repo: Path) -> Path:
    """REPO must be a folder: say what it is instead, before anything is read."""
    if not repo.is_dir():
        what = "is a file, not a folder" if repo.exists() else "no such folder"
        raise UserError(f"{repo}: {what}; give the path of a fleet repository (the folder that holds fleet.yaml)")
    return repo


def run(request: RunRequest, say: Say = _silent) -> RunResult:
    """One reconcile run; `say` hears what a person waiting on it should know at once
    (another run holds the lock). Raises UserError for a mistake in the request."""
    if request.detailed_exitcode and not request.dry_run:
        raise UserError("--detailed-exitcode reports what a dry-run would change; use it with --dry-run")
    if request.against is not None:
        if not request.dry_run:
            raise UserError("--against previews a revision; use it with --dry-run")
        with tempfile.TemporaryDirectory(prefix="fleet-against-") as tmp:
            copy = _materialize(request.repo, request.against, Path(tmp))
            return _run(replace(request, repo=copy, use_git=False), say)
    return _run(request, say)


def _run(request: RunRequest, say: Say) -> RunResult:
    """The run as one span, its steps as children (docs/surfaces.md, "Traces")."""
    with telemetry.span(run_name(request), {"fleet.host": request.host, "fleet.dry_run": request.dry_run}) as root:
        result = _steps(request, say)
        root.set(run_attrs(result.tick.desired.tenants, request.host, result.plan.counts(), result.exit_code))
        return result


def _steps(request: RunRequest, say: Say) -> RunResult:
    checkout = None
    pulled = ""
    warnings: list[str] = []
    with telemetry.span("load", {"fleet.host": request.host}) as span:
        if request.applying:
            from reconciler.engine.reconcile import prepare  # noqa: PLC0415  (kept out of dry-run start-up)

            prepared = prepare(request.repo, use_git=request.use_git)
            checkout, pulled = prepared.checkout, prepared.pulled
            warnings += prepared.problems
        loaded = load_repo(request.repo)
        check_tenants(loaded, request.tenants)
        span.set(scope_attrs(request.host, request.tenants or loaded.tenants))
    inputs = _inputs(request)
    inputs, users, notes = share_with_users(loaded, inputs, request, checkout)
    with run_lock(inputs, say) if request.applying else ExitStack():
        if users and request.applying:
            from reconciler.engine.untrusted import adopt_statuses  # noqa: PLC0415

            adopt_statuses(request.repo, users)
        tick = plan_tick(inputs, repo=loaded)
        warnings += tick.problems
        result = RunResult(request, loaded, tick, pulled=pulled, notes=notes, users=tuple(users))
        if request.dry_run:
            own = 2 if request.detailed_exitcode and tick.plan.has_changes else 0
            return replace(result, warnings=tuple(warnings),
                           exit_code=worst_code([1 if tick.repo.errors else own, _users_code(users)]))
        from reconciler.engine.reconcile import apply_and_write_back  # noqa: PLC0415

        report, problems = apply_and_write_back(tick, checkout)
        warnings += problems
        unconverged = report.failed or tick.plan.conflicts or tick.plan.holds
        own = 1 if tick.repo.errors or unconverged else 0
        return replace(result, outcomes=report.outcomes, applied=True, warnings=tuple(warnings),
                       exit_code=worst_code([own, _users_code(users)]))


def observe_run(request: RunRequest) -> RunResult:
    """A read-only run up to the plan, for `ps`, `budget show` and the views: no pull, no
    lock, no apply; other users' tenants are asked for their own view."""
    return run(replace(request, dry_run=True, detailed_exitcode=False, against=None))


def _inputs(request: RunRequest) -> TickInputs:
    return TickInputs(repo=request.repo, host=request.host, state_dir=request.state_dir, tenants=request.tenants,
                      command_override=request.command_override, allow_mass_stop=request.allow_mass_stop or request.down,
                      down=request.down, revision=request.revision, dry_run=request.dry_run)


def check_tenants(repo: FleetRepo, wanted: Collection[str] | None) -> None:
    """A --tenant that names no tenant folder is a typo: refuse it before anything runs."""
    unknown = sorted(set(wanted or ()) - set(repo.tenants) - set(repo.invalid_tenants))
    if unknown:
        known = ", ".join(sorted({*repo.tenants, *repo.invalid_tenants})) or "none"
        raise UserError(f"--tenant {unknown[0]}: no such tenant in {repo.root}/tenants/ (tenants: {known})")


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


def _users_code(runs: Sequence[UserRun]) -> int:
    return worst_code([1 if r.problems else r.code for r in runs]) if runs else 0


@contextmanager
def run_lock(inputs: TickInputs, say: Say = _silent) -> Iterator[None]:
    """Hold the state directory's run lock (drivers/lock.py) for what follows: observe,
    plan, apply, write back. Taken after the state directory was found writable."""
    from reconciler.drivers.lock import LockBusy, hold_lock  # noqa: PLC0415

    def waiting(holder: str) -> None:
        say(f"note: another reconcile is running ({holder}); waiting up to {RUN_LOCK_WAIT_S:.0f}s for it")

    path = StateLayout(inputs.state_dir).run_lock()
    with ExitStack() as held:
        try:  # only taking the lock is translated here: what the body raises passes as it is
            held.enter_context(hold_lock(path, timeout=RUN_LOCK_WAIT_S, on_wait=waiting))
        except LockBusy as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:  # the lock could not be created: say so, act on nothing
            raise UserError(f"state directory {inputs.state_dir}: cannot take {path.name} ({exc.strerror or exc}); "
                            "nothing was changed") from None
        yield


def delegate(request: RunRequest, loaded: FleetRepo) -> tuple[frozenset[str] | None, list[UserRun], tuple[str, ...]]:
    """For a verb that is not a reconcile (`budget ingest`): the tenants this process
    handles itself (None: all), the tenant users' runs of `request.user_verb`, and notes."""
    inputs, runs, notes = share_with_users(loaded, _inputs(request), request)
    tenants = inputs.tenants
    return (None if tenants is None else frozenset(tenants)), runs, notes


def check_state_writable(loaded: FleetRepo, inputs: TickInputs) -> None:
    """Before anything is applied: a read-only or full state directory is a UserError
    (exit 1) that names it, and nothing is touched."""
    from reconciler.drivers.files import check_state_writable as probe  # noqa: PLC0415

    tenants = inputs.tenants if inputs.tenants is not None else loaded.tenants
    if (problem := probe(inputs.state_dir, [t for t in tenants if t in loaded.tenants])) is not None:
        raise UserError(problem)


def share_with_users(loaded: FleetRepo, inputs: TickInputs, request: RunRequest,
                     checkout: object = None) -> tuple[TickInputs, list[UserRun], tuple[str, ...]]:
    """Tenants with another `user:`: as root, run this request's verb for them as their
    users; else skip them with a note. Returns the inputs narrowed to this process's own
    tenants, the users' runs and the notes. An applying run first checks this process's
    own state directory, so a broken one stops the run before any tenant is touched."""
    from reconciler.core.scope import split_scope  # noqa: PLC0415
    from reconciler.drivers.users import current_user, is_root  # noqa: PLC0415

    scope = split_scope(loaded, inputs.tenants, me=current_user(), root=is_root())
    notes = scope.skipped
    if request.applying:
        check_state_writable(loaded, inputs if scope.local is None else replace(inputs, tenants=scope.local))
    if scope.local is None:
        return inputs, [], notes
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415  (only when a tenant has a user)

    from reconciler.engine.delegate import run_for_user  # noqa: PLC0415

    revision = ""
    if request.applying and scope.delegated:
        from reconciler.engine.reconcile import spec_revision  # noqa: PLC0415

        revision = spec_revision(request.repo, checkout)  # type: ignore[arg-type]
    argv = request.verb()
    # Users are independent (own uid, socket, state, lock): their runs overlap, in a stable order.
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(scope.delegated)))) as pool:
        runs = list(pool.map(lambda item: run_for_user(loaded, item[0], item[1], inputs.host, argv,
                                                       json_output=request.json_output, revision=revision),
                             scope.delegated.items()))
    return replace(inputs, tenants=scope.local), runs, notes
