"""Status from one tick: conditions per agent, carried over from the previous status.

Pure: the previous status document, the plan, what apply did and `now` are arguments.
A condition keeps its `since` while its status holds, so a tick that changes nothing
renders the same bytes and nothing is committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from reconciler.core.desired import DesiredAgent, DesiredTenant
from reconciler.core.plan import Plan
from reconciler.model.observed import ObservedFleet
from reconciler.model.status import AgentStatus, Condition, RunRecord, TenantStatus

MAX_RUNS = 5


def _cond(type_: str, ok: bool | None, reason: str, message: str) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(type_, status, reason, message)


def agent_conditions(
    agent: DesiredAgent,
    plan: Plan,
    observed: ObservedFleet,
    started: Mapping[str, str],
    failed: Mapping[str, str],
) -> tuple[str, tuple[Condition, ...]]:
    """(health, conditions) of one agent after this tick's apply, each with what happens next."""
    key = (agent.tenant, agent.name)
    verdict = next((h for h in plan.health if (h.tenant, h.agent) == key), None)
    conflict = next((c for c in plan.conflicts if (c.tenant, c.agent) == key), None)
    wait = next((w for w in plan.waits if (w.tenant, w.agent) == key), None)
    session = observed.session(agent.launch.socket, agent.name)
    if agent.name in failed:
        health = "failed"
        ready = _cond("Ready", False, "ApplyFailed", f"{failed[agent.name]}; the next run tries again")
    elif agent.name in started:
        # Worded as the next run will see it (a young session), so that run rewrites nothing.
        health = "starting"
        ready = _cond("Ready", False, "Starting", _stable_message(health, agent))
    elif conflict is not None:
        health = "conflict"
        ready = _cond("Ready", False, "Conflict", conflict.message)
    elif verdict is None or session is None:
        health = "absent"
        ready = _cond("Ready", False, "Absent", "no session; the next run spawns it")
    else:
        health = verdict.health
        good = verdict.health == "healthy"
        ready = _cond("Ready", good, verdict.health.capitalize(), _stable_message(health, agent))
    # Status messages avoid ages ("5s ago"): they would change the file on every run.
    if health == "healthy":
        healthy = _cond("Healthy", True, "Heartbeat", _stable_message(health, agent))
    elif health == "starting":
        healthy = _cond("Healthy", None, "Starting", "waiting for the first heartbeat within the start-up grace")
    else:
        healthy = _cond("Healthy", False, health.capitalize(), _stable_message(health, agent) if verdict else ready.message)
    drift_bits = []
    if session is not None and session.marks.owned and session.marks.spec_hash != agent.launch.spec_hash and agent.name not in started:
        drift_bits.append(f"spec hash {session.marks.spec_hash} != {agent.launch.spec_hash}")
    if conflict is not None:
        drift_bits.append("a foreign session holds the name")
    drifted = _cond("Drifted", bool(drift_bits), "SpecDiffers" if drift_bits else "InSync",
                    "; ".join(drift_bits) if drift_bits else "running as the repository says")
    if wait is not None:
        evidence = f"{wait.attempts} restarts in a row without recovering; next try at {wait.until.isoformat(timespec='seconds')}"
        stalled = _cond("Stalled", wait.stalled, "CrashLoop" if wait.stalled else "BackingOff", evidence)
    else:
        stalled = _cond("Stalled", False, "Progressing", "no restart loop")
    budget = _cond("BudgetOK", None, "NotEvaluated", "budget governance is not evaluated yet")
    return health, (ready, healthy, budget, drifted, stalled)


def _stable_message(health: str, agent: DesiredAgent) -> str:
    timeout = int(agent.heartbeat_timeout.total_seconds())
    grace = int(agent.startup_grace.total_seconds())
    return {
        "healthy": f"answers heartbeats within the {timeout}s timeout",
        "starting": f"started; within the {grace}s start-up grace",
        "stale": f"heartbeats stopped (timeout {timeout}s); the next run restarts it",
        "silent": f"no heartbeat since it started (timeout {timeout}s); the next run restarts it",
        "dead": "its process exited; the next run restarts it",
    }.get(health, health)


def carry_since(new: tuple[Condition, ...], old: AgentStatus | None, now: datetime) -> tuple[Condition, ...]:
    """Keep a condition's `since` while its status holds; stamp `now` when it changes."""
    out = []
    for cond in new:
        before = old.condition(cond.type) if old else None
        since = before.since if before is not None and before.status == cond.status else now.isoformat(timespec="seconds")
        out.append(Condition(cond.type, cond.status, cond.reason, cond.message, since))
    return tuple(out)


def tenant_status(
    tenant: DesiredTenant,
    host: str,
    plan: Plan,
    observed: ObservedFleet,
    *,
    revision: str,
    started: Mapping[str, str],
    failed: Mapping[str, str],
    run: RunRecord | None,
    previous: TenantStatus | None,
    now: datetime,
) -> TenantStatus:
    old_agents = {a.name: a for a in previous.agents} if previous else {}
    agents = []
    for agent in sorted(tenant.on_host(host).values(), key=lambda a: a.name):
        health, conds = agent_conditions(agent, plan, observed, started, failed)
        beat = observed.heartbeats.get((agent.tenant, agent.name))
        session = observed.session(agent.launch.socket, agent.name)
        running_model = beat.model if beat else (session.marks.model or None if session else None)
        if agent.name in started:
            running_model = agent.model  # just started with it; the next run observes the same
        tokens = sum(beat.usage.values()) if beat else 0
        agents.append(AgentStatus(
            agent.name, agent.role, agent.alias, agent.lifecycle, agent.model, running_model, health,
            _rounded(tokens), carry_since(conds, old_agents.get(agent.name), now),
        ))
    runs = tuple(previous.runs) if previous else ()
    if run is not None:
        runs = (run, *runs)[:MAX_RUNS]
    systemd = observed.systemd.get(tenant.user)
    mode = "systemd --user" if systemd is not None and systemd.available else "tmux-only"
    notes = tuple(n for n in plan.notes if tenant.name in n)
    return TenantStatus(tenant.name, host, revision, mode, tuple(agents), runs, notes)


def _rounded(tokens: int) -> int:
    """Token counts to the thousand, so a working agent does not change status every tick."""
    return (tokens // 1000) * 1000
