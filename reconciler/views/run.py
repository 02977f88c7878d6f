"""One reconcile run (engine/run.py's RunResult) as people and scripts read it.

Text: the pull, the plan, the outcomes, then each tenant user's share; warnings on
standard error. JSON: one document, the plan with `applied` outcomes and every user's
rows folded in; errors still go to standard error as `file:line:col: message`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from reconciler.views.plan import (
    outcomes_json,
    plan_document,
    print_errors,
    print_outcomes,
    print_plan,
    to_json,
)
from reconciler.views.users import relay_users

if TYPE_CHECKING:
    from reconciler.engine.run import RunResult


def render_run(out: Console, err: Console, result: RunResult, json_output: bool) -> None:
    tick = result.tick
    if result.pulled and not json_output:
        out.print(f"[dim]git: {result.pulled}[/]", highlight=False)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False, markup=False)
    print_errors(err, result.errors)
    for warning in result.warnings:
        err.print(f"warning: {warning}", highlight=False, markup=False)
    doc = plan_document(tick.plan, result.errors)
    if result.applied:
        doc["applied"] = outcomes_json(result.outcomes)
    if json_output:
        relay_users(out, err, result.users, True, doc)
        print(to_json(doc))
        return
    if not result.only_users:
        print_plan(out, tick.plan, len(result.errors), invalid=_invalid_in_scope(result),
                   planned=bool(tick.desired.tenants))
        if result.applied and result.outcomes:
            print_outcomes(out, result.outcomes)
    relay_users(out, err, result.users, False, doc)


def _invalid_in_scope(result: RunResult) -> list[str]:
    wanted = result.request.tenants
    return sorted(t for t in result.repo.invalid_tenants if wanted is None or t in wanted)
