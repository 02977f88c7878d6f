"""A lane worker's worktree with real git (drivers/git/lane_worktree.py): made once, a new
branch per task in the same tree from the remote's default branch, refused rather than
losing work, removed with branches kept and uncommitted changes stashed."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.drivers.git.lane_worktree import (
    current_branch,
    ensure_worktree,
    remove_worktree,
    start_task_branch,
)
from reconciler.drivers.git.plumbing import GitError
from tests.plugins.git_remote import git, person_commit


@pytest.fixture
def repo(tmp_path: Path, git_isolated: None) -> Path:
    bare = tmp_path / "api.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    seed = tmp_path / "seed"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(seed))
    git(seed, "remote", "add", "origin", str(bare))
    person_commit(seed, {"README.md": "# api\n"}, "Seed", push=True)
    git(tmp_path, "clone", "--quiet", str(bare), str(tmp_path / "api"))
    person_commit(seed, {"CHANGES.md": "newer\n"}, "A later commit the clone has not fetched", push=True)
    return tmp_path / "api"


def test_one_worktree_a_branch_per_task_from_the_fetched_default_branch(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "state" / "shop" / "worktrees" / "coder0-0"
    assert ensure_worktree(repo, tree) is True
    assert ensure_worktree(repo, tree) is False, "made once"
    assert start_task_branch(repo, tree, "fleet/coder0-0/T1") is True
    assert (tree / "CHANGES.md").exists(), "the task starts from the remote's default branch, fetched"
    person_commit(tree, {"a.py": "A = 1\n"}, "T1's work")
    t1 = git(tree, "rev-parse", "HEAD")
    assert start_task_branch(repo, tree, "fleet/coder0-0/T1") is False, "the same task again: nothing moves"

    assert start_task_branch(repo, tree, "fleet/coder0-0/T2") is True
    assert current_branch(tree) == "fleet/coder0-0/T2" and not (tree / "a.py").exists(), "a fresh branch"
    assert git(repo, "rev-parse", "fleet/coder0-0/T1") == t1, "the last task's branch is kept"

    (tree / "README.md").write_text("edited, not committed\n")
    assert start_task_branch(repo, tree, "fleet/coder0-0/T3", "coder0-0") is True
    assert (tree / "README.md").read_text() == "# api\n", "T3 does not start on T2's leftovers"
    assert "fleet: coder0-0 left uncommitted changes on fleet/coder0-0/T2 before fleet/coder0-0/T3" in \
        git(repo, "stash", "list"), "they are stashed, not lost"

    (tree / "scratch.txt").write_text("untracked\n")
    said = remove_worktree(tree, "coder0-0")
    assert "stashed" in said and not tree.exists()
    assert "fleet: coder0-0 retired on fleet/coder0-0/T3" in git(repo, "stash", "list")
    assert git(repo, "branch", "--list", "fleet/*").split() == [f"fleet/coder0-0/T{i}" for i in (1, 2, 3)]
    assert remove_worktree(tree, "coder0-0") == "", "nothing left to remove"


def test_two_workers_never_share_a_branch_and_a_foreign_folder_is_refused(repo: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "w" / "a", tmp_path / "w" / "b"
    start_task_branch(repo, a, "fleet/T1")
    with pytest.raises(GitError):
        start_task_branch(repo, b, "fleet/T1")  # checked out in a's worktree
    foreign = tmp_path / "w" / "c"
    foreign.mkdir()
    (foreign / "x").write_text("mine\n")
    with pytest.raises(GitError, match="not a worktree"):
        ensure_worktree(repo, foreign)
    with pytest.raises(GitError, match="not a git repository"):
        ensure_worktree(tmp_path / "nowhere", tmp_path / "w" / "d")
