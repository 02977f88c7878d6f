"""`fleet register migrate`: the Postgres register's schema created or brought up to date.

The register is optional (fleet.yaml `register:`, docs/register.md); `fleet ps --all-hosts`
reads it. Nothing here prints a connection string.
"""

from __future__ import annotations

from reconciler.cli.common import RepoArg, command, group, out
from reconciler.engine.run import check_repo

app = group("The Postgres register: the fleet's record of every host (docs/register.md).\n\n"
            "Example: fleet register migrate ~/fleet")


@command(app, "migrate")
def migrate_command(repo: RepoArg) -> None:
    """Create or upgrade the register's `fleet` schema from the migrations shipped with fleet.

    Runs in one transaction under an advisory lock, so two hosts migrating at once is safe;
    running it again changes nothing. A register newer than this fleet is refused.

    Example: fleet register migrate ~/fleet   (with FLEET_REGISTER_URL set, as fleet.yaml says)
    """
    from reconciler.engine.register_admin import migrate  # noqa: PLC0415  (kept out of reconcile's start-up)

    found, applied = migrate(check_repo(repo))
    if not applied:
        out.print(f"register: schema at version {found}, up to date", highlight=False)
        return
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    out.print(f"register: schema {found} -> {applied[-1].version} ({names})", highlight=False)
