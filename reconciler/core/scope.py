"""Who reconciles which tenant: this process, the tenant's own user, or nobody this run.

Pure, from the rosters' `user:` and who runs the reconciler, so dry-run, apply and `ps`
agree on it and it is tested without users (engine/delegate.py runs the other users).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from reconciler.spec.repo import FleetRepo


@dataclass(frozen=True, slots=True)
class Scope:
    """Which tenants this process reconciles itself, which it runs as their users, and
    which it leaves alone (an ordinary user cannot act as another)."""

    local: frozenset[str] | None  # None: every tenant (nobody runs as another user)
    delegated: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # user -> tenants
    skipped: tuple[str, ...] = ()  # notes, one per tenant left alone


def split_scope(repo: FleetRepo, requested: Collection[str] | None, *, me: str, root: bool) -> Scope:
    """Pure: who reconciles which tenant, from the rosters' `user:` and who we are."""
    local: set[str] = set()
    delegated: dict[str, list[str]] = {}
    skipped: list[str] = []
    for name in sorted(repo.tenants):
        if requested is not None and name not in requested:
            continue
        user = repo.tenants[name].roster.user
        if user is None or user == me:
            local.add(name)
        elif root:
            delegated.setdefault(user, []).append(name)
        else:
            skipped.append(f"tenant {name} runs as user {user}; skipped: run fleet as {user}, or as root for every tenant")
    if not delegated and not skipped:
        return Scope(None if requested is None else frozenset(requested))
    local |= set(requested or ()) - set(repo.tenants)  # unknown names stay, for the --tenant check
    return Scope(frozenset(local), {u: tuple(t) for u, t in delegated.items()}, tuple(skipped))


def worst_code(codes: Collection[int]) -> int:
    """1 (error) outranks 2 (changes pending, --detailed-exitcode) outranks 0."""
    return 1 if any(c not in (0, 2) for c in codes) else (2 if 2 in codes else 0)
