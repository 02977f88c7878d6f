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
class TenantStatus:
    tenant: str
    host: str
    revision: str
    systemd: str
    agents: tuple[AgentStatus, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
