"""The register's board as `fleet serve`'s Hosts page groups and filters it (core/hostsview.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.core.hostsview import Board, HostFilters, board_choices, board_json

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def agent(host: str, tenant: str, name: str, health: str | None = "healthy",
          last_seen: datetime | None = AT) -> dict[str, object]:
    return {"host": host, "tenant": tenant, "agent": name, "role": "coder", "health": health, "state": "idle",
            "heartbeat": last_seen, "last_seen": last_seen}


BOARD = Board(AT, (
    agent("w2", "beta", "coder0"),
    agent("w1", "alpha", "orchestrator", last_seen=AT - timedelta(minutes=5)),
    agent("w1", "alpha", "coder0", "dead", last_seen=AT),
    agent("w1", "beta", "reviewer", None, last_seen=None),
), ({"host": "w3", "tenant": "gamma", "account": "max", "used_pct": 10},
    {"host": "w1", "tenant": "alpha", "account": "max", "used_pct": 40}))


def test_one_line_per_host_with_its_tenants_health_and_latest_report() -> None:
    lines = {line.host: line for line in BOARD.hosts()}
    assert list(lines) == ["w1", "w2", "w3"]  # by name; w3 has only an account
    w1 = lines["w1"]
    assert w1.tenants == ("alpha", "beta") and w1.agents == 3
    assert dict(w1.health) == {"dead": 1, "healthy": 1, "unknown": 1}
    assert w1.health_text() == "1 dead, 1 healthy, 1 unknown"
    assert w1.last_seen == AT  # the latest of its tenants' reports
    assert (lines["w3"].agents, lines["w3"].health_text(), lines["w3"].last_seen) == (0, "no agent", None)


def test_filters_narrow_agents_accounts_and_hosts() -> None:
    dead = HostFilters.of({"health": "dead"})
    assert [r["agent"] for r in BOARD.agents if dead.matches(r)] == ["coder0"]
    assert all(dead.matches_usage(r) for r in BOARD.usage)  # accounts have no health
    beta = HostFilters.of({"tenant": "beta"})
    assert [(r["host"], r["agent"]) for r in BOARD.agents if beta.matches(r)] == [("w2", "coder0"), ("w1", "reviewer")]
    assert [line.host for line in BOARD.hosts() if beta.matches_host(line)] == ["w1", "w2"]
    unknown = HostFilters.of({"health": "unknown", "host": "w1"})
    assert [r["agent"] for r in BOARD.agents if unknown.matches(r)] == ["reviewer"]
    assert [r for r in BOARD.usage if HostFilters.of({"host": "w3"}).matches_usage(r)] == [BOARD.usage[0]]


def test_choices_cover_every_host_and_tenant_of_the_board() -> None:
    assert board_choices(BOARD) == {"host": ["w1", "w2", "w3"], "tenant": ["alpha", "beta", "gamma"],
                                    "health": ["dead", "healthy", "unknown"]}
    assert board_choices(None) == {"host": [], "tenant": [], "health": []}


def test_the_json_document_has_plain_values() -> None:
    doc = board_json(BOARD)
    assert doc["read_at"] == AT.isoformat()
    assert [h["host"] for h in doc["hosts"]] == ["w1", "w2", "w3"]
    assert doc["hosts"][0]["last_seen"] == AT.isoformat()
    assert doc["agents"][1]["heartbeat"] == (AT - timedelta(minutes=5)).isoformat()
    assert [a["account"] for a in doc["accounts"]] == ["max", "max"]
