"""A resident loop (`fleet reconcile --watch`) keeps what did not change between ticks;
each kept result must give way to a changed input on the very next tick.

Real tmux, real files, one process running `run()` tick after tick as the watch loop
does: a changed heartbeat, changed spec bytes, a status file or TASKS.md edited by
someone, a workdir created meanwhile. Heartbeats are kept by their stat only once they
are a while old (drivers/files.py, SETTLED_NS); here that wait is set to zero so the
cache is exercised at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.drivers import files, tmux
from reconciler.drivers.files import write_atomic
from reconciler.engine.run import RunRequest, RunResult, run
from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo

pytestmark = pytest.mark.tmux

HOST = "demo"
TENANT = "demo"
AGENTS = ("enhancer", "orchestrator")


@pytest.fixture
def resident(tmp_path: Path, tmux_socket: SocketKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunRequest]:
    """examples/fleets/minimal on the test's socket, tmux-only, converged with a fresh
    heartbeat for each agent; the request a watch loop would run on each tick."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # tmux-only, whatever the host runs
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setattr(files, "SETTLED_NS", 0)
    monkeypatch.setattr(files, "_HEARTBEATS", files.StatCache())
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    request = RunRequest(repo=repo, host=HOST, state_dir=tmp_path / "state", use_git=False,
                         command_override="sleep 600")
    assert run(request).exit_code == 0
    for agent in AGENTS:
        beat(request, agent, "stub-large")
    yield request


def beat(request: RunRequest, agent: str, model: str, seq: int = 1) -> None:
    """A heartbeat as an agent writes it: a temporary file renamed over the last one."""
    record = {"tenant": TENANT, "host": HOST, "agent": agent, "seq": seq, "pid": 1000,
              "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "state": "idle", "model": model}
    write_atomic(StateLayout(request.state_dir).heartbeat(TENANT, agent), json.dumps(record))


def tick(request: RunRequest) -> RunResult:
    result = run(request)
    assert result.exit_code == 0, (result.warnings, result.errors)
    return result


def status(request: RunRequest) -> dict[str, dict[str, object]]:
    text = (request.repo / "status" / HOST / f"{TENANT}.yaml").read_text()
    doc = json.loads("\n".join(line for line in text.split("\n") if not line.startswith("#")))
    return {a["name"]: a for a in doc["agents"]}


def test_a_changed_heartbeat_is_seen_on_the_next_tick(resident: RunRequest) -> None:
    first = tick(resident)
    assert not first.plan.has_changes
    assert status(resident)["orchestrator"]["model"] == {"desired": "stub-large", "running": "stub-large"}
    tick(resident)  # the heartbeats come from the cache now

    beat(resident, "orchestrator", "stub-small", seq=2)
    changed = tick(resident)

    assert changed.tick.observed.heartbeats[(TENANT, "orchestrator")].model == "stub-small"
    assert changed.tick.observed.heartbeats[(TENANT, "orchestrator")].seq == 2
    assert status(resident)["orchestrator"]["model"] == {"desired": "stub-large", "running": "stub-small"}
    assert status(resident)["enhancer"]["model"] == {"desired": "stub-large", "running": "stub-large"}


def test_a_removed_heartbeat_is_missed_on_the_next_tick(resident: RunRequest) -> None:
    tick(resident)
    StateLayout(resident.state_dir).heartbeat(TENANT, "enhancer").unlink()
    after = tick(resident)
    assert (TENANT, "enhancer") not in after.tick.observed.heartbeats
    assert (TENANT, "orchestrator") in after.tick.observed.heartbeats


def test_changed_spec_bytes_are_seen_on_the_next_tick(resident: RunRequest, tmux_socket: SocketKey) -> None:
    tick(resident)
    roster = resident.repo / "tenants" / TENANT / "roster.yaml"
    original = roster.read_text()
    roster.write_text(original + "  - name: worker-1\n    role: coder\n")

    grown = tick(resident)

    assert [a.agent for a in grown.plan.actions] == ["worker-1"]
    assert "worker-1" in tmux.observe_socket(tmux_socket).sessions
    assert "worker-1" in status(resident)
    assert "worker-1" in (resident.repo / "TASKS.md").read_text()

    roster.write_text(original)
    shrunk = tick(resident)

    assert [(a.kind.value, a.agent) for a in shrunk.plan.actions] == [("stop", "worker-1")]
    assert "worker-1" not in tmux.observe_socket(tmux_socket).sessions
    assert "worker-1" not in status(resident)
    assert "worker-1" not in (resident.repo / "TASKS.md").read_text()


def test_a_status_and_tasks_md_edited_between_ticks_are_put_back(resident: RunRequest) -> None:
    tick(resident)
    own = resident.repo / "status" / HOST / f"{TENANT}.yaml"
    tasks = resident.repo / "TASKS.md"
    rendered = own.read_text(), tasks.read_text()
    tick(resident)  # status and TASKS.md rendered from the kept results now

    own.write_text(rendered[0].replace('"healthy"', '"dead"'))
    tasks.write_text(rendered[1] + "a line someone added\n")
    tick(resident)

    assert (own.read_text(), tasks.read_text()) == rendered


def test_another_hosts_changed_status_reaches_tasks_md_on_the_next_tick(resident: RunRequest) -> None:
    tick(resident)
    own = resident.repo / "status" / HOST / f"{TENANT}.yaml"
    other = resident.repo / "status" / "other-host" / "elsewhere.yaml"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text(own.read_text().replace(f'"tenant": "{TENANT}"', '"tenant": "elsewhere"'))
    before = (resident.repo / "TASKS.md").read_text()
    tick(resident)
    assert (resident.repo / "TASKS.md").read_text() == before  # no such tenant in the specs: not shown

    other.write_text(own.read_text().replace(f'"host": "{HOST}"', '"host": "other-host"').replace(
        '"running": "stub-large"', '"running": "stub-small"'))
    tick(resident)
    # Each agent's row comes from the last host (by name) that reports it: now the other host.
    assert "other-host" in (resident.repo / "TASKS.md").read_text()


def test_a_workdir_created_between_ticks_is_used_by_the_next_plan(resident: RunRequest, tmp_path: Path) -> None:
    workdir = tmp_path / "later"
    roster = resident.repo / "tenants" / TENANT / "roster.yaml"
    roster.write_text(roster.read_text() + f"  - name: worker-1\n    role: coder\n    workdir: {workdir}\n")
    dry = replace(resident, dry_run=True)

    missing = run(dry).tick.desired.tenants[TENANT].on_host(HOST)["worker-1"].launch.workdir
    workdir.mkdir()
    found = run(dry).tick.desired.tenants[TENANT].on_host(HOST)["worker-1"].launch.workdir

    assert (missing, found) == ("~", str(workdir))
