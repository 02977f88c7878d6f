"""Git plumbing for the driver: the one place a git runs, and the facts every step reads.

Shared by the pull (incoming.py) and the write-back (publish.py): running git with the
person's hooks off, temporary indexes, a checkout's HEAD and upstream, the
compare-and-swap that moves a branch. GitPython is imported here and nowhere else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Without a git binary GitPython refuses to import at all; --no-git must still work there.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import git

from reconciler.drivers.git.parse import (
    BRANCH_FORMAT,
    COMMIT_FORMAT,
    CommitFacts,
    first_error,
    parse_commit_facts,
    parse_current_branch,
)

#: The projections that are re-rendered, never merged, when hosts' commits meet.
PROJECTIONS = ("TASKS.md", "MISSION-MANIFEST.md")
PROJECTION = PROJECTIONS[0]
#: Seconds a fetch, push or ls-remote may take before it counts as unreachable.
NETWORK_TIMEOUT_S = 60.0
#: Characters of a sha in `Revision.short`: fixed, so rendered status never changes
#: just because git's automatic abbreviation grew by one digit.
SHORT_SHA = 12
#: Keeps a person's hooks (pre-push, reference-transaction...) out of the reconciler's
#: own calls. (`commit-tree` ignores commit.gpgSign, so no signing prompt either.)
_QUIET_CONFIG = ("core.hooksPath=/dev/null",)
#: No credential prompt may wait for a person who is not there.
_NETWORK_ENV = {"GIT_TERMINAL_PROMPT": "0"}
#: Markers, in the git dir, of an operation a person has in progress.
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or `git am`",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
}


class GitError(RuntimeError):
    """A local git operation failed; the message says what and what to do about it."""


#: What the never-raising verbs turn into a failed result: git's own failures and the OS's.
GIT_FAILURES: tuple[type[Exception], ...] = (GitError, git.GitError, OSError)


@dataclass(frozen=True)
class Revision:
    """A commit, by its full sha and a fixed-length short form for people."""

    sha: str

    @property
    def short(self) -> str:
        return self.sha[:SHORT_SHA]


@dataclass(frozen=True, eq=False)
class Checkout:
    """A fleet folder inside a Git work tree: `root` is the top, `prefix` the folder in it."""

    repo: git.Repo
    root: Path
    prefix: str = ""

    @property
    def path(self) -> Path:
        """The fleet folder itself (REPO on the command line)."""
        return self.root / self.prefix if self.prefix else self.root

    @classmethod
    def at(cls, root: str, prefix: str = "") -> Checkout:
        """The checkout whose work tree's top is `root` (as `git rev-parse --show-toplevel` says)."""
        return cls(git.Repo(root), Path(root), prefix)


def probe_work_tree(path: Path) -> tuple[int, str, str] | None:
    """`git rev-parse --is-inside-work-tree --show-toplevel --show-prefix` in `path`: its
    exit status, output and errors, or None when this host has no git at all."""
    try:
        status, out, err = git.Git(str(path)).execute(
            ["git", "rev-parse", "--is-inside-work-tree", "--show-toplevel", "--show-prefix"],
            with_extended_output=True,
            with_exceptions=False,
        )
    except git.GitCommandNotFound:
        return None
    return status or 0, out, err


def init_work_tree(dest: Path, branch: str) -> None:
    """`git init --initial-branch=BRANCH DEST`; raises GitPython's errors (no git: GitCommandNotFound)."""
    git.Repo.init(dest, initial_branch=branch)


@dataclass(frozen=True)
class Upstream:
    """Where the current branch pulls from and pushes to, as `git for-each-ref` reports it."""

    branch: str  # main
    remote: str  # origin
    merge: str  # refs/heads/main, on the remote
    tracking: str  # refs/remotes/origin/main, here

    @property
    def branch_name(self) -> str:
        return self.merge.removeprefix("refs/heads/")


def find_upstream(checkout: Checkout) -> Upstream | str:
    """The branch's upstream, or a sentence saying why Git stays local (not an error).

    One `for-each-ref` in the usual case; an unborn branch (not listed yet) reads its config.
    """
    listing = run(checkout, "for-each-ref", f"--format={BRANCH_FORMAT}", "refs/heads/").out
    current = parse_current_branch(listing)
    if current is None:
        branch = run(checkout, "symbolic-ref", "--quiet", "--short", "HEAD").out
        if not branch:
            return "HEAD is detached, so there is no branch to pull or push; check out a branch"
        remote, merge = (
            run(checkout, "config", "--get", f"branch.{branch}.{key}").out for key in ("remote", "merge")
        )
        current = (branch, remote, merge, f"{branch}@{{upstream}}")
    branch, remote, merge, tracking = current
    if remote and remote != "." and merge:
        return Upstream(branch, remote, merge, tracking)
    remotes = run(checkout, "remote").out.split()
    if not remotes:
        return "no remote configured: status and TASKS.md are committed locally only"
    return (
        f"branch {branch} has no upstream: committed locally only; "
        f"run `git push -u {remotes[0]} {branch}` once to share it"
    )


def tracking_sha(checkout: Checkout, upstream: Upstream) -> str:
    return ok(checkout, "rev-parse", "--verify", upstream.tracking)


def land(checkout: Checkout, new: str, old: str | None, reason: str) -> None:
    """Point the branch at `new` only if it still points at `old` (someone may have committed)."""
    done = run(checkout, "update-ref", "-m", reason, "HEAD", new, old or "")
    if done.status != 0:
        raise GitError(
            f"HEAD moved while the reconciler worked ({first_error(done.err)}); the next tick retries"
        )


@dataclass(frozen=True)
class Ident:
    """Who a commit is by; `author_date` is kept when amending."""

    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    author_date: str | None = None

    @classmethod
    def of(cls, commit: CommitFacts) -> Ident:
        """The identity to rebuild `commit` with: same author and date, same committer."""
        return cls(
            commit.author_name,
            commit.author_email,
            commit.committer_name,
            commit.committer_email,
            commit.author_date,
        )

    def env(self) -> dict[str, str]:
        names = {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.committer_name,
            "GIT_COMMITTER_EMAIL": self.committer_email,
        }
        return names | ({"GIT_AUTHOR_DATE": self.author_date} if self.author_date else {})


@dataclass(frozen=True)
class Done:
    status: int
    out: str
    err: str = field(repr=False)


def run(
    checkout: Checkout, *args: str, env: Mapping[str, str] | None = None, network: bool = False
) -> Done:
    """Run `git ARGS` at the top of the work tree; never raises for a non-zero exit.

    gitpython's wrapper sets LC_ALL=C, so the messages parse.py reads are git's English.
    """
    command = ["git", *(arg for setting in _QUIET_CONFIG for arg in ("-c", setting)), *args]
    full_env = {**(_NETWORK_ENV if network else {}), **(env or {})}
    status, out, err = checkout.repo.git.execute(
        command,
        with_extended_output=True,
        with_exceptions=False,
        env=full_env,
        kill_after_timeout=NETWORK_TIMEOUT_S if network else None,
    )
    return Done(status or 0, out.strip(), err)


def ok(checkout: Checkout, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `git ARGS` and return its output; a failure is a GitError naming the command."""
    done = run(checkout, *args, env=env)
    if done.status != 0:
        raise GitError(f"git {args[0]} failed in {checkout.root}: {first_error(done.err)}")
    return done.out


@contextmanager
def temporary_index() -> Iterator[dict[str, str]]:
    """A private, initially absent index file, as the GIT_INDEX_FILE environment for the block.

    Building commits here leaves the checkout's own index, and whatever a person
    staged in it, alone.
    """
    with tempfile.TemporaryDirectory(prefix="fleet-index-") as folder:
        yield {"GIT_INDEX_FILE": str(Path(folder) / "index")}


def commit_facts(checkout: Checkout, rev: str) -> CommitFacts | None:
    """One `git log` for everything about `rev`; None on an unborn branch."""
    done = run(checkout, "log", "-1", "--date=raw", f"--format={COMMIT_FORMAT}", rev, "--")
    return parse_commit_facts(done.out) if done.status == 0 and done.out else None


def head_revision(checkout: Checkout) -> Revision | None:
    """HEAD's commit; None on an unborn branch (a `git init` without a commit yet)."""
    sha = head_sha(checkout)
    return Revision(sha) if sha else None


def safe_head(checkout: Checkout) -> Revision | None:
    """HEAD for an error result, when even reading it may fail."""
    try:
        return head_revision(checkout)
    except (git.GitError, OSError):
        return None


def head_sha(checkout: Checkout) -> str | None:
    return run(checkout, "rev-parse", "--verify", "--quiet", "HEAD").out or None


def commit_sha(checkout: Checkout, rev: str) -> str:
    done = run(checkout, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if done.status != 0 or not done.out:
        raise GitError(f"unknown revision {rev!r} in {checkout.root}; fetch it first or check the name")
    return done.out


def is_ancestor(checkout: Checkout, ancestor: str, descendant: str) -> bool:
    return run(checkout, "merge-base", "--is-ancestor", ancestor, descendant).status == 0


def empty_tree(checkout: Checkout) -> str:
    return ok(checkout, "hash-object", "-t", "tree", "/dev/null")


def projection_path(checkout: Checkout, name: str = PROJECTION) -> str:
    return str(PurePosixPath(checkout.prefix) / name) if checkout.prefix else name


def projection_paths(checkout: Checkout) -> list[str]:
    """Every projection's path in the checkout (TASKS.md, MISSION-MANIFEST.md)."""
    return [projection_path(checkout, name) for name in PROJECTIONS]


def refuse_if_busy(checkout: Checkout) -> None:
    """Leave a checkout alone while a person is in the middle of a merge, rebase or pick."""
    git_dir = Path(checkout.repo.git_dir)
    for marker, what in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise GitError(
                f"{what} is in progress in {checkout.root}; finish or abort it, then the next tick goes on"
            )
