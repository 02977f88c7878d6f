"""What one tenant user's `fleet` run gave back to root: its exit, output and statuses.

engine/delegate.py produces it (root runs fleet as each tenant's user, beside the loop),
engine/untrusted.py reads its statuses as untrusted data and the CLI reports it. Plain
frozen data, here so that neither of those two modules has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.model.status import TenantStatus


@dataclass(frozen=True, slots=True)
class UserRun:
    user: str
    tenants: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    document: Any = None  # the run's --output json document, when asked and printed
    statuses: tuple[TenantStatus, ...] = ()
    problems: tuple[str, ...] = ()
    revision: str = ""  # root's spec revision, which the statuses are written back with
