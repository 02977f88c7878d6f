"""`fleet task add|set-state` and `fleet agent add|remove` against real Git: a clone of a
bare remote holding the lanes example, the installed CLI as a subprocess, git with no
ambient identity (tests/plugins/git_remote.py). Then a task added this way is dispatched
by `fleet reconcile` to a lane worker on a private tmux socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.plugins.git_remote import PERSON, git, remote_tree
from tests.plugins.tmux_server import retry_until

HOST = "shop-1"
TASKS = "tenants/shop/tasks.yaml"
ROSTER = "tenants/shop/roster.yaml"


def fleet(*args: str, cwd: Path | None = None, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_") and k != "TMUX"}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True,
                          timeout=90, env={**base, **env}, check=False, cwd=cwd, input=stdin)


@pytest.fixture
def shop(tmp_path: Path, git_isolated: None) -> Path:
    """A clone of a bare remote whose main holds the lanes example (committed by a person)."""
    seed = example_repo(tmp_path / "seed", "lanes", None)
    git(seed, "init", "--quiet", "--initial-branch=main")
    git(seed, "add", "--all")
    git(seed, *PERSON, "commit", "--quiet", "-m", "the lanes example")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git(seed, "push", "--quiet", str(bare), "main")
    clone = tmp_path / "host"
    git(tmp_path, "clone", "--quiet", str(bare), str(clone))
    return clone


def brief(tmp_path: Path, text: str = "Send ETag headers on GET /items.\n") -> Path:
    path = tmp_path / "brief.md"
    path.write_text(text)
    return path


def test_task_add_commits_one_file_on_the_current_branch_as_the_host(shop: Path, tmp_path: Path) -> None:
    before = (shop / TASKS).read_text()
    head = git(shop, "rev-parse", "HEAD")
    done = fleet("task", "add", str(shop), "--tenant", "shop", "--lane", "api", "--title", "Add ETags",
                 "--brief-file", str(brief(tmp_path)), "--projected-tokens", "120000", "--urgency", "high",
                 "--depends-on", "T1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fleet task add: shop/add-etags on lane api: Add ETags\n"
    after = (shop / TASKS).read_text()
    assert after == before + (
        "      - id: add-etags\n        title: Add ETags\n        lane: api\n        brief: |\n"
        "          Send ETag headers on GET /items.\n        depends_on: [T1]\n        projected_tokens: 120000\n"
        "        urgency: high\n"), "appended; every byte before it kept"
    assert git(shop, "rev-parse", "HEAD~1") == head
    assert git(shop, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s") == (
        f"{os.uname().nodename} <fleet@{os.uname().nodename}>|{os.uname().nodename} <fleet@{os.uname().nodename}>|"
        "fleet task add: shop/add-etags on lane api: Add ETags"), "no git identity here: authored as the host"
    assert git(shop, "show", "--name-only", "--format=", "HEAD") == TASKS
    assert git(shop, "status", "--porcelain") == "", "work tree and index agree with the commit"
    assert remote_tree(tmp_path / "remote.git")[TASKS] == before, "nothing pushed without --push"


def test_an_invalid_edit_writes_nothing_and_says_where(shop: Path, tmp_path: Path) -> None:
    files = {p: (shop / p).read_bytes() for p in (TASKS, ROSTER)}
    head = git(shop, "rev-parse", "HEAD")
    bad = fleet("task", "add", str(shop), "--tenant", "shop", "--lane", "web", "--title", "Landing page",
                "--brief-file", str(brief(tmp_path)))
    assert bad.returncode == 1
    assert f"{shop}/{TASKS}:36:15: task landing-page names lane 'web', which is not in roster.yaml" in bad.stderr, \
        bad.stderr
    assert "error: the edit would leave the fleet invalid (1 error(s) above); nothing was written" in bad.stderr
    assert "Traceback" not in bad.stderr
    removed = fleet("agent", "remove", str(shop), "orchestrator", "--tenant", "shop")
    assert removed.returncode == 1 and f"{shop}/{ROSTER}:" in removed.stderr, removed.stderr
    assert {p: (shop / p).read_bytes() for p in files} == files
    assert git(shop, "rev-parse", "HEAD") == head and git(shop, "status", "--porcelain") == ""


def test_branch_creates_the_branch_and_leaves_the_current_one_alone(shop: Path, tmp_path: Path) -> None:
    before = (shop / TASKS).read_text()
    head = git(shop, "rev-parse", "HEAD")
    done = fleet("task", "set-state", str(shop), "T3", "cancelled", "--branch", "fleet/cancel-t3", "--push")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fleet task set-state: shop/T3 open -> cancelled\n"
    assert "pushed fleet/cancel-t3 to origin" in done.stderr
    assert git(shop, "rev-parse", "HEAD") == head and git(shop, "branch", "--show-current") == "main"
    assert (shop / TASKS).read_text() == before and git(shop, "status", "--porcelain") == ""
    assert git(shop, "rev-parse", "fleet/cancel-t3~1") == head
    diff = git(shop, "diff", "main", "fleet/cancel-t3")
    assert diff.endswith("         projected_tokens: 200000\n+        state: cancelled\n       - id: T4\n"
                         "         title: GraphQL endpoint\n         lane: api"), diff
    remote = tmp_path / "remote.git"
    assert remote_tree(remote, "fleet/cancel-t3")[TASKS] == git(shop, "show", f"fleet/cancel-t3:{TASKS}") + "\n"
    assert remote_tree(remote, "main")[TASKS] == before

    again = fleet("agent", "add", str(shop), "reviewer", "--tenant", "shop", "--role", "coder",
                  "--branch", "fleet/cancel-t3")
    assert again.returncode == 1 and "branch fleet/cancel-t3 already exists" in again.stderr


def test_a_persons_uncommitted_edit_of_the_file_is_refused(shop: Path) -> None:
    roster = shop / ROSTER
    noted = roster.read_text() + "# a person's note\n"
    roster.write_text(noted)
    refused = fleet("agent", "add", str(shop), "reviewer", "--tenant", "shop", "--role", "coder")
    assert refused.returncode == 1
    assert f"error: {shop}/{ROSTER} has uncommitted changes; commit or stash them first" in refused.stderr
    assert roster.read_text().endswith("# a person's note\n")
    edited = fleet("agent", "add", str(shop), "reviewer", "--tenant", "shop", "--role", "coder", "--no-commit")
    assert edited.returncode == 0, edited.stderr
    assert roster.read_text() == noted.replace("    role: enhancer\n", "    role: enhancer\n  - name: reviewer\n"
                                               "    role: coder\n"), "edited as it is, the person's note kept"
    assert git(shop, "log", "-1", "--format=%s") == "the lanes example", "--no-commit commits nothing"


def test_agent_add_then_remove_commits_each_and_restores_the_bytes(shop: Path) -> None:
    before = (shop / ROSTER).read_bytes()
    added = fleet("agent", "add", str(shop), "reviewer", "--role", "coder", "--model", "stub-small",
                  FLEET_TENANT="shop", FLEET_AGENT="orchestrator")  # as the orchestrator runs it in its pane
    assert added.returncode == 0, added.stderr
    assert b"  - name: reviewer\n    role: coder\n    model: stub-small\n" in (shop / ROSTER).read_bytes()
    removed = fleet("agent", "remove", str(shop), "reviewer", "--tenant", "shop")
    assert removed.returncode == 0, removed.stderr
    assert (shop / ROSTER).read_bytes() == before
    assert git(shop, "log", "-2", "--format=%s").splitlines() == [
        "fleet agent remove: shop/reviewer", "fleet agent add: shop/reviewer (role coder)"]
    assert git(shop, "log", "-1", "--format=%b", "HEAD~1") == "Requested-by: shop/orchestrator"
    assert git(shop, "log", "-1", "--format=%b", "HEAD") == "", "a person's edit has no trailer"


def test_push_sends_a_commit_on_the_current_branch_to_origin(shop: Path, tmp_path: Path) -> None:
    done = fleet("task", "add", str(shop), "--tenant", "shop", "--lane", "api", "--title", "Add ETags", "--id", "T9",
                 "--brief-file", str(brief(tmp_path)), "--push")
    assert done.returncode == 0, done.stderr
    assert "pushed " in done.stderr and "to origin/main" in done.stderr, done.stderr
    assert git(shop, "rev-parse", "HEAD") == git(tmp_path / "remote.git", "rev-parse", "main")
    assert "      - id: T9\n" in remote_tree(tmp_path / "remote.git")[TASKS]


def test_edits_at_once_take_turns_and_all_land(shop: Path, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    path = brief(tmp_path)
    runs = [subprocess.Popen([sys.executable, "-m", "reconciler.cli", "task", "add", str(shop), "--tenant", "shop",
                              "--lane", "api", "--title", f"Task {n}", "--brief-file", str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=base)
            for n in range(3)]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr
    text = (shop / TASKS).read_text()
    assert all(f"      - id: task-{n}\n" in text for n in range(3)), text
    assert len(git(shop, "log", "--format=%s", "main~3..main").splitlines()) == 3
    assert git(shop, "status", "--porcelain") == ""


def test_a_linked_spec_file_is_not_replaced(shop: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "tasks-elsewhere.yaml"
    elsewhere.write_bytes((shop / TASKS).read_bytes())
    (shop / TASKS).unlink()
    (shop / TASKS).symlink_to(elsewhere)
    refused = fleet("task", "set-state", str(shop), "T1", "done", "--tenant", "shop", "--no-commit")
    assert refused.returncode == 1 and "is a symbolic link; edit the file it points to instead" in refused.stderr
    assert (shop / TASKS).is_symlink()


def test_outside_git_the_edit_needs_no_commit(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "lanes", None)
    refused = fleet("task", "set-state", str(repo), "T1", "done")
    assert refused.returncode == 1 and "is not in a Git checkout" in refused.stderr and "--no-commit" in refused.stderr
    done = fleet("task", "set-state", str(repo), "T1", "done", "--no-commit")
    assert done.returncode == 0, done.stderr
    assert "        projected_tokens: 400000\n        state: done\n" in (repo / TASKS).read_text()


@pytest.mark.tmux
def test_a_task_added_with_the_cli_is_dispatched_to_a_lane_worker(
        shop: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name is not None
    fleet_yaml = shop / "fleet.yaml"  # a private socket, and every example task settled: the lane runs nothing
    fleet_yaml.write_text(fleet_yaml.read_text().replace("socket_name: mosaic-lanes",
                                                         f"socket_name: {tmux_socket.name}"))
    tasks = (shop / TASKS).read_text().replace("        lane: api\n", "        lane: api\n        state: done\n")
    (shop / TASKS).write_text(tasks.replace("        state: done\n        state: cancelled\n", "        state: cancelled\n"))
    git(shop, *PERSON, "commit", "--quiet", "-am", "private socket; work done")
    state = tmp_path / "state"
    no_systemd = tmp_path / "no-systemd"
    no_systemd.mkdir(mode=0o700)
    env = {"FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}

    def reconcile() -> str:
        done = fleet("reconcile", str(shop), "--no-git", "--host", HOST, "--state-dir", str(state), **env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def sessions() -> set[str]:
        listed = subprocess.run(["tmux", "-L", tmux_socket.name or "", "list-sessions", "-F", "#{session_name}"],
                                capture_output=True, text=True, timeout=10, check=False)
        return set(listed.stdout.split())

    reconcile()
    assert sessions() == {"orchestrator", "enhancer"}, "no open task: no worker"

    added = fleet("task", "add", str(shop), "--tenant", "shop", "--lane", "api", "--title", "Add ETags",
                  "--brief-file", "-", stdin="Send ETag headers on GET /items.\n")
    assert added.returncode == 0, added.stderr
    assert "spawn    shop/coder0-0" in reconcile()
    layout = StateLayout(state)
    assert retry_until(layout.heartbeat("shop", "coder0-0").exists, 10)
    runs: list[str] = []

    def briefed() -> bool:
        runs.append(reconcile())
        return "> brief    shop/coder0-0: task add-etags" in runs[-1]

    assert retry_until(briefed, 20), runs[-1]
    text = layout.brief("shop", "add-etags").read_text()
    assert text.startswith("# Task add-etags: Add ETags") and "Send ETag headers on GET /items." in text
