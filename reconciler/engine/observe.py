"""The observe step: ask each driver once and freeze the answers into one ObservedFleet.

It sits between load and plan in every tick. The number of external calls is constant
per socket, systemd manager and tenant, never per agent: one tmux listing per distinct
socket, one `observe_units()` per systemd manager, one directory scan per tenant for
heartbeats and one for usage records. It persists nothing; what could not be read
becomes a line in `problems`, never a failed tick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from reconciler.core.health import FUTURE_SKEW
from reconciler.drivers import files, systemd, tmux, usage, users
from reconciler.model.observed import (
    Heartbeat,
    ObservedFleet,
    SocketKey,
    SocketSnapshot,
    SystemdSnapshot,
)
from reconciler.model.usage import UsageSignal

#: Why another user's manager is not asked yet (SystemdSnapshot.reason).
OTHER_USER_SYSTEMD = "another user's systemd --user: that user's own fleet run drives it"


def observe(
    sockets: Iterable[SocketKey],
    systemd_users: Iterable[str | None],
    heartbeat_dirs: Mapping[str, Path],
    now: datetime,
    usage_dirs: Mapping[str, Path] | None = None,
) -> ObservedFleet:
    """One snapshot of this host: tmux servers, systemd managers, heartbeats and usage by tenant.

    `heartbeat_dirs` maps each tenant to its heartbeat folder; `usage_dirs` to its usage
    folder, by default the `usage/` beside the heartbeats (`$state/<tenant>/usage`).
    `now` is the caller's clock reading, stored as `taken_at` so the snapshot replays
    exactly.
    """
    snapshots = _observe_sockets(sockets)
    heartbeats, beat_problems = _observe_heartbeats(heartbeat_dirs, now)
    if usage_dirs is None:
        usage_dirs = {tenant: folder.parent / "usage" for tenant, folder in heartbeat_dirs.items()}
    signals, usage_problems = _observe_usage(usage_dirs, now)
    problems = [snap.error for snap in snapshots.values() if snap.error]
    return ObservedFleet(
        taken_at=now,
        sockets=snapshots,
        systemd={user: _observe_systemd(user) for user in dict.fromkeys(systemd_users)},
        heartbeats=heartbeats,
        problems=(*problems, *beat_problems, *usage_problems),
        usage=signals,
    )


def _observe_sockets(sockets: Iterable[SocketKey]) -> dict[SocketKey, SocketSnapshot]:
    """One tmux listing per distinct socket, in the caller's order."""
    return {key: tmux.observe_socket(key) for key in dict.fromkeys(sockets)}


def _observe_systemd(user: str | None) -> SystemdSnapshot:
    """Our own user manager (a tenant whose `user:` is who runs this process included);
    another user's is observed by that user's own run (root runs it as the user)."""
    if not users.is_me(user):
        return SystemdSnapshot(available=False, reason=OTHER_USER_SYSTEMD)
    return systemd.observe_units()


def _observe_heartbeats(
    heartbeat_dirs: Mapping[str, Path], now: datetime
) -> tuple[dict[tuple[str, str], Heartbeat], list[str]]:
    """One scan per tenant folder; a heartbeat naming another tenant is a problem.

    Such a file is not trusted for either tenant: an agent writes only its own tenant's
    folder, so a mismatch means a misconfigured agent or a copied file. A heartbeat
    stamped further ahead of `now` than health.FUTURE_SKEW is kept (core/health.py does
    not count it as an answer) and reported as a clock problem.
    """
    beats: dict[tuple[str, str], Heartbeat] = {}
    problems: list[str] = []
    for tenant, directory in heartbeat_dirs.items():
        found, scan_problems = files.scan_heartbeats(directory)
        problems += scan_problems
        for agent, beat in sorted(found.items()):
            if beat.tenant != tenant:
                problems.append(
                    f"{directory / (agent + '.json')}: tenant {beat.tenant!r} does not match "
                    f"the folder's tenant {tenant!r}; ignored until the agent writes its "
                    f"own tenant's folder"
                )
                continue
            if beat.ts - now > FUTURE_SKEW:
                problems.append(
                    f"{directory / (agent + '.json')}: stamped {beat.ts.isoformat()}, "
                    f"{int((beat.ts - now).total_seconds())}s ahead of this host's clock; not counted as "
                    "an answer, so the agent is restarted once its grace is over: check both clocks (NTP)"
                )
            beats[(tenant, agent)] = beat
    return beats, problems


def _observe_usage(
    usage_dirs: Mapping[str, Path], now: datetime
) -> tuple[dict[tuple[str, str], UsageSignal], list[str]]:
    """One scan per tenant's usage folder; each record's confidence aged to `now`.

    Aging here (drivers/usage.py, `aged`) means the policy sees what a reading is still
    worth at this tick: a provider figure from three hours ago counts as `estimated`.
    """
    signals: dict[tuple[str, str], UsageSignal] = {}
    problems: list[str] = []
    for tenant, directory in usage_dirs.items():
        found, scan_problems = usage.scan_usage(directory)
        problems += scan_problems
        for account, signal in sorted(found.items()):
            if signal.tenant != tenant:
                problems.append(f"{directory / (account + '.json')}: tenant {signal.tenant!r} does not match "
                                f"the folder's tenant {tenant!r}; ignored")
                continue
            signals[(tenant, account)] = usage.aged(signal, now)
    return signals, problems
