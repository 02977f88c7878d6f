"""Helpers of the register's tests: a repository with `register:`, and queries as a role."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.spec.corpus import BASE_FLEET, FLEET
from tests.spec.support import build_repo

URL_ENV = "FLEET_REGISTER_URL"
REGISTER_BLOCK = f"register:\n  url_from:\n    env: {URL_ENV}\n"


def register_repo(parent: Path) -> Path:
    """The minimal example with `register: url_from: {env: FLEET_REGISTER_URL}`."""
    return build_repo(parent, {FLEET: BASE_FLEET + REGISTER_BLOCK})


def fleet(*args: str, url: str | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real `fleet` command, with the register's URL in its environment (or none)."""
    import os  # noqa: PLC0415

    full = {k: v for k, v in os.environ.items() if k != URL_ENV}
    if url is not None:
        full[URL_ENV] = url
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, env=full,
                          check=False, timeout=120, stdin=subprocess.DEVNULL)


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []
