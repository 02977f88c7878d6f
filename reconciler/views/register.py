"""`fleet ps --all-hosts`: the register's agents of every host, as a table or JSON.

Rows come from the register, which every host (and tenant role) writes: text is made
printable before it reaches a terminal, like a tenant user's relayed output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from reconciler.engine.untrusted import printable

HEADERS = ("HOST", "TENANT", "AGENT", "ROLE", "MODEL", "HEALTH", "STATE", "HEARTBEAT", "LAST RUN")


def _when(value: object) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else "-"


def cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    model = row.get("running_model") or row.get("desired_model") or "-"
    raw = (row["host"], row["tenant"], row["agent"], row.get("role") or "-", model, row.get("health") or "-",
           row.get("state") or "-", _when(row.get("heartbeat")), _when(row.get("last_seen")))
    return tuple(printable(str(c)).replace("\n", " ") for c in raw)


def render(rows: Iterable[Mapping[str, Any]]) -> str:
    """Columns padded to their widest cell, like `fleet ps`.

    >>> print(render([{"host": "w1", "tenant": "a", "agent": "x\\x1b[2J", "health": "healthy"}]))
    HOST  TENANT  AGENT     ROLE  MODEL  HEALTH   STATE  HEARTBEAT  LAST RUN
    w1    a       x\\x1b[2J  -     -      healthy  -      -          -
    """
    lines = [HEADERS, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def as_json(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]
