"""Load a fleet repository: YAML with positions -> validated models, or located errors.

The first step of every tick and of `fleet validate`. All errors are collected at once;
a broken tenant is set aside and the others still load; nothing here touches the world
beyond reading the repository's files.

Each file's result is kept by its bytes (spec/cache.py), and so is the whole repository:
a resident `--watch` loop whose specs did not change gets the very same FleetRepo back
(what follows can reuse its own results by identity), and an edited file is the only
one parsed and validated again.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from reconciler.errors import SpecError
from reconciler.spec.cache import BytesCache
from reconciler.spec.dsn import MESSAGE as DSN_MESSAGE
from reconciler.spec.dsn import find_connection_strings
from reconciler.spec.messages import describe
from reconciler.spec.models import API_VERSION, Budget, Document, Fleet, Role, Roster, Tasks
from reconciler.spec.repo import FleetRepo, TenantSpec
from reconciler.spec.rules import (
    check_fleet,
    check_folder,
    check_lane_hosts,
    check_shared_sockets,
    check_tenant,
)
from reconciler.spec.yamlsource import Source, parse_source, read_raw

M = TypeVar("M", bound=Document)

TENANT_FILES = {"roster.yaml": Roster, "budget.yaml": Budget, "tasks.yaml": Tasks}

Loaded = tuple[Any, Source | None, tuple[SpecError, ...]]
#: Each spec file's parsed and validated result, by (path, kind, tenant) and bytes.
_FILES: BytesCache[bytes, Loaded] = BytesCache()
#: The rules' verdict on each tenant, with the documents it was given (kept alive, compared by identity).
_CHECKED: dict[tuple[object, ...], tuple[tuple[object, ...], tuple[SpecError, ...]]] = {}
_FILES_LIMIT = 4096
#: The last repository loaded from each root: returned as it is when it compares equal.
_REPOS: dict[Path, FleetRepo] = {}
MAX_ROOTS = 16


def _display(root: Path, rel: str) -> str:
    return str(root / rel) if str(root) != "." else rel


def _header_errors(source: Source, model: type[Document]) -> list[SpecError]:
    """apiVersion and kind first: a wrong kind makes every other message misleading."""
    data = source.data
    expected_kind = model.__name__
    errors: list[SpecError] = []
    version = data.get("apiVersion")
    if version != API_VERSION:
        what = "missing" if version is None else f"{version!r}"
        errors.append(source.error(["apiVersion"], f"apiVersion is {what}; write `apiVersion: {API_VERSION}`"))
    kind = data.get("kind")
    if kind != expected_kind:
        what = "missing" if kind is None else f"{kind!r}"
        errors.append(source.error(["kind"], f"kind is {what}; this file must say `kind: {expected_kind}`"))
    return errors


def parse_document(source: Source, model: type[M], tenant: str | None = None) -> M | list[SpecError]:
    """Validate one parsed file against its kind, locating every error."""
    header = _header_errors(source, model)
    if header:
        return header
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        return located(source, exc, model, tenant)


def located(source: Source, exc: ValidationError, model: type[BaseModel], tenant: str | None) -> list[SpecError]:
    out = []
    for err in exc.errors(include_url=False):
        message, at_key = describe(err, model)
        loc = [p for p in err["loc"] if p != "[key]"]
        out.append(source.error(loc, message, key=at_key, tenant=tenant))
    return out


def _load_one(root: Path, rel: str, model: type[M], tenant: str | None) -> tuple[M | None, Source | None, list[SpecError]]:
    """One file parsed and validated, or its located errors; the same bytes as last time
    give the same result without parsing (spec/cache.py)."""
    display = _display(root, rel)
    raw = read_raw(root / rel, display)
    if isinstance(raw, SpecError):
        return None, None, [SpecError(raw.path, raw.line, raw.col, raw.message, tenant)]
    key = (str((root / rel).absolute()), display, model, tenant)
    doc, source, errors = _FILES.get(key, raw, lambda data: _parse_one(data, display, model, tenant))
    return doc, source, list(errors)


def _parse_one(raw: bytes, display: str, model: type[M], tenant: str | None) -> Loaded:
    source = parse_source(raw, display)
    if isinstance(source, SpecError):
        return None, None, (SpecError(source.path, source.line, source.col, source.message, tenant),)
    leaked = [SpecError(display, line, col, DSN_MESSAGE, tenant) for line, col in find_connection_strings(source.text)]
    if leaked:  # nothing is applied from a file that holds a connection string
        return None, source, tuple(leaked)
    result = parse_document(source, model, tenant)
    if isinstance(result, list):
        return None, source, tuple(result)
    return result, source, ()


def _yaml_files(folder: Path) -> Iterable[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def load_repo(root: Path) -> FleetRepo:
    """Read and check everything under `root`; never raises for a user's mistake."""
    errors: list[SpecError] = []
    fleet_file = root / "fleet.yaml"
    fleet: Fleet | None = None
    fleet_ok = False
    if not fleet_file.is_file():
        errors.append(SpecError(_display(root, "fleet.yaml"), 1, 1,
                                "no fleet.yaml; a fleet repository starts with fleet.yaml (see `fleet init`)"))
    else:
        fleet, fleet_src, errs = _load_one(root, "fleet.yaml", Fleet, None)
        errors += errs
        if fleet is not None and fleet_src is not None:
            fleet_errors = check_fleet(fleet, fleet_src)
            errors += fleet_errors
            fleet_ok = not fleet_errors

    roles: dict[str, Role] = {}
    for path in _yaml_files(root / "roles"):
        rel = f"roles/{path.name}"
        role, src, errs = _load_one(root, rel, Role, None)
        errors += errs
        if role is not None and src is not None:
            if role.name != path.stem:
                errors.append(src.error(["name"], f"role name {role.name!r} differs from its file name; rename the file to {role.name}.yaml or set `name: {path.stem}`"))
            else:
                roles[role.name] = role

    tenants: dict[str, TenantSpec] = {}
    invalid: set[str] = set()
    tenants_dir = root / "tenants"
    folders = sorted(p for p in tenants_dir.iterdir() if p.is_dir()) if tenants_dir.is_dir() else []
    for folder in folders:
        spec, errs = _load_tenant(root, folder.name, fleet, roles)
        errors += errs
        if spec is None or errs:
            invalid.add(folder.name)
        else:
            tenants[folder.name] = spec

    for err in [*check_shared_sockets(list(tenants.values()), fleet), *check_lane_hosts(tenants.values())]:
        errors.append(err)
        if err.tenant:
            tenants.pop(err.tenant, None)
            invalid.add(err.tenant)

    if not fleet_ok:
        # Tenants were still checked against what fleet.yaml says, but nothing runs from
        # a fleet.yaml that failed validation.
        invalid |= set(tenants)
        tenants = {}
    loaded = FleetRepo(root, fleet, roles, tenants, frozenset(invalid), tuple(sorted(set(errors))))
    return _same_as_before(loaded)


def _same_as_before(loaded: FleetRepo) -> FleetRepo:
    """The previous FleetRepo of this root when nothing in it changed (its files' results
    are the cached objects, so the comparison is mostly identity checks), else `loaded`."""
    key = loaded.root.absolute()
    previous = _REPOS.get(key)
    if previous is not None and previous == loaded:
        return previous
    if len(_REPOS) >= MAX_ROOTS and key not in _REPOS:
        _REPOS.clear()
    _REPOS[key] = loaded
    return loaded


def forget_loaded() -> None:
    """Drop every kept result (tests; a caller that wants a cold load)."""
    _FILES.clear()
    _REPOS.clear()
    _CHECKED.clear()


def _load_tenant(root: Path, name: str, fleet: Fleet | None, roles: dict[str, Role]) -> tuple[TenantSpec | None, list[SpecError]]:
    errors: list[SpecError] = []
    base = f"tenants/{name}"
    for path in _yaml_files(root / base):
        if path.name not in TENANT_FILES:
            errors.append(SpecError(_display(root, f"{base}/{path.name}"), 1, 1,
                                    f"unexpected file {path.name}; a tenant folder holds roster.yaml, budget.yaml and tasks.yaml"))
    if not (root / base / "roster.yaml").is_file():
        errors.append(SpecError(_display(root, f"{base}/roster.yaml"), 1, 1,
                                f"tenant {name!r} has no roster.yaml; add one or remove the folder", name))
        return None, errors
    roster, r_src, errs = _load_one(root, f"{base}/roster.yaml", Roster, name)
    errors += errs
    budget = tasks = None
    sources: dict[str, Source] = {}
    b_src = t_src = None
    if (root / base / "budget.yaml").is_file():
        budget, b_src, errs = _load_one(root, f"{base}/budget.yaml", Budget, name)
        errors += errs
    if (root / base / "tasks.yaml").is_file():
        tasks, t_src, errs = _load_one(root, f"{base}/tasks.yaml", Tasks, name)
        errors += errs
    for key, src in (("roster", r_src), ("budget", b_src), ("tasks", t_src)):
        if src is not None:
            sources[key] = src
    if roster is None:
        # The rules that need no roster still run, so one pass shows every problem.
        for doc, src in ((budget, b_src), (tasks, t_src)):
            if doc is not None and src is not None:
                errors += check_folder(doc.tenant, src, name)
        return None, [_with_tenant(e, name) for e in errors]
    spec = TenantSpec(name, roster, budget, tasks, sources)
    if fleet is not None:
        errors += _check_tenant(root, spec, fleet, roles)
    return (spec if not errors else None), [_with_tenant(e, name) for e in errors]


def _check_tenant(root: Path, spec: TenantSpec, fleet: Fleet, roles: dict[str, Role]) -> list[SpecError]:
    """check_tenant, or what it said last time when every document it reads is the very
    object it read then (the file cache gives the same objects for the same bytes)."""
    objects = (spec.roster, spec.budget, spec.tasks, *spec.sources.values(), fleet, *roles.values())
    key = (root.absolute(), spec.name, tuple(spec.sources), tuple(roles))
    kept = _CHECKED.get(key)
    if kept is not None and len(kept[0]) == len(objects) and all(a is b for a, b in zip(kept[0], objects, strict=True)):
        return list(kept[1])
    errors = check_tenant(spec, fleet, roles)
    if len(_CHECKED) >= _FILES_LIMIT and key not in _CHECKED:
        _CHECKED.clear()
    _CHECKED[key] = (objects, tuple(errors))
    return errors


def _with_tenant(err: SpecError, tenant: str) -> SpecError:
    return err if err.tenant else SpecError(err.path, err.line, err.col, err.message, tenant)
