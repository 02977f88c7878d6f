"""The register's connection string never lands anywhere the fleet writes (issue 14).

A URL carrying a random password (the test cluster trusts its socket, so the password
is accepted and ignored) is given the two ways fleet.yaml allows: a variable of the
reconciler's environment, then a 0600 file. The real `fleet` command reconciles a Git
checkout of the minimal fleet (status, TASKS.md, commits), runs `ps`, `ps --all-hosts`,
a JSON dry-run, a reconcile while Postgres is stopped (its warning, its spool) and one
after. Then every byte is searched for the password and the URL: the work tree and
every Git object, the state directory (digest and spool included), every command's
output, what tmux holds (start commands, global and session environments) and each
agent process's own environment; with systemd --user (the `env-systemd` case), the
agents' unit files, what the manager shows of them and of its own environment, and its log.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.git_remote import git, person_commit
from tests.plugins.postgres import Cluster
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import retry_until
from tests.register.test_sync import ledger_lines
from tests.security.test_secrets import files_under, git_objects

pytestmark = pytest.mark.tmux

AGENTS = ("orchestrator", "enhancer")


def tmux_and_processes(socket: SocketKey) -> list[tuple[str, bytes]]:
    seen: list[tuple[str, bytes]] = []
    for args in (["list-panes", "-a", "-F", "#{pane_start_command} #{pane_pid}"], ["show-environment", "-g"],
                 *(["show-environment", "-t", f"={a}:"] for a in AGENTS)):
        done = tmux.run_tmux(socket, args)
        seen.append((f"tmux {' '.join(args)}", (done.stdout + done.stderr).encode()))
    pids = tmux.run_tmux(socket, ["list-panes", "-a", "-F", "#{pane_pid}"]).stdout.split()
    assert len(pids) == len(AGENTS), pids
    for pid in pids:
        seen.append((f"/proc/{pid}/environ", Path(f"/proc/{pid}/environ").read_bytes()))
    return seen


@pytest.mark.parametrize("source", ["env", "file", "env-systemd"])
def test_the_register_url_is_never_written(source: str, tmp_path: Path, tmux_socket: SocketKey, pg_cluster: Cluster,
                                           git_isolated: None, request: pytest.FixtureRequest) -> None:
    assert tmux_socket.name
    systemd: SystemdUser | None = request.getfixturevalue("systemd_user") if source == "env-systemd" else None
    password = f"SECRET-{uuid.uuid4()}"
    dbname = pg_cluster.new_database()
    url = pg_cluster.url(dbname).replace("postgresql:///", f"postgresql://{pg_cluster.superuser}:{password}@/")
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    env = {k: v for k, v in os.environ.items() if k != "FLEET_REGISTER_URL"}
    if source.startswith("env"):
        block = "register:\n  url_from:\n    env: FLEET_REGISTER_URL\n"
        env["FLEET_REGISTER_URL"] = url
    else:
        secret_file = tmp_path / "secrets" / "register.url"
        secret_file.parent.mkdir()
        secret_file.write_text(url + "\n")
        secret_file.chmod(0o600)
        block = f"register:\n  url_from:\n    file: {secret_file}\n"
    git(repo, "init", "--quiet", "--initial-branch=main")
    files = {str(p.relative_to(repo)): p.read_text() for p in repo.rglob("*.yaml")}
    files["fleet.yaml"] += block
    person_commit(repo, files, "Seed the fleet")
    state = tmp_path / "state"
    outputs: list[tuple[str, bytes]] = []

    def fleet(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, env=env,
                              timeout=120, check=False, stdin=subprocess.DEVNULL)
        outputs.append((f"fleet {' '.join(args)}", done.stdout + done.stderr))
        assert done.returncode == code, f"fleet {' '.join(args)}:\n{done.stdout.decode()}{done.stderr.decode()}"
        return (done.stdout + done.stderr).decode()

    local = ("--host", "demo", "--state-dir", str(state))
    fleet("register", "migrate", str(repo))
    fleet("reconcile", str(repo), *local)
    for agent in AGENTS:
        assert retry_until((state / "demo" / "heartbeats" / f"{agent}.json").exists, 15), f"{agent} never beat"
    fleet("reconcile", str(repo), *local)
    fleet("ps", str(repo), *local)
    assert "demo" in fleet("ps", str(repo), "--all-hosts")
    fleet("reconcile", str(repo), "--dry-run", "--output", "json", *local)
    ledger_lines(state, 0, 2)  # something to spool while the register is away
    pg_cluster.stop()
    try:
        said = fleet("reconcile", str(repo), *local)
        assert "the register is unreachable" in said
        fleet("ps", str(repo), "--all-hosts", code=1)
    finally:
        pg_cluster.start()
    assert (state / "_register" / "spool.jsonl").is_file()
    fleet("reconcile", str(repo), *local)
    assert not (state / "_register" / "spool.jsonl").exists()
    assert git(repo, "log", "--oneline").count("\n") >= 1, "the fleet committed its status"

    sources = [*files_under(repo, state), ("git objects", git_objects(repo)), *outputs,
               *tmux_and_processes(tmux_socket)]
    if systemd is not None:  # the agents' units, what the manager holds and logged
        assert (systemd.unit_dir / "fleet-demo.orchestrator.service").is_file(), "no unit was written"
        units = [f"fleet-demo.{a}.service" for a in AGENTS]
        sources += [*files_under(systemd.config_home), ("manager log", systemd.log.read_bytes()),
                    ("systemctl --user show", systemd.systemctl("show", *units, check=False).stdout.encode()),
                    ("systemctl --user show-environment", systemd.systemctl("show-environment").stdout.encode())]
    forms = [password.encode(), base64.b64encode(password.encode()), password.split("-", 1)[1].encode(), url.encode()]
    leaks = [f"{where}: {form!r}" for where, data in sources for form in forms if form in data]
    assert leaks == []
