"""Commits of spec edits (`fleet task add`, `fleet agent add`, ...): on a new branch for a
pull request, and the pushes of such a branch; plus the check that a file is clean.

A branch commit is built in a temporary index from HEAD with the edited files' new
bytes, and the branch is created with a compare-and-swap against its absence: the
checkout's work tree, index and current branch are never touched. Commits on the
current branch go through publish.commit_if_changed like the reconciler's own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from reconciler.drivers.git.parse import first_error, parse_push_porcelain
from reconciler.drivers.git.plumbing import (
    Checkout,
    GitError,
    Ident,
    commit_facts,
    ok,
    refuse_if_busy,
    run,
    temporary_index,
)
from reconciler.drivers.git.publish import _root_paths


def uncommitted(checkout: Checkout, path: str) -> bool:
    """Whether `path` (relative to the fleet folder) differs from HEAD in the work tree or
    the index, or is there untracked: a person's edit that a commit of ours must not take."""
    [rooted] = _root_paths(checkout, [path])
    done = run(checkout, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--", rooted)
    return done.status != 0 or bool(done.out)


def edit_lock_path(checkout: Checkout) -> Path:
    """The flock that makes spec edits of one checkout take turns: in its git dir, so it
    is never in the work tree (nor committed)."""
    return Path(checkout.repo.git_dir) / "fleet-edit.lock"


def check_branch_name(checkout: Checkout, name: str) -> str | None:
    """Why `name` cannot be a new branch here, or None."""
    if run(checkout, "check-ref-format", "--branch", name).status != 0 or name.startswith("-"):
        return f"{name!r} is not a valid branch name; use letters, digits, '/', '-' and '_' (e.g. fleet/add-t7)"
    if run(checkout, "rev-parse", "--verify", "--quiet", f"refs/heads/{name}").status == 0:
        return f"branch {name} already exists; pick a new name (the edit goes on a branch of its own)"
    return None


def commit_to_new_branch(checkout: Checkout, branch: str, files: Mapping[str, bytes], message: str,
                         name: str, email: str) -> str:
    """Create `branch` at a commit of HEAD's tree with `files` (fleet-folder paths -> new
    bytes); returns its sha. Raises GitError when HEAD is unborn or the branch appeared."""
    refuse_if_busy(checkout)
    head = commit_facts(checkout, "HEAD")
    if head is None:
        raise GitError(f"{checkout.root} has no commit yet, so there is nothing to branch from; commit first")
    with temporary_index() as env, tempfile.TemporaryDirectory(prefix="fleet-blob-") as folder:
        ok(checkout, "read-tree", head.sha, env=env)
        for rel, data in files.items():
            [rooted] = _root_paths(checkout, [rel])
            blob_file = Path(folder) / "blob"
            blob_file.write_bytes(data)
            blob = ok(checkout, "hash-object", "-w", "--no-filters", "--", str(blob_file))
            listed = run(checkout, "ls-tree", head.sha, "--", rooted).out.split()
            mode = listed[0] if listed and listed[0] in {"100644", "100755"} else "100644"
            ok(checkout, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{rooted}", env=env)
        tree = ok(checkout, "write-tree", env=env)
    ident = Ident(name, email, name, email)
    sha = ok(checkout, "commit-tree", tree, "-p", head.sha, "-m", message, env=ident.env())
    made = run(checkout, "update-ref", "-m", f"fleet: {message.splitlines()[0]}", f"refs/heads/{branch}", sha, "")
    if made.status != 0:
        raise GitError(f"could not create branch {branch}: {first_error(made.err)}")
    return sha


def push_branch(checkout: Checkout, branch: str, remote: str = "origin") -> str | None:
    """Push `branch` to the same name on `remote`; None when it landed, else git's reason."""
    ref = f"refs/heads/{branch}"
    done = run(checkout, "push", "--porcelain", remote, f"{ref}:{ref}", network=True)
    line = next((ln for ln in parse_push_porcelain(done.out) if ln.destination == ref), None)
    if done.status == 0 and line is not None:
        return None
    why = first_error(done.err)
    return why if line is None else f"{line.summary} ({why})"
