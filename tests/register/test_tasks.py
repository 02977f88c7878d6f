"""A lane's tasks and who holds them in a real register: a run with a lane and a stub
worker on a private tmux socket writes the host's `tasks` and `assignments` rows, a no-op
tick rewrites none of them, the worker's `fleet task done` changes the task's rows, and
`fleet ps --all-hosts --tasks` shows them (docs/register.md, "What each table holds")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.drivers import register as pg
from reconciler.engine.register_sync import task_rows as rows_of
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from reconciler.model.status import TaskStatus, TenantStatus
from reconciler.register.rows import Batch
from tests.e2e.test_lanes import DONE_T1, HOST, OPEN_T2, Shop
from tests.plugins.tmux_server import retry_until
from tests.register.support import REGISTER_BLOCK, URL_ENV, fleet, query


def task_rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Both tables with each row's xmin: a row rewritten (even to the same values) shows a new xmin."""
    return {
        "tasks": query(url, "SELECT xmin::text, tenant_id, host, task_id, mission, title, lane, state, note "
                            "FROM fleet.tasks ORDER BY task_id"),
        "assignments": query(url, "SELECT xmin::text, tenant_id, host, task_id, agent, lane, state, since "
                                  "FROM fleet.assignments ORDER BY task_id"),
    }


def of_task(rows: list[tuple[object, ...]], task: str) -> tuple[object, ...]:
    """The row of `task` (its xmin first)."""
    return next(r for r in rows if r[3] == task)


@pytest.mark.tmux
def test_a_lanes_tasks_and_assignments_follow_the_run(tmp_path: Path, tmux_socket: SocketKey, pg_url: str) -> None:
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    (shop.repo / "fleet.yaml").write_text((shop.repo / "fleet.yaml").read_text() + REGISTER_BLOCK)
    shop.env[URL_ENV] = pg_url
    migrated = fleet("register", "migrate", str(shop.repo), url=pg_url)
    assert migrated.returncode == 0, migrated.stderr
    shop.tasks(DONE_T1, OPEN_T2)
    first = shop.reconcile()
    assert "register" not in first.stdout + first.stderr, first.stdout + first.stderr
    rows = task_rows(pg_url)
    assert of_task(rows["tasks"], "T1")[1:] == (
        "shop", HOST, "T1", "M1", "Paginate", "api", "done", "set done in tasks.yaml"), "T1: set done by people"
    assert [r[3] for r in rows["tasks"]] == ["T1", "T2"]
    assert not [r for r in rows["assignments"] if r[3] == "T1"], "a task set done in tasks.yaml has no assignment"

    layout = StateLayout(shop.state)
    assert retry_until(layout.heartbeat("shop", "coder0-0").exists, 10)

    def held() -> bool:  # the worker starts, gets its brief, acks it, works on it (2 s, the stub), then idles
        shop.reconcile()
        found = task_rows(pg_url)
        return bool(found["assignments"]) and found["assignments"][0][4:7] == ("coder0-0", "api", "assigned") \
            and of_task(found["tasks"], "T2")[8] == ""

    assert retry_until(held, 30), task_rows(pg_url)
    rows = task_rows(pg_url)
    [assignment] = rows["assignments"]
    assert assignment[1:6] == ("shop", HOST, "T2", "coder0-0", "api"), assignment
    t2 = of_task(rows["tasks"], "T2")
    assert t2[1:7] == ("shop", HOST, "T2", "M1", "Document pagination", "api") and t2[7] == assignment[6], t2

    quiet = task_rows(pg_url)
    shop.reconcile()
    assert task_rows(pg_url) == quiet, "a no-op tick rewrote task rows"

    # The worker reports with `fleet task done`, in the environment its pane was started with.
    shop.report("coder0-0", "done", "T2", "--note", "see PR 7")
    shop.reconcile()
    after = task_rows(pg_url)
    t2_after = of_task(after["tasks"], "T2")
    assert t2_after[7:] == ("done", "see PR 7"), t2_after
    assert t2_after[0] != of_task(quiet["tasks"], "T2")[0], "the row was rewritten"
    [kept] = after["assignments"]
    assert kept[3:7] == ("T2", "coder0-0", "api", "done"), "a reported task keeps its assignment, done"
    assert of_task(after["tasks"], "T1") == of_task(quiet["tasks"], "T1"), "T1 untouched"

    shown = fleet("ps", str(shop.repo), "--all-hosts", "--tasks", url=pg_url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["HOST", "TENANT", "TASK", "LANE", "STATE", "AGENT", "SINCE", "TITLE"]
    assert lines[1].split()[:5] == [HOST, "shop", "T1", "api", "done"] and lines[1].split()[5] == "-", lines
    assert lines[2].split()[:6] == [HOST, "shop", "T2", "api", "done", "coder0-0"], lines
    assert lines[2].endswith("Document pagination"), lines
    as_json = fleet("ps", str(shop.repo), "--all-hosts", "--tasks", "--output", "json", url=pg_url)
    [t2_json] = [t for t in json.loads(as_json.stdout) if t["task"] == "T2"]
    assert (t2_json["state"], t2_json["agent"], t2_json["note"], t2_json["mission"]) == (
        "done", "coder0-0", "see PR 7", "M1")
    alone = fleet("ps", str(shop.repo), "--tasks", url=pg_url)
    assert alone.returncode == 1 and "add --all-hosts" in alone.stderr and "Traceback" not in alone.stderr

    # The tasks leave the repository: the host deletes their rows.
    (shop.repo / "tenants" / "shop" / "tasks.yaml").unlink()
    shop.reconcile()
    assert task_rows(pg_url) == {"tasks": [], "assignments": []}


def test_a_lane_moving_hosts_never_fights_over_a_row(pg_url: str) -> None:
    """Lane api moves from w1 to w2: while both hosts report T1, each writes its own row; w1's
    prune (its status no longer has the lane) deletes only its own."""
    with pg.connect(pg_url) as conn:
        pg.migrate(conn, pg.migrations())
    held = TenantStatus("shop", "", "r", "", tasks=(TaskStatus("T1", "api", "working", "coder0-0",
                                                               "2026-12-01T00:00:00+00:00"),))
    queued = TenantStatus("shop", "", "r", "", tasks=(TaskStatus("T1", "api", "queued"),))

    def write(host: str, seq: int, status: TenantStatus) -> None:
        with pg.connect(pg_url) as conn:
            assert pg.write_batch(conn, Batch(seq, host, f"r{seq}", "2026-12-01T00:00:00+00:00", ("shop",),
                                              upserts=tuple(rows_of(status, {})),
                                              prune=("tasks/shop", "assignments/shop")))

    write("w1", 1, held)
    write("w2", 1, queued)
    assert query(pg_url, "SELECT host, task_id, state FROM fleet.tasks ORDER BY host") == [
        ("w1", "T1", "working"), ("w2", "T1", "queued")]
    write("w1", 2, TenantStatus("shop", "", "r", ""))  # w1 no longer runs the lane
    assert query(pg_url, "SELECT host, task_id, state FROM fleet.tasks") == [("w2", "T1", "queued")]
    assert query(pg_url, "SELECT count(*) FROM fleet.assignments") == [(0,)]
