"""One small running fleet for the corrupt-file tests: real tmux, a budget, every state file.

`running_world` converges a three-agent fleet with a budget on a private tmux socket
(`sleep` as the agent, tmux-only), then writes one valid file of every kind the
reconciler reads back: heartbeats, a usage record, restart history, budget memory, the
spend ledger, this host's status and another host's. `World.restore()` puts the valid
files back, so each test breaks exactly one and sees what a tick makes of it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.ps import ps_rows
from reconciler.drivers.files import write_atomic
from reconciler.drivers.ledger import render_entry
from reconciler.drivers.usage import iso_z
from reconciler.engine.apply import apply_plan
from reconciler.engine.state import render_history
from reconciler.engine.tick import Tick, TickInputs, plan_tick
from reconciler.engine.writeback import write_back
from reconciler.model.history import RestartRecord
from reconciler.model.ledger import LedgerEntry
from reconciler.model.observed import SocketKey
from tests.engine.test_budget_apply import ACCOUNT, TENANT, fleet_repo, set_usage
from tests.plugins.tmux_server import kill_server
from tests.resilience.faults import clear

AGENTS = ("coder0", "enhancer", "orchestrator")
SLEEP = "sleep 600"


@dataclass
class World:
    root: Path
    inputs: TickInputs
    socket: SocketKey
    files: dict[str, str]  # path relative to root -> its valid text
    later: datetime  # past every agent's start-up grace, within the heartbeat timeout

    @property
    def repo(self) -> Path:
        return self.inputs.repo

    @property
    def state(self) -> Path:
        return self.inputs.state_dir

    def restore(self) -> None:
        for rel, text in self.files.items():
            clear(self.root / rel)
            write_atomic(self.root / rel, text)

    def tick(self) -> tuple[Tick, list[str]]:
        """Plan, write status and TASKS.md back, build `fleet ps`: every reader of the state."""
        tick = plan_tick(self.inputs, now=self.later)
        written = write_back(tick, [], revision="r1", finished=tick.now)
        assert len(ps_rows(tick.desired, tick.observed, tick.plan, tick.now)) == len(AGENTS)
        return tick, [*tick.problems, *written.problems]


def heartbeat_text(agent: str, at: datetime, **changes: object) -> str:
    record = {"tenant": TENANT, "host": "demo", "agent": agent, "seq": 3, "ts": iso_z(at), "pid": os.getpid(),
              "state": "working", "model": "stub-large", "ack": "msg-1",
              "usage": {"input_tokens": 100, "output_tokens": 20}}
    return json.dumps({**record, **changes})


def _ledger(now: datetime) -> str:
    entries = [LedgerEntry(now - timedelta(minutes=m), TENANT, "demo", "coder0", "coder", None, ACCOUNT,
                           "stub-large", "heartbeat", "coder0@1", 100 * m, None, 100 * m, None, "estimated")
               for m in (1, 2)]
    return "".join(render_entry(e) for e in entries)


@contextmanager
def running_world(base: Path) -> Iterator[World]:
    """The fleet, converged; its tmux server is killed at the end."""
    socket = SocketKey(None, f"fleet-test-{uuid.uuid4().hex[:12]}")
    assert socket.name
    now = datetime.now(UTC)
    repo = fleet_repo(base / "repo", socket.name, now + timedelta(days=3))
    state = base / "state"
    set_usage(state, 0.1, now + timedelta(days=3), now)  # under pace: every agent on its desired model
    inputs = TickInputs(repo=repo, host="demo", state_dir=state, command_override=SLEEP)
    try:
        with pytest.MonkeyPatch.context() as env:  # tmux-only, whatever the host runs
            env.setenv("XDG_RUNTIME_DIR", str(base))
            env.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
            tick = plan_tick(inputs)
            assert not apply_plan(tick).failed
            files = {
                **{f"state/{TENANT}/heartbeats/{a}.json": heartbeat_text(a, datetime.now(UTC)) for a in AGENTS},
                f"state/{TENANT}/restarts.json": render_history({"orchestrator": RestartRecord(2, now, "pane exited")}),
                f"state/{TENANT}/ledger.jsonl": _ledger(now),
            }
            for rel in (f"state/{TENANT}/usage/{ACCOUNT}.json", f"state/{TENANT}/budget.json"):
                files[rel] = (base / rel).read_text()
            world = World(base, inputs, socket, files, now + timedelta(hours=1))
            world.restore()
            world.tick()
            own = (repo / "status/demo" / f"{TENANT}.yaml").read_text()
            world.files[f"repo/status/demo/{TENANT}.yaml"] = own
            world.files[f"repo/status/other-host/{TENANT}.yaml"] = own.replace('"host": "demo"', '"host": "other-host"')
            world.restore()
            yield world
    finally:
        kill_server(socket.name)
