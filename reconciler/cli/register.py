"""`fleet register migrate`: the Postgres register's schema created or brought up to date.

The register is optional (fleet.yaml `register:`, docs/register.md); `fleet ps --all-hosts`
reads it. Nothing here prints a connection string.
"""

from __future__ import annotations

from reconciler.cli.common import RepoArg, TenantOpt, command, group, out
from reconciler.engine.run import check_repo

app = group("The Postgres register: the fleet's record of every host (docs/register.md).\n\n"
            "Example: fleet register migrate ~/fleet\n\n"
            "Example: fleet register grant ~/fleet --tenant jarvis")


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


@command(app, "grant")
def grant_command(repo: RepoArg, tenant: TenantOpt = None) -> None:
    """Give each tenant that runs as its own Linux user (`user:` in its roster) a register role.

    Creates a LOGIN role named after the Linux user, in fleet_tenant, and maps it to the
    tenant in fleet.tenant_roles, so that tenant's run connects as it (peer authentication
    on the local socket) and sees only its tenant's rows. Idempotent; needs CREATEROLE.

    Example: fleet register grant ~/fleet --tenant jarvis   (as the register's operator)
    """
    from reconciler.engine.register_admin import grant  # noqa: PLC0415  (kept out of reconcile's start-up)

    for role, name, done in grant(check_repo(repo), tenant):
        said = ", ".join(done) if done else "already in place"
        out.print(f"register: role {role} for tenant {name}: {said}", highlight=False)
