"""The lane plan of a tick (core/lanes.py makes it), apart from the lanes' scaling.

A fleet without lanes still carries an empty `LanePlan` through the tick, the plan and
the write-back; this module is all it loads for that, so a one-shot `fleet reconcile`
of such a fleet does not import the lanes' scaling, dispatch and task spend (~6 ms).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.core.lanes import LaneView, TenantLanes

#: The rule of a lane's retirement stop (core/planner.py).
RETIRE_RULE = "lane-retire"


@dataclass(frozen=True, slots=True)
class LanePlan:
    tenants: Mapping[str, TenantLanes] = field(default_factory=dict)

    def retire_reason(self, tenant: str, agent: str) -> str | None:
        found = self.tenants.get(tenant)
        return found.retire.get(agent) if found else None

    def lane_of(self, tenant: str, agent: str) -> LaneView | None:
        """The lane that wants `agent` as one of its workers this tick."""
        found = self.tenants.get(tenant)
        return next((v for v in found.lanes if agent in v.workers), None) if found else None
