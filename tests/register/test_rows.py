"""The pure batch planner (reconciler/register/rows.py): only what changed is written; and the
rows of a host's lane tasks and their assignments (engine/register_sync.py `task_rows`)."""

from __future__ import annotations

from reconciler.engine.register_sync import kept_rows, task_rows
from reconciler.model.status import TaskStatus, TenantStatus
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


SINCE = "2026-12-01T10:00:00+00:00"


def lane_status(*tasks: TaskStatus) -> TenantStatus:
    return TenantStatus("shop", "h", "rev", "tmux-only", tasks=tasks)


TITLES = {("shop", "T1"): ("M1", "Paginate"), ("shop", "T2"): ("M1", "Document")}


def test_task_rows_carry_the_fleets_view_and_who_holds_each_task() -> None:
    rows = task_rows(lane_status(TaskStatus("T1", "api", "working", "coder0-0", SINCE),
                                 TaskStatus("T2", "api", "waiting", note="waits on T1"),
                                 TaskStatus("T3", "api", "done", note="set done in tasks.yaml")), TITLES)
    assert [(r.table, r.key, dict(r.values)) for r in rows] == [
        ("tasks", "T1", {"mission": "M1", "title": "Paginate", "lane": "api", "state": "working", "note": ""}),
        ("assignments", "T1", {"agent": "coder0-0", "lane": "api", "state": "working", "since": SINCE}),
        ("tasks", "T2", {"mission": "M1", "title": "Document", "lane": "api", "state": "waiting", "note": "waits on T1"}),
        ("tasks", "T3", {"mission": None, "title": "T3", "lane": "api", "state": "done",
                         "note": "set done in tasks.yaml"}),
    ], "no agent, no assignment; a title tasks.yaml does not give is the task's id"


def test_a_task_reported_done_rewrites_its_rows_and_a_finished_task_loses_its_assignment() -> None:
    working = lane_status(TaskStatus("T1", "api", "working", "coder0-0", SINCE), TaskStatus("T2", "api", "queued"))
    _, digest = plan(None, kept_rows([working], {}, TITLES), tenants=["shop"])
    again, digest = plan(digest, kept_rows([working], {}, TITLES), tenants=["shop"])
    assert not [r for r in again.upserts if r.table in ("tasks", "assignments")], "nothing changed, nothing written"
    reported = lane_status(TaskStatus("T1", "api", "done", "coder0-0", "2026-12-01T11:00:00+00:00", "merged"),
                           TaskStatus("T2", "api", "queued"))
    done, digest = plan(digest, kept_rows([reported], {}, TITLES), tenants=["shop"])
    assert sorted(r.ident for r in done.upserts if r.table != "status_docs") == [
        "assignments/shop/T1", "tasks/shop/T1"], "the done report changes the task and its assignment, not T2"
    closed = lane_status(TaskStatus("T1", "api", "done", note="set done in tasks.yaml"), TaskStatus("T2", "api", "queued"))
    final, digest = plan(digest, kept_rows([closed], {}, TITLES), tenants=["shop"])
    assert [r.ident for r in final.deletes] == ["assignments/shop/T1"]
    gone, _ = plan(digest, kept_rows([lane_status()], {}, TITLES), tenants=["shop"])
    assert sorted(r.ident for r in gone.deletes) == ["tasks/shop/T1", "tasks/shop/T2"], "a lane moved away: pruned"
