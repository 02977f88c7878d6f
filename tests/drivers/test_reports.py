"""The reports folder as the reconcile reads it: the agents' files and a person's reopens
side by side, each kept by its file (an agent named like the reopener takes nothing from
it), and a reopen root writes into a tenant user's folder handed to that user."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.drivers.reports import read_reports, record_reopen, record_report
from reconciler.model.layout import StateLayout

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_reopens_and_reports_are_read_side_by_side(tmp_path: Path) -> None:
    state = StateLayout(tmp_path)
    record_report(state, "shop", "alice", "T1", "done", "", NOW)  # an agent that happens to share the name
    record_reopen(state, "shop", "T1", "alice", "again", NOW.replace(hour=13))
    record_reopen(state, "shop", "T2", "bob", "", NOW.replace(hour=14))
    reports, problems = read_reports(state, "shop")
    assert problems == []
    assert sorted((r.agent, r.task, r.state, r.note) for r in reports) == [
        ("alice", "T1", "done", ""), ("alice", "T1", "reopened", "again"), ("bob", "T2", "reopened", "")]


def test_an_agent_file_cannot_say_reopened(tmp_path: Path) -> None:
    state = StateLayout(tmp_path)
    path = record_reopen(state, "shop", "T1", "alice", "", NOW)
    (path.parent / "coder0-0.json").write_text(path.read_text().replace('"_reopened"', '"coder0-0"'))
    reports, problems = read_reports(state, "shop")
    assert [r.agent for r in reports] == ["alice"]
    assert len(problems) == 1 and "coder0-0.json: damaged task reports" in problems[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to write into another user's folder")
def test_root_hands_the_reopen_to_the_owner_of_the_tenants_folder(tmp_path: Path) -> None:
    reports = tmp_path / "shop" / "reports"
    reports.mkdir(parents=True, mode=0o700)
    os.chown(tmp_path / "shop", 65534, 65534)
    os.chown(reports, 65534, 65534)
    path = record_reopen(StateLayout(tmp_path), "shop", "T1", "root", "", NOW)
    for made in (path, reports / "._reopened.lock"):
        assert (made.stat().st_uid, made.stat().st_gid, made.stat().st_mode & 0o777) == (65534, 65534, 0o600)


def test_the_reopens_file_is_where_the_layout_says(tmp_path: Path) -> None:
    assert record_reopen(StateLayout(tmp_path), "shop", "T1", "alice", "", NOW) == StateLayout(tmp_path).task_reopens("shop")
