"""Pydantic models of the fleet repository's kinds (docs/reference.md): the desired state as typed.

The loader validates every YAML document against these; the JSON Schemas in `specs/`
are generated from them so editors check the same rules while people type. Models are
frozen and forbid unknown keys: a typo such as `runtme` must not pass silently.
Rules that span files (the two-agent floor, ladders, sockets) live in `spec/rules.py`.
"""

from __future__ import annotations

import functools
import re
import shlex
import string
import warnings
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

API_VERSION = "fleet.mosaicstack.dev/v1"

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,39}$"
SOCKET_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
HOST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$"
USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
MODEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,63}$"
LANE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
#: Variables the reconciler sets itself (docs/reference.md, "Runtime contract"); a spec cannot override them.
RESERVED_ENV_PREFIXES = ("FLEET_", "MOSAIC_")
DURATION_PATTERN = r"^(?:\d+(?:w|d|h|m|s))+$"
#: A git branch name, with `{placeholders}` to fill in.
BRANCH_PATTERN = r"^[A-Za-z0-9{}][A-Za-z0-9._/{}-]*$"
SHARE_PATTERN = r"^\d+(?:\.\d+)?%$"
#: Paths and environment values: no C0 control character (newline, tab, escape...) nor DEL.
NO_CONTROL_PATTERN = r"^[^\x00-\x1f\x7f]*$"
#: Text people read (aliases, titles): no C1 control either (U+009B is a terminal's CSI),
#: nor a bidirectional override or isolate, which can make one alias read as another
#: (CVE-2021-42574, "Trojan Source") in `fleet ps`, status and TASKS.md.
#: U+2028 and U+2029 are line breaks to much software, so one-line text refuses them.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]*$"
#: Text of many lines (a persona): the same, but tabs and line breaks are allowed.
LINES_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]*$"
#: Placeholders a runtime's command template may use; values are substituted per argument.
COMMAND_FIELDS = frozenset({"model", "agent", "tenant", "role"})

_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
MAX_DURATION_S = 10 * 366 * 86400


def parse_duration(value: object) -> timedelta:
    """Read `90s`, `7d`, `1h30m` into a timedelta.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration(timedelta(seconds=5))
    datetime.timedelta(seconds=5)
    """
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(
            f"{value!r} is not a duration; write a number with a unit, e.g. 90s, 5m, 1h30m, 7d"
        )
    seconds = sum(
        int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", value)
    )
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than 10 years; use a shorter duration")
    if seconds <= 0:
        raise ValueError(f"{value!r} is zero; a duration must be longer than 0s")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The spelling people write: the largest unit that divides the duration exactly.

    >>> format_duration(timedelta(days=7))
    '7d'
    >>> format_duration(timedelta(seconds=90))
    '90s'
    >>> format_duration(timedelta(seconds=5400))
    '90m'
    """
    seconds = int(value.total_seconds())
    for unit, size in _DURATION_UNITS.items():
        if unit != "w" and seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "7d"]}),
]


def _check_command(template: str) -> str:
    """A command template must split like a shell line and use only known placeholders."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"command does not split into arguments ({exc}); check its quotes") from exc
    if not argv:
        raise ValueError("command is empty; give the program to run, e.g. \"claude --model {model}\"")
    for arg in argv:
        if "\x00" in arg:
            raise ValueError(f"command has a NUL character in the argument {arg[:80]!r}; no program can receive one")
        try:
            parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(arg) if f is not None]
        except ValueError as exc:
            raise ValueError(f"command has a stray brace in {arg!r} ({exc}); write {{{{ for a literal {{") from exc
        for field, spec, conv in parsed:
            if spec or conv:
                raise ValueError(f"command placeholder {{{field}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                                 f"has a conversion or format; write plain {{{field}}}")
        fields = {f for f, _, _ in parsed}
        unknown = fields - COMMAND_FIELDS
        if unknown:
            known = ", ".join("{" + f + "}" for f in sorted(COMMAND_FIELDS))
            raise ValueError(f"command uses unknown placeholder {{{sorted(unknown)[0]}}}; use one of {known}")
    return template


Name = Annotated[str, Field(pattern=NAME_PATTERN, description="lower-case letters, digits and '-', starting with a letter, at most 40")]
ModelName = Annotated[str, Field(pattern=MODEL_PATTERN)]
SocketName = Annotated[str, Field(pattern=SOCKET_PATTERN)]
HostName = Annotated[str, Field(pattern=HOST_PATTERN)]
UserName = Annotated[str, Field(pattern=USER_PATTERN)]
PlainText = Annotated[str, Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)]
PathText = Annotated[str, Field(min_length=1, max_length=4096, pattern=NO_CONTROL_PATTERN)]


def _rooted(path: str) -> str:
    """A path that means the same wherever the reconciler runs: absolute, or under the
    tenant user's home. tmux resolves a relative `-c` against its client's folder, which
    is the reconciler's on one run and the unit's on the next."""
    if path.startswith("/") or path == "~" or path.startswith("~/"):
        return path
    raise ValueError("a relative path depends on the folder the reconciler runs in; "
                     "write an absolute path, or one under ~/ (the tenant user's home)")


def _absolute(path: str) -> str:
    """A file the reconciler itself reads: an absolute path, the same on every run."""
    if path.startswith("/"):
        return path
    raise ValueError("write an absolute path (the reconciling user reads it, wherever it runs), "
                     "e.g. /etc/mosaic-fleet/register.url")


#: A workdir or a secret's file, as the agent's user sees it.
AgentPath = Annotated[PathText, AfterValidator(_rooted)]


def _not_reserved(name: str) -> str:
    if name.upper().startswith(RESERVED_ENV_PREFIXES):
        raise ValueError(f"environment variable {name!r} is set by the reconciler; choose another name")
    return name


EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN, description="An environment variable name, e.g. LOG_LEVEL")]
AgentEnvName = Annotated[EnvName, AfterValidator(_not_reserved)]
EnvValue = Annotated[str, Field(max_length=4096, pattern=NO_CONTROL_PATTERN)]


class Strict(BaseModel):
    """Base of every spec model: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Document(Strict):
    """Fields every document of the repository starts with."""

    apiVersion: Literal["fleet.mosaicstack.dev/v1"] = Field(
        description="Always fleet.mosaicstack.dev/v1 for this version of the format."
    )


# --- fleet.yaml -------------------------------------------------------------------------


#: fleet.yaml `adapter:` values (docs/runtimes.md): `command` and `stub` run the runtime's
#: `command:` template as it is; `claude` and `codex` are prepared and launched by their
#: adapter (reconciler/runtimes/) and report through `fleet-hook`.
ADAPTER_NAMES = ("command", "stub", "claude", "codex")
#: Adapters that launch their runtime themselves: `command:` is then only the program.
EVENT_ADAPTERS = frozenset({"claude", "codex"})


class Runtime(Strict):
    """How one runtime is launched inside its pane, and its models cheapest last."""

    adapter: Literal["command", "stub", "claude", "codex"] = Field(
        default="command",
        description="Who launches the runtime and how it reports: `command` (and `stub`) run `command:` as it is "
        "and the program writes its own heartbeat; `claude` and `codex` get their configuration, argv and "
        "environment from the fleet's adapter and report through `fleet-hook` (docs/runtimes.md).")
    command: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_check_command)] | None = None
    ladder: list[ModelName] = Field(min_length=1, description="Models, most capable first, cheapest last.")

    @model_validator(mode="after")
    def _command_given(self) -> Runtime:
        if self.command is None and self.adapter not in EVENT_ADAPTERS:
            raise ValueError(f"a runtime with adapter {self.adapter!r} needs `command:` (the program and its "
                             "arguments, e.g. \"fleet-stub-agent --model {model}\")")
        if self.command is not None and self.adapter in EVENT_ADAPTERS:
            words = shlex.split(self.command)
            if len(words) != 1 or "{" in words[0]:
                raise ValueError(f"with adapter {self.adapter!r}, `command:` names only the program (the adapter "
                                 f"adds every argument), e.g. {self.adapter} or /opt/bin/{self.adapter}; "
                                 f"got {self.command!r}")
        return self

    def command_line(self) -> str:
        """The `command:` template; an event adapter without one runs the program named like it."""
        return self.command if self.command is not None else self.adapter

    @model_validator(mode="after")
    def _ladder_unique(self) -> Runtime:
        seen: set[str] = set()
        for model in self.ladder:
            if model in seen:
                raise ValueError(f"ladder lists {model!r} twice; each model appears once")
            seen.add(model)
        return self


class FleetDefaults(Strict):
    socket_name: SocketName | None = None
    heartbeat_timeout: Duration = timedelta(seconds=90)
    startup_grace: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a new session may go without a heartbeat before it counts as unhealthy.",
    )
    working_timeout: Duration = Field(
        default=timedelta(minutes=30),
        description="Event-driven runtimes (adapter claude, codex): how long an agent may say `working` with no "
        "event from its runtime before it counts as hung (stale). Idle and waiting agents have no such limit.",
    )
    usage_limit_retry: Duration = Field(
        default=timedelta(minutes=15),
        description="An agent held by a usage limit with no known reset time gets a resume message typed this long "
        "after the hold, then after twice as long, ... at most 8 times this (docs/runtimes.md, Held failures).",
    )
    runtime: Name
    model: ModelName


class UrlFrom(Strict):
    """Where the register's connection string is read, by the reconciling user, at run time:
    never the string itself, which would then be in Git."""

    env: EnvName | None = Field(default=None, description="Read from this variable of the reconciler's environment.")
    file: Annotated[PathText, AfterValidator(_absolute)] | None = Field(
        default=None, description="Read from this file (absolute path), which only the reconciling user may read "
        "(mode 0600 or 0400); one trailing newline is dropped.")

    @model_validator(mode="after")
    def _one_source(self) -> UrlFrom:
        if (self.file is None) == (self.env is None):
            raise ValueError("`url_from` needs exactly one of `env:` (a variable name) or `file:` (an absolute path)")
        return self


class Register(Strict):
    """The optional Postgres register (docs/register.md): every host's agents, runs and spend in one place."""

    url_from: UrlFrom = Field(description="Where the connection string comes from (`env:` or `file:`); "
                              "a connection string written in any spec file is an error.")
    projection_lease: Duration = Field(
        default=timedelta(minutes=5),
        description="How long the host that renders TASKS.md and MISSION-MANIFEST.md from the register keeps "
        "that job without renewing it (each of its runs renews it); make it longer than the hosts' reconcile "
        "interval. When it lapses, the next host to run takes it over.")


# `register` is also ABCMeta.register on the model's metaclass (never on an instance):
# pydantic warns that the field shadows it, which is harmless here and would print on every start.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class Fleet(Document):
        kind: Literal["Fleet"]
        name: Name
        defaults: FleetDefaults
        runtimes: dict[Name, Runtime] = Field(min_length=1)
        downgrade: list[Name] = Field(default_factory=list, description="Runtimes to fall back on, in order.")
        register: Register | None = Field(
            default=None, description="The Postgres register (docs/register.md); absent: none, the fleet keeps its "
            "record in Git and the state directory only.")


# --- roles/<role>.yaml ------------------------------------------------------------------


class RoleDefaults(Strict):
    runtime: Name | None = None
    model: ModelName | None = None
    lifecycle: Literal["core", "ephemeral"] | None = None
    workdir: AgentPath | None = None


class Role(Document):
    """An entry of the role library: a persona and the defaults its agents inherit."""

    kind: Literal["Role"]
    name: Name
    persona: Annotated[str, Field(max_length=20000, pattern=LINES_PATTERN)] | None = None
    skills: list[PlainText] = Field(default_factory=list)
    defaults: RoleDefaults = Field(default_factory=RoleDefaults)


# --- tenants/<tenant>/roster.yaml -------------------------------------------------------


class EnvFrom(Strict):
    """A variable whose value the agent's own launcher reads when it starts, as the tenant's
    user: the value never passes through the reconciler, so it cannot reach status,
    TASKS.md, logs, units or commits. Put secrets here, never under `env:`."""

    name: AgentEnvName = Field(description="The variable the agent sees.")
    file: AgentPath | None = Field(default=None, description="Read from this file (`~` is the tenant user's home); one trailing newline is dropped.")
    env: EnvName | None = Field(default=None, description="Copied from this variable of the environment the agent starts in.")

    @model_validator(mode="after")
    def _one_source(self) -> EnvFrom:
        if (self.file is None) == (self.env is None):
            raise ValueError(f"env_from {self.name!r} needs exactly one of `file:` or `env:`")
        return self


#: An agent's whole `env:` in bytes: tmux takes one command of at most 16 KiB, and the
#: session's command, marks and the fleet's own variables share it.
MAX_ENV_BYTES = 8192


def _check_env(agent: _E) -> _E:
    """A name given twice is an error, not a silent override; the sum must fit tmux."""
    size = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in agent.env.items())
    if size > MAX_ENV_BYTES:
        raise ValueError(f"`env` holds {size} bytes, more than {MAX_ENV_BYTES}; tmux could not start the agent: "
                         "move large values into files and read them with `env_from: [{name: X, file: PATH}]`")
    names = [*agent.env, *(e.name for e in agent.env_from)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"environment variable {name!r} is given twice in `env` / `env_from`; keep one")
        seen.add(name)
    return agent


_E = TypeVar("_E", "Agent", "Lane")


class Agent(Strict):
    name: Name = Field(description="The tmux session name: the agent's stable handle.")
    role: Name
    alias: PlainText | None = None
    runtime: Name | None = None
    model: ModelName | None = None
    lifecycle: Literal["core", "ephemeral"] | None = Field(
        default=None,
        description="core = always-on and boot-enabled; ephemeral = a worker per lane. "
        "Default: core for orchestrator and enhancer, else ephemeral.",
    )
    lane: Annotated[str, Field(pattern=LANE_PATTERN)] | None = None
    workdir: AgentPath | None = None
    host: HostName | None = None
    env: dict[AgentEnvName, EnvValue] = Field(
        default_factory=dict, max_length=64,
        description="Plain variables for the agent (they are in the spec hash and in Git: no secrets here).")
    env_from: list[EnvFrom] = Field(
        default_factory=list, max_length=64, description="Variables read by the agent's launcher when it starts: secrets go here.")
    trust_workdir: bool = Field(
        default=True,
        description="Runtimes with an adapter (claude, codex): pre-accept the runtime's folder-trust dialog for the "
        "workdir in the user's runtime config. false: the agent stops on the dialog until a person answers it.")

    @model_validator(mode="after")
    def _env_names(self) -> Agent:
        return _check_env(self)


#: The most workers one lane may have: its pool is built in full each time the specs change.
MAX_LANE_WORKERS = 100
#: Placeholders a lane's worktree `branch:` may use.
BRANCH_FIELDS = frozenset({"agent", "task", "lane"})


def _check_branch(template: str) -> str:
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"a stray brace ({exc}); write {{agent}}, {{task}} or {{lane}}") from exc
    unknown = fields - BRANCH_FIELDS
    if unknown:
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{agent}}, {{task}} or {{lane}}")
    return template


class LaneWorktree(Strict):
    """Each worker of the lane works in its own git worktree of `repo`, on a branch per task (docs/lanes.md)."""

    repo: AgentPath = Field(description="The lane's repository, whose worktrees the workers get.")
    branch: Annotated[str, Field(min_length=1, max_length=200, pattern=BRANCH_PATTERN),
                      AfterValidator(_check_branch)] = Field(
        default="fleet/{agent}/{task}", description="The branch per task; `{agent}`, `{task}` and `{lane}` are filled in.")


class Lane(Strict):
    """A pool of workers sized by the lane's open tasks (docs/lanes.md)."""

    name: Annotated[str, Field(pattern=LANE_PATTERN)] = Field(
        description="The lane's name; tasks name it in their `lane:`.")
    role: Name = Field(description="The role of the lane's workers; their names are `<role><n>-<i>` "
                       "(n: the lane's place among this roster's lanes of that role, from 0; i: the worker, from 0).")
    min: Annotated[int, Field(ge=0, le=MAX_LANE_WORKERS)] = Field(
        default=0, description="Workers kept running even with no open task (0: the lane drains to nothing).")
    max: Annotated[int, Field(ge=1, le=MAX_LANE_WORKERS)] = Field(
        default=1, description="At most this many workers, however many tasks are open.")
    cooldown: Duration = Field(
        default=timedelta(minutes=5),
        description="How long a worker above `min` stays idle, counted from its own last activity, before it is retired.")
    reuse: bool = Field(
        default=True,
        description="true: a draining pool, an idle worker takes the next task. false: one worker per task, like an "
        "ephemeral CI runner: a worker that has reported on its task is retired at once, and the next task gets a fresh one.")
    runtime: Name | None = Field(default=None, description="As an agent's `runtime`.")
    model: ModelName | None = Field(default=None, description="As an agent's `model`.")
    workdir: AgentPath | None = Field(default=None, description="As an agent's `workdir`.")
    host: HostName | None = Field(default=None, description="The host of the lane's workers; overrides the roster's `host`.")
    worktree: LaneWorktree | None = Field(
        default=None, description="Each worker gets its own git worktree of `repo` (its workdir, in the state "
        "directory; `workdir` is then unused), on a branch per task checked out before its brief; removed when the "
        "worker retires, its branches kept.")
    env: dict[AgentEnvName, EnvValue] = Field(
        default_factory=dict, max_length=64, description="As an agent's `env` (no secrets here).")
    env_from: list[EnvFrom] = Field(default_factory=list, max_length=64, description="As an agent's `env_from`.")
    trust_workdir: bool = Field(default=True, description="As an agent's `trust_workdir`.")

    @model_validator(mode="after")
    def _env_names(self) -> Lane:
        return _check_env(self)

    def worker_names(self, index: int) -> tuple[str, ...]:
        """Every worker name of the pool, lowest first; `index` is the lane's place among
        the roster's lanes of its role.

        >>> Lane(name="api", role="coder", max=2).worker_names(0)
        ('coder0-0', 'coder0-1')
        """
        return tuple(f"{self.role}{index}-{i}" for i in range(self.max))


class Roster(Document):
    kind: Literal["Roster"]
    tenant: Name
    host: HostName
    user: UserName | None = None
    socket_name: SocketName | None = None
    agents: list[Agent] = Field(min_length=1)
    lanes: list[Lane] = Field(
        default_factory=list, description="Pools of workers driven by their lane's open tasks (docs/lanes.md).")

    def lane_workers(self) -> dict[str, tuple[str, ...]]:
        """Each lane's worker names, by lane name: lanes of one role are numbered in roster
        order, skipping a number a named agent already uses (`coder0-0` in `agents:` makes
        the first coder lane's workers `coder1-0`, `coder1-1`, ...)."""
        nxt: dict[str, int] = {}
        out: dict[str, tuple[str, ...]] = {}
        for lane in self.lanes:
            taken = {int(m.group(1)) for a in self.agents
                     if (m := re.fullmatch(rf"{re.escape(lane.role)}(\d+)-\d+", a.name))}
            index = nxt.get(lane.role, 0)
            while index in taken:
                index += 1
            nxt[lane.role] = index + 1
            out.setdefault(lane.name, lane.worker_names(index))
        return out


# --- tenants/<tenant>/budget.yaml -------------------------------------------------------


class Account(Strict):
    name: Name
    provider: Name
    runtime: Name
    regime: Literal["subscription", "api"]
    window: Duration | None = None
    reset_at: AwareDatetime | None = None
    reset_confidence: Literal["user", "provider", "estimated", "unknown"] = "unknown"
    hard_cap_usd: Annotated[float, Field(gt=0)] | None = None
    period: Duration | None = None

    @model_validator(mode="after")
    def _regime_fields(self) -> Account:
        if self.regime == "subscription" and self.window is None:
            raise ValueError("a subscription account needs `window:` (the rolling window, e.g. 7d)")
        if self.regime == "api" and (self.hard_cap_usd is None or self.period is None):
            raise ValueError("an api account needs `hard_cap_usd:` and `period:` (e.g. 200 and 30d)")
        return self


def parse_fraction(value: object) -> float:
    """A share of an account's limit: `5%`, or a fraction from 0 to 1 (`0.05`).

    >>> parse_fraction("5%"), parse_fraction(0.02), parse_fraction("12.5%")
    (0.05, 0.02, 0.125)
    """
    if isinstance(value, str) and re.fullmatch(SHARE_PATTERN, value.strip()):
        fraction = float(value.strip()[:-1]) / 100
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
        if fraction > 1:
            raise ValueError(f"{value!r} is more than 1; write a percentage such as {value:g}% or a fraction such as "
                             f"{value / 100:g}")
    else:
        raise ValueError(f"{value!r} is not a share; write a percentage such as 5% or a fraction such as 0.05")
    if not 0 <= fraction < 1:
        raise ValueError(f"{value!r} must be at least 0% and below 100%")
    return round(fraction, 6)


def format_fraction(value: float) -> str:
    """A fraction as budget.yaml spells it: `0.05` -> `5%`."""
    return f"{value * 100:g}%"


Share = Annotated[
    float,
    BeforeValidator(parse_fraction),
    PlainSerializer(format_fraction, return_type=str),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": SHARE_PATTERN},
                              {"type": "number", "minimum": 0, "exclusiveMaximum": 1}], "examples": ["5%"]}),
]


class Policy(Strict):
    """Tuning of the budget policy (core/pace.py `Tuning`); the defaults are its values."""

    tolerance: Share = Field(default=0.05, description="How far ahead of the even line an account may be and still "
                             "count as on pace.")
    margin: Share = Field(default=0.05, description="How far under the allowed line usage must be before agents "
                          "return up the ladder.")
    reserve: Share = Field(default=0.02, description="Kept back at the top of every window: at 100% minus this, the "
                           "window is spent and every worker on it is queued.")
    hysteresis: Duration = Field(default=timedelta(minutes=30), description="The least time between two model "
                                 "changes of one agent, down or back up.")


class Budget(Document):
    kind: Literal["Budget"]
    tenant: Name
    pacing: Literal["even-spread", "rapid"] = "even-spread"
    authorized_by: PlainText | None = Field(
        default=None, description="Who allowed `pacing: rapid`; required with it."
    )
    accounts: list[Account] = Field(default_factory=list)
    concurrency: Annotated[int, Field(ge=1)] | None = None
    policy: Policy = Field(default_factory=Policy)


# --- tenants/<tenant>/tasks.yaml --------------------------------------------------------


TaskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")]
#: The states people set on a task; the fleet's own view of it (queued, assigned, reported) lives in status.
TASK_STATES = ("open", "done", "cancelled")


class Task(Strict):
    id: TaskId
    title: PlainText
    agent: Name | None = None
    lane: Annotated[str, Field(pattern=LANE_PATTERN)] | None = Field(
        default=None, description="The lane whose workers take the task; each open, unblocked task asks for one worker.")
    brief: Annotated[str, Field(max_length=20000, pattern=LINES_PATTERN)] | None = Field(
        default=None, description="What the worker is told, in words.")
    depends_on: list[TaskId] = Field(
        default_factory=list, max_length=64,
        description="Ids of tasks of this tenant that must be done first; until then the task waits and asks for no worker.")
    state: Literal["open", "done", "cancelled"] = Field(
        default="open", description="Set by people: `open`, `done` or `cancelled`. The fleet's own view of the task "
        "(queued, assigned, working, reported done or blocked) is in status, never here.")
    projected_tokens: Annotated[int, Field(ge=0)] | None = None
    urgency: Literal["normal", "high", "critical"] = "normal"


class Mission(Strict):
    id: TaskId
    title: PlainText
    tasks: list[Task] = Field(default_factory=list)


class Tasks(Document):
    kind: Literal["Tasks"]
    tenant: Name
    missions: list[Mission] = Field(default_factory=list)


#: Every kind by its `kind:` value, for the loader and `fleet schema`.
KINDS: dict[str, type[Document]] = {
    "Fleet": Fleet,
    "Role": Role,
    "Roster": Roster,
    "Budget": Budget,
    "Tasks": Tasks,
}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of one kind, as written to `specs/<kind>.schema.json`."""
    schema = KINDS[kind].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{kind.lower()}.schema.json"
    return schema


def command_argv(template: str, values: dict[str, str]) -> tuple[str, ...]:
    """Split a command template into argv, then fill placeholders per argument.

    Values are substituted after splitting, so a model or agent name can never add or
    join arguments, and nothing passes through a shell.

    >>> command_argv("claude --model {model}", {"model": "opus; rm -rf ~"})
    ('claude', '--model', 'opus; rm -rf ~')
    """
    return tuple(arg.format_map(values) for arg in _split_template(template))


@functools.lru_cache(maxsize=256)
def _split_template(template: str) -> tuple[str, ...]:
    """Checked and split once per template: a fleet has a few templates and many agents."""
    _check_command(template)
    return tuple(shlex.split(template))
