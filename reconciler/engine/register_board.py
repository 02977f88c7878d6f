"""One read of the register for `fleet serve`'s Hosts page (docs/register.md).

The same rows as `fleet ps --all-hosts [--tasks]` and `fleet budget show --all-hosts`, read on one
connection made with the serving user's own connection string (fleet.yaml's `url_from`),
so row-level security shows it what that role may see and nothing more. Blocking: the
web view calls it in a worker thread, only when a notification or its slow fallback
asks. What fails raises `RegisterError`, whose message holds no connection string.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from reconciler.core.hostsview import Board
from reconciler.drivers import register as pg
from reconciler.drivers.register import RegisterError

if TYPE_CHECKING:
    from reconciler.spec.models import Register

__all__ = ["RegisterError", "read_board"]


def read_board(config: Register) -> Board:
    """Every agent, account and lane task row the configured role may see, on every host."""
    with pg.connect(pg.read_url(config.url_from)) as conn:
        pg.check_schema(conn, pg.migrations()[-1].version)
        agents = pg.read_agents(conn)
        usage = pg.read_usage(conn)
        tasks = pg.read_tasks(conn)
    return Board(datetime.now(UTC), tuple(agents), tuple(usage), tuple(tasks))
