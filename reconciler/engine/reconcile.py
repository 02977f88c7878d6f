"""The applying half of a run (engine/run.py): pull before, apply and write back after.

Status is written in a `finally`, so a failed apply is reported too, and a Git failure
never undoes a reconciled host. A dry-run never imports this module (nor Git).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from reconciler.core.traces import scope_attrs
from reconciler.drivers import git, telemetry
from reconciler.engine import gitops
from reconciler.engine.apply import ApplyReport, Outcome, apply_plan
from reconciler.engine.tick import Tick
from reconciler.engine.writeback import write_back
from reconciler.model.status import TenantStatus


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
    finally:
        if write:
            with telemetry.span("write-back", scope):
                problems = write_back_and_publish(tick, report.outcomes if report else (), checkout)
    return report, (*report.problems, *problems)


def spec_revision(repo: Path, checkout: git.Checkout | None) -> str:
    return gitops.spec_revision(checkout or git.open_checkout(repo))


def write_back_and_publish(tick: Tick, outcomes: Sequence[Outcome], checkout: git.Checkout | None) -> tuple[str, ...]:
    revision = tick.inputs.revision or spec_revision(tick.inputs.repo, checkout)
    finished = datetime.now(UTC)
    try:
        written = write_back(tick, outcomes, revision=revision, finished=finished)
    except OSError as exc:
        return (f"could not write status into {tick.inputs.repo}: {exc}",)
    published = gitops.publish(checkout, tick.inputs.repo, tick.inputs.host, revision)
    registered = _register(tick, written.statuses, outcomes, revision, finished)
    return (*written.problems, *(f"{p}; the host is reconciled, the next run retries" for p in published.problems),
            *registered)


def _register(tick: Tick, statuses: Sequence[TenantStatus], outcomes: Sequence[Outcome], revision: str,
              finished: datetime) -> tuple[str, ...]:
    """With fleet.yaml `register:`, what this run changed goes to Postgres too (docs/register.md);
    without it nothing is imported (psycopg stays unloaded). A tenant user's run writes its
    own tenants as the user's own role; root's run leaves them out (register_sync.py)."""
    config = tick.repo.fleet.register if tick.repo.fleet is not None else None
    if config is None:
        return ()
    from reconciler.engine.register_sync import sync  # noqa: PLC0415  (only with a register)

    return sync(tick, config, statuses, outcomes, revision=revision, finished=finished)
