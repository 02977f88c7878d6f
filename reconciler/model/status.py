"""Status documents: what the reconciler reports per host and tenant, Kubernetes-style.

Written to `status/<host>/<tenant>.yaml` in the fleet repository and read back (from
every host) to render TASKS.md. Plain frozen data so rendering is deterministic: the
same state gives the same bytes, and a time appears only when a condition changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONDITION_TYPES = ("Ready", "Healthy", "BudgetOK", "Drifted", "Stalled")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    since: str = ""  # ISO time of the last change of `status`; kept while it holds


@dataclass(frozen=True, slots=True)
class AgentStatus:
    name: str
    role: str
    alias: str | None
    lifecycle: str
    desired_model: str
    running_model: str | None
    health: str
    tokens: int
    conditions: tuple[Condition, ...]

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One reconcile run that changed something (no-op runs are not recorded)."""

    revision: str
    at: str
    duration_ms: int
    actions: tuple[str, ...]  # "spawn orchestrator", "stop coder9-9", ...
    failed: int = 0


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One budget account as this tick saw it, in whole percents so it changes rarely.

    `exhausts` is when the window would run out at the burn so far (used / elapsed),
    to the hour; None when that is not before the reset, or unknown.
    """

    account: str
    runtime: str
    regime: str
    state: str  # core.pace.PaceState's value
    used_pct: int | None = None
    allowed_pct: int | None = None
    reset: str | None = None
    exhausts: str | None = None
    confidence: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class QueuedAgent:
    """A worker the budget policy keeps stopped, and until when (None: until a slot frees
    or its account is back under pace, as `rule` says)."""

    agent: str
    account: str | None
    rule: str
    until: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSpend:
    """Tokens this host's ledger attributes to one task of one agent, to the thousand."""

    task: str
    agent: str
    tokens: int


@dataclass(frozen=True, slots=True)
class LearnedHint:
    """What a task took on this host, by role and model (core.ledger's learned_spend), to the thousand."""

    role: str
    model: str
    median: int
    p90: int


@dataclass(frozen=True, slots=True)
class LaneStatus:
    """One lane on this host: its workers desired and running, its open and queued tasks, why."""

    lane: str
    desired: int
    running: int
    open: int
    queued: int
    workers: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The fleet's view of one lane task (core/lanes.py's TaskState), never written into tasks.yaml."""

    task: str
    lane: str
    state: str
    agent: str | None = None
    since: str | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class TenantStatus:
    tenant: str
    host: str
    revision: str
    systemd: str
    agents: tuple[AgentStatus, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    accounts: tuple[AccountStatus, ...] = ()  # empty: the tenant has no budget.yaml
    queue: tuple[QueuedAgent, ...] = ()
    spend: tuple[TaskSpend, ...] = ()  # from $state/<tenant>/ledger.jsonl on this host
    learned: tuple[LearnedHint, ...] = ()
    lanes: tuple[LaneStatus, ...] = ()  # lanes of this tenant on this host
    tasks: tuple[TaskStatus, ...] = ()  # the fleet's view of each lane task
