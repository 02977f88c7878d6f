"""The Git driver: pull before the specs are read (step 1), commit and push the write-back (step 5).

Every host runs the loop on its own clone of the fleet repository. This module pulls
the desired state, commits only the reconciler's own files (`status/<host>/`, TASKS.md)
when their bytes changed, authored as the host, and pushes with rebase-and-retry when
another host pushed first. It persists nothing of its own; Git is the record.

The checkout is shared with people, so three rules hold everywhere below:

- **People's uncommitted edits are never committed, stashed or rewritten.** The work
  tree only moves between commits through `git read-tree -m -u OLD NEW` (the two-way
  merge of `git checkout`): it carries staged and unstaged edits along untouched and,
  when an incoming commit touches a file a person edited, refuses and changes nothing.
  Commits are built in a temporary index from HEAD plus the given paths only.
- **The checkout is never mid-rebase.** Local commits are replayed onto the remote
  in a temporary index, then the checkout moves to the result in one step. A conflict
  in TASKS.md (a projection) takes the remote's copy, and `rerender()` rewrites it in
  the checkout from the merged status files; any other conflict changes nothing and
  reports the paths.
- **Failures are results where the loop must go on**: `pull`, `push_with_retry` and
  `remote_revision` never raise for git's failures (an unreachable remote, a refused
  move); they return an outcome and a message, and the local commit always stays.
  `open_checkout`, `commit_if_changed` and `show_tree_at` raise `GitError` for local
  failures (a person's merge in progress, an unknown revision). Exceptions raised by
  the caller's `rerender()` are the caller's and propagate.

Hooks are off for the reconciler's own git calls (`core.hooksPath=/dev/null`): a
person's pre-commit or pre-push hook is meant for their code, not for status files.
Modules: parse.py (pure: git's text in, facts out), plumbing.py (`run()`, the one place
a git runs, and GitPython, imported nowhere else), worktree.py (open a checkout, read
revisions, `fleet init`), incoming.py (pull, remote check), publish.py (commit, push)
and lane_worktree.py (a lane worker's own worktree of its lane's code repository, not of
the fleet's: engine/worktrees.py imports it by its own name).
Callers use this package's names: `from reconciler.drivers import git; git.pull(...)`.
"""

from __future__ import annotations

from reconciler.drivers.git.incoming import PullResult, RemoteHead, SyncOutcome, pull, remote_revision
from reconciler.drivers.git.parse import (
    BRANCH_FORMAT,
    COMMIT_FORMAT,
    CommitFacts,
    PushLine,
    backoff_delay,
    first_error,
    parse_blocked_paths,
    parse_commit_facts,
    parse_current_branch,
    parse_ls_remote,
    parse_push_porcelain,
    parse_unmerged,
    remote_moved,
)
from reconciler.drivers.git.plumbing import (
    NETWORK_TIMEOUT_S,
    PROJECTION,
    PROJECTIONS,
    SHORT_SHA,
    Checkout,
    GitError,
    Revision,
    head_revision,
)
from reconciler.drivers.git.publish import TEMP_GLOB, PushResult, commit_if_changed, push_with_retry
from reconciler.drivers.git.worktree import (
    config_value,
    init_repository,
    last_commit,
    open_checkout,
    show_tree_at,
)

__all__ = [
    "BRANCH_FORMAT",
    "COMMIT_FORMAT",
    "NETWORK_TIMEOUT_S",
    "PROJECTION",
    "PROJECTIONS",
    "SHORT_SHA",
    "TEMP_GLOB",
    "Checkout",
    "CommitFacts",
    "GitError",
    "PullResult",
    "PushLine",
    "PushResult",
    "RemoteHead",
    "Revision",
    "SyncOutcome",
    "backoff_delay",
    "commit_if_changed",
    "config_value",
    "first_error",
    "head_revision",
    "init_repository",
    "last_commit",
    "open_checkout",
    "parse_blocked_paths",
    "parse_commit_facts",
    "parse_current_branch",
    "parse_ls_remote",
    "parse_push_porcelain",
    "parse_unmerged",
    "pull",
    "push_with_retry",
    "remote_moved",
    "remote_revision",
    "show_tree_at",
]
