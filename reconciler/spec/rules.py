"""Rules that span fields or files, which no single model can check alone (docs/reference.md, "Validation rules").

Each returns located errors; none reads files or the world.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from reconciler.errors import SpecError
from reconciler.spec.dsn import register_secret
from reconciler.spec.models import NAME_PATTERN, EnvFrom, Fleet, Role
from reconciler.spec.repo import TenantSpec
from reconciler.spec.resolve import lane_agent, resolve_agent
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
        *_check_lanes(spec, fleet, roles),
        *_check_budget(spec, fleet),
        *_check_tasks(spec),
        *_check_register_secrets(spec, fleet),
    ]


def _check_register_secrets(spec: TenantSpec, fleet: Fleet) -> list[SpecError]:
    """No agent's or lane's `env_from` reads the register's connection string (docs/register.md)."""
    if fleet.register is None:
        return []
    src = spec.sources["roster"]
    url = fleet.register.url_from
    owners: list[tuple[list[str | int], list[EnvFrom]]] = []
    owners += [(["agents", i], a.env_from) for i, a in enumerate(spec.roster.agents)]
    owners += [(["lanes", i], lane.env_from) for i, lane in enumerate(spec.roster.lanes)]
    errors = []
    for at, items in owners:
        for j, item in enumerate(items):
            why = register_secret(item.env, None if item.file is None else str(item.file), url.env,
                                  None if url.file is None else str(url.file))
            if why:
                errors.append(src.error([*at, "env_from", j, "env" if item.env else "file"],
                                        f"{why}: remove this env_from (a tenant's own run connects as its role)"))
    return errors


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


def _check_lanes(spec: TenantSpec, fleet: Fleet, roles: dict[str, Role]) -> list[SpecError]:
    """Lane names unique, min <= max, worker names valid and free, runtime and model as an agent's."""
    src = spec.sources["roster"]
    roster = spec.roster
    named = {a.name: i for i, a in enumerate(roster.agents)}
    workers = roster.lane_workers()
    errors: list[SpecError] = []
    seen: dict[str, int] = {}
    owner: dict[str, str] = {}
    known = ", ".join(sorted(fleet.runtimes))
    for i, lane in enumerate(roster.lanes):
        at: list[str | int] = ["lanes", i]
        if lane.name in seen:
            errors.append(src.error([*at, "name"], f"lane name {lane.name!r} is used twice in this roster (first at "
                                    f"lanes item {seen[lane.name] + 1}); tasks name lanes, so each name is unique"))
            continue
        seen[lane.name] = i
        if lane.max < lane.min:
            errors.append(src.error([*at, "max"], f"lane {lane.name}: `max` ({lane.max}) is below `min` ({lane.min}); "
                                    "raise max or lower min"))
        names = workers[lane.name]
        too_long = [n for n in names if not re.fullmatch(NAME_PATTERN, n)]
        if too_long:
            errors.append(src.error([*at, "role"], f"lane {lane.name}: worker name {too_long[-1]!r} is not a valid agent "
                                    "name (at most 40 characters); use a shorter role"))
        for worker in names:
            if worker in named:
                errors.append(src.error([*at, "name"], f"lane {lane.name}: its worker {worker!r} has the name of the "
                                        f"agent at agents item {named[worker] + 1}; rename that agent, or give the lane "
                                        "another role or a smaller max"))
                break
            if worker in owner:
                errors.append(src.error([*at, "name"], f"lane {lane.name}: its worker {worker!r} is also a worker of "
                                        f"lane {owner[worker]}; give one of them another role"))
                break
            owner[worker] = lane.name
        if too_long:
            continue
        res = resolve_agent(lane_agent(lane, names[0]), fleet, roles)
        where = {"roster": "", "role": f" (from roles/{lane.role}.yaml)", "fleet": " (the fleet default)", "ladder": ""}
        if res.runtime not in fleet.runtimes:
            errors.append(src.error([*at, "runtime"], f"lane {lane.name}: runtime {res.runtime!r}{where[res.runtime_from]} "
                                    f"is not defined in fleet.yaml; use one of {known}"))
            continue
        ladder = fleet.runtimes[res.runtime].ladder
        if res.model not in ladder:
            errors.append(src.error([*at, "model"], f"lane {lane.name}: model {res.model!r}{where[res.model_from]} is not "
                                    f"on runtime {res.runtime!r}'s ladder; use one of {', '.join(ladder)}"))
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
    lanes = {lane.name for lane in spec.roster.lanes}
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
            if task.lane is not None and task.agent is not None:
                errors.append(src.error(["missions", mi, "tasks", ti, "agent"], f"task {task.id} names both `agent:` and `lane:`; a task goes to a named agent or to a lane's workers: keep one"))
            elif task.lane is not None and task.lane not in lanes:
                have = f"lanes: {', '.join(sorted(lanes))}" if lanes else "it has no `lanes:`"
                errors.append(src.error(["missions", mi, "tasks", ti, "lane"], f"task {task.id} names lane {task.lane!r}, which is not in roster.yaml ({have}); add the lane or fix the name"))
    return errors + _check_depends(spec)


def _check_depends(spec: TenantSpec) -> list[SpecError]:
    """`depends_on` names tasks of this tenant, and no task waits on itself through others."""
    assert spec.tasks is not None
    src = spec.sources["tasks"]
    where: dict[str, tuple[int, int]] = {}
    for mi, mission in enumerate(spec.tasks.missions):
        for ti, task in enumerate(mission.tasks):
            where.setdefault(task.id, (mi, ti))
    errors = []
    edges: dict[str, list[str]] = {}
    for task_id, (mi, ti) in where.items():
        task = spec.tasks.missions[mi].tasks[ti]
        for di, dep in enumerate(task.depends_on):
            at: list[str | int] = ["missions", mi, "tasks", ti, "depends_on", di]
            if dep not in where:
                errors.append(src.error(at, f"task {task_id} depends on {dep!r}, which is no task of this tenant; use a task id of tasks.yaml"))
            elif dep == task_id:
                errors.append(src.error(at, f"task {task_id} depends on itself; remove {dep!r} from its depends_on"))
            else:
                edges.setdefault(task_id, []).append(dep)
    for cycle in _cycles(edges, where):
        mi, ti = where[cycle[0]]
        path = " -> ".join([*cycle, cycle[0]])
        errors.append(src.error(["missions", mi, "tasks", ti, "depends_on"],
                                f"tasks wait on each other in a cycle ({path}), so none of them could start; remove one of these depends_on"))
    return errors


def _cycles(edges: dict[str, list[str]], order: Iterable[str]) -> list[list[str]]:
    """Each dependency cycle once, starting at its first task in file order.

    >>> _cycles({"a": ["b"], "b": ["a"], "c": ["a"]}, ["a", "b", "c"])
    [['a', 'b']]
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in order:
        if node not in state:
            visit(node, [])
    return found


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


def check_lane_hosts(tenants: Iterable[TenantSpec]) -> list[SpecError]:
    """A lane's `host:` must be a host the repository already names (a roster's `host` or an
    agent's): a typo would otherwise start workers nowhere, silently."""
    specs = sorted(tenants, key=lambda t: t.name)
    known = {h for t in specs for h in (t.roster.host, *(a.host for a in t.roster.agents)) if h}
    errors = []
    for spec in specs:
        for i, lane in enumerate(spec.roster.lanes):
            if lane.host is not None and lane.host not in known:
                errors.append(spec.sources["roster"].error(
                    ["lanes", i, "host"], f"lane {lane.name}: host {lane.host!r} is named by no roster or agent of this "
                    f"repository (hosts: {', '.join(sorted(known))}); fix the name, or name the host in a roster first",
                    tenant=spec.name))
    return errors
