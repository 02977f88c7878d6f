"""The plan, its outcomes and spec errors, as rich text for people and JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from reconciler.core.plan import Action, ActionKind, Plan, action_json, plan_json
from reconciler.errors import SpecError

if TYPE_CHECKING:
    from reconciler.engine.apply import Outcome

SYMBOL = {
    ActionKind.SPAWN: ("+", "green"),
    ActionKind.STOP: ("-", "red"),
    ActionKind.RESTART: ("~", "yellow"),
    ActionKind.DOWNGRADE: ("v", "magenta"),
    ActionKind.QUEUE: ("=", "blue"),
    ActionKind.REFUSE: ("!", "red"),
}


#: Verdicts the plan lists under its actions: agents it leaves alone on purpose.
HELD_STYLE = {"waiting": ("‖ waiting ", "yellow"), "missing": ("! missing ", "red")}


def action_line(action: Action) -> str:
    sym, colour = SYMBOL[action.kind]
    model = f" ({action.model})" if action.model else ""
    who = f"{action.tenant}/{action.agent}"
    return f"[{colour}]{sym} {action.kind.value:<8}[/] [bold]{escape(who)}[/]{escape(model)}: {escape(action.reason.message)}"


def summary_line(plan: Plan, errors: int = 0) -> str:
    c = plan.counts()
    parts = [f"{c['spawn']} to spawn", f"{c['restart']} to restart", f"{c['stop']} to stop"]
    for kind in ("downgrade", "queue", "refuse"):
        if c[kind]:
            parts.append(f"{c[kind]} to {kind}")
    extra = []
    if plan.conflicts:
        extra.append(f"{len(plan.conflicts)} conflict{'s' if len(plan.conflicts) != 1 else ''}")
    held = sum(len(h.actions) for h in plan.holds)
    if held:
        extra.append(f"{held} held")
    if plan.waits:
        extra.append(f"{len(plan.waits)} backing off")
    if errors:
        extra.append(f"{errors} spec error{'s' if errors != 1 else ''}")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"Plan for host {plan.host}: {', '.join(parts)}{tail}."


def print_plan(console: Console, plan: Plan, errors: int = 0, invalid: Iterable[str] = (), planned: bool = True) -> None:
    """The plan, line by line. `invalid` names the tenants whose specs failed: they were
    not planned at all, so "no changes" is never said of them; `planned`: some tenant was."""
    invalid = sorted(invalid)
    for action in plan.actions:
        console.print(action_line(action), highlight=False)
    for conflict in plan.conflicts:
        console.print(f"[red]! conflict[/] [bold]{escape(conflict.tenant)}/{escape(conflict.agent)}[/]: {escape(conflict.message)}", highlight=False)
    for hold in plan.holds:
        console.print(f"[red]‖ held[/]     {escape(hold.message)}", highlight=False)
        for action in hold.actions:
            console.print("    " + action_line(action), highlight=False)
    for wait in plan.waits:
        console.print(f"[yellow]… waiting[/] [bold]{escape(wait.tenant)}/{escape(wait.agent)}[/]: {escape(wait.message)}", highlight=False)
    for health in plan.health:
        if health.health in HELD_STYLE:  # not started or not restarted, and why (not an action)
            label, colour = HELD_STYLE[health.health]
            console.print(f"[{colour}]{label}[/] [bold]{escape(health.tenant)}/{escape(health.agent)}[/]: "
                          f"{escape(health.message)}", highlight=False)
    for d in plan.dispatches:
        console.print(f"[cyan]> brief[/]    [bold]{escape(d.tenant)}/{escape(d.agent)}[/]: task {escape(d.task)} "
                      f"(message {d.message}, attempt {d.attempt}): {escape(d.reason)}", highlight=False)
    for r in plan.resumes:
        console.print(f"[cyan]> resume[/]   [bold]{escape(r.tenant)}/{escape(r.agent)}[/]: message {r.message} "
                      f"(attempt {r.attempt}): {escape(r.reason)}", highlight=False)
    for lane in plan.lanes:
        console.print(f"[dim]{escape(lane.summary())}[/]", highlight=False)
    for note in plan.notes:
        console.print(f"[dim]note: {escape(note)}[/]", highlight=False)
    if invalid:
        console.print(f"Nothing was planned for tenant{'s' if len(invalid) != 1 else ''} {', '.join(invalid)}: "
                      "its specs have errors (above); fix them and run again.", highlight=False, markup=False)
    if not plan.actions and not plan.dispatches and not plan.resumes and not plan.conflicts and not plan.holds and planned:
        console.print("No changes for the other tenants." if invalid else "No changes. The host matches the repository.",
                      highlight=False)
    console.print(summary_line(plan, errors), highlight=False)


def print_errors(console: Console, errors: Iterable[SpecError]) -> None:
    """`file:line:col: message`, one per line, unstyled so editors and CI can parse them."""
    for err in errors:
        console.print(escape(str(err)), highlight=False, soft_wrap=True, markup=True)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


def errors_json(errors: Iterable[SpecError]) -> list[dict[str, Any]]:
    return [{"path": e.path, "line": e.line, "col": e.col, "message": e.message, "tenant": e.tenant} for e in errors]


def plan_document(plan: Plan, errors: Iterable[SpecError]) -> dict[str, Any]:
    doc = plan_json(plan)
    doc["errors"] = errors_json(errors)
    return doc


RESULT_STYLE = {"done": ("✓", "green"), "skipped": ("·", "dim"), "failed": ("✗", "red")}


def print_outcomes(console: Console, outcomes: Iterable[Outcome]) -> None:
    listed = list(outcomes)
    for o in listed:
        sym, colour = RESULT_STYLE[o.result]
        detail = f": {escape(o.detail)}" if o.detail else ""
        who = f"{o.action.tenant}/{o.action.agent}"
        console.print(f"[{colour}]{sym} {o.action.kind.value:<8} {o.result}[/] [bold]{escape(who)}[/]{detail}", highlight=False)
    counts = {r: sum(1 for o in listed if o.result == r) for r in ("done", "skipped", "failed")}
    console.print(f"Applied: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed.", highlight=False)


def outcomes_json(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    return [{**action_json(o.action), "result": o.result, "detail": o.detail} for o in outcomes]
