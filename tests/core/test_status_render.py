"""Status and TASKS.md: deterministic bytes, `since` kept while a condition holds, round trip."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from reconciler.core.planner import plan
from reconciler.core.render import parse_status, render_status, render_tasks
from reconciler.core.status import tenant_status
from reconciler.model.status import RunRecord
from reconciler.spec.load import load_repo
from tests.core.factories import EXAMPLES, NOW, beat, desired, healthy, nothing_running, observed, running


class MarkdownSnapshot(SingleFileSnapshotExtension):
    """TASKS.md is stored as a real .md file so a reviewer reads the rendered page."""

    _write_mode = WriteMode.TEXT
    file_extension = "md"


@pytest.fixture
def snapshot_md(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(MarkdownSnapshot)


def coding_status(obs_now=NOW, previous=None, run=None):
    """The coding fleet, healthy at `obs_now` (heartbeats 5 s old then)."""
    fleet = desired("coding", "build-1")
    obs = healthy(fleet)
    shift = obs_now - NOW
    obs = replace(obs, heartbeats={k: replace(b, ts=b.ts + shift) for k, b in obs.heartbeats.items()})
    p = plan(fleet, obs, obs_now)
    return tenant_status(fleet.tenants["acme"], "build-1", p, obs, revision="abc1234", started={}, failed={},
                         run=run, previous=previous, now=obs_now)


def test_same_state_renders_the_same_bytes_and_keeps_since() -> None:
    first = coding_status()
    text = render_status(first)
    later = coding_status(obs_now=NOW + timedelta(minutes=5), previous=parse_status(text))
    assert render_status(later) == text
    assert all(c.since == NOW.isoformat(timespec="seconds") for a in later.agents for c in a.conditions)


def test_a_changed_condition_gets_a_new_since_and_the_others_keep_theirs() -> None:
    fleet = desired("minimal", "demo")
    orch, enh = fleet.tenants["demo"].agents
    sock = orch.launch.socket
    good = observed({sock: [running(orch), running(enh)]}, [beat(orch), beat(enh)])
    first = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, good, NOW), good, revision="r", started={},
                          failed={}, run=None, previous=None, now=NOW)
    later_at = NOW + timedelta(minutes=10)
    # at `later_at` the orchestrator's heartbeat is fresh and the enhancer's 10 minutes old
    stale = observed({sock: [running(orch), running(enh)]}, [beat(orch, age=-timedelta(minutes=10)), beat(enh)])
    second = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, stale, later_at), stale, revision="r",
                           started={}, failed={}, run=None, previous=first, now=later_at)
    enh_healthy = next(a for a in second.agents if a.name == "enhancer").condition("Healthy")
    orch_healthy = next(a for a in second.agents if a.name == "orchestrator").condition("Healthy")
    assert enh_healthy is not None and enh_healthy.status == "False" and enh_healthy.since == later_at.isoformat(timespec="seconds")
    assert orch_healthy is not None and orch_healthy.status == "True" and orch_healthy.since == NOW.isoformat(timespec="seconds")


def test_status_round_trips_and_runs_are_capped() -> None:
    status = coding_status()
    for i in range(7):
        run = RunRecord(f"r{i}", NOW.isoformat(), 100 + i, (f"spawn a{i}",))
        status = coding_status(previous=status, run=run)
    assert [r.revision for r in status.runs] == ["r6", "r5", "r4", "r3", "r2"]
    assert parse_status(render_status(status)) == status


def test_fresh_host_status_says_what_happens_next() -> None:
    fleet = desired("minimal", "demo")
    obs = nothing_running(fleet)
    status = tenant_status(fleet.tenants["demo"], "demo", plan(fleet, obs, NOW), obs, revision="r",
                           started={"orchestrator": "spawn at revision r"}, failed={"enhancer": "tmux said no"},
                           run=None, previous=None, now=NOW)
    conds = {a.name: a.condition("Ready") for a in status.agents}
    assert conds["orchestrator"] is not None and conds["orchestrator"].reason == "Starting"
    assert "start-up grace" in conds["orchestrator"].message
    assert conds["enhancer"] is not None and conds["enhancer"].reason == "ApplyFailed"
    assert "the next run tries again" in conds["enhancer"].message
    assert status.systemd == "tmux-only"


def test_tasks_md_snapshot(snapshot_md: SnapshotAssertion) -> None:
    repo = load_repo(EXAMPLES / "coding")
    text = render_tasks(repo, [coding_status()], "abc1234")
    assert "Do not edit" in text and "| T1 | Pagination for list endpoints | coder0-0 |" in text
    assert text == snapshot_md
