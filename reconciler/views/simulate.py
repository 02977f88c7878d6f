"""`fleet budget simulate`'s replay as people and scripts read it: one line per change."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rich.console import Console

from reconciler.spec.models import format_duration

if TYPE_CHECKING:
    from reconciler.engine.simulate import Event, Replay

# Keys are core.budget.Change values (a StrEnum, so its members compare equal to them).
VERB = {"down": "downgrade", "up": "restore", "queue": "queue", "release": "release", "refuse": "refuse"}


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


def print_replay(out: Console, replay: Replay, account: str | None) -> None:
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
