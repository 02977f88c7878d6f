"""Rules that span fields or files, which no single model can check alone (docs/reference.md, "Validation rules").

Each returns located errors; none reads files or the world.
"""

from __future__ import annotations

from collections import Counter

from reconciler.errors import SpecError
from reconciler.spec.models import Fleet, Role
from reconciler.spec.repo import TenantSpec
from reconciler.spec.resolve import resolve_agent
from reconciler.spec.yamlsource import Source


def check_fleet(fleet: Fleet, src: Source) -> list[SpecError]:
    errors = []
    known = ", ".join(sorted(fleet.runtimes))
    d = fleet.defaults
    if d.runtime not in fleet.runtimes:
        errors.append(src.error(["defaults", "runtime"], f"default runtime {d.runtime!r} is not defined under `runtimes:`; use one of {known}"))
    elif d.model not in fleet.runtimes[d.runtime].ladder:
        ladder = ", ".join(fleet.runtimes[d.runtime].ladder)
        errors.append(src.error(["defaults", "model"], f"default model {d.model!r} is not on runtime {d.runtime!r}'s ladder; use one of {ladder}"))
    for i, name in enumerate(fleet.downgrade):
        if name not in fleet.runtimes:
            errors.append(src.error(["downgrade", i], f"downgrade names runtime {name!r}, which is not defined under `runtimes:`; use one of {known}"))
    for name, count in Counter(fleet.downgrade).items():
        if count > 1:
            errors.append(src.error(["downgrade"], f"downgrade lists {name!r} {count} times; list each runtime once"))
    return errors


def check_tenant(spec: TenantSpec, fleet: Fleet, roles: dict[str, Role]) -> list[SpecError]:
    return [
        *_check_tenant_names(spec),
        *_check_floor(spec),
        *_check_agents(spec, fleet, roles),
        *_check_budget(spec, fleet),
        *_check_tasks(spec),
    ]


def _check_tenant_names(spec: TenantSpec) -> list[SpecError]:
    docs = (("roster", spec.roster), ("budget", spec.budget), ("tasks", spec.tasks))
    return [e for key, doc in docs if doc is not None for e in check_folder(doc.tenant, spec.sources[key], spec.name)]


def check_folder(tenant: str, source: Source, folder: str) -> list[SpecError]:
    """A document's `tenant:` must name the folder it lives in."""
    if tenant == folder:
        return []
    return [source.error(["tenant"], f"tenant is {tenant!r} but the folder is tenants/{folder}/; they must be equal (rename one)")]


def _check_floor(spec: TenantSpec) -> list[SpecError]:
    src = spec.sources["roster"]
    agents = spec.roster.agents
    orchestrators = [i for i, a in enumerate(agents) if a.role == "orchestrator"]
    errors = []
    if not orchestrators:
        errors.append(src.error(["agents"], "no agent has `role: orchestrator`; every tenant needs exactly one orchestrator (and at least one enhancer)", key=True))
    for i in orchestrators[1:]:
        first = agents[orchestrators[0]].name
        errors.append(src.error(["agents", i, "role"], f"a second orchestrator ({agents[i].name!r}, after {first!r}); a tenant has exactly one orchestrator: give this agent another role"))
    if not any(a.role == "enhancer" for a in agents):
        errors.append(src.error(["agents"], "no agent has `role: enhancer`; every tenant needs at least one enhancer beside its orchestrator", key=True))
    return errors


def _check_agents(spec: TenantSpec, fleet: Fleet, roles: dict[str, Role]) -> list[SpecError]:
    src = spec.sources["roster"]
    errors = []
    seen: dict[str, int] = {}
    known = ", ".join(sorted(fleet.runtimes))
    for i, agent in enumerate(spec.roster.agents):
        if agent.name in seen:
            errors.append(src.error(["agents", i, "name"], f"agent name {agent.name!r} is used twice in this roster (first at item {seen[agent.name] + 1}); names are tmux sessions and must be unique"))
        else:
            seen[agent.name] = i
        res = resolve_agent(agent, fleet, roles)
        where = {"roster": "", "role": f" (from roles/{agent.role}.yaml)", "fleet": " (the fleet default)", "ladder": ""}
        if res.runtime not in fleet.runtimes:
            errors.append(src.error(["agents", i, "runtime"], f"runtime {res.runtime!r}{where[res.runtime_from]} is not defined in fleet.yaml; use one of {known}"))
            continue
        ladder = fleet.runtimes[res.runtime].ladder
        if res.model not in ladder:
            errors.append(src.error(["agents", i, "model"], f"model {res.model!r}{where[res.model_from]} is not on runtime {res.runtime!r}'s ladder; use one of {', '.join(ladder)}"))
    return errors


def _check_budget(spec: TenantSpec, fleet: Fleet) -> list[SpecError]:
    budget = spec.budget
    if budget is None:
        return []
    src = spec.sources["budget"]
    errors = []
    if budget.pacing == "rapid" and not budget.authorized_by:
        errors.append(src.error(["pacing"], "`pacing: rapid` spends ahead of the even pace and needs `authorized_by:` naming who allowed it; add it or use `pacing: even-spread`"))
    known = ", ".join(sorted(fleet.runtimes))
    seen: set[str] = set()
    for i, account in enumerate(budget.accounts):
        if account.name in seen:
            errors.append(src.error(["accounts", i, "name"], f"account {account.name!r} is listed twice; account names must be unique"))
        seen.add(account.name)
        if account.runtime not in fleet.runtimes:
            errors.append(src.error(["accounts", i, "runtime"], f"runtime {account.runtime!r} is not defined in fleet.yaml; use one of {known}"))
    return errors


def _check_tasks(spec: TenantSpec) -> list[SpecError]:
    tasks = spec.tasks
    if tasks is None:
        return []
    src = spec.sources["tasks"]
    names = {a.name for a in spec.roster.agents}
    errors = []
    mission_ids: set[str] = set()
    task_ids: set[str] = set()
    for mi, mission in enumerate(tasks.missions):
        if mission.id in mission_ids:
            errors.append(src.error(["missions", mi, "id"], f"mission id {mission.id!r} is used twice; ids must be unique"))
        mission_ids.add(mission.id)
        for ti, task in enumerate(mission.tasks):
            if task.id in task_ids:
                errors.append(src.error(["missions", mi, "tasks", ti, "id"], f"task id {task.id!r} is used twice in this tenant; ids must be unique"))
            task_ids.add(task.id)
            if task.agent is not None and task.agent not in names:
                errors.append(src.error(["missions", mi, "tasks", ti, "agent"], f"task {task.id} names agent {task.agent!r}, which is not in roster.yaml; use one of {', '.join(sorted(names))}"))
    return errors


def check_shared_sockets(tenants: list[TenantSpec], fleet: Fleet | None) -> list[SpecError]:
    """Two tenants as the same Linux user on the same tmux socket would see and stop each
    other's sessions. Both are set aside (each gets the error), so adding a new tenant
    cannot make an existing one's agents look like someone else's."""
    default_socket = fleet.defaults.socket_name if fleet else None
    by_key: dict[tuple[str | None, str | None], list[TenantSpec]] = {}
    for spec in sorted(tenants, key=lambda t: t.name):
        by_key.setdefault((spec.roster.user, spec.roster.socket_name or default_socket), []).append(spec)
    errors = []
    for (user, socket), group in by_key.items():
        if len(group) < 2:
            continue
        names = " and ".join(repr(t.name) for t in group)
        who = f"user {user!r}" if user else "the reconciler's user (no `user:`)"
        sock = f"tmux socket {socket!r}" if socket else "tmux's default socket"
        for spec in group:
            at = ["socket_name"] if spec.roster.socket_name else ["tenant"]
            errors.append(spec.sources["roster"].error(
                at, f"tenants {names} both run as {who} on {sock}; give each its own `socket_name:` or a different `user:`",
                key=True, tenant=spec.name))
    return errors
