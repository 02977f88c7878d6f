"""Frozen snapshots of what runs on a host: the observe step's output, the planner's input.

One `ObservedFleet` is taken per tick with a constant number of external calls per
tenant; everything downstream (plan, status, `fleet ps`) reads this snapshot and never
the world, so a recorded snapshot replays exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler.model.usage import UsageSignal

if TYPE_CHECKING:
    from reconciler.model.launch import LaunchSpec

#: tmux user options that mark a session as the fleet's own (docs/reference.md, "Runtime contract").
OPT_TENANT = "@fleet-tenant"
OPT_AGENT = "@fleet-agent"
OPT_HOST = "@fleet-host"
OPT_SPEC_HASH = "@fleet-spec-hash"
OPT_MODEL = "@fleet-model"
#: The FLEET_STATE_DIR the agent was started with: where it writes its heartbeats.
OPT_STATE_DIR = "@fleet-state-dir"
#: The agent's own pane (`%N`, tmux's pane id), recorded in the spawn's chain: a pane a
#: person splits off or a window they add is never mistaken for the agent.
OPT_PANE = "@fleet-pane"
FLEET_OPTIONS = (OPT_TENANT, OPT_AGENT, OPT_HOST, OPT_SPEC_HASH, OPT_MODEL, OPT_STATE_DIR, OPT_PANE)


@dataclass(frozen=True, slots=True, order=True)
class SocketKey:
    """Which tmux server: the Linux user it runs as and its `-L` name.

    `user=None` is the reconciler's own user; `name=None` is tmux's default socket.
    """

    user: str | None
    name: str | None

    def label(self) -> str:
        name = self.name or "default"
        return f"{self.user}:{name}" if self.user else name


@dataclass(frozen=True, slots=True)
class Marks:
    """The fleet's user options read off a session; empty strings when unset."""

    tenant: str = ""
    agent: str = ""
    host: str = ""
    spec_hash: str = ""
    model: str = ""
    state_dir: str = ""  # empty for a session started before the mark existed
    pane: str = ""  # the agent's pane id; empty for a session started before the mark existed

    @property
    def owned(self) -> bool:
        """True when the fleet created this session (both identity marks present)."""
        return bool(self.tenant and self.agent)


@dataclass(frozen=True, slots=True)
class ObservedSession:
    """One tmux session as seen in a single `list-panes -a`, by the agent's own pane.

    The pane is the one the session's `@fleet-pane` mark names (its first pane when
    unmarked: a foreign session, or one started before the mark). When the marked pane
    is gone from the session (a person closed it, and a pane they split off remains),
    the session is seen with that pane dead, `pane_missing` True and no pid.
    """

    name: str
    session_id: str
    created: datetime
    activity: datetime | None
    attached: int
    pane_pid: int | None
    pane_dead: bool
    dead_status: int | None
    current_command: str
    in_mode: bool
    marks: Marks = field(default_factory=Marks)
    pane_id: str = ""  # `%N`: what the agent verbs address (send, capture, watch)
    pane_missing: bool = False  # the marked pane is no longer in the session


@dataclass(frozen=True, slots=True)
class SocketSnapshot:
    """Every session on one tmux server; `running` is False when no server answers.

    `stuck_pid` names a server stuck in its own exit (drivers/stuck_server.py): it hangs
    up on every client, so its sessions cannot be seen; the apply step ends it.
    """

    key: SocketKey
    running: bool
    sessions: Mapping[str, ObservedSession] = field(default_factory=dict)
    error: str | None = None
    stuck_pid: int | None = None


@dataclass(frozen=True, slots=True)
class UnitState:
    """One systemd unit from `list-units` joined with its `list-unit-files` state."""

    name: str
    load_state: str
    active_state: str
    sub_state: str
    file_state: str | None = None

    @property
    def active(self) -> bool:
        return self.active_state in {"active", "activating", "reloading"}

    @property
    def enabled(self) -> bool:
        return self.file_state in {"enabled", "enabled-runtime", "linked", "static"}


@dataclass(frozen=True, slots=True)
class SystemdSnapshot:
    """One `systemd --user` manager's fleet units, or why it could not be asked."""

    available: bool
    units: Mapping[str, UnitState] = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent's last answer to the heartbeat protocol (docs/reference.md#heartbeat-protocol)."""

    tenant: str
    host: str
    agent: str
    seq: int
    ts: datetime
    state: str
    model: str
    pid: int | None = None
    ack: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    #: Written by `fleet-hook` for event-driven runtimes (docs/runtimes.md): what wrote the
    #: record (a hook event, `statusline`, `launch`, `agent-turn-complete`...) and when the
    #: runtime last sent an event that was not a status-line tick.
    event: str | None = None
    event_ts: datetime | None = None
    #: With state `waiting`: a failure the runtime cannot get past by itself (`auth`,
    #: `usage-limit`), and the runtime's own words for it (docs/runtimes.md, Held failures).
    held: str | None = None
    reason: str | None = None
    #: `pid` and its ancestors as the observe step found them in /proc (only for records
    #: with an `event`): () when the process is gone, None when not looked at.
    lineage: tuple[int, ...] | None = None
    #: Codex thread ids the runtime named in its `notify` events, oldest first (fleet-hook
    #: keeps the last few): the observe step reads its conversation back from them.
    threads: tuple[str, ...] = ()
    #: `fleet-hook`'s last acked ids, newest last (`ack` is the last of them); () for an
    #: agent that writes only `ack`.
    acks: tuple[str, ...] = ()


#: What a workdir that does not exist on this host becomes: the user's home.
HOME_WORKDIR = "~"


@dataclass(frozen=True, slots=True)
class Conversation:
    """An agent's conversation: its session id and whether the runtime has a transcript of
    it on this host (then a start resumes it: `--resume ID`, else `--session-id ID`)."""

    session_id: str
    resume: bool = False


@dataclass(frozen=True, slots=True)
class Resolved:
    """Facts of this host the pure core cannot know, read once by the observe step.

    `programs` maps a program as the spec names it (argv[0]) to what is handed to tmux;
    `missing` holds those found nowhere (handed over as named, so the start fails, and
    the planner can see it); `workdirs` maps (socket user, workdir) to the workdir used,
    `~` for one that does not exist. A launch is resolved after its spec hash is taken,
    so a program found elsewhere or a workdir created later restarts nothing.
    """

    programs: Mapping[str, str] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()
    workdirs: Mapping[tuple[str | None, str], str] = field(default_factory=dict)
    #: (tenant, agent) -> the agent's conversation as kept in the state directory, for a
    #: runtime whose session id the fleet fixes (Claude Code): absent, the core's default.
    conversations: Mapping[tuple[str, str], Conversation] = field(default_factory=dict)
    #: (tenant, agent, adapter) -> the session id read back from a runtime that picks its
    #: own (Codex: the agent's thread, whose rollout file names it and the agent's
    #: workdir); a start of that adapter resumes it. Absent: a new session.
    read_back: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    #: The PATH a lane worker's pane gets ("" to leave the tmux server's): the folder of
    #: this host's `fleet` first, so a worker runs `fleet task done ID` (docs/lanes.md).
    pane_path: str = ""

    def launch(self, launch: LaunchSpec) -> LaunchSpec:
        """`launch` as it runs on this host; the spec hash is left as it is.

        >>> from reconciler.model.launch import LaunchSpec
        >>> r = Resolved({"stub": "/v/bin/stub"}, frozenset(), {(None, "~/gone"): "~"})
        >>> l = r.launch(LaunchSpec("t", "a", "h", SocketKey(None, "s"), ("stub", "-x"), (), "~/gone", "m", "x"))
        >>> l.argv, l.workdir, l.spec_hash
        (('/v/bin/stub', '-x'), '~', 'x')
        """
        argv = list(launch.argv)
        for at in program_positions(launch.argv):
            argv[at] = self.programs.get(argv[at], argv[at])
        workdir = launch.workdir
        if workdir is not None:
            workdir = self.workdirs.get((launch.socket.user, workdir), workdir)
        env = launch.env
        names = {name for name, _ in env}
        if self.pane_path and "FLEET_LANE" in names and "PATH" not in names:
            env = (*env, ("PATH", self.pane_path))
        return replace(launch, argv=tuple(argv), workdir=workdir, env=env, hook=self.programs.get(launch.hook, launch.hook))


#: The fleet's own launchers: each runs the program after its first `--`
#: (`fleet-env-exec --file K=~/k -- claude ...`, `fleet-hook launch -- codex ...`).
LAUNCHERS = frozenset({"fleet-env-exec", "fleet-hook"})


def program_positions(argv: tuple[str, ...]) -> list[int]:
    """Where programs stand in `argv`: its first word and, behind each of the fleet's
    launchers, the word after that launcher's first `--`.

    >>> program_positions(("fleet-env-exec", "--env", "K=V", "--", "fleet-hook", "launch", "--", "codex", "--", "x"))
    [0, 4, 7]
    >>> program_positions(("/v/bin/fleet-hook", "launch", "--", "codex")), program_positions(("claude", "--", "x"))
    ([0, 3], [0])
    """
    positions: list[int] = []
    at = 0
    while at < len(argv):
        positions.append(at)
        if argv[at].rsplit("/", 1)[-1] not in LAUNCHERS or "--" not in argv[at + 1 :]:
            break
        at = argv.index("--", at + 1) + 1
    return positions


@dataclass(frozen=True, slots=True)
class ObservedFleet:
    """Everything observed on this host in one tick.

    Keyed for the planner: sockets by `SocketKey`, systemd managers by user (None is the
    reconciler's own), heartbeats by (tenant, agent). `problems` lists what could not be
    read (a corrupt heartbeat, an unreachable server) without failing the tick.
    """

    taken_at: datetime
    sockets: Mapping[SocketKey, SocketSnapshot] = field(default_factory=dict)
    systemd: Mapping[str | None, SystemdSnapshot] = field(default_factory=dict)
    heartbeats: Mapping[tuple[str, str], Heartbeat] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    usage: Mapping[tuple[str, str], UsageSignal] = field(default_factory=dict)  # (tenant, account)
    resolved: Resolved = field(default_factory=Resolved)  # programs and workdirs of this host
    #: The visible text of the panes of agents that were already unhealthy, by (tenant,
    #: agent): read only for them (engine/observe.py `observe_screens`), so a dialog can be named as the reason.
    screens: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def session(self, socket: SocketKey, name: str) -> ObservedSession | None:
        snap = self.sockets.get(socket)
        return snap.sessions.get(name) if snap else None
