"""The fleet repository once loaded: valid specs per tenant, and every located error.

A tenant with any error is kept out of `tenants` (nothing is applied from a spec that
failed validation) but its name stays in `invalid_tenants`, so the planner knows its
running sessions are not orphans to stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import SpecError
from reconciler.spec.models import Budget, Fleet, Role, Roster, Tasks
from reconciler.spec.yamlsource import Source

#: What a fleet repository's specs are, relative to its root: the Git history of these
#: paths is the spec revision, and only changes under them wake the watch loop.
SPEC_PATHS = ("fleet.yaml", "roles", "tenants")


@dataclass(frozen=True, slots=True)
class TenantSpec:
    name: str
    roster: Roster
    budget: Budget | None
    tasks: Tasks | None
    sources: dict[str, Source] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FleetRepo:
    root: Path
    fleet: Fleet | None
    roles: dict[str, Role]
    tenants: dict[str, TenantSpec]
    invalid_tenants: frozenset[str]
    errors: tuple[SpecError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors
