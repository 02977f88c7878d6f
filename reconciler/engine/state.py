"""What the reconciler keeps between ticks in the state directory, per tenant.

`restarts.json` holds the restart history behind backoff and Stalled, `resumes.json` the
resume messages typed to agents held by a usage limit, `budget.json` the
budget policy's memory (written by apply, read by the observe step). Each is small,
written atomically, and a corrupt file is reported and treated as empty (at worst an
agent restarts once sooner than its backoff said). Paths come from model/layout.py. Every such file is read through
`read_capped`, so a huge one or a special file is refused rather than read forever.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from reconciler.core.budget_memory import parse_memory
from reconciler.core.budget_types import AgentMemory
from reconciler.drivers.files import DAMAGED, damage, read_capped, write_if_changed
from reconciler.model.history import RestartRecord
from reconciler.model.layout import StateLayout
from reconciler.model.records import json_object

if TYPE_CHECKING:  # lane memory: only tenants with lanes have one (core/lane_plan.py)
    from reconciler.core.lanes import LaneMemory
    from reconciler.core.resume import ResumeRecord  # resume records: only after a usage limit

T = TypeVar("T")
#: A `last_at` after this is damage: the planner could not add a backoff to it.
_END_OF_TIME = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def parse_history(text: str) -> dict[str, RestartRecord]:
    """`restarts.json` -> records by agent; raises ValueError on anything malformed.

    >>> parse_history('{"a": {"attempts": 2, "last_at": "2026-11-25T12:00:00+00:00", "last_reason": "dead"}}')
    {'a': RestartRecord(attempts=2, last_at=datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc), last_reason='dead')}
    """
    out = {}
    for agent, rec in json_object(text).items():
        if not isinstance(rec, dict):
            raise ValueError(f"{agent}: expected an object")
        attempts = rec["attempts"]
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise ValueError(f"{agent}: attempts must be a non-negative integer, got {attempts!r:.40}")
        last_at = datetime.fromisoformat(rec["last_at"])
        if last_at.tzinfo is None:
            raise ValueError(f"{agent}: last_at has no time zone")
        if last_at.astimezone(UTC) > _END_OF_TIME:
            raise ValueError(f"{agent}: last_at {rec['last_at']!r:.40} is too far ahead to add a backoff to")
        out[str(agent)] = RestartRecord(attempts, last_at, str(rec.get("last_reason", "")))
    return out


def render_history(records: Mapping[str, RestartRecord]) -> str:
    doc = {
        agent: {"attempts": r.attempts, "last_at": r.last_at.isoformat(), "last_reason": r.last_reason}
        for agent, r in sorted(records.items())
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def read_per_tenant(
    tenants: Iterable[str], path_of: Callable[[str], Path], parse: Callable[[str], Mapping[str, T]], what: str
) -> tuple[dict[tuple[str, str], T], list[str]]:
    """Every tenant's per-agent records from one small file each, keyed (tenant, agent).

    A missing file is an empty one; a corrupt one is reported and starts over, which at
    worst repeats a step the reconciler has already taken once."""
    found: dict[tuple[str, str], T] = {}
    problems = []
    for tenant in tenants:
        path = path_of(tenant)
        try:
            records = parse(read_capped(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: unreadable {what} ({exc.strerror or exc}); starting it over")
            continue
        except DAMAGED as exc:
            problems.append(f"{path}: unreadable {what} ({damage(exc)}); starting it over")
            continue
        found.update({(tenant, agent): rec for agent, rec in records.items()})
    return found, problems


def read_history(state_dir: Path, tenants: list[str]) -> tuple[dict[tuple[str, str], RestartRecord], list[str]]:
    """Every tenant's restart history, keyed (tenant, agent), and what could not be read."""
    return read_per_tenant(tenants, StateLayout(state_dir).restarts, parse_history, "restart history")


def read_budget_memory(state_dir: Path, tenants: Iterable[str]) -> tuple[dict[tuple[str, str], AgentMemory], list[str]]:
    """Every tenant's budget memory; a corrupt file starts over (agents go back to their
    desired model and the policy steps them down again if needed)."""
    return read_per_tenant(tenants, StateLayout(state_dir).budget_memory, parse_memory, "budget memory")


#: The history text this process last rendered for each file, with its records: a
#: resident loop whose restart history did not change does not render it again.
_RENDERED: dict[Path, tuple[dict[str, RestartRecord], str]] = {}


def write_history(state_dir: Path, tenant: str, records: Mapping[str, RestartRecord]) -> None:
    """Write one tenant's history if it changed (same records, same bytes, no write; the
    file is still compared, so one edited meanwhile is put back)."""
    path = StateLayout(state_dir).restarts(tenant)
    if not records and not path.exists():
        return
    kept = _RENDERED.get(path)
    if kept is not None and kept[0] == records:
        text = kept[1]
    else:
        text = render_history(records)
        if len(_RENDERED) >= 4096 and path not in _RENDERED:
            _RENDERED.clear()
        _RENDERED[path] = (dict(records), text)
    write_if_changed(path, text, mode=0o600)


def read_lane_memory(state_dir: Path, tenants: Iterable[str]) -> tuple[dict[str, LaneMemory], list[str]]:
    """Each tenant's lane memory; a corrupt file starts over (every worker's cooldown then
    counts from its session's start or its last report, and no task is held: at worst a
    task is handed out again)."""
    found: dict[str, LaneMemory] = {}
    problems: list[str] = []
    tenants = list(tenants)
    if not tenants:
        return found, problems
    from reconciler.core.lane_memory import parse_lanes  # noqa: PLC0415  (the lanes load only for tenants with lanes)

    for tenant in tenants:
        path = StateLayout(state_dir).lanes(tenant)
        try:
            found[tenant] = parse_lanes(read_capped(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{path}: unreadable lane memory ({exc.strerror or exc}); starting it over")
        except DAMAGED as exc:
            problems.append(f"{path}: unreadable lane memory ({damage(exc)}); starting it over")
    return found, problems


def read_resumes(state_dir: Path, tenants: list[str]) -> tuple[dict[tuple[str, str], ResumeRecord], list[str]]:
    """Every tenant's resume records (core/resume.py); a corrupt file starts over (at worst
    one resume is typed again, or the back-off starts again from the hold)."""
    return read_per_tenant(tenants, StateLayout(state_dir).resumes, _parse_resumes, "resume records")


def write_resumes(state_dir: Path, tenant: str, records: Mapping[str, ResumeRecord]) -> None:
    """Write one tenant's resume records if they changed; none, and no file: nothing written."""
    path = StateLayout(state_dir).resumes(tenant)
    if not records and not path.exists():
        return
    from reconciler.core.resume import resumes_json  # noqa: PLC0415  (only with resume records)

    write_if_changed(path, resumes_json(records), mode=0o600)


def _parse_resumes(text: str) -> dict[str, ResumeRecord]:
    from reconciler.core.resume import parse_resumes  # noqa: PLC0415  (read only where a file exists)

    return parse_resumes(text)


def write_lane_memory(state_dir: Path, tenant: str, memory: LaneMemory) -> None:
    """Write one tenant's lane memory if it changed."""
    from reconciler.core.lane_memory import lanes_json  # noqa: PLC0415  (the lanes load only for tenants with lanes)

    write_if_changed(StateLayout(state_dir).lanes(tenant), lanes_json(memory), mode=0o600)
