"""The register outside a run: `fleet register migrate` and the reads of `--all-hosts`.

Both start from the repository's fleet.yaml `register:` (a fleet without one is told
how to add it) and raise UserError for anything a person must fix; the connection
string never appears in what they raise.
"""

from __future__ import annotations

from collections.abc import Callable
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


def all_agents(repo: Path) -> list[dict[str, Any]]:
    """Every agent row the caller's database role may see, on every host."""
    return _read(repo, pg.read_agents)


def all_usage(repo: Path) -> list[dict[str, Any]]:
    """Every budget account's reading the caller's database role may see, on every host."""
    return _read(repo, pg.read_usage)


def _read(repo: Path, read: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    config = register_of(repo)
    try:
        with pg.connect(pg.read_url(config.url_from)) as conn:
            pg.check_schema(conn, pg.migrations()[-1].version)
            return read(conn)
    except pg.RegisterError as exc:
        raise UserError(f"register: {exc}") from None
