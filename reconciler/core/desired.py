"""Desired state: the validated specs resolved into the agents each host should run.

Pure: everything that varies by machine (the host being reconciled, the state
directory, `MOSAIC_AGENT_COMMAND`) comes in as an argument, so the same repository and
arguments always give the same agents and the same spec hashes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey
from reconciler.spec.models import Agent, Fleet, Role, command_argv
from reconciler.spec.repo import FleetRepo, TenantSpec
from reconciler.spec.resolve import resolve_agent


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


@dataclass(frozen=True, slots=True)
class DesiredTenant:
    name: str
    user: str | None
    socket: SocketKey
    agents: tuple[DesiredAgent, ...]

    def on_host(self, host: str) -> dict[str, DesiredAgent]:
        return {a.name: a for a in self.agents if a.host == host}


@dataclass(frozen=True, slots=True)
class DesiredFleet:
    """What `host` should run. `frozen` tenants exist in the repository but must not be
    touched this tick (invalid specs, or left out by `--tenant`)."""

    host: str
    tenants: Mapping[str, DesiredTenant] = field(default_factory=dict)
    frozen: frozenset[str] = frozenset()

    @property
    def sockets(self) -> tuple[SocketKey, ...]:
        return tuple(sorted({t.socket for t in self.tenants.values()}, key=lambda k: (k.user or "", k.name or "")))

    def hosts(self) -> set[str]:
        return {a.host for t in self.tenants.values() for a in t.agents}


def spec_hash(argv: tuple[str, ...], env: tuple[tuple[str, str], ...], workdir: str | None, socket: SocketKey) -> str:
    """A short digest of everything that shapes the running process; a change means restart."""
    blob = json.dumps(
        {"argv": argv, "env": env, "workdir": workdir, "socket": [socket.user, socket.name]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_desired(
    repo: FleetRepo,
    *,
    host: str,
    state_dir: str,
    command_override: str | None = None,
    only_tenants: Collection[str] | None = None,
) -> DesiredFleet:
    """Resolve the loaded repository into desired agents, for `host`."""
    fleet = repo.fleet
    frozen = set(repo.invalid_tenants)
    tenants: dict[str, DesiredTenant] = {}
    for name, spec in sorted(repo.tenants.items()):
        if fleet is None or (only_tenants is not None and name not in only_tenants):
            frozen.add(name)
            continue
        tenants[name] = desired_tenant(spec, fleet, repo.roles, state_dir, command_override)
    return DesiredFleet(host, tenants, frozenset(frozen))


def desired_tenant(
    spec: TenantSpec, fleet: Fleet, roles: Mapping[str, Role], state_dir: str, command_override: str | None
) -> DesiredTenant:
    roster = spec.roster
    socket = SocketKey(roster.user, roster.socket_name or fleet.defaults.socket_name)
    agents = tuple(
        desired_agent(spec.name, a, roster.host, socket, fleet, roles, state_dir, command_override)
        for a in roster.agents
    )
    return DesiredTenant(spec.name, roster.user, socket, agents)


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
    template = command_override or fleet.runtimes[res.runtime].command
    values = {"model": res.model, "agent": agent.name, "tenant": tenant, "role": agent.role}
    argv = command_argv(template, values)
    env = (
        ("FLEET_AGENT", agent.name),
        ("FLEET_HOST", host),
        ("FLEET_MODEL", res.model),
        ("FLEET_STATE_DIR", state_dir),
        ("FLEET_TENANT", tenant),
    )
    launch = LaunchSpec(
        tenant=tenant,
        agent=agent.name,
        host=host,
        socket=socket,
        argv=argv,
        env=env,
        workdir=res.workdir,
        model=res.model,
        spec_hash=spec_hash(argv, env, res.workdir, socket),
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
        launch=launch,
    )
