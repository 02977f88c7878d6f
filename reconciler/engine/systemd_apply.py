"""The apply step's systemd half: core agents under their own units, every tmux server under its socket's.

engine/apply.py calls `apply_units` for one (tenant, socket) group, inside the tenant
lock, after its tmux kills and before its direct spawns. It persists unit files in the
user manager's folder. Why at all: a tmux server lives in the cgroup of whoever started
it, so a server started by an agent's unit dies when that unit stops (agent-deck #1721),
and one started by a reconciler running as a service dies when that service ends. So
whenever our user manager answers, the socket's server unit is made active before any
`tmux new-session` on that socket, and nothing else ever starts a server there.

Every step is idempotent and batched: at most one `disable --now`, one `enable`, one
`daemon-reload`, one server start and one `restart` per group, whatever its size.
Outcomes are still read back from tmux by the caller.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.drivers import tmux, units, users
from reconciler.engine.tick import Tick
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey

#: Users whose linger this process already tried to enable (at most once each).
_LINGER_TRIED: set[str] = set()


@dataclass(frozen=True, slots=True)
class GroupUnits:
    """What one group needs to go through systemd.

    `manager` is False when this tick found no user manager: then nothing is started
    through systemd (tmux-only), but unit files the fleet wrote earlier are still
    retired when their agent stops.
    """

    socket: SocketKey
    tenant: str
    directory: Path
    core: frozenset[str]
    manager: bool


@dataclass(slots=True)
class UnitsResult:
    """What `apply_units` did, for the caller's spawns and read-back.

    `spawn_directly` are the launches apply must still create with tmux itself (the
    ephemeral ones, and core ones when the server is not the unit's); `blocked` says why
    no session may be created on this socket now; `under_units` are agents whose unit
    was restarted.
    """

    spawn_directly: list[LaunchSpec] = field(default_factory=list)
    blocked: str = ""
    under_units: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def group_units(tick: Tick, tenant: str, socket: SocketKey) -> GroupUnits | None:
    """The systemd side of one group, or None for another user's socket (that user's
    own run drives its manager)."""
    if not users.is_me(socket.user):
        return None
    snapshot = tick.observed.systemd.get(socket.user)
    desired = tick.desired.tenants.get(tenant)
    core = frozenset(
        a.name for a in (desired.agents if desired else ()) if a.lifecycle == "core" and a.host == tick.desired.host
    )
    directory = units.user_unit_dir(os.environ, str(Path.home()))
    # Our own socket, as our units address it: `-L NAME`, whether or not `user:` names us.
    return GroupUnits(SocketKey(None, socket.name), tenant, directory, core,
                      manager=snapshot is not None and snapshot.available)


def absolute_program(launch: LaunchSpec) -> LaunchSpec:
    """Pin the program to the path our PATH finds: a unit-owned server runs with the user
    manager's PATH, which may lack the reconciler's. The spec hash does not change."""
    found = shutil.which(launch.argv[0]) if launch.argv and "/" not in launch.argv[0] else None
    return replace(launch, argv=(str(Path(found).absolute()), *launch.argv[1:])) if found else launch


def apply_units(group: GroupUnits, leaving: Sequence[str], launches: Sequence[LaunchSpec]) -> UnitsResult:
    """Retire the units of `leaving` agents, then prepare `launches` (already prepared
    by apply, their old sessions killed): write files, enable, reload, make the server
    unit active, restart the core units. The caller spawns `spawn_directly` afterwards."""
    result = UnitsResult()
    changed = _retire(group, leaving, result)
    host = this_host() if launches and group.manager else None
    if host is None:
        _reload_if(changed, result)
        if launches and group.manager:
            result.blocked = "tmux is not on PATH, so no unit can run it"
        else:
            result.spawn_directly = list(launches)
        return result
    launches = [replace(absolute_program(launch), socket=group.socket) for launch in launches]
    core = [launch for launch in launches if launch.agent in group.core]
    result.spawn_directly = [launch for launch in launches if launch.agent not in group.core]
    try:
        server = units.server_unit_name(group.socket)
    except ValueError as exc:
        result.spawn_directly, result.blocked = [], f"no server unit for this socket: {exc}"
        return result
    core_units, wrote = _stage(group, core, host, result)
    wrote |= units.write_unit(group.directory, server, units.server_unit_text(group.socket, host))
    linked = _enable(list(core_units), result)
    _reload_if(changed or wrote or linked or units.need_reload([server, *core_units]), result)
    owned = _ensure_server(group.socket, server, result)
    if owned is None:
        result.spawn_directly = []
    elif not owned:
        result.spawn_directly += [launch for launch in core if launch.agent in core_units.values()]
    else:
        _restart(core_units, result)
        _maybe_linger(bool(core_units), result)
    return result


def _retire(group: GroupUnits, leaving: Sequence[str], result: UnitsResult) -> bool:
    """`disable --now` and delete the fleet's units of agents that leave systemd's care
    (stopped, or no longer core). True when files were removed."""
    names = [name for name in (_unit_name(group.tenant, agent) for agent in leaving) if name]
    names = [name for name in names if units.is_ours(units.read_unit(group.directory, name))]
    if not names:
        return False
    ran = units.systemctl("disable", "--now", "--no-reload", *names)
    if not ran.ok:
        result.problems.append(f"could not disable {', '.join(names)} ({ran.said}); left in place, retried at the next stop")
        return False
    for name in names:
        units.remove_unit(group.directory, name)
    return True


def _unit_name(tenant: str, agent: str) -> str:
    """The agent's unit name, or "" when the marks of a session name none (a tenant that
    only a foreign tool could have written, never a unit of ours)."""
    try:
        return units.agent_unit_name(tenant, agent)
    except ValueError:
        return ""


def _stage(
    group: GroupUnits, core: Sequence[LaunchSpec], host: units.Host, result: UnitsResult
) -> tuple[dict[str, str], bool]:
    """Write each core agent's unit file, only when its bytes change: (unit -> agent,
    whether any file changed). An agent whose unit cannot be rendered (a value systemd
    cannot carry) is started directly instead, with a note."""
    staged: dict[str, str] = {}
    wrote = False
    for launch in core:
        try:
            name = units.agent_unit_name(group.tenant, launch.agent)
            text = units.agent_unit_text(launch, host)
        except ValueError as exc:
            result.problems.append(f"{group.tenant}/{launch.agent}: no unit ({exc}); it runs without one")
            result.spawn_directly.append(launch)
            continue
        wrote |= units.write_unit(group.directory, name, text)
        staged[name] = launch.agent
    return staged, wrote


def _enable(names: list[str], result: UnitsResult) -> bool:
    """One `enable --no-reload` for boot survival; True when it created links (reload)."""
    if not names:
        return False
    ran = units.systemctl("enable", "--no-reload", *names, timeout=30.0)
    if not ran.ok:
        result.problems.append(f"could not enable {', '.join(names)} ({ran.said}); they will not start at boot")
    return "Created symlink" in ran.said


def _reload_if(changed: bool, result: UnitsResult) -> None:
    """The group's one daemon-reload, only when a unit file or link changed."""
    if not changed:
        return
    ran = units.systemctl("daemon-reload")
    if not ran.ok:
        result.problems.append(f"systemctl --user daemon-reload failed: {ran.said}")


def _ensure_server(socket: SocketKey, server: str, result: UnitsResult) -> bool | None:
    """Make the server unit active before any new-session: True when the unit owns the
    server, False when a server it did not start already answers (spawn directly, with a
    note), None when no session may be created (`result.blocked` says why).

    An `activating` unit (agents pulling it in at boot) is joined, not taken for foreign.
    """
    state = units.systemctl("show", "--property=ActiveState", "--value", server, timeout=10.0)
    if state.said == "active":
        return True
    if state.said not in {"activating", "reloading"} and tmux.observe_socket(socket).running:
        result.problems.append(
            f"tmux socket {socket.label()}: its server was not started by {server}, so it lives in "
            f"the cgroup of whatever started it and ends with it; agents were started in it anyway. "
            f"To hand it to systemd, stop it at a quiet moment (tmux -L {socket.name or 'default'} "
            f"kill-server); the next reconcile starts it under {server}"
        )
        return False
    ran = units.systemctl("start", server)
    if ran.ok:
        return True
    result.blocked = (
        f"{server} did not start ({ran.said}); no session is created outside it, since a tmux server "
        f"started here would die with this process's cgroup"
    )
    return None


def _restart(core_units: dict[str, str], result: UnitsResult) -> None:
    """One `restart` for every core unit (it starts inactive ones too): ExecStop kills
    what is left of the old session, ExecStart creates and marks the new one."""
    if not core_units:
        return
    ran = units.systemctl("restart", *core_units)
    if not ran.ok:
        result.errors.append(f"systemctl --user restart: {ran.said}")
    result.under_units.update({agent: name for name, agent in core_units.items()})


def this_host() -> units.Host | None:
    """This machine's facts for unit files, or None without tmux. Symlinks are kept as
    found (a versioned target may be collected after an upgrade; the link is stable)."""
    path = shutil.which("tmux")
    if path is None:
        return None
    return units.Host(str(Path(path).absolute()), os.environ.get("TMUX_TMPDIR") or None, str(Path.home()))


def linger_wanted(runtime_dir: str | None, uid: int, lingering: bool) -> bool:
    """Linger helps only logind's own manager for us (at /run/user/UID), if not set yet.

    >>> linger_wanted("/run/user/1000", 1000, False), linger_wanted("/tmp/x", 1000, False)
    (True, False)
    >>> linger_wanted("/run/user/1000", 1000, True)
    False
    """
    return runtime_dir == f"/run/user/{uid}" and not lingering


def _maybe_linger(enabled_units: bool, result: UnitsResult) -> None:
    """Try `loginctl enable-linger` once per process when core units were enabled."""
    if not enabled_units:
        return
    user = users.current_user()
    if user in _LINGER_TRIED or not linger_wanted(os.environ.get("XDG_RUNTIME_DIR"), os.geteuid(), users.lingering(user)):
        return
    _LINGER_TRIED.add(user)
    note = units.enable_linger(user)
    if note:
        result.problems.append(f"{note}; core agents start at boot only once {user} logs in")
