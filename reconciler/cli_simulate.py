"""`fleet budget simulate`: when each downgrade, queue or refusal would fire, before it does.

A command function for the `budget` app (reconciler/cli.py mounts it as
`budget_app.command("simulate")(simulate_command)`); `python -m reconciler.cli_simulate`
runs it alone. It parses options, calls engine/simulate.py (a pure replay of
core/budget.py over one window in simulated time) and prints; it writes nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reconciler.cli_common import OutputOpt, RepoArg, check_output, check_repo, out, user_errors
from reconciler.errors import UserError
from reconciler.spec.models import format_duration, parse_duration

if TYPE_CHECKING:
    from reconciler.engine.simulate import Event, Replay

# engine/simulate.py and the budget policy load only when `fleet budget simulate` runs.
# Keys are core.budget.Change values (a StrEnum, so its members compare equal to them).
VERB = {"down": "downgrade", "up": "restore", "queue": "queue", "release": "release", "refuse": "refuse"}


def parse_burn(text: str) -> float:
    """`2`, `2x` or `0.5X`: a positive multiple of the even pace.

    >>> parse_burn("2x"), parse_burn("0.5")
    (2.0, 0.5)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[xX]?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--burn {text!r}: give a positive multiple of the even pace, e.g. --burn 2 (twice the pace)")
    return float(match.group(1))


def simulate_command(
    repo: RepoArg,
    burn: Annotated[str, typer.Option(
        "--burn", metavar="RATE", show_default=False,
        help="How fast the tenant burns with every agent on its desired model, as a multiple of the even pace: "
             "2 spends a window in half its length, 0.8 leaves a fifth unused.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant. Default: every tenant with a budget.yaml.",
                                               show_default=False)] = None,
    account: Annotated[str | None, typer.Option(
        "--account", help="Replay this account's window and show only its agents' changes. Default: the first account.",
        show_default=False)] = None,
    step: Annotated[str, typer.Option("--step", help="Simulated time between two reconciles, e.g. 1m, 5m.")] = "5m",
    factor: Annotated[float, typer.Option("--factor", help="Burn of a rung relative to the one above it.")] = 0.5,
    output: OutputOpt = "text",
) -> None:
    """Replay the budget policy over a window and show when each downgrade, queue or refusal fires.

    Every account starts the window empty; the policy runs every --step of simulated time,
    exactly as reconcile would run it, and nothing is started, stopped or written.

    Example: fleet budget simulate examples/fleets/spec-reference --burn 3 --tenant jarvis
    """
    with user_errors():
        check_output(output)
        if not 0 < factor <= 1:
            raise UserError(f"--factor {factor}: give a number in (0, 1], e.g. 0.5")
        try:
            every = parse_duration(step)
        except ValueError as exc:
            raise UserError(f"--step: {exc}") from None
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        from reconciler.engine.simulate import simulate_repo  # noqa: PLC0415

        replays = simulate_repo(check_repo(repo), rate=parse_burn(burn), now=now, tenant=tenant,
                                account=account, step=every, factor=factor)
        if not replays:
            raise UserError(f"{repo}: no tenant has a budget.yaml with accounts, so there is nothing to replay")
        if output == "json":
            out.print_json(data={"replays": [replay_json(r, account) for r in replays]})
            return
        for replay in replays:
            print_replay(replay, account)


def _shown(event: Event, account: str | None) -> bool:
    return account is None or account in (event.account, event.was_account)


def _offset(delta: timedelta) -> str:
    """`+2d03:15`: how far into the window."""
    minutes = int(delta.total_seconds() // 60)
    return f"+{minutes // 1440}d{minutes % 1440 // 60:02d}:{minutes % 60:02d}"


def _numbers(event: Event) -> str:
    if event.used is None or event.allowed is None:
        return f"{event.was_account or '-'}: no signal"
    sign = ">" if event.used > event.allowed else "<="
    return f"{event.was_account} used {event.used * 100:.2f}% {sign} allowed {event.allowed * 100:.2f}%"


def event_line(replay: Replay, event: Event) -> str:
    move = f"{event.before.label()} -> {event.after.label()}" if event.before != event.after else event.after.label()
    until = f" until {event.until.isoformat(timespec='minutes')}" if event.until else ""
    return (f"  {_offset(event.at - replay.trace.start):>10}  {event.at.isoformat(timespec='minutes')}  "
            f"{event.agent:<16} {VERB[event.change]:<9} {move}{until}  [{event.rule}; {_numbers(event)}]")


def print_replay(replay: Replay, account: str | None) -> None:
    trace = replay.trace
    window = format_duration(trace.end - trace.start)
    out.print(f"Tenant {replay.tenant}: {replay.account}'s {window} window {trace.start.isoformat()} -> "
              f"{trace.end.isoformat()}, burning {replay.rate:g}x the even pace", highlight=False, markup=False)
    out.print(f"  (every account starts empty; a rung burns {replay.factor:g}x the one above; "
              f"the policy runs every {format_duration(replay.step)})", highlight=False, markup=False)
    shown = [e for e in trace.events if _shown(e, account)]
    for event in shown:
        out.print(event_line(replay, event), highlight=False, markup=False)
    if not shown:
        out.print("  nothing fires: every agent stays on its model", highlight=False, markup=False)
    counts = {verb: sum(1 for e in shown if VERB[e.change] == verb) for verb in VERB.values()}
    used = ", ".join(f"{name} {value * 100:.1f}%" for name, value in trace.used.items())
    out.print(f"At the reset: {used}. {counts['downgrade']} downgrade(s), {counts['restore']} restore(s), "
              f"{counts['queue']} queue(s), {counts['refuse']} refusal(s).", highlight=False, markup=False)


def replay_json(replay: Replay, account: str | None) -> dict[str, Any]:
    trace = replay.trace
    return {
        "tenant": replay.tenant, "account": replay.account, "rate": replay.rate, "factor": replay.factor,
        "step": format_duration(replay.step), "start": trace.start.isoformat(), "end": trace.end.isoformat(),
        "used_at_reset": dict(trace.used), "peak": dict(trace.peak),
        "events": [
            {"at": e.at.isoformat(), "agent": e.agent, "change": VERB[e.change], "from": e.before.label(),
             "to": e.after.label(), "account": e.account, "was_account": e.was_account, "used": e.used,
             "allowed": e.allowed, "until": e.until.isoformat() if e.until else None, "rule": e.rule, "reason": e.reason}
            for e in trace.events if _shown(e, account)
        ],
    }


if __name__ == "__main__":
    typer.run(simulate_command)
