"""The pure budget policy on 1,000 agents and 20 accounts (issue 5 target: <= 50 ms).

One tenant, four runtimes with 8, 6, 4 and 2 accounts, every agent's memory from an
earlier tick, and usage that puts accounts in every state at once: no signal, under,
in the dead band, over pace and spent; critical tasks under `pacing: rapid`, and a
concurrency limit. What is timed is `decide_fleet`, exactly as engine/tick.py calls it.

    python benchmarks/bench_budget.py [--runs 7]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import median_seconds
from reconciler.core.budget import decide_fleet
from reconciler.core.budget_types import AgentMemory, State
from reconciler.core.desired import build_desired
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import Budget, Fleet, Roster, Tasks
from reconciler.spec.repo import FleetRepo, TenantSpec

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
RESET = NOW + timedelta(days=3)
API = "fleet.mosaicstack.dev/v1"
RUNTIMES = {"claude": (["opus", "sonnet", "haiku"], 8), "codex": (["gpt-5.5", "gpt-5.5-mini"], 6),
            "gemini": (["pro", "flash"], 4), "stub": (["stub-large", "stub-small"], 2)}
AGENTS = 1000


def fleet() -> Fleet:
    return Fleet.model_validate({
        "apiVersion": API, "kind": "Fleet", "name": "bench",
        "defaults": {"runtime": "claude", "model": "opus", "socket_name": "bench"},
        "runtimes": {rt: {"command": f"{rt} --model {{model}}", "ladder": ladder} for rt, (ladder, _) in RUNTIMES.items()},
        "downgrade": ["claude", "codex", "gemini"],
    })


def accounts() -> list[dict[str, Any]]:
    out = []
    for rt, (_, n) in RUNTIMES.items():
        for i in range(n):
            if rt == "codex":
                out.append({"name": f"{rt}-{i}", "provider": rt, "runtime": rt, "regime": "api",
                            "hard_cap_usd": 200, "period": "30d", "reset_at": (NOW + timedelta(days=15)).isoformat()})
            else:
                out.append({"name": f"{rt}-{i}", "provider": rt, "runtime": rt, "regime": "subscription",
                            "window": "7d", "reset_at": RESET.isoformat()})
    return out


def roster() -> Roster:
    agents: list[dict[str, Any]] = [
        {"name": "orchestrator", "role": "orchestrator", "runtime": "claude", "model": "opus"},
        {"name": "enhancer", "role": "enhancer", "runtime": "codex", "model": "gpt-5.5"},
    ]
    names = list(RUNTIMES)
    for i in range(AGENTS - 2):
        rt = names[i % len(names)]
        ladder = RUNTIMES[rt][0]
        lifecycle = "core" if i % 25 == 0 else "ephemeral"
        agents.append({"name": f"w{i}", "role": "coder", "runtime": rt, "model": ladder[i % len(ladder)],
                       "lifecycle": lifecycle, "lane": f"lane-{i % 13}"})
    return Roster.model_validate({"apiVersion": API, "kind": "Roster", "tenant": "big", "host": "bench", "agents": agents})


def usage(names: list[str]) -> dict[tuple[str, str], UsageSignal]:
    """Accounts in every state: no signal, under, on pace, over and spent (elapsed is 4/7)."""
    levels = [None, 0.2, 0.6, 0.7, 0.99]
    out = {}
    for i, name in enumerate(names):
        level = levels[i % len(levels)]
        if level is None:
            continue
        api = name.startswith("codex")
        out[("big", name)] = UsageSignal("big", name, None if api else level, level * 200 if api else None,
                                         None, None, "provider", "bench", NOW - timedelta(minutes=3))
    return out


def memory(rost: Roster, flt: Fleet) -> dict[tuple[str, str], AgentMemory]:
    """A third throttled one rung, some inside the hysteresis period, some queued."""
    out = {}
    for i, agent in enumerate(rost.agents):
        assert agent.runtime and agent.model
        ladder = flt.runtimes[agent.runtime].ladder
        at = ladder.index(agent.model)
        model = ladder[min(at + 1, len(ladder) - 1)] if i % 3 == 0 else agent.model
        ago = timedelta(minutes=10 if i % 2 else 90)
        state = State.QUEUED if i % 17 == 0 and agent.lifecycle != "core" else State.RUN
        account = f"{agent.runtime}-{(i // len(RUNTIMES)) % RUNTIMES[agent.runtime][1]}"
        out[("big", agent.name)] = AgentMemory(agent.runtime, model, account, NOW - ago, state,
                                               "floor-over-pace" if state is State.QUEUED else "",
                                               RESET if state is State.QUEUED else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    flt, rost = fleet(), roster()
    budget = Budget.model_validate({"apiVersion": API, "kind": "Budget", "tenant": "big", "pacing": "rapid",
                                    "authorized_by": "bench", "accounts": accounts(), "concurrency": 800})
    tasks = Tasks.model_validate({"apiVersion": API, "kind": "Tasks", "tenant": "big", "missions": [
        {"id": "M1", "title": "m", "tasks": [{"id": f"T{i}", "title": "t", "agent": f"w{i}",
                                              "urgency": ["normal", "high", "critical"][i % 3]} for i in range(0, 900, 7)]}]})
    repo = FleetRepo(Path("/bench"), flt, {}, {"big": TenantSpec("big", rost, budget, tasks)}, frozenset(), ())
    desired = build_desired(repo, host="bench", state_dir="/tmp/state")
    signals = usage([a["name"] for a in accounts()])
    mem = memory(rost, flt)
    result = decide_fleet(repo, desired, signals, mem, NOW)
    med, samples = median_seconds(lambda: decide_fleet(repo, desired, signals, mem, NOW), opts.runs)
    decisions = result.tenants["big"].decisions
    states: dict[str, int] = {}
    for d in decisions:
        key = f"{d.state.value}/{d.change.value}"
        states[key] = states.get(key, 0) + 1
    print(f"budget policy: {len(decisions)} agents, {len(budget.accounts)} accounts, median of {opts.runs}")
    print(f"  decide_fleet(): {med * 1000:7.1f} ms  (target <= 50 ms; min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})")
    print(f"  decisions:      {dict(sorted(states.items()))}")


if __name__ == "__main__":
    main()
