"""Opening the fleet's Git checkout and reading it: where the loop finds out whether Git is on.

`fleet reconcile` opens the checkout before step 1 (no checkout: the loop runs without
Git), reads the last commit of the specs for the status it writes back, and `--dry-run
--against REV` reads the specs as of another commit; `fleet init` creates a repository.
Nothing here moves the work tree or writes a commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconciler.drivers.git.plumbing import (
    GIT_FAILURES,
    Checkout,
    GitError,
    Revision,
    commit_sha,
    init_work_tree,
    ok,
    probe_work_tree,
    run,
    temporary_index,
)


def open_checkout(path: Path) -> Checkout | None:
    """The Git work tree that versions `path`, or None: the reconciler then runs without Git.

    `path` may be the top of the work tree, or a folder in it that Git already tracks
    (a fleet inside a monorepo). An untracked folder inside someone else's repository
    (a home directory under Git, say) is not a checkout: we must not commit into it.
    A checkout that git refuses (owned by another user) raises GitError rather than
    quietly turning Git off for a fleet that expects its status pushed.
    """
    path = Path(path).resolve()
    if not path.is_dir():
        return None
    probed = probe_work_tree(path)
    if probed is None:
        return None  # no git on this host: run without Git
    status, out, err = probed
    if "dubious ownership" in err:
        raise GitError(
            f"{path} is a Git checkout owned by another user, so git refuses to work in it; as the user "
            f"that reconciles, run `git config --global --add safe.directory {path}`, or use --no-git"
        )
    lines = out.splitlines()
    if status != 0 or not lines or lines[0] != "true":
        return None
    checkout = Checkout.at(lines[1], (lines[2] if len(lines) > 2 else "").rstrip("/"))
    if checkout.prefix and not run(checkout, "ls-files", "--", checkout.prefix).out:
        return None
    return checkout


def show_tree_at(checkout: Checkout, rev: str, dest: Path) -> Revision:
    """Write the fleet folder as of `rev` into `dest` (plain files, no `.git`); return the commit.

    For `fleet reconcile --dry-run --against REV`: the specs at REV load from `dest`
    while the checkout, and people's edits in it, stay as they are. `dest` should be a
    fresh folder (it is created; files already there are overwritten, never removed).
    """
    sha = commit_sha(checkout, rev)
    treeish = f"{sha}:{checkout.prefix}" if checkout.prefix else sha
    dest.mkdir(parents=True, exist_ok=True)
    with temporary_index() as env:
        ok(checkout, "read-tree", treeish, env=env)
        ok(checkout, "checkout-index", "--all", "--force", f"--prefix={dest.resolve()}/", env=env)
    return Revision(sha)


def last_commit(checkout: Checkout, paths: Sequence[str]) -> Revision | None:
    """The last commit that changed any of `paths` (relative to the fleet folder).

    None on an unborn branch, for paths never committed, or when git cannot read the
    repository at all: the caller says "unversioned" rather than failing the tick.
    """
    rooted = [f"{checkout.prefix}/{p}" if checkout.prefix else p for p in paths]
    try:
        done = run(checkout, "log", "-1", "--format=%H", "--", *rooted)
    except GIT_FAILURES:
        return None
    return Revision(done.out) if done.status == 0 and done.out else None


def init_repository(dest: Path, branch: str = "main") -> Checkout:
    """`git init -b BRANCH` in `dest` (`fleet init`), opened as a checkout.

    Raises GitError if git made no work tree there; a host without git raises
    GitPython's GitCommandNotFound, as `fleet init` always has.
    """
    init_work_tree(dest, branch)
    checkout = open_checkout(dest)
    if checkout is None:  # pragma: no cover - git init just made it one
        raise GitError(f"git init did not make {dest} a work tree")
    return checkout


def config_value(checkout: Checkout, key: str) -> str:
    """`git config --get KEY` as git itself resolves it here (GIT_CONFIG_GLOBAL and
    includes count); "" when it is not set."""
    done = run(checkout, "config", "--get", key)
    return done.out if done.status == 0 else ""
