"""The Git driver's step 5: commit the reconciler's own files, push with rebase-and-retry.

Commits are built in a temporary index from HEAD plus the given paths only, so nothing
a person staged or edited elsewhere slips in. When another host pushed first, our
commits are replayed onto it (incoming.catch_up) and TASKS.md is re-rendered, never merged.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.drivers.git.incoming import SyncOutcome, catch_up
from reconciler.drivers.git.parse import (
    CommitFacts,
    backoff_delay,
    first_error,
    parse_push_porcelain,
    remote_moved,
)
from reconciler.drivers.git.plumbing import (
    GIT_FAILURES,
    Checkout,
    GitError,
    Ident,
    Revision,
    Upstream,
    commit_facts,
    empty_tree,
    find_upstream,
    head_revision,
    land,
    ok,
    refuse_if_busy,
    run,
    safe_head,
    temporary_index,
    tracking_sha,
)


@dataclass(frozen=True)
class PushResult:
    """What `push_with_retry` did: HEAD as pushed (or kept), attempts used, and a sentence."""

    outcome: SyncOutcome
    head: Revision | None
    attempts: int
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome is not SyncOutcome.FAILED


# --- commit --------------------------------------------------------------------------


def commit_if_changed(
    checkout: Checkout, paths: Sequence[str], message: str, author_name: str, author_email: str
) -> str | None:
    """Commit exactly `paths` (relative to the fleet folder) if their bytes differ from HEAD.

    Returns the new commit's sha, or None when nothing differs. The commit is built in
    a temporary index (HEAD, then `paths` as they are on disk, deletions included), so
    nothing a person staged or edited elsewhere can slip in, and it lands with a
    compare-and-swap on HEAD. Author and committer are the host, so `git log` says
    which host wrote which status.
    """
    refuse_if_busy(checkout)
    rooted = _root_paths(checkout, paths)
    if not rooted or not _maybe_changed(checkout, rooted):
        return None
    head = commit_facts(checkout, "HEAD")
    ident = Ident(author_name, author_email, author_name, author_email)
    sha = _write_commit(checkout, head, [head.sha] if head else [], rooted, message, ident)
    if sha is not None:
        land(
            checkout,
            sha,
            head.sha if head else None,
            f"fleet: {message.splitlines()[0] if message else 'write-back'}",
        )
    # Also when nothing needed committing: an index a killed run (or a person's git holding
    # its lock) left behind would otherwise stage the deletion of these files for good.
    _sync_index(checkout, rooted)
    return sha


# --- push ----------------------------------------------------------------------------


def push_with_retry(
    checkout: Checkout,
    rerender: Callable[[], Sequence[str]],
    attempts: int = 5,
    *,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """Push HEAD to its upstream; when another host pushed first, rebase onto it and retry.

    After every rebase `rerender()` rewrites TASKS.md in the checkout from the merged
    status files (it returns the paths it wrote, relative to the fleet folder) and the
    result is amended into our top commit: TASKS.md is a projection of all hosts'
    status, so a textual merge of it, clean or not, is never trusted. Other conflicts
    stop here with an error. Failures leave the local commit in place for the next tick.
    """
    try:
        return _push(checkout, rerender, attempts, rng or random.Random(), sleep)
    except GIT_FAILURES as exc:
        return PushResult(
            SyncOutcome.FAILED, safe_head(checkout), 0, f"{exc}; the local commit stays for the next tick"
        )


def _push(
    checkout: Checkout,
    rerender: Callable[[], Sequence[str]],
    attempts: int,
    rng: random.Random,
    sleep: Callable[[float], None],
) -> PushResult:
    upstream = find_upstream(checkout)
    if isinstance(upstream, str):
        return PushResult(SyncOutcome.NO_UPSTREAM, head_revision(checkout), 0, upstream)
    where = f"{upstream.remote}/{upstream.branch_name}"
    for attempt in range(1, attempts + 1):
        outcome, why = _push_once(checkout, upstream)
        head = head_revision(checkout)
        at = head.short if head else "no commit"
        if outcome is SyncOutcome.UPDATED:
            return PushResult(outcome, head, attempt, f"pushed {at} to {where} (attempt {attempt})")
        if outcome is SyncOutcome.UP_TO_DATE:
            return PushResult(outcome, head, attempt, f"{where} already has {at}")
        if outcome is SyncOutcome.FAILED:
            return PushResult(
                outcome,
                head,
                attempt,
                f"push to {where} failed: {why}; the local commit stays for the next tick",
            )
        if attempt < attempts:
            sleep(backoff_delay(attempt, rng))
            failure = _rebase_after_rejection(checkout, upstream, rerender)
            if failure:
                return PushResult(SyncOutcome.FAILED, head_revision(checkout), attempt, failure)
    return PushResult(
        SyncOutcome.FAILED,
        head_revision(checkout),
        attempts,
        f"{where} kept moving: gave up after {attempts} attempts; "
        "the local commit stays and the next tick pushes it",
    )


def _push_once(checkout: Checkout, upstream: Upstream) -> tuple[SyncOutcome | None, str]:
    """One `git push --porcelain`: UPDATED or UP_TO_DATE, None when another host pushed
    first (rebase and retry), or FAILED with git's reason."""
    done = run(checkout, "push", "--porcelain", upstream.remote, f"HEAD:{upstream.merge}", network=True)
    line = next((ln for ln in parse_push_porcelain(done.out) if ln.destination == upstream.merge), None)
    if done.status == 0 and line is not None:
        return (SyncOutcome.UP_TO_DATE if line.flag == "=" else SyncOutcome.UPDATED), ""
    if line is not None and remote_moved(line):
        return None, line.summary
    why = first_error(done.err)
    return SyncOutcome.FAILED, why if line is None else f"{line.summary} ({why})"


def _rebase_after_rejection(
    checkout: Checkout, upstream: Upstream, rerender: Callable[[], Sequence[str]]
) -> str | None:
    """Fetch, rebase onto the remote, re-render the projection; an error message or None."""
    fetched = run(checkout, "fetch", "--quiet", "--no-tags", upstream.remote, network=True)
    if fetched.status != 0:
        why = first_error(fetched.err)
        return f"cannot fetch from {upstream.remote}: {why}; the local commit stays for the next tick"
    try:
        how = catch_up(checkout, upstream)
        if how == "rebased":
            _amend_top(checkout, _root_paths(checkout, rerender()), tracking_sha(checkout, upstream))
    except GitError as exc:
        return f"{exc}; the local commit stays for the next tick"
    return None


#: drivers/files.write_atomic's temporary files: `.NAME.<random>.tmp`.
TEMP_GLOB = ".*.tmp"


def _temporary_files(path: Path) -> list[Path]:
    """write_atomic's temporary files at or under `path` (never following links)."""
    if path.is_symlink() or not path.is_dir():
        return [path] if path.match(TEMP_GLOB) else []
    return sorted(t for t in path.rglob(TEMP_GLOB) if t.is_file() or t.is_symlink())


def _write_commit(
    checkout: Checkout,
    base: CommitFacts | None,
    parents: Sequence[str],
    paths: Sequence[str],
    message: str,
    ident: Ident,
) -> str | None:
    """A commit of `base`'s tree with `paths` taken from disk, or None when that is `base`'s tree.

    `git add --all DIR` also records files deleted under DIR; a path gone altogether
    is dropped with `rm --cached` (git add refuses a path that matches nothing).
    """
    present = [p for p in paths if (checkout.root / p).exists() or (checkout.root / p).is_symlink()]
    missing = [p for p in paths if p not in present]
    with temporary_index() as env:
        ok(checkout, "read-tree", base.sha if base else "--empty", env=env)
        if missing:
            ok(checkout, "rm", "-r", "--quiet", "--cached", "--ignore-unmatch", "--", *missing, env=env)
        if present:
            ok(checkout, "add", "--all", "--", *present, env=env)
            # write_atomic's temporary files (a crash can leave one) are never committed;
            # named one by one, as pathspec magic may be switched off (GIT_LITERAL_PATHSPECS)
            temporary = [str(t.relative_to(checkout.root)) for p in present for t in _temporary_files(checkout.root / p)]
            if temporary:
                ok(checkout, "rm", "--quiet", "--cached", "--ignore-unmatch", "--", *temporary, env=env)
        tree = ok(checkout, "write-tree", env=env)
    if tree == (base.tree if base else empty_tree(checkout)):
        return None
    parent_args = [arg for parent in parents for arg in ("-p", parent)]
    return ok(checkout, "commit-tree", tree, *parent_args, "-m", message, env=ident.env())


def _amend_top(checkout: Checkout, paths: Sequence[str], upstream_sha: str) -> None:
    """Fold re-rendered `paths` into HEAD, our unpushed top commit, keeping its author and message.

    When the rebase left nothing of ours (HEAD is the upstream), nothing is amended;
    the re-rendered file stays in the work tree and the next tick commits it.
    """
    head = commit_facts(checkout, "HEAD")
    if not paths or head is None or head.sha == upstream_sha:
        return
    ident = Ident.of(head)
    sha = _write_commit(checkout, head, head.parents, paths, head.message, ident)
    if sha is not None:
        land(checkout, sha, head.sha, "fleet: re-render after rebase")
        _sync_index(checkout, paths)


def _sync_index(checkout: Checkout, paths: Sequence[str]) -> None:
    """Make the index agree with the new HEAD for `paths`, so `git status` shows them clean.

    Best effort: if a person's git holds the index lock right now, the commit stands
    and the next commit resynchronizes these entries.
    """
    run(checkout, "reset", "--quiet", "HEAD", "--", *paths)


def _maybe_changed(checkout: Checkout, paths: Sequence[str]) -> bool:
    """Cheap pre-check: false only when `paths` are clean against both index and HEAD."""
    done = run(
        checkout, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all", "--", *paths
    )
    return done.status != 0 or bool(done.out)


def _root_paths(checkout: Checkout, paths: Iterable[str]) -> list[str]:
    """Paths relative to the fleet folder (or absolute) as POSIX paths from the work tree's top.

    Symlinks are not followed: a status file that is a link is committed as the link.
    """
    rooted = []
    for path in paths:
        joined = os.path.normpath(checkout.path / path)
        relative = os.path.relpath(joined, checkout.root)
        if relative == ".." or relative.startswith("../"):
            raise GitError(f"{path} is outside the checkout {checkout.root}")
        rooted.append(Path(relative).as_posix())
    return sorted(set(rooted))


