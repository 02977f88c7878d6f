"""A planted secret never lands in anything the fleet writes (issue 6, "Secrets").

The orchestrator takes two random secrets through `env_from:`, one from a file and one
from a variable of the environment it starts in. The real `fleet` command reconciles a clone of
a bare remote (pull, apply, status, TASKS.md, commit, push), then `ps`, a JSON dry-run, a
second reconcile and `down` run. The agents prove they got both values (each writes the
SHA-256 of what it saw, never the value). Then every byte the fleet wrote is searched for
each secret, raw and base64-encoded: the clone's work tree and every Git object of both
repositories, the state directory (status history, heartbeats, the audit log, the ledger,
budget memory), XDG_CONFIG_HOME (unit files) and HOME, every command's output, what tmux
holds about each session, and in the systemd variant what the manager shows and logged.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from tests.engine.test_env_from import roster_repo
from tests.plugins.git_remote import git, person_commit
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux

#: The orchestrator takes both secrets; the enhancer none (env is per agent).
ENV_FROM = """\
    env: {{PLAIN: visible}}
    env_from:
      - {{name: API_KEY, file: {key_file}}}
      - {{name: GH_TOKEN, env: GH_SRC}}"""
AGENTS = ("orchestrator", "enhancer")


def agent_command(proof: Path) -> str:
    """Writes the SHA-256 of each secret it sees, then runs the stub agent (heartbeats)."""
    stub = Path(sys.executable).parent / "fleet-stub-agent"
    script = (
        f'printf %s "$API_KEY" | sha256sum > {proof}/"$FLEET_AGENT".file; '
        f'printf %s "$GH_TOKEN" | sha256sum > {proof}/"$FLEET_AGENT".env; '
        f'exec {shlex.quote(str(stub))} --interval 1'
    )
    return f"sh -c {shlex.quote(script)}"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest() + "  -\n"


def files_under(*roots: Path) -> Iterator[tuple[str, bytes]]:
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                yield str(path), path.read_bytes()


def git_objects(repo: Path) -> bytes:
    """Every object of `repo`, uncompressed (loose and packed, reachable or not)."""
    return subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo,
                          capture_output=True, check=True).stdout


def tmux_views(socket: SocketKey) -> Iterator[tuple[str, bytes]]:
    """What the tmux server holds about each agent: start command, options, environment."""
    commands = [["list-panes", "-a", "-F", "#{pane_start_command}"]]
    for agent in AGENTS:
        commands += [["show-options", "-t", f"={agent}:"], ["show-environment", "-t", f"={agent}:"]]
    for args in commands:
        done = tmux.run_tmux(socket, args)
        yield f"tmux {' '.join(args)}", (done.stdout + done.stderr).encode()


def leaks(secrets: list[str], sources: list[tuple[str, bytes]]) -> list[str]:
    forms = [form for s in secrets for form in (s.encode(), base64.b64encode(s.encode()), s.split("-", 1)[1].encode())]
    return [f"{where}: {form!r}" for where, data in sources for form in forms if form in data]


@pytest.mark.parametrize("manager", ["tmux-only", "systemd"])
def test_a_planted_secret_is_never_written(
    manager: str, tmux_socket: SocketKey, tmp_path: Path, git_isolated: None, request: pytest.FixtureRequest
) -> None:
    assert tmux_socket.name
    systemd: SystemdUser | None = request.getfixturevalue("systemd_user") if manager == "systemd" else None
    from_file, from_env = f"SECRET-{uuid.uuid4()}", f"SECRET-{uuid.uuid4()}"
    key_file = tmp_path / "secrets" / "api key"
    key_file.parent.mkdir()
    key_file.write_text(from_file + "\n")
    proof, state, home = tmp_path / "proof", tmp_path / "state", tmp_path / "home"
    proof.mkdir()
    home.mkdir()
    config = systemd.config_home if systemd else tmp_path / "config"

    # the fleet repository: a person's commit on a bare remote, cloned by the host
    seed = roster_repo(tmp_path / "src", tmux_socket.name, ENV_FROM.format(key_file=shlex.quote(str(key_file))))
    remote, work = tmp_path / "remote.git", tmp_path / "seed"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    person_commit(work, {str(p.relative_to(seed)): p.read_text() for p in seed.rglob("*.yaml")}, "Seed the fleet")
    git(work, "push", "--quiet", str(remote), "main")
    clone = tmp_path / "host"
    git(tmp_path, "clone", "--quiet", str(remote), str(clone))

    env = {**os.environ, "MOSAIC_AGENT_COMMAND": agent_command(proof), "GH_SRC": from_env,
           "HOME": str(home), "XDG_CONFIG_HOME": str(config)}
    if systemd is not None:  # a unit-owned tmux server has the manager's environment, not ours
        systemd.systemctl("set-environment", f"GH_SRC={from_env}")
        request.addfinalizer(lambda: systemd.systemctl("unset-environment", "GH_SRC", check=False))
    outputs: list[tuple[str, bytes]] = []

    def fleet(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args, "--host", "demo", "--state-dir", str(state)],
                              capture_output=True, env=env, timeout=120, check=False, stdin=subprocess.DEVNULL)
        outputs.append((f"fleet {args[0]} stdout", done.stdout))
        outputs.append((f"fleet {args[0]} stderr", done.stderr))
        assert done.returncode == 0, f"fleet {' '.join(args)}:\n{done.stdout.decode()}{done.stderr.decode()}"

    fleet("reconcile", str(clone))
    for agent in AGENTS:  # a heartbeat comes once the proofs are written: they got the values
        assert retry_until((state / "demo" / "heartbeats" / f"{agent}.json").exists, 10), f"{agent} never beat"
    assert (proof / "orchestrator.file").read_text() == sha256(from_file)
    assert (proof / "orchestrator.env").read_text() == sha256(from_env)
    assert (proof / "enhancer.file").read_text() == sha256("")
    if systemd is not None:
        assert (systemd.unit_dir / "fleet-demo.orchestrator.service").is_file()
    fleet("ps", str(clone))
    fleet("ps", str(clone), "--output", "json")
    fleet("reconcile", str(clone), "--dry-run", "--output", "json")
    fleet("reconcile", str(clone))
    before_down = [*tmux_views(tmux_socket), *files_under(config)]  # `down` removes units and sessions
    if systemd is not None:
        shown = systemd.systemctl("show", "fleet-demo.orchestrator.service", "fleet-demo.enhancer.service", check=False)
        before_down.append(("systemctl --user show", shown.stdout.encode()))
    fleet("down", str(clone))

    sources = [*outputs, *before_down, *files_under(clone, state, config, home)]
    sources += [("remote objects", git_objects(remote)), ("clone objects", git_objects(clone))]
    if systemd is not None:
        sources.append(("manager log", systemd.log.read_bytes()))
        assert any(name.endswith("fleet-demo.orchestrator.service") for name, _ in sources)
    searched = {Path(name).name for name, _ in sources}
    assert {"demo.yaml", "TASKS.md", "orchestrator.json"} <= searched, "the run wrote less than this test searches"
    assert git(remote, "log", "--format=%an", "-1", "main") == "demo", "the run pushed nothing"
    found = leaks([from_file, from_env], sources)
    assert not found, "a secret was written:\n" + "\n".join(found)
