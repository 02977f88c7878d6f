"""The register's Postgres I/O (docs/register.md): connect, migrate, write a batch, read rows.

psycopg is imported inside these functions only, so a fleet without `register:` never
loads it. Invariants:

- The connection string is read from where fleet.yaml's `url_from` says, at the moment
  of connecting, and never kept, logged or put in a message: every error passing out of
  this module is scrubbed of it (and of anything that looks like a password).
- One batch is one transaction; its statements are idempotent (upserts, inserts ON
  CONFLICT DO NOTHING, deletes by key) and a batch at or below the host's `last_batch`
  is skipped whole, so replaying a spool never writes anything twice.
- Migrations run in one transaction under an advisory lock; a schema newer than the
  code is refused, never written to.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.register.rows import APPENDED, KEPT, Batch, Row
from reconciler.register.schema import Migration, parse_migrations, version_problem
from reconciler.spec.dsn import REGISTER_ADDRESS_ENV
from reconciler.spec.dsn import USER_URL_FILE as USER_URL_FILE_NAME

if TYPE_CHECKING:
    import psycopg

    from reconciler.spec.models import UrlFrom

#: The channel every committed batch notifies, with `{"host": ..., "run": ...}` (a hint to re-read).
CHANNEL = "fleet_register"
#: Key of the advisory lock `fleet register migrate` holds (any constant all hosts share).
MIGRATE_LOCK = 0x666C656574  # "fleet"
CONNECT_TIMEOUT_S = 5
INSTALL_HINT = "psycopg is not installed; install fleet with its register extra: pip install 'mosaic-fleet[register]'"


class RegisterError(Exception):
    """The register could not be reached or written; the message holds no connection string."""


class SchemaMismatch(RegisterError):
    """The register's schema is not the one this code writes (older: migrate; newer: upgrade)."""


class RoleRefused(RegisterError):
    """The register is up but refuses the connecting role: no such role, authentication
    failed, or the role maps to no tenant (row-level security, permission denied)."""


#: A tenant user's own connection string for a remote register, under its home (0600, its own).
USER_URL_FILE = Path(USER_URL_FILE_NAME)
#: What a connection string may keep when root hands it to a tenant user's run: where the
#: register is, never who connects or how it proves it (user, password, passfile, keys).
ADDRESS_KEYS = ("host", "hostaddr", "port", "dbname", "sslmode", "target_session_attrs", "connect_timeout")
#: SQLSTATEs of a refused role: invalid authorization, invalid password, insufficient privilege.
_REFUSED_STATES = frozenset({"28000", "28P01", "42501"})
_REFUSED_WORDS = re.compile(r"(?i)role \S+ does not exist|authentication failed|row-level security|permission denied (?:for|to)")


_SECRETS = (re.compile(r"(?i)(postgres(?:ql)?://)[^\s'\"]*"), re.compile(r"(?i)(password\s*=\s*)\S+"))


def scrub(text: str, url: str | None = None) -> str:
    """`text` with the connection string and anything password-like replaced.

    >>> scrub('failed for "postgresql://ops:pw@db/fleet" password=pw2', None)
    'failed for "postgresql://…" password=…'
    """
    if url:
        text = text.replace(url, "…")
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "…", text)
    return " ".join(text.split())


def read_url(url_from: UrlFrom, environ: dict[str, str] | None = None) -> str:
    """The connection string from the variable or the file `url_from` names.

    A file must be a regular file only its owner can read or write (0600 or 0400): a
    password readable by others is refused, not used."""
    env = os.environ if environ is None else environ
    if url_from.env is not None:
        value = env.get(url_from.env, "").strip()
        if not value:
            raise RegisterError(f"${url_from.env} is not set in the reconciler's environment "
                                "(fleet.yaml register.url_from.env)")
        return value
    return _read_private(Path(str(url_from.file)), "(fleet.yaml register.url_from.file)")


def _read_private(path: Path, where: str, owner: int | None = None) -> str:
    """The first line of `path`, a regular file only its owner may read (and, with
    `owner`, owned by that uid); RegisterError naming the fix otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise RegisterError(f"{path}: cannot read the register's connection string ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RegisterError(f"{path}: not a regular file {where}")
        if owner is not None and info.st_uid != owner:
            raise RegisterError(f"{path}: owned by uid {info.st_uid}, not by this user (uid {owner}); "
                                f"chown it to this user, then it is used")
        if info.st_mode & 0o077:
            raise RegisterError(f"{path}: readable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                                f"chmod 600 {path}, then it is used")
        text = os.read(fd, 65536).decode("utf-8", "replace")
    finally:
        os.close(fd)
    value = text.removesuffix("\n").strip()
    if not value:
        raise RegisterError(f"{path}: empty {where}")
    return value


def tenant_url(home: Path, environ: dict[str, str] | None = None) -> str:
    """The connection string of a tenant user's run (root started it as the tenant's Linux
    user): the user's own file (USER_URL_FILE under `home`) when there is one, for a
    remote register; else the address root handed over in REGISTER_ADDRESS_ENV, with no
    user or password, so libpq connects as the Linux user's own role (peer authentication
    on a local socket, or the user's ~/.pgpass)."""
    own = home / USER_URL_FILE
    if os.path.lexists(own):
        return _read_private(own, "(this tenant user's register connection string)", owner=os.geteuid())
    address = (os.environ if environ is None else environ).get(REGISTER_ADDRESS_ENV, "").strip()
    if not address:
        raise RegisterError(f"root handed this run no register address (root's own connection string could not "
                            f"be read), and there is no {own}")
    return address


def address_of(url: str) -> str:
    """`url` reduced to where the register is (ADDRESS_KEYS), as libpq keyword/value pairs:
    what a tenant user's run may be told, never a user name, password or key file.

    >>> address_of("postgresql://ops:pw@/fleet?host=%2Frun%2Fpg&sslmode=disable&passfile=%2Froot%2Fp")
    'host=/run/pg dbname=fleet sslmode=disable'
    """
    psycopg = _psycopg()
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise RegisterError("the register's connection string cannot be parsed (fleet.yaml register.url_from)") from None
    return str(psycopg.conninfo.make_conninfo(**{k: str(parts[k]) for k in ADDRESS_KEYS if k in parts}))


def _psycopg() -> Any:
    try:
        import psycopg  # noqa: PLC0415  (only with a register: it costs ~90 ms to import)
        import psycopg.conninfo  # noqa: PLC0415
    except ImportError:
        raise RegisterError(INSTALL_HINT) from None
    return psycopg


@contextmanager
def connect(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection (closed on exit); RegisterError, scrubbed, when it cannot be made."""
    psycopg = _psycopg()
    try:
        conn = psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, application_name="fleet")
    except psycopg.Error as exc:
        raise _failure(exc, url) from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise _failure(exc, url) from None
    finally:
        conn.close()


def _failure(exc: Exception, url: str) -> RegisterError:
    """`exc` as a RegisterError (RoleRefused when the register refused the role), scrubbed."""
    said = str(exc).strip()
    text = scrub(said.splitlines()[0] if said else type(exc).__name__, url)
    refused = getattr(exc, "sqlstate", None) in _REFUSED_STATES or _REFUSED_WORDS.search(said)
    return RoleRefused(text) if refused else RegisterError(text)


def migrations() -> tuple[Migration, ...]:
    """The migrations shipped in the package, in order."""
    folder = resources.files("reconciler.register").joinpath("migrations")
    return parse_migrations((f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".sql"))


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The highest migration recorded in the register; 0 without a fleet schema."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('fleet.schema_migrations') IS NOT NULL")
        row = cur.fetchone()
        if not row or not row[0]:
            return 0
        cur.execute("SELECT coalesce(max(version), 0) FROM fleet.schema_migrations")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def check_schema(conn: psycopg.Connection[Any], known: int) -> None:
    """Raise SchemaMismatch, naming the fix, unless the register is at version `known`."""
    problem = version_problem(schema_version(conn), known)
    conn.rollback()
    if problem:
        raise SchemaMismatch(problem)


def migrate(conn: psycopg.Connection[Any], shipped: Sequence[Migration]) -> tuple[int, list[Migration]]:
    """Apply what `shipped` has beyond the register's version, in one transaction under an
    advisory lock; returns the version found and the migrations applied. A register
    newer than `shipped` raises SchemaMismatch and is left as it is."""
    known = shipped[-1].version if shipped else 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        cur.execute("CREATE SCHEMA IF NOT EXISTS fleet")
        cur.execute("CREATE TABLE IF NOT EXISTS fleet.schema_migrations (version integer PRIMARY KEY, "
                    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        cur.execute("SELECT coalesce(max(version), 0) FROM fleet.schema_migrations")
        row = cur.fetchone()
        found = int(row[0]) if row else 0
        if found > known:
            raise SchemaMismatch(str(version_problem(found, known)))
        applied = [m for m in shipped if m.version > found]
        for migration in applied:
            cur.execute(migration.sql.encode())
            cur.execute("INSERT INTO fleet.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name))
    return found, applied


#: The group role of tenant roles (the first migration creates it; row-level security reads fleet.tenant_roles).
TENANT_GROUP = "fleet_tenant"


def grant_tenant_role(conn: psycopg.Connection[Any], role: str, tenant: str, runs: Collection[str]) -> list[str]:
    """Make `role` a LOGIN role in fleet_tenant that fleet.tenant_roles maps to `tenant`, in
    one transaction; returns what was done (empty: it already was). Idempotent. `runs` are
    the tenants the specs give this role's user: a role already mapped to a tenant outside
    them is refused (RegisterError), since it would read and write that tenant's rows too."""
    from psycopg import sql  # noqa: PLC0415

    done: list[str] = []
    who = sql.Identifier(role)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT rolcanlogin, pg_has_role(oid, %s, 'MEMBER') FROM pg_roles WHERE rolname = %s",
                    (TENANT_GROUP, role))
        found = cur.fetchone()
        if found is None:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(who, sql.Identifier(TENANT_GROUP)))
            done.append("created")
        else:
            if not found[0]:
                cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(who))
                done.append("may log in")
            if not found[1]:
                cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(TENANT_GROUP), who))
                done.append(f"joined {TENANT_GROUP}")
        cur.execute("SELECT tenant_id FROM fleet.tenant_roles WHERE role = %s ORDER BY tenant_id", (role,))
        mapped = [r[0] for r in cur.fetchall()]
        stray = [t for t in mapped if t not in runs]
        if stray:
            raise RegisterError(f"role {role} already acts for tenant {stray[0]} (fleet.tenant_roles), whose roster "
                                f"does not name `user: {role}`; if it no longer runs that tenant, remove the row "
                                f"(DELETE FROM fleet.tenant_roles WHERE role = '{role}' AND tenant_id = '{stray[0]}'), "
                                f"or give tenant {tenant} another `user:`")
        if tenant not in mapped:
            cur.execute("INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, %s)", (role, tenant))
            done.append(f"mapped to tenant {tenant}")
    return done


def _value(value: Any) -> Any:
    if isinstance(value, list | dict):
        from psycopg.types.json import Jsonb  # noqa: PLC0415

        return Jsonb(value)
    return value


def _grouped(rows: Sequence[Row]) -> dict[tuple[str, tuple[str, ...]], list[Row]]:
    groups: dict[tuple[str, tuple[str, ...]], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.table, tuple(row.values))].append(row)
    return groups


def _key(table: str) -> list[str]:
    """The primary key of a kept table: tenant, host and the table's own key column, if any."""
    return ["tenant_id", "host", *([KEPT[table]] if KEPT[table] else [])]


def write_batch(conn: psycopg.Connection[Any], batch: Batch, *, fresh: bool = False) -> bool:
    """Apply `batch` in one transaction and notify the channel; False when the register
    already holds it (its seq is not above the host's last batch), and nothing is written.
    A `fresh` batch (this run's own, never spooled) is never taken for a replay: behind
    the register's number (this host's clock went back), it is written after it."""
    from psycopg import sql  # noqa: PLC0415

    ident = sql.Identifier
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(last_batch), 0) FROM fleet.hosts WHERE host = %s AND tenant_id = ANY(%s)",
                    (batch.host, list(batch.tenants)))
        row = cur.fetchone()
        last = int(row[0]) if row else 0
        if last >= batch.seq:
            if not fresh:
                return False
            batch = replace(batch, seq=last + 1)
        for pair in batch.prune:
            table, tenant = pair.split("/", 1)
            keep = [r.key for r in batch.upserts if r.table == table and r.tenant == tenant]
            if KEPT[table]:
                cur.execute(sql.SQL("DELETE FROM fleet.{} WHERE tenant_id = %s AND host = %s AND NOT ({} = ANY(%s))")
                            .format(ident(table), ident(KEPT[table])), (tenant, batch.host, keep))
            elif not keep:
                cur.execute(sql.SQL("DELETE FROM fleet.{} WHERE tenant_id = %s AND host = %s").format(ident(table)),
                            (tenant, batch.host))
        for table, key in KEPT.items():
            gone = [(r.tenant, batch.host, *([r.key] if key else [])) for r in batch.deletes if r.table == table]
            if gone:
                cur.executemany(sql.SQL("DELETE FROM fleet.{} WHERE {}").format(
                    ident(table), sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(c)) for c in _key(table))), gone)
        for (table, columns), rows in _grouped(batch.upserts).items():
            names = [*_key(table), *columns]
            cur.executemany(
                sql.SQL("INSERT INTO fleet.{t} ({cols}) VALUES ({vals}) ON CONFLICT ({k}) "
                        "DO UPDATE SET {sets}, updated_at = now()").format(
                    t=ident(table), cols=sql.SQL(", ").join(map(ident, names)),
                    vals=sql.SQL(", ").join(sql.Placeholder() * len(names)),
                    k=sql.SQL(", ").join(map(ident, _key(table))),
                    sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in columns)),
                [(r.tenant, batch.host, *([r.key] if KEPT[table] else []), *(_value(r.values[c]) for c in columns))
                 for r in rows])
        for (table, columns), rows in _grouped(batch.inserts).items():
            names = ["tenant_id", "host", APPENDED[table], *columns]
            cur.executemany(
                sql.SQL("INSERT INTO fleet.{t} ({cols}) VALUES ({vals}) ON CONFLICT DO NOTHING").format(
                    t=ident(table), cols=sql.SQL(", ").join(map(ident, names)),
                    vals=sql.SQL(", ").join(sql.Placeholder() * len(names))),
                [(r.tenant, batch.host, r.key, *(_value(r.values[c]) for c in columns)) for r in rows])
        cur.executemany(
            "INSERT INTO fleet.hosts (tenant_id, host, last_seen, last_run, last_batch) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, host) DO UPDATE SET last_seen = EXCLUDED.last_seen, last_batch = EXCLUDED.last_batch, "
            "last_run = coalesce(EXCLUDED.last_run, fleet.hosts.last_run)",
            [(t, batch.host, batch.at, batch.run_id if batch.changed else None, batch.seq) for t in batch.tenants])
        if batch.changed:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"host": batch.host, "run": batch.run_id})))
    return True


#: What `fleet ps --all-hosts` reads: every agent the caller's role may see, with its heartbeat.
AGENTS_QUERY = """
SELECT a.host, a.tenant_id, a.agent, a.role, a.lifecycle, a.desired_model, a.running_model, a.health,
       a.tokens, a.conditions, h.state, h.ts, s.last_seen
  FROM fleet.agents a
  LEFT JOIN fleet.heartbeats h USING (tenant_id, host, agent)
  LEFT JOIN fleet.hosts s USING (tenant_id, host)
 ORDER BY a.host, a.tenant_id, a.agent
"""
AGENT_COLUMNS = ("host", "tenant", "agent", "role", "lifecycle", "desired_model", "running_model", "health",
                 "tokens", "conditions", "state", "heartbeat", "last_seen")


def read_agents(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every agent row the connected role may see (row-level security decides), as dicts."""
    return _read(conn, AGENTS_QUERY, AGENT_COLUMNS)


#: What `fleet budget show --all-hosts` reads: every account's latest reading, with the ledger's sums.
USAGE_QUERY = """
SELECT u.host, u.tenant_id, u.account, u.runtime, u.regime, u.state, u.used_pct, u.allowed_pct, u.reset_at,
       u.exhausts, u.confidence, u.source, u.updated_at,
       (SELECT coalesce(sum(l.tokens), 0)::bigint FROM fleet.ledger l
         WHERE l.tenant_id = u.tenant_id AND l.host = u.host AND l.account = u.account) AS tokens
  FROM fleet.usage u
 ORDER BY u.host, u.tenant_id, u.account
"""
USAGE_COLUMNS = ("host", "tenant", "account", "runtime", "regime", "state", "used_pct", "allowed_pct", "reset",
                 "exhausts", "confidence", "source", "updated_at", "ledger_tokens")


def read_usage(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every usage row the connected role may see, with the tokens its host's ledger gives the account."""
    return _read(conn, USAGE_QUERY, USAGE_COLUMNS)


#: What `fleet ps --all-hosts --tasks` reads: every lane task the caller's role may see, with its holder.
TASKS_QUERY = """
SELECT t.host, t.tenant_id, t.task_id, t.mission, t.title, t.lane, t.state, a.agent, a.since, t.note, t.updated_at
  FROM fleet.tasks t
  LEFT JOIN fleet.assignments a USING (tenant_id, host, task_id)
 ORDER BY t.tenant_id, t.task_id, t.host
"""
TASK_COLUMNS = ("host", "tenant", "task", "mission", "title", "lane", "state", "agent", "since", "note", "updated_at")


def read_tasks(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every lane task row the connected role may see, with the agent that holds or reported it."""
    return _read(conn, TASKS_QUERY, TASK_COLUMNS)


def _read(conn: psycopg.Connection[Any], query: str, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """`query`'s rows as dicts keyed by `columns`; read-only, so its transaction is rolled back."""
    with conn.cursor() as cur:
        cur.execute(query)
        rows = cur.fetchall()
    conn.rollback()
    return [dict(zip(columns, row, strict=True)) for row in rows]


#: The lease of the projections (TASKS.md, MISSION-MANIFEST.md): fleet.leases' `name`.
PROJECTIONS_LEASE = "projections"

#: Take the lease, or renew it, unless another holder's has not expired; returns the holder
#: when this caller holds it afterwards, no row when another does. The database's clock decides.
LEASE_SQL = """
INSERT INTO fleet.leases AS l (scope, name, holder, acquired_at, expires_at)
VALUES (%(scope)s, %(name)s, %(holder)s, now(), now() + %(ttl)s * interval '1 second')
ON CONFLICT (scope, name) DO UPDATE
   SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
       acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END
 WHERE l.expires_at <= now() OR l.holder = EXCLUDED.holder
RETURNING holder
"""


def take_lease(conn: psycopg.Connection[Any], scope: str, name: str, holder: str, ttl_s: float) -> str | None:
    """Take or renew lease `name` of `scope` for `holder` for `ttl_s` seconds, in its own
    transaction; returns who holds it now (`holder` itself when taken or renewed)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(LEASE_SQL, {"scope": scope, "name": name, "holder": holder, "ttl": ttl_s})
        row = cur.fetchone()
        if row is not None:
            return str(row[0])
        cur.execute("SELECT holder FROM fleet.leases WHERE scope = %s AND name = %s", (scope, name))
        other = cur.fetchone()
    return str(other[0]) if other else None


def read_status_docs(conn: psycopg.Connection[Any], tenants: Sequence[str]) -> list[tuple[str, str, Any]]:
    """(tenant, host, document) of every host's status of `tenants` the role may see, in
    host and tenant order; the documents as psycopg parses jsonb (plain data)."""
    with conn.cursor() as cur:
        cur.execute("SELECT tenant_id, host, doc FROM fleet.status_docs WHERE tenant_id = ANY(%s) ORDER BY host, tenant_id",
                    (list(tenants),))
        rows = cur.fetchall()
    conn.rollback()
    return [(str(t), str(h), d) for t, h, d in rows]
