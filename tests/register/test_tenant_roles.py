"""Tenants as Linux users write the register as their own database roles (issue 14, item 5).

Real users (tests/plugins/linux_users.py), a real cluster letting them in by peer
authentication (tests/plugins/postgres.py make_peer_cluster), real tmux under each user.
Root reconciles with the operator's URL; each tenant user's run, started by root,
connects as the user's own role and writes its tenant's rows from its own state; root's
run writes none of them. A role that is missing gets one clear warning and a spool in
the user's state directory, replayed once `fleet register grant` made the role. One user
running two tenants writes both as its one role.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from reconciler.drivers import users
from tests.plugins.linux_users import as_user
from tests.plugins.postgres import Cluster
from tests.register.support import REGISTER_BLOCK, URL_ENV, query
from tests.users.test_tenants_as_users import ROSTER, SOCKET, two_tenant_repo

pytestmark = pytest.mark.tmux

Fleet = Callable[..., subprocess.CompletedProcess[str]]
STATE = ".local/state/mosaic-fleet"


def home(user: str) -> Path:
    account = users.lookup(user)
    assert account is not None
    return Path(account.home)


@pytest.fixture
def setup(make_user: Callable[[], str], make_peer_cluster: Callable[[Sequence[str]], Cluster], tmp_path: Path,
          fleet_python: str) -> tuple[Path, str, str, Cluster, str, Fleet]:
    """Two tenants (alpha, beta) as two users, a migrated register that lets both in by
    peer authentication, and `fleet` as root with the operator's URL."""
    alpha, beta = make_user(), make_user()
    cluster = make_peer_cluster([alpha, beta])
    url = cluster.url(cluster.new_database())
    repo = two_tenant_repo(tmp_path, alpha, beta)
    with (repo / "fleet.yaml").open("a") as handle:
        handle.write(REGISTER_BLOCK)

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MOSAIC_AGENT_COMMAND"}
        env[URL_ENV] = url
        return subprocess.run([fleet_python, "-m", "reconciler", *args], capture_output=True, text=True, env=env,
                              timeout=300, check=False, stdin=subprocess.DEVNULL)

    migrated = fleet("register", "migrate", str(repo))
    assert migrated.returncode == 0, migrated.stderr
    return repo, alpha, beta, cluster, url, fleet


def reconcile(fleet: Fleet, repo: Path, state: Path) -> str:
    done = fleet("reconcile", str(repo), "--host", "demo", "--no-git", "--state-dir", str(state))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def rows(url: str, table: str, column: str = "agent") -> set[tuple[str, str]]:
    return {(t, k) for t, k in query(url, f"SELECT tenant_id, {column} FROM fleet.{table}")}


def as_role(user: str, python: str, cluster: Cluster, dbname: str, statements: Sequence[str]) -> list[str]:
    """Each statement run by `user` itself, connected by peer authentication (no user, no
    password in the URL): its rows as JSON, or the error's class and message."""
    script = textwrap.dedent(f"""
        import json, sys, psycopg
        out = []
        for statement in {list(statements)!r}:
            try:
                with psycopg.connect({f"host={cluster.socket_dir} dbname={dbname}"!r}, autocommit=True) as conn:
                    cur = conn.execute(statement)
                    out.append(json.dumps(cur.fetchall() if cur.description else cur.rowcount, default=str))
            except psycopg.Error as exc:
                out.append(type(exc).__name__ + ": " + str(exc).splitlines()[0])
        print("\\n".join(out))
    """)
    done = as_user(user, [python, "-c", script])
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def digest_keys(state: Path) -> set[str]:
    path = state / "_register" / "digest.json"
    return set(json.loads(path.read_text())["rows"]) if path.exists() else set()


def test_each_tenant_user_writes_its_own_rows_as_its_own_role(setup: tuple[Path, str, str, Cluster, str, Fleet],
                                                              tmp_path: Path, fleet_python: str) -> None:
    repo, alpha, beta, cluster, url, fleet = setup
    granted = fleet("register", "grant", str(repo))
    assert granted.returncode == 0, granted.stderr
    assert f"role {alpha} for tenant alpha: created, mapped to tenant alpha" in granted.stdout
    again = fleet("register", "grant", str(repo), "--tenant", "beta")
    assert again.stdout.strip() == f"register: role {beta} for tenant beta: already in place"

    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert "register" not in said, said
    agents = {("alpha", "orchestrator"), ("alpha", "enhancer"), ("beta", "orchestrator"), ("beta", "enhancer")}
    assert rows(url, "agents") == agents
    assert rows(url, "hosts", "host") == {("alpha", "demo"), ("beta", "demo")}
    # Written by the users' own runs: each from its own state, connected as its own role.
    assert digest_keys(tmp_path / "root-state") == set()
    for tenant, user in (("alpha", alpha), ("beta", beta)):
        keys = digest_keys(home(user) / STATE)
        assert {k.split("/")[1] for k in keys} == {tenant}
        assert f"agents/{tenant}/orchestrator" in keys
        assert f"connection authorized: user={user} database=" in cluster.log()
    # Each role, as its user, sees only its tenant; SQL at the other tenant is refused or touches nothing.
    dbname = url.split("///", 1)[1].split("?", 1)[0]
    seen = as_role(alpha, fleet_python, cluster, dbname, [
        "SELECT DISTINCT tenant_id FROM fleet.agents",
        "SELECT DISTINCT tenant_id FROM fleet.hosts",
        "INSERT INTO fleet.agents (tenant_id, host, agent, role, lifecycle, desired_model, health) "
        "VALUES ('beta', 'demo', 'planted', 'coder', 'core', 'm', 'healthy')",
        "UPDATE fleet.agents SET health = 'gone' WHERE tenant_id = 'beta'",
    ])
    assert seen[:2] == ['[["alpha"]]', '[["alpha"]]']
    assert seen[2].startswith("InsufficientPrivilege") and "row-level security" in seen[2]
    assert seen[3] == "0"
    assert as_role(beta, fleet_python, cluster, dbname, ["SELECT DISTINCT tenant_id FROM fleet.agents"]) == ['[["beta"]]']

    # A second round changes nothing and still writes nothing as root.
    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert "register" not in said, said
    assert rows(url, "agents") == agents and digest_keys(tmp_path / "root-state") == set()

    # `fleet down` as root: each user's run stops its agents and tells the register, as its role.
    down = fleet("down", str(repo), "--host", "demo", "--no-git", "--state-dir", str(tmp_path / "root-state"))
    assert down.returncode == 0 and "register" not in down.stdout + down.stderr, down.stdout + down.stderr
    assert rows(url, "agents") == set()
    assert rows(url, "hosts", "host") == {("alpha", "demo"), ("beta", "demo")}


def test_a_missing_role_warns_once_and_spools_until_granted(setup: tuple[Path, str, str, Cluster, str, Fleet],
                                                             tmp_path: Path) -> None:
    repo, _alpha, beta, _cluster, url, fleet = setup
    assert fleet("register", "grant", str(repo), "--tenant", "alpha").returncode == 0

    said = reconcile(fleet, repo, tmp_path / "root-state")
    refusals = [line for line in said.splitlines() if "refused this run's role" in line]
    assert len(refusals) == 1, said
    assert f'role "{beta}" does not exist' in refusals[0]
    assert f"fleet register grant {repo} --tenant beta" in refusals[0]
    spool = home(beta) / STATE / "_register" / "spool.jsonl"
    assert str(spool) in refusals[0] and spool.is_file()
    assert {t for t, _ in rows(url, "agents")} == {"alpha"}

    granted = fleet("register", "grant", str(repo), "--tenant", "beta")
    assert granted.returncode == 0 and "created" in granted.stdout, granted.stdout + granted.stderr
    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert "refused" not in said, said
    assert not spool.exists()
    assert {t for t, _ in rows(url, "agents")} == {"alpha", "beta"}
    assert rows(url, "hosts", "host") == {("alpha", "demo"), ("beta", "demo")}


def test_a_tenant_users_own_credentials_file_for_a_remote_register(
        setup: tuple[Path, str, str, Cluster, str, Fleet], tmp_path: Path) -> None:
    """The user's ~/.config/mosaic-fleet/register.url wins over the handed-over address; a
    file others can read is refused like fleet.yaml's url_from file."""
    repo, _alpha, beta, cluster, url, fleet = setup
    assert fleet("register", "grant", str(repo), "--tenant", "alpha").returncode == 0
    dbname = url.split("///", 1)[1].split("?", 1)[0]
    remote_role = f"remote_{beta.rsplit('-', 1)[1]}"  # not the Linux user's name: the file must name it
    cluster.sql(f"CREATE ROLE {remote_role} LOGIN PASSWORD 'pw' IN ROLE fleet_tenant", dbname)
    query(url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, 'beta')", (remote_role,))
    account = users.lookup(beta)
    assert account is not None
    own = home(beta) / ".config/mosaic-fleet/register.url"
    own.parent.mkdir(parents=True)
    own.write_text(cluster.url(dbname, remote_role).replace("postgresql:///", f"postgresql://{remote_role}:pw@/") + "\n")
    for path in (own.parent.parent, own.parent, own):
        os.chown(path, account.uid, account.gid)
    own.chmod(0o644)

    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert f"{own}: readable by others (mode 0644); chmod 600 {own}" in said, said
    assert {t for t, _ in rows(url, "agents")} == {"alpha"}
    own.chmod(0o600)
    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert "register" not in said, said
    assert {t for t, _ in rows(url, "agents")} == {"alpha", "beta"}
    assert f"connection authorized: user={remote_role} database={dbname}" in cluster.log()


def test_one_user_running_two_tenants_writes_both_as_its_role(setup: tuple[Path, str, str, Cluster, str, Fleet],
                                                              tmp_path: Path, fleet_python: str) -> None:
    """alpha and beta both run as one Linux user (on two sockets): `grant` maps its one role
    to both, its run writes both tenants' rows, and the role sees those two tenants only."""
    repo, alpha, _beta, cluster, url, fleet = setup
    roster = repo / "tenants" / "beta" / "roster.yaml"
    roster.write_text(ROSTER.format(tenant="beta", user=alpha, socket=f"{SOCKET}-beta"))
    query(url, "INSERT INTO fleet.agents (tenant_id, host, agent, role, lifecycle, desired_model, health) "
               "VALUES ('gamma', 'w9', 'other', 'coder', 'core', 'm', 'healthy')")  # a third tenant's row
    granted = fleet("register", "grant", str(repo))
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.splitlines() == [f"register: role {alpha} for tenant alpha: created, mapped to tenant alpha",
                                           f"register: role {alpha} for tenant beta: mapped to tenant beta"]

    said = reconcile(fleet, repo, tmp_path / "root-state")
    assert "register" not in said, said
    both = {("alpha", "orchestrator"), ("alpha", "enhancer"), ("beta", "orchestrator"), ("beta", "enhancer")}
    assert rows(url, "agents") == both | {("gamma", "other")}
    assert digest_keys(tmp_path / "root-state") == set()
    assert {k.split("/")[1] for k in digest_keys(home(alpha) / STATE)} == {"alpha", "beta"}
    dbname = url.split("///", 1)[1].split("?", 1)[0]
    seen = as_role(alpha, fleet_python, cluster, dbname, [
        "SELECT DISTINCT tenant_id FROM fleet.agents ORDER BY 1",
        "UPDATE fleet.agents SET health = 'gone' WHERE tenant_id = 'gamma'",
    ])
    assert seen == ['[["alpha"], ["beta"]]', "0"]
