"""A lane with `worktree:` through `fleet reconcile`, with real git, real tmux and real stub
agents: each worker starts in its own worktree of the lane's repository, gets its task on
its own branch before the brief (which names the branch), can run `fleet` from its pane's
PATH, and on retirement leaves its branch (and any uncommitted change, stashed) behind
while its worktree goes (docs/lanes.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.test_lanes import Shop
from tests.plugins.git_remote import PERSON, git, person_commit
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux

OPEN = "      - id: {id}\n        title: {title}\n        lane: api\n"


def lane_repo(tmp_path: Path) -> Path:
    """The lane's code: a bare remote with one commit, and the clone the lane names."""
    bare = tmp_path / "api.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "api-seed"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(seed))
    git(seed, "remote", "add", "origin", str(bare))
    person_commit(seed, {"README.md": "# api\n"}, "Seed the API", push=True)
    clone = tmp_path / "src" / "api"
    git(tmp_path, "clone", "--quiet", str(bare), str(clone))
    return clone


def with_worktree(shop: Shop, repo: Path) -> None:
    roster = shop.repo / "tenants" / "shop" / "roster.yaml"
    text = roster.read_text().replace("    workdir: ~/src/api\n",
                                      f'    worktree: {{repo: "{repo}", branch: "fleet/{{agent}}/{{task}}"}}\n')
    assert "worktree:" in text
    roster.write_text(text)


def test_two_workers_get_two_worktrees_on_their_task_branches_and_keep_the_branches_when_retired(
        tmp_path: Path, tmux_socket: SocketKey, git_isolated: None) -> None:
    assert tmux_socket.name is not None
    repo = lane_repo(tmp_path)
    shop = Shop(tmp_path, tmux_socket.name)
    with_worktree(shop, repo)
    shop.tasks(OPEN.format(id="T2", title="Paginate"), OPEN.format(id="T3", title="Document pagination"))
    layout = StateLayout(shop.state)
    trees = {w: layout.worktree("shop", w) for w in ("coder0-0", "coder0-1")}

    up = shop.reconcile()
    assert "spawn    shop/coder0-0" in up.stdout and "spawn    shop/coder0-1" in up.stdout, up.stdout
    listed = git(repo, "worktree", "list", "--porcelain")
    for worker, tree in trees.items():
        assert f"worktree {tree}" in listed, listed
        cwd = shop.tmux("display-message", "-p", "-t", f"={worker}:", "#{pane_current_path}").strip()
        assert Path(cwd).resolve() == tree.resolve(), f"{worker}'s pane works in its own worktree"
        # Its pane's PATH finds `fleet`, so a real runtime can run `fleet task done ID`.
        path = shop.tmux("show-environment", "-t", f"={worker}", "PATH").strip().removeprefix("PATH=")
        fleet = shutil.which("fleet", path=path)
        assert fleet is not None and Path(fleet).name == "fleet", path
        assert retry_until(layout.heartbeat("shop", worker).exists, 10)

    runs: list[str] = []

    def briefed() -> bool:  # the first run may still see the new workers start up
        runs.append(shop.reconcile().stdout)
        held = json.loads(layout.lanes("shop").read_text())["assignments"]
        return len(held) == 2 and all(a["sent_at"] for a in held.values())

    assert retry_until(briefed, 30), runs[-1]
    held = {t: a["agent"] for t, a in json.loads(layout.lanes("shop").read_text())["assignments"].items()}
    assert sorted(held.values()) == ["coder0-0", "coder0-1"], "one task each"
    for task, worker in held.items():
        branch = f"fleet/{worker}/{task}"
        assert git(trees[worker], "symbolic-ref", "--short", "HEAD") == branch, "the task's branch is checked out"
        assert git(trees[worker], "rev-parse", "HEAD") == git(repo, "rev-parse", "origin/main"), \
            "from the remote's default branch"
        brief = layout.brief("shop", task).read_text()
        assert f"branch `{branch}`" in brief and f"git push -u origin {branch}" in brief, brief
        assert "stop at the pull request" in brief, brief
    assert git(repo, "worktree", "list").count("\n") == 2, "the repository's own tree and two worktrees"

    # The worker of T2 commits its work on its branch; the other leaves a file uncommitted.
    committer, other = held["T2"], held["T3"]
    person_commit(trees[committer], {"pagination.py": "PAGE = 50\n"}, "Paginate")
    work = git(trees[committer], "rev-parse", "HEAD")
    (trees[other] / "notes.txt").write_text("half a thought\n")
    # One reports as a real runtime would: `fleet`, found on its pane's PATH, in its pane's environment.
    pane_env = dict(line.split("=", 1) for line in shop.tmux("show-environment", "-t", f"={committer}").splitlines()
                    if line.startswith(("FLEET_", "PATH=")))
    done = subprocess.run(["fleet", "task", "done", "T2", "--note", "PR opened"], capture_output=True, text=True,
                          timeout=60, check=False, env={**{k: v for k, v in shop.env.items()
                                                           if not k.startswith("FLEET_")}, **pane_env})
    assert done.returncode == 0, done.stderr
    shop.tmux("send-keys", "-t", f"={other}:", "-l", "/done T3 PR opened")  # the other as the stub does
    shop.tmux("send-keys", "-t", f"={other}:", "Enter")

    def drained() -> bool:
        runs.append(shop.reconcile().stdout)
        return not {"coder0-0", "coder0-1"} & shop.sessions()

    assert retry_until(drained, 40), runs[-1]
    assert not any(tree.exists() for tree in trees.values()), "a retired worker's worktree is removed"
    assert git(repo, "worktree", "list").count("\n") == 0, git(repo, "worktree", "list")
    assert git(repo, "rev-parse", f"fleet/{committer}/T2") == work, "its branch, and its commit, are kept"
    assert git(repo, "rev-parse", "--verify", f"fleet/{other}/T3")
    assert f"fleet: {other} retired on fleet/{other}/T3" in git(repo, "stash", "list"), "uncommitted work is stashed"
    assert "notes.txt" in git(repo, "stash", "show", "--include-untracked", "--name-only", "stash@{0}")
    assert git(repo, "status", "--porcelain") == "", "the lane's own checkout is untouched"
    git(repo, *PERSON, "log", "--oneline", "-1")
