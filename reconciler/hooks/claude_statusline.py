"""`fleet-claude-statusline`: the Claude Code status-line command that hands usage to the fleet.

It sits at the source end of the budget loop. Claude Code runs it with a JSON document
on stdin every time it redraws its status line; when that document carries
`rate_limits` (subscribers, after the first reply of a session), the hook saves the
five-hour and seven-day windows to `$FLEET_STATE_DIR/<tenant>/statusline/<agent>.json`,
atomically, and prints one short status line. `fleet budget ingest` turns the freshest
saved record into the tenant's usage record (source `claude-statusline`). It imports
only the standard library, `reconciler.drivers.files` and `reconciler.model.layout`
(which import nothing else), because it runs often, and it
never fails: a status line that errors would blank Claude Code's own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from reconciler.drivers.files import default_state_dir, write_atomic
from reconciler.model.layout import StateLayout

PROG = "fleet-claude-statusline"
#: The windows Claude Code reports, as it names them and as the status line shows them.
WINDOWS = {"five_hour": "5h", "seven_day": "7d"}
#: An unchanged reading is saved again only after this many seconds (the status line is
#: redrawn several times a second while Claude Code streams).
RESAVE_AFTER_S = 60.0
MAX_INPUT_BYTES = 1 << 20
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def saved_record(doc: Mapping[str, object], tenant: str, agent: str, now: datetime) -> dict[str, object] | None:
    """The record to save from one status-line input, or None when it has no rate limits.

    Only each window's `used_percentage` and `resets_at` are kept, as Claude Code sent
    them (a percentage, Unix seconds); the ingester (drivers/runtime_usage.py,
    `parse_statusline_record`) converts them.

    >>> doc = {"model": {"display_name": "Opus"}, "session_id": "s1",
    ...        "rate_limits": {"seven_day": {"used_percentage": 41.2, "resets_at": 1795996800}}}
    >>> saved_record(doc, "jarvis", "orchestrator", datetime(2026, 11, 25, 12, tzinfo=UTC))["rate_limits"]
    {'seven_day': {'used_percentage': 41.2, 'resets_at': 1795996800}}
    >>> saved_record({"model": {}}, "jarvis", "orchestrator", datetime(2026, 11, 25, tzinfo=UTC)) is None
    True
    """
    limits = doc.get("rate_limits")
    if not isinstance(limits, dict):
        return None
    windows = {name: {"used_percentage": raw.get("used_percentage"), "resets_at": raw.get("resets_at")}
               for name in WINDOWS if isinstance(raw := limits.get(name), dict)
               and _number(raw.get("used_percentage")) is not None}
    if not windows:
        return None
    model = doc.get("model")
    return {
        "tenant": tenant,
        "agent": agent,
        "received_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "session_id": doc.get("session_id") if isinstance(doc.get("session_id"), str) else None,
        "model": model.get("id") if isinstance(model, dict) and isinstance(model.get("id"), str) else None,
        "rate_limits": windows,
    }


def status_text(doc: Mapping[str, object]) -> str:
    """The one line Claude Code shows: model, then each window's use and the weekly reset.

    >>> status_text({"model": {"display_name": "Opus"}, "rate_limits": {
    ...     "five_hour": {"used_percentage": 23.5}, "seven_day": {"used_percentage": 41.2,
    ...     "resets_at": 1795996800}}})
    'Opus | 5h 24% | 7d 41% (resets 2026-11-30 00:00 UTC)'
    >>> status_text({})
    'Claude'
    """
    model = doc.get("model")
    name = model.get("display_name") if isinstance(model, dict) else None
    parts = [name if isinstance(name, str) and name else "Claude"]
    limits = doc.get("rate_limits")
    for key, label in WINDOWS.items():
        raw = limits.get(key) if isinstance(limits, dict) else None
        used = _number(raw.get("used_percentage")) if isinstance(raw, dict) else None
        if used is None:
            continue
        part = f"{label} {used:.0f}%"
        reset = _number(raw.get("resets_at")) if isinstance(raw, dict) and key == "seven_day" else None
        if reset is not None:
            part += f" (resets {datetime.fromtimestamp(reset, UTC):%Y-%m-%d %H:%M} UTC)"
        parts.append(part)
    return " | ".join(parts)


def save(record: Mapping[str, object], path: Path, now: datetime) -> bool:
    """Write the record unless the same reading was saved less than RESAVE_AFTER_S ago."""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        age = now.timestamp() - path.stat().st_mtime
        if isinstance(previous, dict) and _same_reading(previous, record) and age < RESAVE_AFTER_S:
            return False
    except (OSError, ValueError):
        pass
    write_atomic(path, json.dumps(record) + "\n")
    return True


def _same_reading(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("rate_limits", "model", "session_id"))


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Claude Code status-line command: saves rate limits for `fleet budget ingest` "
        "and prints a short status line. Example (~/.claude/settings.json): "
        '{"statusLine": {"type": "command", "command": "fleet-claude-statusline"}}',
    )
    parser.add_argument("--tenant", help="Default: $FLEET_TENANT (set in every fleet agent's pane).")
    parser.add_argument("--agent", help="Default: $FLEET_AGENT, else 'claude'.")
    parser.add_argument("--state-dir", type=Path, help="Default: $FLEET_STATE_DIR or ~/.local/state/mosaic-fleet.")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stdin: TextIO, now: datetime) -> tuple[str, str | None]:
    """Read the input, save what it reports; returns the status line and a warning, if any."""
    try:
        doc = json.loads(stdin.read(MAX_INPUT_BYTES) or "{}")
    except ValueError:
        return "Claude", "stdin is not JSON"
    if not isinstance(doc, dict):
        return "Claude", "stdin is not a JSON object"
    line = status_text(doc)
    tenant = args.tenant or os.environ.get("FLEET_TENANT", "")
    agent = args.agent or os.environ.get("FLEET_AGENT") or "claude"
    if not tenant:
        return line, None  # not a fleet agent: show the line, save nothing
    if not (_NAME.match(tenant) and _NAME.match(agent)):
        return line, f"tenant {tenant!r} or agent {agent!r} is not a fleet name; nothing saved"
    record = saved_record(doc, tenant, agent, now)
    if record is None:
        return line, None
    state_dir = args.state_dir or default_state_dir()
    try:
        save(record, StateLayout(state_dir).statusline_record(tenant, agent), now)
    except OSError as exc:
        return line, f"cannot save usage under {state_dir}: {exc.strerror}"
    return line, None


def main(argv: Sequence[str] | None = None) -> int:
    """Always exit 0 with a line on stdout; problems go to stderr, which Claude Code hides."""
    args = _arguments(argv)
    try:
        line, warning = run(args, sys.stdin, datetime.now(UTC))
    except Exception as exc:  # the status line must never break Claude Code's
        line, warning = "Claude", f"internal error: {exc!r}"
    print(line)
    if warning:
        print(f"{PROG}: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
