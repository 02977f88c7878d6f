"""Write back: status per host and tenant, TASKS.md and MISSION-MANIFEST.md, into the fleet repository.

The last step of a tick. Files are written only when their bytes change (atomically),
so a run that changed nothing leaves the work tree clean and Git commits nothing.
TASKS.md and MISSION-MANIFEST.md (the projections) are rendered from the specs and every
host's status files, never merged (with a register, by the lease holder alone, from the
register's copies of those files: engine/reconcile.py). A
status file that cannot be read (damaged, huge, not a file) is reported and rewritten.

A resident `--watch` loop does not redo what did not change: a status file whose text
is the one seen before is not parsed again, and a status or TASKS.md whose inputs equal
the last ones rendered is not rendered again (what is on disk is still compared, so a
file edited meanwhile is rewritten).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ruamel.yaml.error import YAMLError

from reconciler.core.plan import ActionKind
from reconciler.core.render import parse_status, render_manifest, render_status, render_tasks
from reconciler.core.status import PlanIndex, tenant_status
from reconciler.core.task_spend import SpendBook, book_spend
from reconciler.drivers.audit import redact
from reconciler.drivers.files import DAMAGED, damage, read_capped, write_if_changed
from reconciler.drivers.ledger_fold import read_ledger_fold
from reconciler.engine.apply import Outcome
from reconciler.engine.tick import Tick
from reconciler.model.layout import StateLayout
from reconciler.model.ledger import LedgerFold, fold_changes
from reconciler.model.status import RunRecord, TenantStatus
from reconciler.spec.cache import BytesCache
from reconciler.spec.repo import FleetRepo

STATUS_DIR = "status"
TASKS_FILE = "TASKS.md"
MANIFEST_FILE = "MISSION-MANIFEST.md"
#: The projections rendered from the specs and every host's status, never merged.
PROJECTIONS = (TASKS_FILE, MANIFEST_FILE)
#: A 100-agent status is about 40 KB; a status file over this is not one we wrote.
MAX_STATUS_BYTES = 16 << 20
#: What parsing a damaged status file raises (YAML for files written by hand or by old versions).
_DAMAGED_STATUS: tuple[type[Exception], ...] = (*DAMAGED, YAMLError)

if TYPE_CHECKING:  # the lanes load only for fleets with lanes
    from reconciler.core.lanes import Window

D = TypeVar("D")
#: Status files this process parsed, by path and text.
_PARSED: BytesCache[str, TenantStatus] = BytesCache()
#: What this process last rendered for each file: the text, and the inputs it came from.
_RENDERED: dict[Path, tuple[str, object]] = {}
#: What this process last booked of each ledger's spend: the windows, the fold booked, the book.
_BOOKED: dict[tuple[Path, str, str], tuple[tuple[Window, ...], LedgerFold, SpendBook]] = {}


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: tuple[str, ...]  # repository-relative paths whose bytes changed
    problems: tuple[str, ...]
    #: This host's status of every tenant it has one of (this run's, then the files of tenants it did not
    #: run: left out by --tenant, or run by their own users): what the register is told.
    statuses: tuple[TenantStatus, ...] = ()


def status_path(repo: Path, host: str, tenant: str) -> Path:
    return repo / STATUS_DIR / host / f"{tenant}.yaml"


def read_status(path: Path) -> tuple[TenantStatus | None, str | None]:
    """A status file, or None; a corrupt one is a problem (it is rewritten, not fatal)."""
    try:
        return _PARSED.get(str(path.absolute()), read_capped(path, MAX_STATUS_BYTES), parse_status), None
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        said = exc.strerror or str(exc)
    except _DAMAGED_STATUS as exc:
        said = damage(exc).replace("\n", " ")
    return None, f"{path}: unreadable status ({said}); it is rewritten from this run"


def read_all_statuses(repo: Path, skip_host: str | None = None) -> tuple[list[TenantStatus], list[str]]:
    """Every host's status files (except `skip_host`'s, which the caller has in memory)."""
    statuses, problems = [], []
    root = repo / STATUS_DIR
    for path in sorted(root.glob("*/*.yaml")) if root.is_dir() else []:
        if path.parent.name == skip_host:
            continue
        status, problem = read_status(path)
        if status is not None:
            statuses.append(status)
        if problem:
            problems.append(problem)
    return statuses, problems


def _untouched(repo: Path, host: str, done: set[str], problems: list[str]) -> list[TenantStatus]:
    """This host's status files of tenants not reconciled this run (left out by --tenant)."""
    out = []
    folder = repo / STATUS_DIR / host
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        if path.stem in done:
            continue
        status, problem = read_status(path)
        if status is not None:
            out.append(status)
        if problem:
            problems.append(problem)
    return out


def booked_spend(ledger: Path, tenant: str, host: str, fold: LedgerFold, windows: tuple[Window, ...]) -> SpendBook:
    """The tenant's spend on `host` booked under `windows`: the book of the last tick with
    only what the fold added since booked (the whole fold when the windows changed)."""
    key = (ledger.absolute(), tenant, host)
    kept = _BOOKED.get(key)
    old, book = (kept[1], kept[2]) if kept is not None and kept[0] == windows else (LedgerFold(), SpendBook())
    book = book_spend(book, fold_changes(old, fold, tenant, host), windows)
    if len(_BOOKED) >= 4096 and key not in _BOOKED:
        _BOOKED.clear()
    _BOOKED[key] = (windows, fold, book)
    return book


def run_record(tick: Tick, outcomes: Iterable[Outcome], tenant: str, revision: str, finished: datetime) -> RunRecord | None:
    mine = [o for o in outcomes if o.action.tenant == tenant and o.result != "skipped"]
    if not mine:
        return None
    return RunRecord(
        revision=revision,
        at=tick.now.isoformat(timespec="seconds"),
        duration_ms=int((finished - tick.now).total_seconds() * 1000),
        actions=tuple(f"{o.action.kind.value} {o.action.agent}" for o in mine),
        failed=sum(1 for o in mine if o.result == "failed"),
    )


def write_back(tick: Tick, outcomes: Iterable[Outcome], *, revision: str, finished: datetime,
               projections: bool = True) -> WriteResult:
    """Render this host's status for each tenant it runs, then (unless `projections` is
    False: the register's lease holder renders them, engine/reconcile.py) TASKS.md and
    MISSION-MANIFEST.md from all hosts' status files."""
    listed = list(outcomes)
    repo = tick.inputs.repo
    host = tick.inputs.host
    written: list[str] = []
    problems: list[str] = []
    mine: list[TenantStatus] = []
    index = PlanIndex(tick.plan)
    for name, tenant in tick.desired.tenants.items():
        path = status_path(repo, host, name)
        if not tenant.on_host(host) and not path.exists():
            continue  # never ran here; a host whose agents all moved away still says so
        previous, problem = read_status(path)
        if problem:
            problems.append(problem)
        done = [o for o in listed if o.action.tenant == name]
        started = {o.action.agent: f"{o.action.kind.value} at revision {revision}" for o in done
                   if o.result == "done" and o.action.kind != ActionKind.STOP}
        failed = {o.action.agent: redact(o.detail, o.action.launch.env if o.action.launch else ()) or "failed"
                  for o in done if o.result == "failed"}
        layout = StateLayout(tick.inputs.state_dir)  # the ledger from its fold's cursor (drivers/ledger_fold.py)
        fold, ledger_problems = read_ledger_fold(layout.ledger(name), layout.ledger_fold(name))
        problems += ledger_problems
        lanes = tick.lanes.tenants.get(name)
        status = tenant_status(
            tenant, host, tick.plan, tick.observed, revision=revision, started=started, failed=failed,
            run=run_record(tick, listed, name, revision, finished), previous=previous, now=tick.now,
            index=index, lanes=lanes, task_states=_task_states(tick, name),
            booked=booked_spend(layout.ledger(name), name, host, fold, lanes.memory.windows() if lanes else ()),
        )
        mine.append(status)
        if _write(path, rendered(path, status, render_status), problems):
            written.append(str(path.relative_to(repo)))
    untouched = _untouched(repo, host, {s.tenant for s in mine}, problems)
    if projections:
        names, _texts = project_from_files(tick, [*mine, *untouched], revision, problems)
        written += names
    return WriteResult(tuple(written), tuple(problems), (*mine, *untouched))


def project_from_files(tick: Tick, own: Sequence[TenantStatus], revision: str,
                       problems: list[str]) -> tuple[list[str], dict[str, str]]:
    """TASKS.md and MISSION-MANIFEST.md from the other hosts' status files and this host's
    `own` statuses (as without a register, or when it is away)."""
    others, read_problems = read_all_statuses(tick.inputs.repo, skip_host=tick.inputs.host)
    problems += read_problems
    return write_projections(tick, [*others, *own], revision, problems)


def write_projections(tick: Tick, statuses: Sequence[TenantStatus], revision: str,
                      problems: list[str]) -> tuple[list[str], dict[str, str]]:
    """Render TASKS.md and MISSION-MANIFEST.md from `statuses` (every host's) and write
    those whose bytes changed; returns their names and the text of each file rendered."""
    repo = tick.inputs.repo
    if tick.repo.fleet is None:
        return [], {}
    written: list[str] = []
    texts: dict[str, str] = {}
    listed = tuple(statuses)
    inputs = (revision, tuple((n, t.roster, t.tasks) for n, t in sorted(tick.repo.tenants.items())), listed)
    for name, render in ((TASKS_FILE, render_tasks), (MANIFEST_FILE, render_manifest)):
        texts[name] = rendered(repo / name, inputs, partial(_project, render, tick.repo, listed, revision))
        if _write(repo / name, texts[name], problems):
            written.append(name)
    return written, texts


def _project(render: Callable[[FleetRepo, Sequence[TenantStatus], str], str], repo: FleetRepo,
             statuses: Sequence[TenantStatus], revision: str, _inputs: object) -> str:
    return render(repo, statuses, revision)


def _task_states(tick: Tick, tenant: str) -> dict[str, str] | None:
    """The state people set on each task of the tenant's tasks.yaml (None: it has none)."""
    spec = tick.repo.tenants.get(tenant)
    if spec is None or spec.tasks is None:
        return None
    return {t.id: t.state for m in spec.tasks.missions for t in m.tasks}


def rendered(path: Path, inputs: D, render: Callable[[D], str]) -> str:
    """`render(inputs)`, or the text rendered last time for `path` when its inputs were equal.

    The caller still writes it through write_if_changed, so a file edited meanwhile is
    put back; only the rendering is saved."""
    key = path.absolute()
    kept = _RENDERED.get(key)
    if kept is not None and kept[1] == inputs:
        return kept[0]
    text = render(inputs)
    if len(_RENDERED) >= 4096 and key not in _RENDERED:
        _RENDERED.clear()
    _RENDERED[key] = (text, inputs)
    return text


def _write(path: Path, text: str, problems: list[str]) -> bool:
    """write_if_changed, with a failure (a folder in the file's place, a full disk) as a
    problem line: one unwritable file does not keep the others from being written."""
    try:
        return write_if_changed(path, text)
    except OSError as exc:
        problems.append(f"{path}: could not write it ({exc.strerror or exc}); the old file, if any, is unchanged")
        return False
