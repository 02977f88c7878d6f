"""GitOps end to end: real git with a bare remote, host clones, the real `fleet` command, real tmux."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.core.render import parse_status
from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.git_remote import git, person_commit, remote_tree

pytestmark = pytest.mark.tmux

WORKER = "  - name: worker-1\n    role: coder\n    lane: docs\n"


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600"}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.fixture
def remote(tmp_path: Path, tmux_socket: SocketKey, git_isolated: None) -> Path:
    """A bare remote holding the minimal example (on this test's tmux socket), seeded by a person."""
    assert tmux_socket.name
    seed = example_repo(tmp_path / "seed-src", "minimal", tmux_socket.name)
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "seed"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    files = {str(p.relative_to(seed)): p.read_text() for p in seed.rglob("*.yaml")}
    person_commit(work, files, "Seed the fleet")
    git(work, "push", "--quiet", str(bare), "main")
    return bare


def host_clone(remote: Path, tmp_path: Path, name: str) -> Path:
    path = tmp_path / "hosts" / name
    git(tmp_path, "clone", "--quiet", str(remote), str(path))
    return path


def reconcile(repo: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = fleet("reconcile", str(repo), "--host", "demo", "--state-dir", str(tmp_path / "state"), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_status_and_tasks_are_committed_once_and_pushed(remote: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    host = host_clone(remote, tmp_path, "demo")
    reconcile(host, tmp_path)
    tree = remote_tree(remote)
    assert "status/demo/demo.yaml" in tree and "TASKS.md" in tree
    assert "Do not edit" in tree["TASKS.md"]
    assert git(remote, "log", "-1", "--format=%an <%ae>", "main") == "demo <fleet@demo>"
    head = git(remote, "rev-parse", "main")
    # nothing new happened: no commit, zero bytes
    reconcile(host, tmp_path)
    reconcile(host, tmp_path)
    assert git(remote, "rev-parse", "main") == head
    assert git(host, "status", "--porcelain") == ""


def test_peoples_uncommitted_edits_are_never_committed(remote: Path, tmp_path: Path) -> None:
    host = host_clone(remote, tmp_path, "demo")
    roster = host / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text() + "# a thought, not yet committed\n")
    reconcile(host, tmp_path)
    assert "a thought" not in remote_tree(remote)["tenants/demo/roster.yaml"]
    assert git(host, "status", "--porcelain") == "M tenants/demo/roster.yaml"


def test_a_merged_roster_change_is_pulled_and_applied(remote: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    host = host_clone(remote, tmp_path, "demo")
    reconcile(host, tmp_path)
    person = host_clone(remote, tmp_path, "person")
    roster = (person / "tenants/demo/roster.yaml").read_text() + WORKER
    person_commit(person, {"tenants/demo/roster.yaml": roster}, "Add a docs worker", push=True)
    result = reconcile(host, tmp_path)
    assert "+ spawn    demo/worker-1" in result.stdout
    assert "worker-1" in tmux.observe_socket(tmux_socket).sessions
    status = parse_status(remote_tree(remote)["status/demo/demo.yaml"])
    assert "worker-1" in {a.name for a in status.agents}


def test_no_git_writes_files_and_leaves_git_alone(remote: Path, tmp_path: Path) -> None:
    host = host_clone(remote, tmp_path, "demo")
    head = git(remote, "rev-parse", "main")
    reconcile(host, tmp_path, "--no-git")
    assert (host / "status/demo/demo.yaml").is_file() and (host / "TASKS.md").is_file()
    assert git(remote, "rev-parse", "main") == head
    assert git(host, "rev-parse", "HEAD") == head


def test_unreachable_remote_still_reconciles_and_keeps_the_commit(remote: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    host = host_clone(remote, tmp_path, "demo")
    shutil.move(remote, tmp_path / "gone.git")
    result = fleet("reconcile", str(host), "--host", "demo", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: git pull" in result.stderr and "warning: git push" in result.stderr
    assert len(tmux.observe_socket(tmux_socket).sessions) == 2
    assert git(host, "log", "-1", "--format=%an") == "demo"


def test_against_previews_a_branch(remote: Path, tmp_path: Path) -> None:
    host = host_clone(remote, tmp_path, "demo")
    reconcile(host, tmp_path)
    person = host_clone(remote, tmp_path, "person")
    git(person, "checkout", "--quiet", "-b", "feature")
    roster = (person / "tenants/demo/roster.yaml").read_text() + WORKER
    person_commit(person, {"tenants/demo/roster.yaml": roster}, "Add a docs worker")
    git(person, "push", "--quiet", "origin", "feature")
    git(host, "fetch", "--quiet", "origin")
    preview = fleet("reconcile", str(host), "--dry-run", "--against", "origin/feature", "--host", "demo",
                    "--state-dir", str(tmp_path / "state"), "--detailed-exitcode")
    assert preview.returncode == 2, preview.stdout + preview.stderr
    assert "+ spawn    demo/worker-1" in preview.stdout and "1 to spawn" in preview.stdout
    assert "worker-1" not in (host / "tenants/demo/roster.yaml").read_text()


def test_a_fleet_folder_inside_another_repository_is_never_committed(tmp_path: Path, tmux_socket: SocketKey,
                                                                     git_isolated: None) -> None:
    """Like this project's own examples: reconcile writes status there but never commits or pushes."""
    assert tmux_socket.name
    outer = tmp_path / "project"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(outer))
    fleet_dir = example_repo(outer / "examples", "minimal", tmux_socket.name)
    files = {str(p.relative_to(outer)): p.read_text() for p in fleet_dir.rglob("*.yaml")}
    head = person_commit(outer, files, "a project with an example fleet")
    result = fleet("reconcile", str(fleet_dir), "--host", "demo", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "inside the larger Git work tree" in result.stderr
    assert (fleet_dir / "status/demo/demo.yaml").is_file()
    assert git(outer, "rev-parse", "HEAD") == head
