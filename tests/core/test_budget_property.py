"""Properties of the budget policy over whole simulated windows with random burn.

Each example builds a tenant (core agents and workers on a subscription account, maybe an
API account), gives every agent a random burn per rung with noise (some start working
only late in the window, as new work does), and replays one 7d
window through engine/simulate.py's pure loop (the same loop `fleet budget simulate`
runs). The burn the policy reads is exactly what the loop accumulated: an ideal ingester.

Burn is bounded per step (below the 2% reserve for the whole account): a reactive
policy cannot undo what was spent between two runs, and the reserve is what it keeps
back for that. With that bound:

- whatever the policy can throttle never pushes an account past 100% at the reset: the
  only use beyond it comes from core agents (never queued) after the window is spent,
  so with no core agent on the account it ends at or under 100%;
- no agent changes model more than once per hysteresis period;
- core agents step down only once no throttleable worker runs on their account, are
  never queued, and are refused only at their floor over an API hard cap;
- every model change moves one rung (within a runtime's ladder).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.core.budget_types import Change, Decision, State, TenantInputs
from reconciler.core.pace import PaceState, Tuning
from reconciler.engine.simulate import Trace, simulate
from reconciler.spec.models import Agent, Budget
from tests.core.test_budget import FLEET, NOW, make_agents
from tests.e2e.repos import write

WINDOW = timedelta(days=7)
RESERVE = Tuning().reserve


def budget(with_api: bool) -> Budget:
    accounts: list[dict[str, Any]] = [
        {"name": "claude-max", "provider": "anthropic", "runtime": "claude", "regime": "subscription", "window": "7d"}]
    if with_api:
        accounts.append({"name": "openai-api", "provider": "openai", "runtime": "codex", "regime": "api",
                         "hard_cap_usd": 100, "period": "7d"})
    return Budget.model_validate({"apiVersion": "fleet.mosaicstack.dev/v1", "kind": "Budget", "tenant": "acme",
                                  "accounts": accounts})


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    with_api = draw(st.booleans())
    runtimes = ["claude", "codex"] if with_api else ["claude"]
    cores = draw(st.integers(1, 2))
    workers = draw(st.integers(1, 4))
    roster = [Agent(name="orchestrator", role="orchestrator", runtime="claude",
                    model=draw(st.sampled_from(["opus", "sonnet"])), lifecycle="core")]
    if cores == 2:
        rt = draw(st.sampled_from(runtimes))
        roster.append(Agent(name="enhancer", role="enhancer", runtime=rt, model=FLEET.runtimes[rt].ladder[0], lifecycle="core"))
    for i in range(workers):
        rt = draw(st.sampled_from(runtimes))
        model = draw(st.sampled_from(FLEET.runtimes[rt].ladder))
        roster.append(Agent(name=f"worker-{i}", role="coder", runtime=rt, model=model, lifecycle="ephemeral", lane=f"l{i}"))
    step = timedelta(minutes=draw(st.sampled_from([10, 20, 30])))
    # the whole tenant's burn at the noisiest tick stays under the reserve (see the module docstring)
    per_window_cap = 0.9 * RESERVE * (WINDOW / step) / 1.5
    shares = [draw(st.floats(0.0, 1.0)) for _ in roster]
    total = sum(shares) or 1.0
    scale = draw(st.floats(0.05, 1.0)) * per_window_cap
    return {
        "roster": roster, "with_api": with_api, "step": step, "seed": draw(st.integers(0, 2**32)),
        "base": {a.name: scale * s / total for a, s in zip(roster, shares, strict=True)},
        "factor": {a.name: draw(st.floats(0.1, 0.9)) for a in roster},
        # some agents only start working late in the window (new work arriving near the reset)
        "starts": {a.name: draw(st.sampled_from([0.0, 0.0, 0.5, 0.9, 0.97])) for a in roster},
        "hysteresis": timedelta(minutes=draw(st.sampled_from([15, 30, 120]))),
    }


def run(sc: dict[str, Any]) -> tuple[Trace, list[tuple[str, str, str, float]], Tuning]:
    """Replay one window; also return each burn as (account, agent, lifecycle, fraction)."""
    tuning = Tuning(hysteresis=sc["hysteresis"])
    inputs = TenantInputs("acme", make_agents(sc["roster"]), budget(sc["with_api"]), FLEET)
    ledger: list[tuple[str, str, str, float]] = []
    seconds = sc["step"].total_seconds()

    def burn(d: Decision, at: Any) -> float:
        noise = 0.5 + random.Random(f"{sc['seed']}/{d.agent}/{at.timestamp()}").random()
        idle = at < NOW + WINDOW * sc["starts"][d.agent]
        rate = 0.0 if idle else sc["base"][d.agent] * sc["factor"][d.agent] ** d.rung * noise / WINDOW.total_seconds()
        ledger.append((d.account or "", d.agent, d.lifecycle, rate * seconds))
        return rate

    trace = simulate(inputs, start=NOW, end=NOW + WINDOW, step=sc["step"], burn=burn, tuning=tuning)
    return trace, ledger, tuning


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_throttleable_use_never_passes_100_percent_at_the_reset(sc: dict[str, Any]) -> None:
    trace, ledger, _ = run(sc)
    per_step = len(trace.steps)
    spent_from: dict[str, int] = {}
    for i, step in enumerate(trace.steps):
        for pace in step.budget.paces:
            if pace.state is PaceState.SPENT:
                spent_from.setdefault(pace.account, i)
    # the ledger holds one entry per running agent per step, in step order
    agents_per_step = [sum(1 for d in s.budget.decisions if d.state is State.RUN and d.account) for s in trace.steps]
    assert len(ledger) == sum(agents_per_step) and per_step > 0
    core_after: dict[str, float] = defaultdict(float)
    cursor = 0
    for i, count in enumerate(agents_per_step):
        for account, _agent, lifecycle, amount in ledger[cursor:cursor + count]:
            if lifecycle == "core" and i >= spent_from.get(account, per_step):
                core_after[account] += amount
        cursor += count
    for account, used in trace.used.items():
        assert used - core_after[account] <= 1.0 + 1e-9, (account, used, core_after[account])
        has_core = any(a.lifecycle == "core" and d.account == account for s in trace.steps for d in s.budget.decisions
                       for a in sc["roster"] if a.name == d.agent)
        if not has_core:
            assert used <= 1.0 + 1e-9


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_no_agent_changes_model_more_than_once_per_hysteresis_period(sc: dict[str, Any]) -> None:
    trace, _, tuning = run(sc)
    changes: dict[str, list[Any]] = defaultdict(list)
    for step in trace.steps:
        for d in step.budget.decisions:
            if d.change in (Change.DOWN, Change.UP):
                changes[d.agent].append(step.at)
    for agent, times in changes.items():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= tuning.hysteresis for gap in gaps), (agent, times)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_workers_before_core_one_rung_at_a_time_refuse_last(sc: dict[str, Any]) -> None:
    trace, _, _ = run(sc)
    previous: dict[str, Decision] = {}
    for step in trace.steps:
        decisions = {d.agent: d for d in step.budget.decisions}
        for d in decisions.values():
            before = previous.get(d.agent)
            if d.lifecycle == "core":
                assert d.state is not State.QUEUED, d.reason
                if d.state is State.REFUSED:
                    assert d.rule == "hard-cap", d.reason
                    roomy = {p.runtime for p in step.budget.paces if p.state is PaceState.UNDER}
                    cheaper = [r for r in d.rungs[d.rung + 1:] if r.runtime == d.runtime or r.runtime in roomy]
                    assert not cheaper, f"refused while {cheaper[0].label()} was open: {d.reason}"
                if d.change is Change.DOWN and before is not None and before.account:
                    running_workers = [w for w in decisions.values() if w.lifecycle != "core"
                                       and w.state is State.RUN and w.account == before.account]
                    assert not running_workers, (d.agent, [w.agent for w in running_workers])
            if d.change in (Change.DOWN, Change.UP) and before is not None and before.runtime == d.runtime:
                assert abs(d.rung - before.rung) == 1, (d.agent, before.model, d.model)
        previous = decisions


# --- the replay itself, and `fleet budget simulate` ---------------------------------------


def test_the_replay_accounts_burn_exactly() -> None:
    """Half the even pace, nothing throttles: the account ends the window at 50%."""
    inputs = TenantInputs("acme", make_agents([Agent(name="orchestrator", role="orchestrator", runtime="claude",
                                                     model="opus", lifecycle="core")]), budget(False), FLEET)
    trace = simulate(inputs, start=NOW, end=NOW + WINDOW, step=timedelta(hours=1),
                     burn=lambda _d, _t: 0.5 / WINDOW.total_seconds())
    assert trace.used["claude-max"] == pytest.approx(0.5) and trace.events == ()
    assert len(trace.steps) == 168 and trace.steps[-1].used["claude-max"] == pytest.approx(0.5 - 0.5 / 168)


def test_simulate_command_prints_when_each_rung_fires(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo, "fleet.yaml", FLEET_YAML)
    write(repo, "tenants/acme/roster.yaml", """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: acme
host: h
agents:
  - {name: orchestrator, role: orchestrator, model: sonnet}
  - {name: enhancer, role: enhancer, model: haiku}
  - {name: coder0, role: coder, lane: x}
""")
    write(repo, "tenants/acme/budget.yaml", """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: acme
accounts:
  - {name: claude-max, provider: anthropic, runtime: claude, regime: subscription, window: 7d}
""")
    text = CliRunner().invoke(app, ["budget", "simulate", str(repo), "--burn", "4x", "--step", "10m"])
    assert text.exit_code == 0, text.output
    lines = [line for line in text.output.splitlines() if "coder0" in line]
    assert "downgrade opus (claude) -> sonnet (claude)" in lines[0] and "[over-pace; claude-max used" in lines[0]
    assert any("queue" in line and "until" in line for line in lines)
    assert "At the reset: claude-max" in text.output
    doc = json.loads(CliRunner().invoke(app, ["budget", "simulate", str(repo), "--burn", "4", "--output", "json"]).output)
    changes = [e["change"] for e in doc["replays"][0]["events"] if e["agent"] == "coder0"]
    assert changes[:3] == ["downgrade", "downgrade", "queue"]
    bad = CliRunner().invoke(app, ["budget", "simulate", str(repo), "--burn", "fast"])
    assert bad.exit_code == 1 and "--burn 'fast'" in bad.output


FLEET_YAML = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: sim
defaults: {runtime: claude, model: opus}
runtimes:
  claude: {command: "claude --model {model}", ladder: [opus, sonnet, haiku]}
"""
