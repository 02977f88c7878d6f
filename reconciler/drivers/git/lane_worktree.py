"""A lane worker's own git worktree of its lane's repository (docs/lanes.md, `worktree:`).

Each worker of a lane with `worktree:` works in one worktree for its whole life, at a
path of the state directory (`<state>/<tenant>/worktrees/<agent>`, model/layout.py), so
its workdir, and its spec hash, never change. Apply makes the worktree (detached, at
the repository's base commit) before the worker's pane starts in it; dispatch moves it
to the task's own branch before the brief is typed (a new task: a new branch, in the
same worktree, what the last task left uncommitted stashed first); a worker that stops for good has its worktree removed, its branches
kept (uncommitted changes are stashed in the repository first, never thrown away).
Two workers never share a working tree: the path is the worker's, and git refuses to
check one branch out in two worktrees.

Failures are GitError with words a person can act on; the engine turns them into problem
lines (a worker not started, a brief not typed), retried on the next run.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.drivers.git.parse import first_error
from reconciler.drivers.git.plumbing import GIT_FAILURES, Checkout, GitError, run

#: The remote whose default branch a task's branch starts from, when the repository has it.
REMOTE = "origin"


def _open(path: Path) -> Checkout:
    try:
        return Checkout.at(str(path))
    except GIT_FAILURES as exc:
        raise GitError(f"{path} is not a git repository ({exc}); set the lane's worktree.repo to a clone") from exc


def _git(checkout: Checkout, *args: str, network: bool = False) -> str:
    done = run(checkout, *args, network=network)
    if done.status != 0:
        raise GitError(f"git {' '.join(args[:2])} failed in {checkout.root}: {first_error(done.err)}")
    return done.out


def base_commit(repo: Checkout) -> str:
    """Where a new task branch starts: the remote's default branch after a fetch (a task
    must not start from a stale clone), else the repository's own HEAD."""
    if run(repo, "remote", "get-url", REMOTE).status == 0:
        run(repo, "fetch", "--quiet", REMOTE, network=True)  # offline: the last fetched state will do
        found = run(repo, "rev-parse", "--verify", "--quiet", f"refs/remotes/{REMOTE}/HEAD^{{commit}}")
        if found.status == 0 and found.out:
            return found.out
    return _git(repo, "rev-parse", "--verify", "HEAD^{commit}")


def is_worktree_of(path: Path, repo: Path) -> bool:
    """Whether `path` is a working tree (its top) of the repository at `repo`."""
    if not (path / ".git").exists():
        return False
    try:
        here = _git(_open(path), "rev-parse", "--path-format=absolute", "--git-common-dir")
        there = _git(_open(repo), "rev-parse", "--path-format=absolute", "--git-common-dir")
    except GitError:
        return False
    return Path(here).resolve() == Path(there).resolve()


def ensure_worktree(repo: Path, path: Path) -> bool:
    """Make `path` a worktree of `repo` (detached at `base_commit`) unless it already is
    one; True when it was made. A folder there that is something else is refused."""
    repo = repo.expanduser()
    if is_worktree_of(path, repo):
        return False
    if path.exists() and any(path.iterdir()):
        raise GitError(f"{path} exists and is not a worktree of {repo}; move it away and the next run makes the worktree")
    checkout = _open(repo)
    run(checkout, "worktree", "prune")  # a worktree folder deleted by hand leaves a registration behind
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _git(checkout, "worktree", "add", "--quiet", "--detach", str(path), base_commit(checkout))
    return True


def current_branch(path: Path) -> str:
    """The branch checked out at `path` ("" when detached)."""
    done = run(_open(path), "symbolic-ref", "--quiet", "--short", "HEAD")
    return done.out if done.status == 0 else ""


def stash_changes(path: Path, why: str) -> bool:
    """Stash every uncommitted change at `path` (untracked files too) in the repository,
    as "fleet: WHY"; True when there was something to stash."""
    tree = _open(path)
    if not _git(tree, "status", "--porcelain", "--untracked-files=all"):
        return False
    _git(tree, "stash", "push", "--quiet", "--include-untracked", "--message", f"fleet: {why}")
    return True


def start_task_branch(repo: Path, path: Path, branch: str, agent: str = "") -> bool:
    """Check out the task's `branch` in the worker's worktree: the branch itself when it
    exists (the same task again, after a restart), else a new one from `base_commit`.
    True when the worktree moved. What the last task left uncommitted is stashed first, so
    no task starts on another's changes and nothing is lost. Git refuses a branch another
    worktree has checked out: the brief is then not typed (GitError)."""
    ensure_worktree(repo, path)
    tree = _open(path)
    now = current_branch(path)
    if now == branch:
        return False
    stash_changes(path, f"{agent or path.name} left uncommitted changes on {now or 'a detached HEAD'} before {branch}")
    if run(tree, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").status == 0:
        _git(tree, "switch", "--quiet", branch)
    else:
        _git(tree, "switch", "--quiet", "--create", branch, base_commit(tree))
    return True


def remove_worktree(path: Path, agent: str) -> str:
    """Remove the worker's worktree at `path`, its branches kept; returns what was done,
    for the problem lines ("" when there was nothing to remove). Uncommitted changes are
    stashed in the repository first (`git stash list` names the worker and branch)."""
    if not path.exists():
        return ""
    tree = _open(path)
    common = Path(_git(tree, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    said = ""
    if stash_changes(path, f"{agent} retired on {current_branch(path) or 'a detached HEAD'} with uncommitted changes"):
        said = f"uncommitted changes of {agent} stashed in {common.parent} (git stash list)"
    _git(_open(common.parent if common.name == ".git" else common), "worktree", "remove", "--force", str(path))
    return said
