"""The applying half of a run (engine/run.py): pull before, apply and write back after.

Status is written in a `finally`, so a failed apply is reported too, and a Git failure
never undoes a reconciled host. A dry-run never imports this module (nor Git).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core.traces import scope_attrs
from reconciler.drivers import git, telemetry
from reconciler.engine import gitops
from reconciler.engine.apply import ApplyReport, Outcome, apply_plan
from reconciler.engine.tick import Tick
from reconciler.engine.writeback import project_from_files, write_back, write_projections
from reconciler.model.status import TenantStatus

if TYPE_CHECKING:
    from reconciler.engine.register_sync import Synced
    from reconciler.spec.models import Register


@dataclass(frozen=True, slots=True)
class Prepared:
    checkout: git.Checkout | None
    pulled: str
    problems: tuple[str, ...]


def prepare(repo: Path, use_git: bool) -> Prepared:
    """Open the checkout (unless --no-git) and pull, before the specs are read."""
    checkout, skipped = gitops.open_repo(repo, enabled=use_git)
    pulled, problems = gitops.pull(checkout)
    notes = tuple(f"{p}; reconciling from the specs at hand" for p in problems)
    return Prepared(checkout, pulled, (skipped, *notes) if skipped else notes)


def apply_and_write_back(tick: Tick, checkout: git.Checkout | None, *, write: bool = True) -> tuple[ApplyReport, tuple[str, ...]]:
    """Apply the plan, then always write status back; returns the report and warnings."""
    report: ApplyReport | None = None
    problems: tuple[str, ...] = ()
    scope = scope_attrs(tick.inputs.host, tick.desired.tenants)
    try:
        with telemetry.span("apply", scope) as span:  # its children: one span per action (engine/tracing.py)
            report = apply_plan(tick)  # writes the lane memory: assignments are recorded before their briefs
            span.set({"fleet.failed": len(report.failed)})
        if tick.plan.dispatches:
            from reconciler.engine.dispatch import deliver  # noqa: PLC0415  (only with briefs to type)

            report = replace(report, problems=(*report.problems, *deliver(tick, tick.plan.dispatches)))
        if tick.resumes is not None:
            from reconciler.engine.resume import deliver as resume  # noqa: PLC0415  (only with agents held by a limit)

            report = replace(report, problems=(*report.problems, *resume(tick)))
    finally:
        if write:
            with telemetry.span("write-back", scope):
                problems = write_back_and_publish(tick, report.outcomes if report else (), checkout)
    return report, (*report.problems, *problems)


def spec_revision(repo: Path, checkout: git.Checkout | None) -> str:
    return gitops.spec_revision(checkout or git.open_checkout(repo))


def write_back_and_publish(tick: Tick, outcomes: Sequence[Outcome], checkout: git.Checkout | None) -> tuple[str, ...]:
    """Status, then (with a register) this run's batch, then the projections, then Git.

    With fleet.yaml `register:` the register step comes before the projections: the host
    holding the register's projection lease renders TASKS.md and MISSION-MANIFEST.md from
    every host's status documents there, the others leave both files as the remote has
    them; with the register away, the host renders them from the status files as before."""
    revision = tick.inputs.revision or spec_revision(tick.inputs.repo, checkout)
    finished = datetime.now(UTC)
    config = _register_config(tick)
    try:
        written = write_back(tick, outcomes, revision=revision, finished=finished, projections=config is None)
    except OSError as exc:
        return (f"could not write status into {tick.inputs.repo}: {exc}",)
    problems: list[str] = [*written.problems]
    projections: dict[str, str] | None = None
    registered: tuple[str, ...] = ()
    if config is not None:
        synced = _register(tick, config, written.statuses, outcomes, revision, finished)
        projections = _project(tick, written.statuses, synced, revision, problems)
        registered = synced.problems
    published = gitops.publish(checkout, tick.inputs.repo, tick.inputs.host, revision, projections)
    return (*problems, *(f"{p}; the host is reconciled, the next run retries" for p in published.problems),
            *registered)


def _register_config(tick: Tick) -> Register | None:
    """fleet.yaml's `register:`. A tenant user's run (root's copy of the specs, `revision`
    given) writes its own tenants as the user's own role (register_sync.py)."""
    return tick.repo.fleet.register if tick.repo.fleet is not None else None


def _project(tick: Tick, own: Sequence[TenantStatus], synced: Synced, revision: str,
             problems: list[str]) -> dict[str, str] | None:
    """The projections of a run with a register: rendered from the register's documents by
    the lease holder ({name: text}), left alone by the others ({}), or, the register not
    reached, rendered from the status files as without one (None: Git as without one)."""
    if synced.docs is not None:
        return write_projections(tick, synced.docs, revision, problems)[1]
    if synced.reached:
        return {}
    project_from_files(tick, own, revision, problems)
    return None


def _register(tick: Tick, config: Register, statuses: Sequence[TenantStatus], outcomes: Sequence[Outcome],
              revision: str, finished: datetime) -> Synced:
    """What this run changed goes to Postgres too (docs/register.md), and the run asks for
    the projection lease. Only with fleet.yaml `register:`: without it nothing of this is
    imported (psycopg stays unloaded)."""
    from reconciler.engine.register_sync import Lease, sync  # noqa: PLC0415  (only with a register)

    scope = tick.repo.fleet.name if tick.repo.fleet is not None else ""
    # a tenant user's run asks for no lease: its copy of the specs is never committed
    lease = (Lease(scope, config.projection_lease.total_seconds(), tuple(sorted(tick.repo.tenants)))
             if tick.inputs.revision is None else None)
    return sync(tick, config, statuses, outcomes, revision=revision, finished=finished, lease=lease)
