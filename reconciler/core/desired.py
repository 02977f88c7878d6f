"""Desired state: the validated specs resolved into the agents each host should run.

Pure: everything that varies by machine (the host being reconciled, the state
directory, `MOSAIC_AGENT_COMMAND`) comes in as an argument, so the same repository and
arguments always give the same agents and the same spec hashes. Where this host keeps a
program and whether a workdir exists are observed (`host_facts` says which to look up)
and come back as a `Resolved` (`resolve_desired`): launches then show exactly what runs,
while their spec hashes stay those of the specs. Each agent keeps its
`LaunchRecipe`, so the budget policy can rebuild its launch on a cheaper rung (another
model or runtime) through exactly the code that built the desired one.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from reconciler.model.launch import ENV_EXEC, LaunchSpec
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.model.observed import HOME_WORKDIR, Conversation, Resolved, SocketKey, program_positions
from reconciler.runtimes import ADAPTERS
from reconciler.runtimes.base import AgentRun, RuntimePaths
from reconciler.spec.models import Agent, Fleet, Lane, Role, command_argv
from reconciler.spec.repo import FleetRepo, TenantSpec
from reconciler.spec.resolve import lane_agent, resolve_agent

#: The hook an adapter's runtime calls (reconciler/hooks/fleet_hook.py), resolved while observing.
HOOK = "fleet-hook"


@dataclass(frozen=True, slots=True)
class LaunchRecipe:
    """Everything but the runtime and model that shapes an agent's process.

    Kept so that a launch can be rebuilt for another rung of the budget ladder with the
    same argv, environment and hash rules as the desired one (`build_launch`).
    """

    tenant: str
    agent: str
    role: str
    host: str
    socket: SocketKey
    workdir: str | None
    state_dir: str
    commands: tuple[tuple[str, str], ...]  # (runtime, command template) from fleet.yaml
    command_override: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # the agent's plain `env:`, sorted
    env_from: tuple[tuple[str, str, str], ...] = ()  # (name, "file" | "env", source) from `env_from:`
    adapters: tuple[tuple[str, str], ...] = ()  # (runtime, adapter) from fleet.yaml; absent: `command`
    persona: str | None = None  # the role's persona: adapters deliver it to the runtime
    trust_workdir: bool = True
    lane: str | None = None  # a lane worker's lane: `FLEET_LANE`, and `fleet` on the pane's PATH
    #: This host's facts (observed), applied to every launch built from the recipe.
    resolved: Resolved = field(default_factory=Resolved, compare=False, hash=False)

    def template(self, runtime: str) -> str:
        return self.command_override or dict(self.commands)[runtime]

    def conversation(self) -> Conversation:
        """The agent's conversation as observed (the state dir's id, a transcript on this
        host), else the default id, not yet started."""
        found = self.resolved.conversations.get((self.tenant, self.agent))
        return found or Conversation(default_session_id(self.state_dir, self.tenant, self.agent))

    def read_back(self, adapter: str) -> Conversation | None:
        """The session `adapter`'s runtime picked for this agent and the observe step read
        back (Codex), to resume; None: start a new one."""
        found = self.resolved.read_back.get((self.tenant, self.agent, adapter))
        return Conversation(found, resume=True) if found else None

    def adapter(self, runtime: str) -> str | None:
        """The runtime's event adapter (`claude`, `codex`), or None: its command runs as it is
        (and always with `MOSAIC_AGENT_COMMAND`, which replaces every runtime's command)."""
        name = None if self.command_override else dict(self.adapters).get(runtime)
        return name if name in ADAPTERS else None


@dataclass(frozen=True, slots=True)
class Worktree:
    """A lane worker's own git worktree: of `repo` (as the roster spells it), at `path` (its
    workdir for life, in the state directory), on a branch per task from `branch`."""

    repo: str
    path: str
    branch: str  # the lane's template: {agent}, {task}, {lane}

    def task_branch(self, agent: str, task: str, lane: str) -> str:
        """The branch of one task.

        >>> Worktree("~/api", "/s/t/worktrees/coder0-0", "fleet/{agent}/{task}").task_branch("coder0-0", "T7", "api")
        'fleet/coder0-0/T7'
        """
        return self.branch.format(agent=agent, task=task, lane=lane)


@dataclass(frozen=True, slots=True)
class DesiredAgent:
    tenant: str
    name: str
    host: str
    role: str
    alias: str | None
    lane: str | None
    lifecycle: str
    runtime: str
    model: str
    ladder: tuple[str, ...]
    heartbeat_timeout: timedelta
    startup_grace: timedelta
    launch: LaunchSpec
    recipe: LaunchRecipe
    working_timeout: timedelta = timedelta(minutes=30)  # event-driven runtimes (core/health.py)
    usage_limit_retry: timedelta = timedelta(minutes=15)  # the first resume back-off (core/resume.py)
    worktree: Worktree | None = None  # a lane worker's own git worktree (its workdir)


@dataclass(frozen=True, slots=True)
class DesiredLane:
    """A lane of the roster with its whole pool of workers built (lowest name first): how
    many of them are desired is decided each tick from the lane's tasks (core/lanes.py)."""

    name: str
    role: str
    host: str
    min: int
    max: int
    cooldown: timedelta
    workers: tuple[DesiredAgent, ...]
    reuse: bool = True  # false: one worker per task (retired once it has reported)


@dataclass(frozen=True, slots=True)
class DesiredTenant:
    name: str
    user: str | None
    socket: SocketKey
    agents: tuple[DesiredAgent, ...]
    down: bool = False  # `fleet down`: the tenant is desired stopped on every host
    lanes: tuple[DesiredLane, ...] = ()

    def on_host(self, host: str) -> dict[str, DesiredAgent]:
        return {a.name: a for a in self.agents if a.host == host}

    def pool(self) -> tuple[DesiredAgent, ...]:
        """Every agent that may run: the roster's and each lane's whole pool."""
        return (*self.agents, *(w for lane in self.lanes for w in lane.workers))


@dataclass(frozen=True, slots=True)
class DesiredFleet:
    """What `host` should run. `frozen` tenants exist in the repository but must not be
    touched this tick (invalid specs, or left out by `--tenant`)."""

    host: str
    tenants: Mapping[str, DesiredTenant] = field(default_factory=dict)
    frozen: frozenset[str] = frozenset()
    #: The FLEET_STATE_DIR every agent is started with; where this run reads heartbeats.
    state_dir: str = ""

    @property
    def sockets(self) -> tuple[SocketKey, ...]:
        return tuple(sorted({t.socket for t in self.tenants.values()}, key=lambda k: (k.user or "", k.name or "")))

    def hosts(self) -> set[str]:
        return {a.host for t in self.tenants.values() for a in t.pool()}


def spec_hash(argv: tuple[str, ...], env: tuple[tuple[str, str], ...], workdir: str | None, socket: SocketKey,
              prepared: tuple[object, ...] | None = None) -> str:
    """A short digest of everything that shapes the running process; a change means restart.

    `prepared` is what an adapter writes before the start (its name, the persona, the trust
    setting): absent for a plain command, so those agents keep the hash they always had.
    """
    doc: dict[str, object] = {"argv": argv, "env": env, "workdir": workdir, "socket": [socket.user, socket.name]}
    if prepared is not None:
        doc["prepared"] = prepared
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_desired(
    repo: FleetRepo,
    *,
    host: str,
    state_dir: str,
    command_override: str | None = None,
    only_tenants: Collection[str] | None = None,
    down: bool = False,
) -> DesiredFleet:
    """Resolve the loaded repository into desired agents, for `host`; with `down`, the
    tenants in scope are desired with no agent at all (`fleet down`)."""
    fleet = repo.fleet
    frozen = set(repo.invalid_tenants)
    tenants: dict[str, DesiredTenant] = {}
    for name, spec in sorted(repo.tenants.items()):
        if fleet is None or (only_tenants is not None and name not in only_tenants):
            frozen.add(name)
            continue
        tenant = desired_tenant(spec, fleet, repo.roles, state_dir, command_override)
        tenants[name] = replace(tenant, agents=(), lanes=(), down=True) if down else tenant
    return DesiredFleet(host, tenants, frozenset(frozen), state_dir)


def desired_tenant(
    spec: TenantSpec, fleet: Fleet, roles: Mapping[str, Role], state_dir: str, command_override: str | None
) -> DesiredTenant:
    roster = spec.roster
    socket = SocketKey(roster.user, roster.socket_name or fleet.defaults.socket_name)
    agents = tuple(
        desired_agent(spec.name, a, roster.host, socket, fleet, roles, state_dir, command_override)
        for a in roster.agents
    )
    names = roster.lane_workers()
    lanes = tuple(
        DesiredLane(lane.name, lane.role, lane.host or roster.host, lane.min, lane.max, lane.cooldown, tuple(
            lane_worker(spec.name, lane, name, roster.host, socket, fleet, roles, state_dir, command_override)
            for name in names[lane.name]), lane.reuse)
        for lane in roster.lanes
    )
    return DesiredTenant(spec.name, roster.user, socket, agents, lanes=lanes)


def lane_worker(tenant: str, lane: Lane, name: str, default_host: str, socket: SocketKey, fleet: Fleet,
                roles: Mapping[str, Role], state_dir: str, command_override: str | None) -> DesiredAgent:
    """One worker of `lane`: a named agent with the lane's fields and `FLEET_LANE`; with
    `worktree:`, its workdir is its own worktree in the state directory (the same path
    for its whole life, so its spec hash never moves from task to task)."""
    agent = lane_agent(lane, name)
    tree = None
    if lane.worktree is not None:
        path = str(StateLayout(Path(state_dir)).worktree(tenant, name))
        tree = Worktree(lane.worktree.repo, path, lane.worktree.branch)
        agent = agent.model_copy(update={"workdir": path})
    worker = desired_agent(tenant, agent, default_host, socket, fleet, roles, state_dir, command_override)
    recipe = replace(worker.recipe, lane=lane.name)
    return replace(worker, worktree=tree, recipe=recipe, launch=build_launch(recipe, worker.runtime, worker.model))


def build_launch(recipe: LaunchRecipe, runtime: str, model: str, account: str | None = None) -> LaunchSpec:
    """The launch of one agent on (runtime, model); `account` adds `FLEET_ACCOUNT`.

    The account is named only when the budget policy picked one of several accounts
    of a runtime (a wrapper maps it to credentials), so agents with one account per
    runtime keep the spec hash they always had.
    """
    values = {"model": model, "agent": recipe.agent, "tenant": recipe.tenant, "role": recipe.role}
    command = command_argv(recipe.template(runtime), values)
    adapter = recipe.adapter(runtime)
    added: tuple[tuple[str, str], ...] = ()
    hashed = command
    session_id = ""
    if adapter is not None:
        # The hash is of the launch without the conversation flags: `--session-id` on the
        # first start and `--resume` after it are the same spec, so neither restarts.
        hashed, added = adapter_launch(recipe, adapter, command[0], model)
        conversation = recipe.conversation() if ADAPTERS[adapter].fixes_session else recipe.read_back(adapter)
        command, _ = adapter_launch(recipe, adapter, command[0], model, conversation)
        session_id = conversation.session_id if conversation else ""
    argv = with_env_from(command, recipe.env_from)
    env = (
        *recipe.env,
        *added,
        *((("FLEET_ACCOUNT", account),) if account else ()),
        ("FLEET_AGENT", recipe.agent),
        ("FLEET_HOST", recipe.host),
        *((("FLEET_LANE", recipe.lane),) if recipe.lane else ()),
        ("FLEET_MODEL", model),
        (STATE_DIR_ENV, recipe.state_dir),
        ("FLEET_TENANT", recipe.tenant),
    )
    return recipe.resolved.launch(LaunchSpec(
        tenant=recipe.tenant,
        agent=recipe.agent,
        host=recipe.host,
        socket=recipe.socket,
        argv=argv,
        env=env,
        workdir=recipe.workdir,
        model=model,
        # of the specs, before `resolved`
        spec_hash=spec_hash(with_env_from(hashed, recipe.env_from), env, recipe.workdir, recipe.socket,
                            None if adapter is None else (adapter, recipe.persona, recipe.trust_workdir)),
        adapter=adapter,
        persona=recipe.persona if adapter else None,
        trust_workdir=recipe.trust_workdir,
        session_id=session_id,
    ))


def next_session_id(session_id: str) -> str:
    """The id after `session_id`, for a conversation that was started but holds nothing:
    derived, like the default, so the plan names what apply starts.

    >>> next_session_id("0f0e0d0c-0b0a-4909-8807-060504030201") != "0f0e0d0c-0b0a-4909-8807-060504030201"
    True
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mosaic-fleet:next:{session_id}"))


def default_session_id(state_dir: str, tenant: str, agent: str) -> str:
    """The conversation id of an agent that has none in the state directory yet: derived,
    so a dry-run and the apply after it name the same one (apply then keeps it).

    >>> default_session_id("/s", "jarvis", "orchestrator") == default_session_id("/s", "jarvis", "orchestrator")
    True
    >>> default_session_id("/s", "jarvis", "orchestrator") != default_session_id("/other", "jarvis", "orchestrator")
    True
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mosaic-fleet:{state_dir}:{tenant}:{agent}"))


def adapter_run(launch: LaunchSpec, home: str) -> tuple[AgentRun, RuntimePaths]:
    """What an adapter is given for `launch` (apply's `prepare`, and `adapter_launch`):
    `home` is the agent user's home (`~` in the pure core, where it is not known)."""
    workdir = launch.workdir or "~"
    if workdir == "~" or workdir.startswith("~/"):
        workdir = home + workdir[1:]
    run = AgentRun(launch.tenant, launch.host, launch.agent, launch.model, Path(workdir), launch.session_id,
                   persona=launch.persona, trust_workdir=launch.trust_workdir, env=dict(launch.env))
    state_dir = dict(launch.env).get(STATE_DIR_ENV, "")
    return run, RuntimePaths(Path(home), Path(state_dir), launch.hook, "")


def adapter_launch(recipe: LaunchRecipe, adapter: str, program: str, model: str,
                   conversation: Conversation | None = None,
                   ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The argv and the added variables of an adapter runtime (reconciler/runtimes/):
    `program` is the runtime's binary as fleet.yaml names it (resolved while observing),
    and the hook is `fleet-hook` (likewise). The agent's own `env:` wins over the adapter's;
    the `FLEET_*` identity is build_launch's. With a `conversation`, the runtime starts on
    that session id, or resumes it when it has a transcript."""
    run = AgentRun(recipe.tenant, recipe.host, recipe.agent, model, Path(recipe.workdir or "~"),
                   conversation.session_id if conversation else "", persona=recipe.persona,
                   resume=bool(conversation and conversation.resume), trust_workdir=recipe.trust_workdir,
                   env=dict(recipe.env))
    paths = RuntimePaths(Path("~"), Path(recipe.state_dir), HOOK, program)
    launch = ADAPTERS[adapter].launch(run, paths)
    own = {name for name, _ in recipe.env}
    added = tuple(sorted((k, v) for k, v in launch.env.items() if k not in own and not k.startswith("FLEET_")))
    return launch.argv, added


def host_facts(desired: DesiredFleet) -> tuple[frozenset[str], frozenset[tuple[str | None, str]]]:
    """What the observe step must look up on this host for `desired.host`'s agents: every
    program a launch may start (on any runtime the budget policy may move an agent to)
    and every (socket user, workdir)."""
    programs: set[str] = set()
    workdirs: set[tuple[str | None, str]] = set()
    for tenant in desired.tenants.values():
        for agent in (a for a in tenant.pool() if a.host == desired.host):
            bare = replace(agent.recipe, resolved=Resolved())
            runtimes = {agent.runtime} if bare.command_override else {agent.runtime, *dict(bare.commands)}
            for runtime in runtimes:
                launch = build_launch(bare, runtime, agent.model)
                programs.update(launch.argv[at] for at in program_positions(launch.argv))
                if launch.adapter is not None:
                    programs.add(launch.hook)
            if bare.workdir is not None and agent.worktree is None:  # a worktree is made by apply, before the start
                workdirs.add((bare.socket.user, bare.workdir))
    return frozenset(programs), frozenset(workdirs)


def conversation_facts(desired: DesiredFleet) -> frozenset[tuple[str | None, str, str, str]]:
    """The conversations the observe step must look up for `desired.host`'s agents that run
    (or may be moved to) a runtime whose session id the fleet fixes: (socket user, tenant,
    agent, the runtime's config folder: the agent's `CLAUDE_CONFIG_DIR`, else `~/.claude`)."""
    found: set[tuple[str | None, str, str, str]] = set()
    for tenant in desired.tenants.values():
        for agent in (a for a in tenant.pool() if a.host == desired.host):
            recipe = agent.recipe
            runtimes = {agent.runtime} if recipe.command_override else {agent.runtime, *dict(recipe.commands)}
            adapters = {recipe.adapter(runtime) for runtime in runtimes}
            if any(name is not None and ADAPTERS[name].fixes_session for name in adapters):
                folder = dict(recipe.env).get("CLAUDE_CONFIG_DIR") or "~/.claude"
                found.add((recipe.socket.user, recipe.tenant, recipe.agent, folder))
    return frozenset(found)


def codex_facts(desired: DesiredFleet) -> frozenset[tuple[str | None, str, str, str, str]]:
    """The Codex agents of `desired.host` whose rollouts the observe step reads for a
    failed turn (core/held.py): (socket user, tenant, agent, `CODEX_HOME` or `~/.codex`,
    workdir)."""
    return frozenset(
        (a.launch.socket.user, a.tenant, a.name, dict(a.launch.env).get("CODEX_HOME") or "~/.codex",
         a.launch.workdir or "~")
        for tenant in desired.tenants.values() for a in tenant.on_host(desired.host).values()
        if a.launch.adapter == "codex"
    )


def read_back_facts(desired: DesiredFleet) -> frozenset[tuple[str | None, str, str, str, str, str]]:
    """The sessions the observe step must read back for `desired.host`'s agents that run
    (or may be moved to) a runtime that picks its own session id (Codex): (socket user,
    tenant, agent, adapter, the runtime's home: the agent's `CODEX_HOME`, else `~/.codex`,
    the workdir the pane starts in)."""
    found: set[tuple[str | None, str, str, str, str, str]] = set()
    for tenant in desired.tenants.values():
        for agent in tenant.on_host(desired.host).values():
            recipe = agent.recipe
            runtimes = {agent.runtime} if recipe.command_override else {agent.runtime, *dict(recipe.commands)}
            if "codex" in {recipe.adapter(runtime) for runtime in runtimes}:
                home = dict(recipe.env).get("CODEX_HOME") or "~/.codex"
                workdir = agent.launch.workdir or HOME_WORKDIR
                found.add((recipe.socket.user, recipe.tenant, recipe.agent, "codex", home, workdir))
    return frozenset(found)


def resolve_desired(desired: DesiredFleet, resolved: Resolved) -> DesiredFleet:
    """`desired` with this host's facts in every launch (and every recipe, so a budget
    rung is resolved too); spec hashes do not change."""
    def agent(a: DesiredAgent) -> DesiredAgent:
        recipe = replace(a.recipe, resolved=resolved)
        adapter = a.launch.adapter or ""
        if (a.launch.session_id and (a.tenant, a.name) in resolved.conversations) or \
                (a.tenant, a.name, adapter) in resolved.read_back:
            return replace(a, launch=build_launch(recipe, a.runtime, a.model), recipe=recipe)  # its conversation
        return replace(a, launch=resolved.launch(a.launch), recipe=recipe)

    tenants = {n: replace(t, agents=tuple(agent(a) for a in t.agents),
                          lanes=tuple(replace(lane, workers=tuple(agent(w) for w in lane.workers)) for lane in t.lanes))
               for n, t in desired.tenants.items()}
    return replace(desired, tenants=tenants)


def with_env_from(argv: tuple[str, ...], env_from: tuple[tuple[str, str, str], ...]) -> tuple[str, ...]:
    """Prefix `argv` with the launcher when the agent has `env_from:`; only references
    (paths, variable names) are in the argv, never a value.

    >>> with_env_from(("claude",), (("KEY", "file", "~/k"), ("GH", "env", "GH_TOKEN")))
    ('fleet-env-exec', '--file', 'KEY=~/k', '--env', 'GH=GH_TOKEN', '--', 'claude')
    >>> with_env_from(("claude",), ())
    ('claude',)
    """
    if not env_from:
        return argv
    refs = [arg for name, kind, source in env_from for arg in (f"--{kind}", f"{name}={source}")]
    return (ENV_EXEC, *refs, "--", *argv)


def on_rung(agent: DesiredAgent, runtime: str, model: str, ladder: tuple[str, ...], account: str | None = None) -> DesiredAgent:
    """`agent` as it runs on another rung of the budget ladder (same name, same session)."""
    if (runtime, model, account) == (agent.runtime, agent.model, None):
        return agent
    return replace(agent, runtime=runtime, model=model, ladder=ladder,
                   launch=build_launch(agent.recipe, runtime, model, account))



def role_prompt(role: Role | None) -> str | None:
    """What an adapter gives the runtime for the agent's role: the persona, then the
    role's skills as a list. A persona alone is passed as written (its hash unchanged).

    >>> from reconciler.spec.models import Role
    >>> print(role_prompt(Role(apiVersion="fleet.mosaicstack.dev/v1", kind="Role", name="coder",
    ...                        persona="You write code.\\n", skills=["tests first", "small changes"])))
    You write code.
    <BLANKLINE>
    Your skills in this role:
    - tests first
    - small changes
    <BLANKLINE>
    >>> role_prompt(Role(apiVersion="fleet.mosaicstack.dev/v1", kind="Role", name="coder")) is None
    True
    """
    if role is None or not role.skills:
        return role.persona if role is not None else None
    skills = "Your skills in this role:\n" + "".join(f"- {skill}\n" for skill in role.skills)
    return f"{role.persona.rstrip()}\n\n{skills}" if role.persona else skills


def desired_agent(
    tenant: str,
    agent: Agent,
    default_host: str,
    socket: SocketKey,
    fleet: Fleet,
    roles: Mapping[str, Role],
    state_dir: str,
    command_override: str | None,
) -> DesiredAgent:
    res = resolve_agent(agent, fleet, dict(roles))
    host = agent.host or default_host
    role = roles.get(agent.role)
    recipe = LaunchRecipe(
        tenant=tenant,
        agent=agent.name,
        role=agent.role,
        host=host,
        socket=socket,
        workdir=res.workdir,
        state_dir=state_dir,
        commands=tuple((name, runtime.command_line()) for name, runtime in fleet.runtimes.items()),
        adapters=tuple((name, runtime.adapter) for name, runtime in fleet.runtimes.items()
                       if runtime.adapter not in ("command", "stub")),
        persona=role_prompt(role),
        trust_workdir=agent.trust_workdir,
        command_override=command_override,
        env=tuple(sorted(agent.env.items())),
        env_from=tuple((e.name, "file", e.file) if e.file is not None else (e.name, "env", e.env or "")
                       for e in agent.env_from),
    )
    return DesiredAgent(
        tenant=tenant,
        name=agent.name,
        host=host,
        role=agent.role,
        alias=agent.alias,
        lane=agent.lane,
        lifecycle=res.lifecycle,
        runtime=res.runtime,
        model=res.model,
        ladder=tuple(fleet.runtimes[res.runtime].ladder),
        heartbeat_timeout=fleet.defaults.heartbeat_timeout,
        startup_grace=fleet.defaults.startup_grace,
        launch=build_launch(recipe, res.runtime, res.model),
        recipe=recipe,
        working_timeout=fleet.defaults.working_timeout,
        usage_limit_retry=fleet.defaults.usage_limit_retry,
    )
