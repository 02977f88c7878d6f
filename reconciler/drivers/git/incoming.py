"""The Git driver's step 1: pull before the specs are read, and the watch loop's remote check.

The work tree only moves between commits through `git read-tree -m -u OLD NEW`; local
commits that an earlier push left behind are replayed onto the remote in a temporary
index, so the checkout is never mid-rebase (see the package's docstring for the rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.drivers.git.parse import (
    CommitFacts,
    first_error,
    parse_blocked_paths,
    parse_ls_remote,
    parse_unmerged,
)
from reconciler.drivers.git.plumbing import (
    GIT_FAILURES,
    SHORT_SHA,
    Checkout,
    GitError,
    Ident,
    Revision,
    Upstream,
    commit_facts,
    empty_tree,
    find_upstream,
    head_revision,
    head_sha,
    is_ancestor,
    land,
    ok,
    projection_paths,
    refuse_if_busy,
    run,
    safe_head,
    temporary_index,
)


class SyncOutcome(StrEnum):
    """What a pull, push or remote check found. Only FAILED is an error."""

    UPDATED = "updated"  # pull: HEAD moved; push: commits pushed; remote check: the remote moved
    UP_TO_DATE = "up-to-date"
    NO_UPSTREAM = "no-upstream"  # no remote, or the branch tracks none: Git stays local
    FAILED = "failed"


@dataclass(frozen=True)
class PullResult:
    """What `pull` did: HEAD before and after, and a sentence for status and logs."""

    outcome: SyncOutcome
    before: Revision | None
    head: Revision | None
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome is not SyncOutcome.FAILED


@dataclass(frozen=True)
class RemoteHead:
    """The upstream branch on the remote; UPDATED means it moved since our last fetch."""

    outcome: SyncOutcome
    revision: Revision | None
    message: str


def remote_revision(checkout: Checkout) -> RemoteHead:
    """Ask the remote for its upstream branch's sha with one `git ls-remote` (no fetch).

    Cheap enough for the watch loop to call every few seconds: UPDATED means another
    host or a merged pull request moved the branch since our last fetch, so tick.
    """
    try:
        return _remote_revision(checkout)
    except GIT_FAILURES as exc:
        return RemoteHead(SyncOutcome.FAILED, None, str(exc))


def _remote_revision(checkout: Checkout) -> RemoteHead:
    upstream = find_upstream(checkout)
    if isinstance(upstream, str):
        return RemoteHead(SyncOutcome.NO_UPSTREAM, None, upstream)
    done = run(checkout, "ls-remote", upstream.remote, upstream.merge, network=True)
    if done.status != 0:
        return RemoteHead(SyncOutcome.FAILED, None, f"cannot reach {upstream.remote}: {first_error(done.err)}")
    sha = parse_ls_remote(done.out, upstream.merge)
    if sha is None:
        return RemoteHead(SyncOutcome.FAILED, None, f"{upstream.remote} has no {upstream.merge}")
    known = run(checkout, "rev-parse", "--verify", "--quiet", upstream.tracking).out
    outcome = SyncOutcome.UP_TO_DATE if sha == known else SyncOutcome.UPDATED
    return RemoteHead(outcome, Revision(sha), f"{upstream.remote} {upstream.merge} is at {sha[:SHORT_SHA]}")


# --- pull ----------------------------------------------------------------------------


def pull(checkout: Checkout) -> PullResult:
    """Fetch, then bring the current branch up to its upstream; never raises, never commits.

    Behind only: fast-forward. Local commits too (an earlier push failed): replay them
    onto the upstream in a temporary index, then move the checkout. Either way the
    move carries people's uncommitted edits, staged or not, exactly as they are; if an
    incoming commit touches a file a person edited, nothing moves and the result says
    which files (the reconcile then uses the specs at the current HEAD). No stash: a
    stash loses the staged/unstaged split and can leave conflict markers in people's
    files when it is popped. An uncommitted TASKS.md is discarded first: it is a
    projection that the coming tick renders again.
    """
    try:
        return _pull(checkout)
    except GIT_FAILURES as exc:
        head = safe_head(checkout)
        return PullResult(SyncOutcome.FAILED, head, head, str(exc))


def _pull(checkout: Checkout) -> PullResult:
    before = head_revision(checkout)
    upstream = find_upstream(checkout)
    if isinstance(upstream, str):
        return PullResult(SyncOutcome.NO_UPSTREAM, before, before, upstream)
    fetched = run(checkout, "fetch", "--quiet", "--no-tags", upstream.remote, network=True)
    if fetched.status != 0:
        return PullResult(
            SyncOutcome.FAILED,
            before,
            before,
            f"cannot fetch from {upstream.remote}: {first_error(fetched.err)}; "
            f"the specs stay at {before.short if before else 'nothing'}",
        )
    how = catch_up(checkout, upstream)
    head = head_revision(checkout)
    outcome = SyncOutcome.UPDATED if how in ("fast-forwarded", "rebased") else SyncOutcome.UP_TO_DATE
    return PullResult(outcome, before, head, _pull_message(how, upstream, head))


def _pull_message(how: str, upstream: Upstream, head: Revision | None) -> str:
    at = head.short if head else "no commit"
    where = f"{upstream.remote}/{upstream.branch_name}"
    return {
        "fast-forwarded": f"fast-forwarded {upstream.branch} to {where} at {at}",
        "rebased": f"rebased the unpushed commits of {upstream.branch} onto {where}; now at {at}",
        "no remote branch": f"{upstream.remote} has no {upstream.branch_name} yet; the first push creates it",
    }.get(how, f"{upstream.branch} is up to date with {where} at {at}")


def catch_up(checkout: Checkout, upstream: Upstream) -> str:
    """Bring HEAD up to the fetched upstream: "up to date", "fast-forwarded" or "rebased"."""
    refuse_if_busy(checkout)
    head = head_sha(checkout)
    target = run(checkout, "rev-parse", "--verify", "--quiet", upstream.tracking).out
    if not target:
        return "no remote branch"
    if head is not None and (head == target or is_ancestor(checkout, target, head)):
        return "up to date"
    how = "fast-forwarded"
    if head is not None and not is_ancestor(checkout, head, target):
        target, how = _replay(checkout, head, target), "rebased"
    _discard_projection(checkout)
    _move(checkout, head, target)
    return how


def _move(checkout: Checkout, old: str | None, new: str) -> None:
    """Move the work tree, index and branch from `old` to `new` as `git checkout` would.

    The two-way merge keeps every local edit, staged or not, on files that do not
    differ between the commits, and refuses (changing nothing) for files that do.
    """
    run(checkout, "update-index", "-q", "--refresh")
    done = run(checkout, "read-tree", "-m", "-u", old or empty_tree(checkout), new)
    if done.status != 0:
        blocked = parse_blocked_paths(done.err)
        if blocked:
            raise GitError(
                f"incoming commits change {', '.join(blocked)}, which have uncommitted edits here; "
                "nothing was changed: commit, stash or discard those edits and the next tick pulls"
            )
        raise GitError(f"cannot update the work tree: {first_error(done.err)}")
    land(checkout, new, old, f"fleet: move to {new[:SHORT_SHA]}")


def _replay(checkout: Checkout, head: str, onto: str) -> str:
    """Rebase the commits `onto..head` onto `onto`; return the new tip.

    Each commit is replayed by a three-way merge in a temporary index (`read-tree -m`),
    so nothing is checked out and the checkout is never mid-rebase, even if this
    process is killed. As with `git rebase`, a commit keeps its author, date and
    message, and one that ends up empty is dropped. Unlike it, nothing is merged line
    by line: a file changed on both sides is a conflict, except TASKS.md and
    MISSION-MANIFEST.md, which take the remote's copy (the caller re-renders them). The reconciler's own commits touch
    only `status/<host>/` and TASKS.md, so only a person's local commits can conflict.
    """
    tip = onto
    for sha in ok(checkout, "rev-list", "--reverse", "--topo-order", f"{onto}..{head}").split():
        commit = commit_facts(checkout, sha)
        if commit is None or len(commit.parents) != 1:
            raise GitError(
                f"the unpushed commit {sha[:SHORT_SHA]} is a merge; nothing was changed: "
                "rebase it by hand (`git pull --rebase`)"
            )
        tip = _replay_one(checkout, commit, tip)
    return tip


def _replay_one(checkout: Checkout, commit: CommitFacts, onto: str) -> str:
    """`commit` applied on top of `onto`: a new commit, or `onto` itself if nothing is left."""
    projections = projection_paths(checkout)
    with temporary_index() as env:
        ok(checkout, "read-tree", "-m", "-i", "--aggressive", commit.parents[0], onto, commit.sha, env=env)
        unmerged = parse_unmerged(ok(checkout, "ls-files", "--unmerged", "-z", env=env))
        others = [path for path in unmerged if path not in projections]
        if others:
            raise GitError(
                f"the unpushed commit {commit.sha[:SHORT_SHA]} and {onto[:SHORT_SHA]} both change "
                f"{', '.join(others)}; nothing was changed: resolve it by hand "
                "(`git pull --rebase`, fix the files, `git rebase --continue`)"
            )
        if theirs := [path for path in unmerged if path in projections]:
            ok(checkout, "reset", "--quiet", onto, "--", *theirs, env=env)
        tree = ok(checkout, "write-tree", env=env)
    if tree == ok(checkout, "rev-parse", f"{onto}^{{tree}}"):
        return onto
    ident = Ident.of(commit)
    return ok(checkout, "commit-tree", tree, "-p", onto, "-m", commit.message, env=ident.env())


def _discard_projection(checkout: Checkout) -> None:
    """Drop uncommitted changes to TASKS.md and MISSION-MANIFEST.md, which would block the
    move and are re-rendered anyway."""
    for path in projection_paths(checkout):
        if not run(checkout, "status", "--porcelain", "--", path).out:
            continue
        if run(checkout, "checkout", "HEAD", "--", path).status != 0:
            run(checkout, "rm", "--quiet", "--cached", "--ignore-unmatch", "--", path)
            (checkout.root / path).unlink(missing_ok=True)
