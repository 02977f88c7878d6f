"""Every host's agents and accounts as the register holds them: `fleet serve`'s Hosts page.

`fleet ps --all-hosts` prints the register's rows; the web view groups the same rows by
host, as a multi-cluster GitOps dashboard lists its clusters before their applications:
one line per host (its tenants, its agents by health, when it last reported), then the
agents and the accounts, filtered by host, tenant and health. Pure: the rows are what
drivers/register.py's `read_agents` and `read_usage` return (dicts keyed by their
columns), read with the caller's role, so row-level security already chose them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Rows = tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class HostLine:
    """One host as the register knows it."""

    host: str
    tenants: tuple[str, ...]
    health: Mapping[str, int]  # agents by health, sorted by name
    last_seen: datetime | None  # the latest run any of its tenants reported

    @property
    def agents(self) -> int:
        return sum(self.health.values())

    def health_text(self) -> str:
        """ "2 healthy, 1 dead", or "no agent"."""
        return ", ".join(f"{n} {h}" for h, n in self.health.items()) or "no agent"


@dataclass(frozen=True, slots=True)
class Board:
    """One read of the register: every agent, account and lane task row the caller's role may see."""

    read_at: datetime
    agents: Rows
    usage: Rows = ()
    tasks: Rows = ()  # lane tasks with their holders (drivers/register.py `read_tasks`)

    def hosts(self) -> tuple[HostLine, ...]:
        """One line per host that has an agent or an account in the register, by name.

        >>> from datetime import UTC
        >>> at = datetime(2026, 12, 1, tzinfo=UTC)
        >>> b = Board(at, ({"host": "h1", "tenant": "a", "agent": "x", "health": "dead", "last_seen": at},
        ...                {"host": "h0", "tenant": "b", "agent": "y", "health": "healthy", "last_seen": None},
        ...                {"host": "h1", "tenant": "c", "agent": "z", "health": None, "last_seen": None}),
        ...           ({"host": "h2", "tenant": "a", "account": "max"},))
        >>> [(h.host, h.tenants, h.health_text(), h.last_seen == at) for h in b.hosts()]
        [('h0', ('b',), '1 healthy', False), ('h1', ('a', 'c'), '1 dead, 1 unknown', True), ('h2', ('a',), 'no agent', False)]
        """
        tenants: dict[str, set[str]] = {}
        health: dict[str, dict[str, int]] = {}
        seen: dict[str, datetime | None] = {}
        for row in self.agents:
            host = str(row["host"])
            tenants.setdefault(host, set()).add(str(row["tenant"]))
            counts = health.setdefault(host, {})
            verdict = str(row.get("health") or "unknown")
            counts[verdict] = counts.get(verdict, 0) + 1
            seen[host] = _latest(seen.get(host), row.get("last_seen"))
        for row in self.usage:
            tenants.setdefault(str(row["host"]), set()).add(str(row["tenant"]))
        return tuple(HostLine(host, tuple(sorted(tenants[host])), dict(sorted(health.get(host, {}).items())),
                              seen.get(host)) for host in sorted(tenants))


def _latest(known: datetime | None, value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return known
    return value if known is None or value > known else known


@dataclass(frozen=True, slots=True)
class HostFilters:
    """The Hosts page's filters; an empty field matches everything.

    >>> f = HostFilters.of({"host": " h1 ", "health": "dead"})
    >>> f, f.matches({"host": "h1", "tenant": "a", "health": "dead"}), f.matches({"host": "h1", "tenant": "a"})
    (HostFilters(host='h1', tenant='', health='dead'), True, False)
    """

    host: str = ""
    tenant: str = ""
    health: str = ""

    @classmethod
    def of(cls, params: Mapping[str, str]) -> HostFilters:
        return cls(**{k: params.get(k, "").strip() for k in ("host", "tenant", "health")})

    def matches(self, row: Mapping[str, Any]) -> bool:
        """An agent row of the board."""
        return (self.matches_usage(row)
                and (not self.health or str(row.get("health") or "unknown") == self.health))

    def matches_usage(self, row: Mapping[str, Any]) -> bool:
        """An account or lane task row of the board (it has no health: that filter does not apply)."""
        return (not self.host or row["host"] == self.host) and (not self.tenant or row["tenant"] == self.tenant)

    def matches_host(self, line: HostLine) -> bool:
        return (not self.host or line.host == self.host) and (not self.tenant or self.tenant in line.tenants)


def board_choices(board: Board | None) -> dict[str, list[str]]:
    """The values each filter can take on this board, sorted."""
    rows: Sequence[Mapping[str, Any]] = board.agents if board else ()
    usage: Sequence[Mapping[str, Any]] = board.usage if board else ()
    return {
        "host": sorted({str(r["host"]) for r in (*rows, *usage)}),
        "tenant": sorted({str(r["tenant"]) for r in (*rows, *usage)}),
        "health": sorted({str(r.get("health") or "unknown") for r in rows}),
    }


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def board_json(board: Board) -> dict[str, Any]:
    """The board as one JSON document (`/api/hosts`): the rows as `fleet ps --all-hosts
    [--tasks] --output json` and `fleet budget show --all-hosts --output json` print them."""
    return {
        "read_at": board.read_at.isoformat(),
        "hosts": [{"host": h.host, "tenants": list(h.tenants), "agents": h.agents, "health": dict(h.health),
                   "last_seen": _plain(h.last_seen)} for h in board.hosts()],
        "agents": [{k: _plain(v) for k, v in row.items()} for row in board.agents],
        "accounts": [{k: _plain(v) for k, v in row.items()} for row in board.usage],
        "tasks": [{k: _plain(v) for k, v in row.items()} for row in board.tasks],
    }
