"""The register outside a run: `fleet register migrate` and the reads of `--all-hosts`.

Both start from the repository's fleet.yaml `register:` (a fleet without one is told
how to add it) and raise UserError for anything a person must fix; the connection
string never appears in what they raise.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from reconciler.drivers import register as pg
from reconciler.errors import UserError
from reconciler.register.schema import Migration
from reconciler.spec.load import load_repo
from reconciler.spec.models import Register


def register_of(repo: Path) -> Register:
    """fleet.yaml's `register:`; UserError when fleet.yaml is invalid or has none."""
    loaded = load_repo(repo)
    fleet_errors = [e for e in loaded.errors if Path(e.path).name == "fleet.yaml" and e.tenant is None]
    if loaded.fleet is None or fleet_errors:
        first = fleet_errors[0] if fleet_errors else None
        where = f"{first.path}:{first.line}:{first.col}: {first.message}" if first else f"{repo}/fleet.yaml is invalid"
        raise UserError(f"{where} (run `fleet validate {repo}`)")
    if loaded.fleet.register is None:
        raise UserError(f"{repo}/fleet.yaml has no `register:`; add `register: {{url_from: {{env: FLEET_REGISTER_URL}}}}` "
                        "(docs/register.md)")
    return loaded.fleet.register


def migrate(repo: Path) -> tuple[int, list[Migration]]:
    """Bring the register's schema up to this fleet's; returns the version found and what was applied."""
    config = register_of(repo)
    try:
        with pg.connect(pg.read_url(config.url_from)) as conn:
            return pg.migrate(conn, pg.migrations())
    except pg.RegisterError as exc:
        raise UserError(f"register: {exc}") from None


def tenant_roles(repo: Path, only: Collection[str] | None) -> tuple[list[tuple[str, str]], dict[str, frozenset[str]]]:
    """(Linux user, tenant) of each tenant with `user:` (of `only`, when given), and every
    tenant each such user runs (a role may act for all of them, none other); UserError for
    a tenant named that does not exist or has no `user:`."""
    loaded = load_repo(repo)
    wanted = sorted(loaded.tenants) if only is None else sorted(set(only))
    broken = [e for e in loaded.errors if only is None or e.tenant in only]
    if broken:
        raise UserError(f"{broken[0]} (fix the specs first: `fleet validate {repo}`)")
    pairs: list[tuple[str, str]] = []
    for name in wanted:
        spec = loaded.tenants.get(name)
        if spec is None:
            raise UserError(f"tenant {name!r} is not in {repo}/tenants/; name one of: {', '.join(sorted(loaded.tenants))}")
        if spec.roster.user is not None:
            pairs.append((spec.roster.user, name))
        elif only is not None:
            raise UserError(f"tenant {name} has no `user:` in its roster: root's run writes it to the register as "
                            "root's own role, so it needs no role of its own")
    runs: dict[str, set[str]] = {}
    for name, spec in loaded.tenants.items():
        if spec.roster.user is not None:
            runs.setdefault(spec.roster.user, set()).add(name)
    return pairs, {user: frozenset(names) for user, names in runs.items()}


def grant(repo: Path, only: Collection[str] | None) -> list[tuple[str, str, list[str]]]:
    """For each tenant with `user:`, a LOGIN role named after its Linux user, in
    fleet_tenant, mapped to it in fleet.tenant_roles (a user of two tenants: to both);
    returns (role, tenant, what was done)."""
    config = register_of(repo)
    pairs, runs = tenant_roles(repo, only)
    if not pairs:
        raise UserError(f"no tenant of {repo} has a `user:`; tenant roles are for tenants run as their own Linux users "
                        "(docs/register.md)")
    done = []
    try:
        with pg.connect(pg.read_url(config.url_from)) as conn:
            pg.check_schema(conn, pg.migrations()[-1].version)
            for role, tenant in pairs:
                done.append((role, tenant, pg.grant_tenant_role(conn, role, tenant, runs[role])))
    except pg.RoleRefused as exc:
        raise UserError(f"register: {exc}; granting tenant roles needs a role with CREATEROLE and admin of "
                        f"{pg.TENANT_GROUP} (the register's owner, who ran `fleet register migrate`), or create them "
                        "by hand (docs/register.md, \"Tenant roles\")") from None
    except pg.RegisterError as exc:
        raise UserError(f"register: {exc}") from None
    return done


def all_agents(repo: Path) -> list[dict[str, Any]]:
    """Every agent row the caller's database role may see, on every host."""
    return _read(repo, pg.read_agents)


def all_usage(repo: Path) -> list[dict[str, Any]]:
    """Every budget account's reading the caller's database role may see, on every host."""
    return _read(repo, pg.read_usage)


def all_tasks(repo: Path) -> list[dict[str, Any]]:
    """Every lane task, with its holder, the caller's database role may see, on every host."""
    return _read(repo, pg.read_tasks)


def _read(repo: Path, read: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    config = register_of(repo)
    try:
        with pg.connect(pg.read_url(config.url_from)) as conn:
            pg.check_schema(conn, pg.migrations()[-1].version)
            return read(conn)
    except pg.RegisterError as exc:
        raise UserError(f"register: {exc}") from None
