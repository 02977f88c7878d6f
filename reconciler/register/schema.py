"""The register's schema versions: migrations shipped in the package, and what a version means.

Migrations are plain SQL files `migrations/NNNN_name.sql` (reconciler/register/migrations),
applied in order by `fleet register migrate` and recorded in `fleet.schema_migrations`.
A register newer than this code is never written to: it may hold columns this code
would leave out, or meanings it does not know.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
MIGRATE_HINT = "run `fleet register migrate REPO` as the operator"


@dataclass(frozen=True, slots=True, order=True)
class Migration:
    version: int
    name: str
    sql: str = ""


def parse_migrations(files: Iterable[tuple[str, str]]) -> tuple[Migration, ...]:
    """(file name, text) pairs as migrations in version order; numbers run 1, 2, ... with no gap.

    >>> [m.version for m in parse_migrations([("0002_b.sql", ""), ("0001_a.sql", ""), ("README", "")])]
    [1, 2]
    """
    found = sorted(Migration(int(m.group(1)), m.group(2), text) for name, text in files if (m := _NAME.match(name)))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.version:04d}_{migration.name} is out of sequence (expected {expected:04d})")
    return tuple(found)


def version_problem(database: int, code: int) -> str | None:
    """Why a register at `database` cannot be written by code that knows up to `code`, or None.

    >>> version_problem(1, 1) is None
    True
    >>> version_problem(0, 1)  # doctest: +ELLIPSIS
    'the register has no fleet schema yet (this fleet knows version 1); run `fleet register migrate REPO`...'
    >>> version_problem(3, 1)  # doctest: +ELLIPSIS
    "the register's schema is at version 3, newer than this fleet knows (1); upgrade fleet on this host..."
    """
    if database == code:
        return None
    if database > code:
        return (f"the register's schema is at version {database}, newer than this fleet knows ({code}); "
                "upgrade fleet on this host, never migrate a register down")
    if database == 0:
        return f"the register has no fleet schema yet (this fleet knows version {code}); {MIGRATE_HINT}"
    return f"the register's schema is at version {database}, older than this fleet's ({code}); {MIGRATE_HINT}"
