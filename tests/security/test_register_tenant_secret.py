"""With tenants as Linux users, the register's connection string reaches no pane (issue 14).

Root reconciles a Git checkout with a password-bearing URL in FLEET_REGISTER_URL; beta's
user keeps a password-bearing URL of its own (~/.config/mosaic-fleet/register.url, a
remote register's way), alpha's run connects by peer authentication with the address
root hands over. Two real rounds, watched for argv. Then the operator's password and URL
are searched for everywhere: the work tree and Git objects, root's state, each user's
home (beta's own password everywhere but its own file), every command's output, each
user's tmux (global and session environments, start commands) and the environment of
each user's tmux server and agent processes, which must not even name a register
variable.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from reconciler.drivers import users
from tests.plugins.git_remote import git, person_commit
from tests.plugins.linux_users import as_user
from tests.plugins.postgres import Cluster
from tests.register.support import REGISTER_BLOCK, URL_ENV, query
from tests.security.test_secrets import files_under, git_objects
from tests.users.test_tenants_as_users import SOCKET, argv_seen, sessions_as, two_tenant_repo

pytestmark = pytest.mark.tmux


def tmux_of(user: str) -> list[tuple[str, bytes]]:
    """What `user`'s tmux holds, and its server's and agents' process environments."""
    seen = []
    for args in (["show-environment", "-g"], ["list-panes", "-a", "-F", "#{pane_start_command}"],
                 *(["show-environment", "-t", f"={a}:"] for a in ("orchestrator", "enhancer"))):
        done = as_user(user, ["tmux", "-L", SOCKET, *args])
        seen.append((f"{user}: tmux {' '.join(args)}", (done.stdout + done.stderr).encode()))
    server = as_user(user, ["tmux", "-L", SOCKET, "display-message", "-p", "#{pid}"]).stdout.strip()
    pids = [server, *map(str, sessions_as(user).values())]
    assert len(pids) == 3, pids
    seen += [(f"{user}: /proc/{pid}/environ", Path(f"/proc/{pid}/environ").read_bytes()) for pid in pids]
    return seen


def test_no_pane_of_a_tenant_user_gets_the_registers_connection_string(
        make_user: Callable[[], str], make_peer_cluster: Callable[[Sequence[str]], Cluster], tmp_path: Path,
        fleet_python: str, git_isolated: None) -> None:
    alpha, beta = make_user(), make_user()
    cluster = make_peer_cluster([alpha])
    dbname = cluster.new_database()
    password, theirs = f"SECRET-{uuid.uuid4()}", f"THEIRS-{uuid.uuid4()}"
    url = cluster.url(dbname).replace("postgresql:///", f"postgresql://{cluster.superuser}:{password}@/")
    repo = two_tenant_repo(tmp_path, alpha, beta)
    git(repo, "init", "--quiet", "--initial-branch=main")
    files = {str(p.relative_to(repo)): p.read_text() for p in repo.rglob("*.yaml")}
    files["fleet.yaml"] += REGISTER_BLOCK
    person_commit(repo, files, "Seed the fleet")

    remote_role = f"remote_{beta.rsplit('-', 1)[1]}"
    beta_url = cluster.url(dbname, remote_role).replace("postgresql:///", f"postgresql://{remote_role}:{theirs}@/")
    account = users.lookup(beta)
    assert account is not None
    own = Path(account.home) / ".config/mosaic-fleet/register.url"
    own.parent.mkdir(parents=True)
    own.write_text(beta_url + "\n")
    own.chmod(0o600)
    for path in (own.parent.parent, own.parent, own):
        os.chown(path, account.uid, account.gid)

    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_AGENT_COMMAND"}
    env[URL_ENV] = url
    outputs: list[tuple[str, bytes]] = []
    state = tmp_path / "root-state"

    def fleet(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([fleet_python, "-m", "reconciler", *args], capture_output=True, text=True, env=env,
                              timeout=300, check=False, stdin=subprocess.DEVNULL)
        outputs.append((f"fleet {' '.join(args)}", (done.stdout + done.stderr).encode()))
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    fleet("register", "migrate", str(repo))
    fleet("register", "grant", str(repo), "--tenant", "alpha")
    cluster.sql(f"CREATE ROLE {remote_role} LOGIN IN ROLE fleet_tenant", dbname)
    query(url, "INSERT INTO fleet.tenant_roles (role, tenant_id) VALUES (%s, 'beta')", (remote_role,))
    for _round in range(2):
        done, leaked = argv_seen(password, lambda: fleet("reconcile", str(repo), "--host", "demo", "--state-dir",
                                                         str(state)))
        assert not leaked, "the operator's password was in a process's argv"
        assert "register" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert {r[0] for r in query(url, "SELECT DISTINCT tenant_id FROM fleet.agents")} == {"alpha", "beta"}
    assert f"connection authorized: user={alpha}" in cluster.log()
    assert f"connection authorized: user={remote_role}" in cluster.log()

    homes = [Path(a.home) for a in (users.lookup(alpha), users.lookup(beta)) if a is not None]
    sources = [*files_under(repo, state, *homes), ("git objects", git_objects(repo)), *outputs,
               *tmux_of(alpha), *tmux_of(beta)]
    forms = [password.encode(), base64.b64encode(password.encode()), password.split("-", 1)[1].encode(), url.encode()]
    leaks = [f"{where}: {form!r}" for where, data in sources for form in forms if form in data]
    assert leaks == []
    beta_forms = [theirs.encode(), base64.b64encode(theirs.encode()), beta_url.encode()]
    leaks = [f"{where}: {form!r}" for where, data in sources if where != str(own) for form in beta_forms
             if form in data]
    assert leaks == []
    in_panes = [where for where, data in [*tmux_of(alpha), *tmux_of(beta)]
                if b"FLEET_REGISTER" in data or str(cluster.socket_dir).encode() in data]
    assert in_panes == []
