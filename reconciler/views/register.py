"""`fleet ps --all-hosts [--tasks]` and `fleet budget show --all-hosts`: the register's rows of every host.

Rows come from the register, which every host (and tenant role) writes: text is made
printable before it reaches a terminal, like a tenant user's relayed output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from reconciler.engine.untrusted import printable

HEADERS = ("HOST", "TENANT", "AGENT", "ROLE", "MODEL", "HEALTH", "STATE", "HEARTBEAT", "LAST RUN")


def when(value: object) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    model = row.get("running_model") or row.get("desired_model") or "-"
    raw = (row["host"], row["tenant"], row["agent"], row.get("role") or "-", model, row.get("health") or "-",
           row.get("state") or "-", when(row.get("heartbeat")), when(row.get("last_seen")))
    return tuple(printable(str(c)).replace("\n", " ") for c in raw)


def _table(headers: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    lines = [headers, *lines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


USAGE_HEADERS = ("HOST", "TENANT", "ACCOUNT", "RUNTIME", "STATE", "USED", "ALLOWED", "RESET", "EXHAUSTS", "LEDGER TOKENS")


def _pct(value: object) -> str:
    return f"{value}%" if isinstance(value, int) else "-"


def usage_cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    """An account row's cells, in USAGE_HEADERS order."""
    raw = (row["host"], row["tenant"], row["account"], row.get("runtime") or "-", row.get("state") or "-",
           _pct(row.get("used_pct")), _pct(row.get("allowed_pct")), row.get("reset") or "-",
           row.get("exhausts") or "-", row.get("ledger_tokens", 0))
    return tuple(printable(str(c)).replace("\n", " ") for c in raw)


def render_usage(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per account and host.

    >>> print(render_usage([{"host": "w1", "tenant": "a", "account": "max", "runtime": "claude", "state": "on-pace",
    ...                      "used_pct": 42, "allowed_pct": 50, "reset": None, "exhausts": None, "ledger_tokens": 1200}]))
    HOST  TENANT  ACCOUNT  RUNTIME  STATE    USED  ALLOWED  RESET  EXHAUSTS  LEDGER TOKENS
    w1    a       max      claude   on-pace  42%   50%      -      -         1200
    """
    return _table(USAGE_HEADERS, [usage_cells(r) for r in rows])


def render(rows: Iterable[Mapping[str, Any]]) -> str:
    """Columns padded to their widest cell, like `fleet ps`.

    >>> print(render([{"host": "w1", "tenant": "a", "agent": "x\\x1b[2J", "health": "healthy"}]))
    HOST  TENANT  AGENT     ROLE  MODEL  HEALTH   STATE  HEARTBEAT  LAST RUN
    w1    a       x\\x1b[2J  -     -      healthy  -      -          -
    """
    return _table(HEADERS, [cells(r) for r in rows])


TASK_HEADERS = ("HOST", "TENANT", "TASK", "LANE", "STATE", "AGENT", "SINCE", "TITLE")


def render_tasks(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line per lane task and host, with the agent that holds or reported it.

    >>> print(render_tasks([{"host": "w1", "tenant": "shop", "task": "T1", "lane": "api", "state": "working",
    ...                      "agent": "coder0-0", "since": None, "title": "Paginate"}]))
    HOST  TENANT  TASK  LANE  STATE    AGENT     SINCE  TITLE
    w1    shop    T1    api   working  coder0-0  -      Paginate
    """
    return _table(TASK_HEADERS, [register_task_cells(r) for r in rows])


def register_task_cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A task row's cells, in TASK_HEADERS order."""
    raw = (row["host"], row["tenant"], row["task"], row.get("lane") or "-", row.get("state") or "-",
           row.get("agent") or "-", when(row.get("since")), row.get("title") or "-")
    return tuple(printable(str(c)).replace("\n", " ") for c in raw)


def as_json(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]
