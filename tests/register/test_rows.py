"""The pure batch planner (reconciler/register/rows.py): only what changed is written."""

from __future__ import annotations

from reconciler.register.rows import HEARTBEAT_REFRESH_S, Batch, Digest, Row, plan_batch


def agent(name: str, health: str = "healthy", tenant: str = "t") -> Row:
    return Row("agents", tenant, name, {"health": health})


def beat(name: str, seq: int, state: str = "idle", tenant: str = "t") -> Row:
    return Row("heartbeats", tenant, name, {"seq": seq, "ts": f"2026-12-01T00:00:{seq:02d}+00:00", "state": state})


def plan(previous: Digest | None, kept: list[Row], now: float = 0.0, **kw: object) -> tuple[Batch, Digest]:
    options: dict[str, object] = {"tenants": ["t"], "host": "h", "run_id": "r", "at": "", "seq": 1, "now": now,
                                  "ledger": {}}
    options.update(kw)
    return plan_batch(previous, kept, [], **options)  # type: ignore[arg-type]


def test_only_changes_are_written_and_gone_rows_deleted() -> None:
    first, digest = plan(None, [agent("a"), agent("b"), beat("a", 1)])
    assert len(first.upserts) == 3 and first.prune
    same, digest2 = plan(digest, [agent("a"), agent("b"), beat("a", 2)], now=10)
    assert not same.changed, "a new seq alone is no change"
    changed, _ = plan(digest2, [agent("a", "unhealthy"), beat("a", 3, "working")], now=20)
    assert [r.ident for r in changed.upserts] == ["agents/t/a", "heartbeats/t/a"]
    assert [r.ident for r in changed.deletes] == ["agents/t/b"]


def test_a_quiet_heartbeat_is_refreshed_now_and_then() -> None:
    _, digest = plan(None, [beat("a", 1)], now=0)
    quiet, digest = plan(digest, [beat("a", 2)], now=HEARTBEAT_REFRESH_S - 1)
    assert not quiet.changed
    due, digest = plan(digest, [beat("a", 3)], now=HEARTBEAT_REFRESH_S)
    assert [r.ident for r in due.upserts] == ["heartbeats/t/a"]
    after, _ = plan(digest, [beat("a", 4)], now=HEARTBEAT_REFRESH_S + 10)
    assert not after.changed


def test_unseen_rows_are_neither_written_nor_deleted() -> None:
    _, digest = plan(None, [agent("a"), beat("a", 1)])
    batch, after = plan(digest, [agent("a")], unseen={("heartbeats", "t")})
    assert not batch.changed
    assert "heartbeats/t/a" in after.rows
    fresh, _ = plan(None, [agent("a")], unseen={("heartbeats", "t")})
    assert fresh.prune == ("agents/t", "usage/t", "status_docs/t", "tasks/t", "assignments/t")


def test_other_tenants_are_kept_in_the_digest() -> None:
    _, digest = plan(None, [agent("a"), agent("x", tenant="u")], tenants=["t", "u"])
    batch, after = plan(digest, [agent("a")], tenants=["t"])
    assert not batch.changed and "agents/u/x" in after.rows


def test_a_batch_round_trips_through_json() -> None:
    batch, _ = plan(None, [agent("a"), beat("a", 1)])
    assert Batch.from_json(batch.to_json()) == batch
