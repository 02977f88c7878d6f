"""The budget ladder for real: tmux on a private socket, the real `fleet-stub-agent`.

A usage record over pace (written as docs/reference.md's JSON, the way `fleet budget set-usage` or
an ingester would) makes the reconciler restart the worker on the cheaper model, which
its own heartbeat then reports, while the core agents keep their sessions; a record
back under pace, once the hysteresis period has passed (`plan_tick` takes `now`),
brings it back to its desired model. systemd is kept out (tmux-only) so that only the
budget path is under test.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.pace import Tuning
from reconciler.drivers import tmux
from reconciler.engine.apply import apply_plan
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.layout import StateLayout
from reconciler.model.observed import Heartbeat, SocketKey
from tests.e2e.repos import write
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux

STUB = Path(sys.executable).with_name("fleet-stub-agent")
TENANT = "demo"
ACCOUNT = "stub-max"


def fleet_repo(root: Path, socket: str, reset: datetime, account: str | None = None) -> Path:
    write(root, "fleet.yaml", f"""\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: budget
defaults:
  socket_name: {socket}
  heartbeat_timeout: 3h   # the test moves `now` past the hysteresis period; beats stay fresh
  startup_grace: 30s
  runtime: stub
  model: stub-large
runtimes:
  stub:
    command: "fleet-stub-agent --model {{model}}"
    ladder: [stub-large, stub-small]
""")
    write(root, f"tenants/{TENANT}/roster.yaml", f"""\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: {TENANT}
host: demo
agents:
  - name: orchestrator
    role: orchestrator
  - name: enhancer
    role: enhancer
  - name: coder0
    role: coder
    lane: budget
""")
    write(root, f"tenants/{TENANT}/budget.yaml", f"""\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: {TENANT}
accounts:
{account or SUBSCRIPTION.format(name=ACCOUNT, reset=reset.isoformat())}
""")
    return root


SUBSCRIPTION = """\
  - name: {name}
    provider: mosaic
    runtime: stub
    regime: subscription
    window: 7d
    reset_at: {reset}
    reset_confidence: user"""
API_ACCOUNT = """\
  - name: {name}
    provider: mosaic
    runtime: stub
    regime: api
    hard_cap_usd: 10
    period: 30d
    reset_at: {reset}"""


def set_usage(state: Path, used: float | None, reset: datetime, at: datetime, *, spent: float | None = None,
              window: str = "7d") -> None:
    """docs/reference.md's usage record, written directly as an ingester or `fleet budget set-usage` would."""
    record = {"tenant": TENANT, "account": ACCOUNT, "used_fraction": used, "spent_usd": spent,
              "reset_at": reset.isoformat(), "window": window, "confidence": "user", "source": "test",
              "observed_at": at.isoformat()}
    write(state, f"{TENANT}/usage/{ACCOUNT}.json", json.dumps(record))


def beat(state: Path, agent: str) -> Heartbeat | None:
    try:
        return parse_heartbeat(StateLayout(state).heartbeat(TENANT, agent).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def wait_beat(state: Path, agent: str, model: str, not_pid: int | None = None) -> Heartbeat:
    seen: list[Heartbeat | None] = [None]

    def check() -> bool:
        seen[0] = beat(state, agent)
        return seen[0] is not None and seen[0].model == model and seen[0].pid != not_pid

    assert retry_until(check, 60), f"{agent}: no heartbeat on {model} (pid != {not_pid}) in 60s; last: {seen[0]}"
    assert seen[0] is not None
    return seen[0]


@pytest.fixture
def stub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert STUB.exists(), f"{STUB} is missing: run `pip install -e '.[dev]'`"
    monkeypatch.setenv("FLEET_STUB_INTERVAL", "0.2")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # tmux-only: no systemd units in the way
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("MOSAIC_AGENT_COMMAND", raising=False)


@pytest.mark.usefixtures("stub_env")
def test_over_pace_worker_restarts_cheaper_core_untouched_then_returns(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name
    start = datetime.now(UTC)
    reset = start + timedelta(days=3, hours=12)  # half of the 7d window has elapsed: allowed 55%
    state = tmp_path / "state"
    inp = TickInputs(repo=fleet_repo(tmp_path / "repo", tmux_socket.name, reset), host="demo", state_dir=state)

    # no usage signal yet: everyone on the desired model, and the plan says why
    first = plan_tick(inp)
    assert sorted((a.kind.value, a.agent, a.model) for a in first.plan.actions) == [
        ("spawn", "coder0", "stub-large"), ("spawn", "enhancer", "stub-large"), ("spawn", "orchestrator", "stub-large")]
    assert {d.rule for d in first.plan.budget} == {"no-usage-signal"}
    assert not apply_plan(first).failed
    beats = {a: wait_beat(state, a, "stub-large") for a in ("orchestrator", "enhancer", "coder0")}
    sessions = tmux.observe_socket(tmux_socket).sessions

    # over pace: the worker goes one rung down, the core agents wait their turn
    set_usage(state, 0.90, reset, datetime.now(UTC))
    over = plan_tick(inp)
    assert [(a.kind.value, a.agent, a.model, a.reason.rule) for a in over.plan.actions] == [
        ("downgrade", "coder0", "stub-small", "budget-downgrade")]
    reason = over.plan.actions[0].reason.message
    for needle in ("stub-large (stub) -> stub-small (stub)", "used 90.0%", "allowed 55.0%", f"resets {reset.isoformat()}",
                   "confidence user", "source test"):
        assert needle in reason, reason
    core_rules = {d.agent: d.rule for d in over.plan.budget if d.lifecycle == "core"}
    assert core_rules == {"orchestrator": "workers-first", "enhancer": "workers-first"}
    assert not apply_plan(over).failed
    cheaper = wait_beat(state, "coder0", "stub-small", not_pid=beats["coder0"].pid)
    replay = apply_plan(over)  # the same plan again, as after a crash: no second restart
    assert [(o.result, o.detail) for o in replay.outcomes] == [("skipped", "already runs stub-small (another reconciler moved it)")]
    after = tmux.observe_socket(tmux_socket).sessions
    assert after["coder0"].marks.model == "stub-small" and after["coder0"].session_id != sessions["coder0"].session_id
    for core in ("orchestrator", "enhancer"):
        assert after[core].session_id == sessions[core].session_id, f"{core} must not be touched"
        still = beat(state, core)
        assert still is not None and still.pid == beats[core].pid and still.model == "stub-large"
    memory = json.loads(StateLayout(state).budget_memory(TENANT).read_text())
    assert memory["coder0"]["model"] == "stub-small" and memory["coder0"]["changed_at"] == over.now.isoformat()

    # still over pace a minute later: the floor waits out the hysteresis period, nothing moves
    held = plan_tick(inp, now=over.now + timedelta(minutes=1))
    assert held.plan.actions == ()
    assert {d.agent: d.rule for d in held.plan.budget}["coder0"] == "hysteresis"

    # back under pace, but inside the hysteresis period: it stays down
    set_usage(state, 0.10, reset, datetime.now(UTC))
    early = plan_tick(inp, now=over.now + timedelta(minutes=5))
    assert early.plan.actions == ()

    # past the hysteresis period: it returns to its desired model
    later = over.now + Tuning().hysteresis + timedelta(minutes=1)
    back = plan_tick(inp, now=later)
    assert [(a.kind.value, a.agent, a.model, a.reason.rule) for a in back.plan.actions] == [
        ("restart", "coder0", "stub-large", "budget-restore")]
    assert "back under pace" in back.plan.actions[0].reason.message
    assert not apply_plan(back).failed
    wait_beat(state, "coder0", "stub-large", not_pid=cheaper.pid)
    final = tmux.observe_socket(tmux_socket).sessions
    for core in ("orchestrator", "enhancer"):
        assert final[core].session_id == sessions[core].session_id, f"{core} must not be touched"
    assert plan_tick(inp, now=later + timedelta(minutes=1)).plan.actions == ()


@pytest.mark.usefixtures("stub_env")
def test_over_the_hard_cap_the_worker_is_queued_and_a_gone_core_agent_refused(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name
    reset = datetime.now(UTC) + timedelta(days=15)
    state = tmp_path / "state"
    account = API_ACCOUNT.format(name=ACCOUNT, reset=reset.isoformat())
    inp = TickInputs(repo=fleet_repo(tmp_path / "repo", tmux_socket.name, reset, account), host="demo", state_dir=state)
    assert not apply_plan(plan_tick(inp)).failed
    wait_beat(state, "coder0", "stub-large")

    # $11 of a $10 cap: the worker is queued until the period resets, the core agents step down
    set_usage(state, None, reset, datetime.now(UTC), spent=11.0, window="30d")
    spent = plan_tick(inp)
    assert sorted((a.kind.value, a.agent, a.reason.rule) for a in spent.plan.actions) == [
        ("downgrade", "enhancer", "budget-downgrade"), ("downgrade", "orchestrator", "budget-downgrade"),
        ("queue", "coder0", "budget-queue")]
    queue = next(a for a in spent.plan.actions if a.kind.value == "queue")
    assert f"queued until {reset.isoformat()}" in queue.reason.message and "spent $11.00 of the $10.00 cap" in queue.reason.message
    report = apply_plan(spent)
    assert not report.failed
    assert retry_until(lambda: "coder0" not in tmux.observe_socket(tmux_socket).sessions)
    wait_beat(state, "enhancer", "stub-small")
    wait_beat(state, "orchestrator", "stub-small")  # a minute on, a core agent not yet beating would be silent

    # at the floor over the cap: the running core agents are left alone, the worker stays queued
    steady = plan_tick(inp, now=spent.now + timedelta(minutes=1))
    assert steady.plan.actions == ()
    rules = {d.agent: (d.state.value, d.rule) for d in steady.plan.budget}
    assert rules == {"coder0": ("queued", "window-spent"), "enhancer": ("refused", "hard-cap"),
                     "orchestrator": ("refused", "hard-cap")}

    # a refused core agent that is gone is not started again; the plan reports it
    tmux.kill_sessions(tmux_socket, ["enhancer"])
    gone = plan_tick(inp, now=spent.now + timedelta(minutes=2))
    assert [(a.kind.value, a.agent) for a in gone.plan.actions] == [("refuse", "enhancer")]
    outcome = apply_plan(gone).outcomes[0]
    assert outcome.result == "skipped" and "refused by the budget policy" in outcome.detail
    assert set(tmux.observe_socket(tmux_socket).sessions) == {"orchestrator"}
