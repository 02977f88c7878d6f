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
Pure `parse_*()` functions read git's text; `_run()` is the one place a git runs.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

# Without a git binary GitPython refuses to import at all; --no-git must still work there.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

import git

#: The projection that is re-rendered, never merged, when hosts' commits meet.
PROJECTION = "TASKS.md"
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
_MOVED_REASONS = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)


class GitError(RuntimeError):
    """A local git operation failed; the message says what and what to do about it."""


class Outcome(StrEnum):
    """What a pull, push or remote check found. Only FAILED is an error."""

    UPDATED = "updated"  # pull: HEAD moved; push: commits pushed; remote check: the remote moved
    UP_TO_DATE = "up-to-date"
    NO_UPSTREAM = "no-upstream"  # no remote, or the branch tracks none: Git stays local
    FAILED = "failed"


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


@dataclass(frozen=True)
class PullResult:
    """What `pull` did: HEAD before and after, and a sentence for status and logs."""

    outcome: Outcome
    before: Revision | None
    head: Revision | None
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAILED


@dataclass(frozen=True)
class PushResult:
    """What `push_with_retry` did: HEAD as pushed (or kept), attempts used, and a sentence."""

    outcome: Outcome
    head: Revision | None
    attempts: int
    message: str

    @property
    def ok(self) -> bool:
        return self.outcome is not Outcome.FAILED


@dataclass(frozen=True)
class RemoteHead:
    """The upstream branch on the remote; UPDATED means it moved since our last fetch."""

    outcome: Outcome
    revision: Revision | None
    message: str


@dataclass(frozen=True)
class PushLine:
    """One ref of `git push --porcelain`: flag (` `, `+`, `-`, `*`, `=`, `!`), refs, summary."""

    flag: str
    source: str
    destination: str
    summary: str


# --- pure: git's text in, facts out ------------------------------------------------


def parse_push_porcelain(text: str) -> list[PushLine]:
    """The ref lines of `git push --porcelain`, skipping the `To URL` and `Done` lines.

    >>> parse_push_porcelain("To /r.git\\n!\\tHEAD:refs/heads/main\\t[rejected] (fetch first)\\nDone")
    [PushLine(flag='!', source='HEAD', destination='refs/heads/main', summary='[rejected] (fetch first)')]
    """
    lines = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and len(parts[0]) == 1 and ":" in parts[1]:
            source, _, destination = parts[1].partition(":")
            lines.append(PushLine(parts[0], source, destination, "\t".join(parts[2:])))
    return lines


def remote_moved(line: PushLine) -> bool:
    """True when a rejected push only means another host pushed first (retry after a rebase).

    >>> remote_moved(PushLine("!", "HEAD", "refs/heads/main", "[rejected] (non-fast-forward)"))
    True
    >>> remote_moved(PushLine("!", "HEAD", "refs/heads/main", "[remote rejected] (pre-receive hook declined)"))
    False
    """
    return line.flag == "!" and any(reason in line.summary for reason in _MOVED_REASONS)


def parse_ls_remote(text: str, ref: str) -> str | None:
    """The sha of `ref` in `git ls-remote` output, or None when the remote lacks it.

    >>> parse_ls_remote("ab12\\trefs/heads/main\\ncd34\\trefs/heads/mainline", "refs/heads/main")
    'ab12'
    """
    for line in text.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


#: `git for-each-ref` fields: is it HEAD, branch, its remote, the remote's ref, the tracking ref.
BRANCH_FORMAT = "%(HEAD)%00%(refname:short)%00%(upstream:remotename)%00%(upstream:remoteref)%00%(upstream)"


def parse_current_branch(text: str) -> tuple[str, str, str, str] | None:
    """The checked-out branch's (name, remote, remote ref, tracking ref) from BRANCH_FORMAT lines.

    None when no branch is checked out (detached HEAD) or it has no commit yet (unborn).

    >>> parse_current_branch(" \\0x\\0\\0\\0\\n*\\0main\\0origin\\0refs/heads/main\\0refs/remotes/origin/main")
    ('main', 'origin', 'refs/heads/main', 'refs/remotes/origin/main')
    """
    for line in text.splitlines():
        fields = line.split("\0")
        if len(fields) == 5 and fields[0] == "*":
            return fields[1], fields[2], fields[3], fields[4] or f"{fields[1]}@{{upstream}}"
    return None


def parse_blocked_paths(stderr: str) -> list[str]:
    """Files whose local edits (or untracked copies) stopped `read-tree -m -u`.

    >>> parse_blocked_paths("error: Entry 'tenants/j/roster.yaml' not uptodate. Cannot merge.\\n"
    ...     "error: Untracked working tree file 'new.yaml' would be overwritten by merge.")
    ['tenants/j/roster.yaml', 'new.yaml']
    """
    return re.findall(r"^error: (?:Entry|Untracked working tree file) '(.+?)' ", stderr, re.MULTILINE)


def parse_unmerged(text: str) -> list[str]:
    """The conflicted paths, once each, in `git ls-files --unmerged -z` output (an entry per stage).

    >>> parse_unmerged("100644 aa 1\\tTASKS.md\\x00100644 bb 2\\tTASKS.md\\x00100644 cc 3\\tfleet ü.yaml\\x00")
    ['TASKS.md', 'fleet ü.yaml']
    """
    paths = [entry.partition("\t")[2] for entry in text.split("\0") if "\t" in entry]
    return list(dict.fromkeys(paths))


def first_error(stderr: str) -> str:
    """The line of git's standard error that says what went wrong, without the hints.

    >>> first_error("hint: try this\\nfatal: '/gone' does not appear to be a git repository\\nfatal: x")
    "'/gone' does not appear to be a git repository"
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        for tag in ("fatal: ", "error: "):
            if line.startswith(tag):
                return line.removeprefix(tag)
    useful = [line for line in lines if not line.startswith("hint:")]
    return useful[-1] if useful else "git gave no reason"


def backoff_delay(attempt: int, rng: random.Random, base: float = 0.05, cap: float = 1.0) -> float:
    """Seconds to wait before retry `attempt` (1, 2...): full jitter up to base * 2**attempt.

    Jitter spreads hosts that were rejected together, so they do not collide again.

    >>> 0 <= backoff_delay(3, random.Random(1)) <= 0.4
    True
    """
    return rng.uniform(0, min(cap, base * 2**attempt))


#: `git log -1` fields of one commit, for `parse_commit_facts`.
COMMIT_FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%ad%x00%cn%x00%ce%x00%B"


@dataclass(frozen=True)
class CommitFacts:
    """What rebuilding a commit needs: its tree, parents, author (with date), committer, message."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_date: str
    committer_name: str
    committer_email: str
    message: str


def parse_commit_facts(text: str) -> CommitFacts:
    """`git log -1 --date=raw --format=COMMIT_FORMAT` output as CommitFacts.

    The raw date becomes git's internal form (`@SECONDS ZONE`), as *_DATE variables take it.

    >>> facts = parse_commit_facts("c1\\0t1\\0p1 p2\\0host-a\\0fleet@host-a\\0"
    ...                            "1700000000 +0100\\0host-a\\0fleet@host-a\\0status: host-a\\n")
    >>> facts.parents, facts.author_date, facts.message
    (('p1', 'p2'), '@1700000000 +0100', 'status: host-a\\n')
    """
    sha, tree, parents, name, email, date, committer, committer_email, message = text.split("\0", 8)
    return CommitFacts(
        sha,
        tree,
        tuple(parents.split()),
        name,
        email,
        "@" + date.strip(),
        committer,
        committer_email,
        message,
    )


# --- opening a checkout and reading revisions ---------------------------------------


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
    probe = git.Git(str(path))
    try:
        status, out, err = probe.execute(
            ["git", "rev-parse", "--is-inside-work-tree", "--show-toplevel", "--show-prefix"],
            with_extended_output=True,
            with_exceptions=False,
        )
    except git.GitCommandNotFound:
        return None  # no git on this host: run without Git
    if "dubious ownership" in err:
        raise GitError(
            f"{path} is a Git checkout owned by another user, so git refuses to work in it; as the user "
            f"that reconciles, run `git config --global --add safe.directory {path}`, or use --no-git"
        )
    lines = out.splitlines()
    if status != 0 or not lines or lines[0] != "true":
        return None
    checkout = Checkout(git.Repo(lines[1]), Path(lines[1]), (lines[2] if len(lines) > 2 else "").rstrip("/"))
    if checkout.prefix and not _run(checkout, "ls-files", "--", checkout.prefix).out:
        return None
    return checkout


def head_revision(checkout: Checkout) -> Revision | None:
    """HEAD's commit; None on an unborn branch (a `git init` without a commit yet)."""
    sha = _head(checkout)
    return Revision(sha) if sha else None


def show_tree_at(checkout: Checkout, rev: str, dest: Path) -> Revision:
    """Write the fleet folder as of `rev` into `dest` (plain files, no `.git`); return the commit.

    For `fleet reconcile --dry-run --against REV`: the specs at REV load from `dest`
    while the checkout, and people's edits in it, stay as they are. `dest` should be a
    fresh folder (it is created; files already there are overwritten, never removed).
    """
    sha = _commit_sha(checkout, rev)
    treeish = f"{sha}:{checkout.prefix}" if checkout.prefix else sha
    dest.mkdir(parents=True, exist_ok=True)
    with _temporary_index() as env:
        _ok(checkout, "read-tree", treeish, env=env)
        _ok(checkout, "checkout-index", "--all", "--force", f"--prefix={dest.resolve()}/", env=env)
    return Revision(sha)


def remote_revision(checkout: Checkout) -> RemoteHead:
    """Ask the remote for its upstream branch's sha with one `git ls-remote` (no fetch).

    Cheap enough for the watch loop to call every few seconds: UPDATED means another
    host or a merged pull request moved the branch since our last fetch, so tick.
    """
    try:
        return _remote_revision(checkout)
    except (GitError, git.GitError, OSError) as exc:
        return RemoteHead(Outcome.FAILED, None, str(exc))


def _remote_revision(checkout: Checkout) -> RemoteHead:
    upstream = _upstream(checkout)
    if isinstance(upstream, str):
        return RemoteHead(Outcome.NO_UPSTREAM, None, upstream)
    done = _run(checkout, "ls-remote", upstream.remote, upstream.merge, network=True)
    if done.status != 0:
        return RemoteHead(Outcome.FAILED, None, f"cannot reach {upstream.remote}: {first_error(done.err)}")
    sha = parse_ls_remote(done.out, upstream.merge)
    if sha is None:
        return RemoteHead(Outcome.FAILED, None, f"{upstream.remote} has no {upstream.merge}")
    known = _run(checkout, "rev-parse", "--verify", "--quiet", upstream.tracking).out
    outcome = Outcome.UP_TO_DATE if sha == known else Outcome.UPDATED
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
    except (GitError, git.GitError, OSError) as exc:
        head = _safe_head(checkout)
        return PullResult(Outcome.FAILED, head, head, str(exc))


def _pull(checkout: Checkout) -> PullResult:
    before = head_revision(checkout)
    upstream = _upstream(checkout)
    if isinstance(upstream, str):
        return PullResult(Outcome.NO_UPSTREAM, before, before, upstream)
    fetched = _run(checkout, "fetch", "--quiet", "--no-tags", upstream.remote, network=True)
    if fetched.status != 0:
        return PullResult(
            Outcome.FAILED,
            before,
            before,
            f"cannot fetch from {upstream.remote}: {first_error(fetched.err)}; "
            f"the specs stay at {before.short if before else 'nothing'}",
        )
    how = _catch_up(checkout, upstream)
    head = head_revision(checkout)
    outcome = Outcome.UPDATED if how in ("fast-forwarded", "rebased") else Outcome.UP_TO_DATE
    return PullResult(outcome, before, head, _pull_message(how, upstream, head))


def _pull_message(how: str, upstream: _Upstream, head: Revision | None) -> str:
    at = head.short if head else "no commit"
    where = f"{upstream.remote}/{upstream.branch_name}"
    return {
        "fast-forwarded": f"fast-forwarded {upstream.branch} to {where} at {at}",
        "rebased": f"rebased the unpushed commits of {upstream.branch} onto {where}; now at {at}",
        "no remote branch": f"{upstream.remote} has no {upstream.branch_name} yet; the first push creates it",
    }.get(how, f"{upstream.branch} is up to date with {where} at {at}")


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
    _refuse_if_busy(checkout)
    rooted = _root_paths(checkout, paths)
    if not rooted or not _maybe_changed(checkout, rooted):
        return None
    head = _commit_facts(checkout, "HEAD")
    ident = _Ident(author_name, author_email, author_name, author_email)
    sha = _write_commit(checkout, head, [head.sha] if head else [], rooted, message, ident)
    if sha is not None:
        _land(
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
    except (GitError, git.GitError, OSError) as exc:
        return PushResult(
            Outcome.FAILED, _safe_head(checkout), 0, f"{exc}; the local commit stays for the next tick"
        )


def _push(
    checkout: Checkout,
    rerender: Callable[[], Sequence[str]],
    attempts: int,
    rng: random.Random,
    sleep: Callable[[float], None],
) -> PushResult:
    upstream = _upstream(checkout)
    if isinstance(upstream, str):
        return PushResult(Outcome.NO_UPSTREAM, head_revision(checkout), 0, upstream)
    where = f"{upstream.remote}/{upstream.branch_name}"
    for attempt in range(1, attempts + 1):
        outcome, why = _push_once(checkout, upstream)
        head = head_revision(checkout)
        at = head.short if head else "no commit"
        if outcome is Outcome.UPDATED:
            return PushResult(outcome, head, attempt, f"pushed {at} to {where} (attempt {attempt})")
        if outcome is Outcome.UP_TO_DATE:
            return PushResult(outcome, head, attempt, f"{where} already has {at}")
        if outcome is Outcome.FAILED:
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
                return PushResult(Outcome.FAILED, head_revision(checkout), attempt, failure)
    return PushResult(
        Outcome.FAILED,
        head_revision(checkout),
        attempts,
        f"{where} kept moving: gave up after {attempts} attempts; "
        "the local commit stays and the next tick pushes it",
    )


def _push_once(checkout: Checkout, upstream: _Upstream) -> tuple[Outcome | None, str]:
    """One `git push --porcelain`: UPDATED or UP_TO_DATE, None when another host pushed
    first (rebase and retry), or FAILED with git's reason."""
    done = _run(checkout, "push", "--porcelain", upstream.remote, f"HEAD:{upstream.merge}", network=True)
    line = next((ln for ln in parse_push_porcelain(done.out) if ln.destination == upstream.merge), None)
    if done.status == 0 and line is not None:
        return (Outcome.UP_TO_DATE if line.flag == "=" else Outcome.UPDATED), ""
    if line is not None and remote_moved(line):
        return None, line.summary
    why = first_error(done.err)
    return Outcome.FAILED, why if line is None else f"{line.summary} ({why})"


def _rebase_after_rejection(
    checkout: Checkout, upstream: _Upstream, rerender: Callable[[], Sequence[str]]
) -> str | None:
    """Fetch, rebase onto the remote, re-render the projection; an error message or None."""
    fetched = _run(checkout, "fetch", "--quiet", "--no-tags", upstream.remote, network=True)
    if fetched.status != 0:
        why = first_error(fetched.err)
        return f"cannot fetch from {upstream.remote}: {why}; the local commit stays for the next tick"
    try:
        how = _catch_up(checkout, upstream)
        if how == "rebased":
            _amend_top(checkout, _root_paths(checkout, rerender()), _tracking_sha(checkout, upstream))
    except GitError as exc:
        return f"{exc}; the local commit stays for the next tick"
    return None


# --- moving the checkout --------------------------------------------------------------


@dataclass(frozen=True)
class _Upstream:
    """Where the current branch pulls from and pushes to, as `git for-each-ref` reports it."""

    branch: str  # main
    remote: str  # origin
    merge: str  # refs/heads/main, on the remote
    tracking: str  # refs/remotes/origin/main, here

    @property
    def branch_name(self) -> str:
        return self.merge.removeprefix("refs/heads/")


def _upstream(checkout: Checkout) -> _Upstream | str:
    """The branch's upstream, or a sentence saying why Git stays local (not an error).

    One `for-each-ref` in the usual case; an unborn branch (not listed yet) reads its config.
    """
    listing = _run(checkout, "for-each-ref", f"--format={BRANCH_FORMAT}", "refs/heads/").out
    current = parse_current_branch(listing)
    if current is None:
        branch = _run(checkout, "symbolic-ref", "--quiet", "--short", "HEAD").out
        if not branch:
            return "HEAD is detached, so there is no branch to pull or push; check out a branch"
        remote, merge = (
            _run(checkout, "config", "--get", f"branch.{branch}.{key}").out for key in ("remote", "merge")
        )
        current = (branch, remote, merge, f"{branch}@{{upstream}}")
    branch, remote, merge, tracking = current
    if remote and remote != "." and merge:
        return _Upstream(branch, remote, merge, tracking)
    remotes = _run(checkout, "remote").out.split()
    if not remotes:
        return "no remote configured: status and TASKS.md are committed locally only"
    return (
        f"branch {branch} has no upstream: committed locally only; "
        f"run `git push -u {remotes[0]} {branch}` once to share it"
    )


def _tracking_sha(checkout: Checkout, upstream: _Upstream) -> str:
    return _ok(checkout, "rev-parse", "--verify", upstream.tracking)


def _catch_up(checkout: Checkout, upstream: _Upstream) -> str:
    """Bring HEAD up to the fetched upstream: "up to date", "fast-forwarded" or "rebased"."""
    _refuse_if_busy(checkout)
    head = _head(checkout)
    target = _run(checkout, "rev-parse", "--verify", "--quiet", upstream.tracking).out
    if not target:
        return "no remote branch"
    if head is not None and (head == target or _is_ancestor(checkout, target, head)):
        return "up to date"
    how = "fast-forwarded"
    if head is not None and not _is_ancestor(checkout, head, target):
        target, how = _replay(checkout, head, target), "rebased"
    _discard_projection(checkout)
    _move(checkout, head, target)
    return how


def _move(checkout: Checkout, old: str | None, new: str) -> None:
    """Move the work tree, index and branch from `old` to `new` as `git checkout` would.

    The two-way merge keeps every local edit, staged or not, on files that do not
    differ between the commits, and refuses (changing nothing) for files that do.
    """
    _run(checkout, "update-index", "-q", "--refresh")
    done = _run(checkout, "read-tree", "-m", "-u", old or _empty_tree(checkout), new)
    if done.status != 0:
        blocked = parse_blocked_paths(done.err)
        if blocked:
            raise GitError(
                f"incoming commits change {', '.join(blocked)}, which have uncommitted edits here; "
                "nothing was changed: commit, stash or discard those edits and the next tick pulls"
            )
        raise GitError(f"cannot update the work tree: {first_error(done.err)}")
    _land(checkout, new, old, f"fleet: move to {new[:SHORT_SHA]}")


def _replay(checkout: Checkout, head: str, onto: str) -> str:
    """Rebase the commits `onto..head` onto `onto`; return the new tip.

    Each commit is replayed by a three-way merge in a temporary index (`read-tree -m`),
    so nothing is checked out and the checkout is never mid-rebase, even if this
    process is killed. As with `git rebase`, a commit keeps its author, date and
    message, and one that ends up empty is dropped. Unlike it, nothing is merged line
    by line: a file changed on both sides is a conflict, except TASKS.md, which takes
    the remote's copy (the caller re-renders it). The reconciler's own commits touch
    only `status/<host>/` and TASKS.md, so only a person's local commits can conflict.
    """
    tip = onto
    for sha in _ok(checkout, "rev-list", "--reverse", "--topo-order", f"{onto}..{head}").split():
        commit = _commit_facts(checkout, sha)
        if commit is None or len(commit.parents) != 1:
            raise GitError(
                f"the unpushed commit {sha[:SHORT_SHA]} is a merge; nothing was changed: "
                "rebase it by hand (`git pull --rebase`)"
            )
        tip = _replay_one(checkout, commit, tip)
    return tip


def _replay_one(checkout: Checkout, commit: CommitFacts, onto: str) -> str:
    """`commit` applied on top of `onto`: a new commit, or `onto` itself if nothing is left."""
    projection = _projection(checkout)
    with _temporary_index() as env:
        _ok(checkout, "read-tree", "-m", "-i", "--aggressive", commit.parents[0], onto, commit.sha, env=env)
        unmerged = parse_unmerged(_ok(checkout, "ls-files", "--unmerged", "-z", env=env))
        others = [path for path in unmerged if path != projection]
        if others:
            raise GitError(
                f"the unpushed commit {commit.sha[:SHORT_SHA]} and {onto[:SHORT_SHA]} both change "
                f"{', '.join(others)}; nothing was changed: resolve it by hand "
                "(`git pull --rebase`, fix the files, `git rebase --continue`)"
            )
        if unmerged:
            _ok(checkout, "reset", "--quiet", onto, "--", projection, env=env)
        tree = _ok(checkout, "write-tree", env=env)
    if tree == _ok(checkout, "rev-parse", f"{onto}^{{tree}}"):
        return onto
    ident = _Ident.of(commit)
    return _ok(checkout, "commit-tree", tree, "-p", onto, "-m", commit.message, env=ident.env())


def _discard_projection(checkout: Checkout) -> None:
    """Drop uncommitted changes to TASKS.md, which would block the move and is re-rendered anyway."""
    path = _projection(checkout)
    if not _run(checkout, "status", "--porcelain", "--", path).out:
        return
    if _run(checkout, "checkout", "HEAD", "--", path).status != 0:
        _run(checkout, "rm", "--quiet", "--cached", "--ignore-unmatch", "--", path)
        (checkout.root / path).unlink(missing_ok=True)


# --- writing commits --------------------------------------------------------------------


@dataclass(frozen=True)
class _Ident:
    """Who a commit is by; `author_date` is kept when amending."""

    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    author_date: str | None = None

    @classmethod
    def of(cls, commit: CommitFacts) -> _Ident:
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
    ident: _Ident,
) -> str | None:
    """A commit of `base`'s tree with `paths` taken from disk, or None when that is `base`'s tree.

    `git add --all DIR` also records files deleted under DIR; a path gone altogether
    is dropped with `rm --cached` (git add refuses a path that matches nothing).
    """
    present = [p for p in paths if (checkout.root / p).exists() or (checkout.root / p).is_symlink()]
    missing = [p for p in paths if p not in present]
    with _temporary_index() as env:
        _ok(checkout, "read-tree", base.sha if base else "--empty", env=env)
        if missing:
            _ok(checkout, "rm", "-r", "--quiet", "--cached", "--ignore-unmatch", "--", *missing, env=env)
        if present:
            _ok(checkout, "add", "--all", "--", *present, env=env)
            # write_atomic's temporary files (a crash can leave one) are never committed;
            # named one by one, as pathspec magic may be switched off (GIT_LITERAL_PATHSPECS)
            temporary = [str(t.relative_to(checkout.root)) for p in present for t in _temporary_files(checkout.root / p)]
            if temporary:
                _ok(checkout, "rm", "--quiet", "--cached", "--ignore-unmatch", "--", *temporary, env=env)
        tree = _ok(checkout, "write-tree", env=env)
    if tree == (base.tree if base else _empty_tree(checkout)):
        return None
    parent_args = [arg for parent in parents for arg in ("-p", parent)]
    return _ok(checkout, "commit-tree", tree, *parent_args, "-m", message, env=ident.env())


def _amend_top(checkout: Checkout, paths: Sequence[str], upstream_sha: str) -> None:
    """Fold re-rendered `paths` into HEAD, our unpushed top commit, keeping its author and message.

    When the rebase left nothing of ours (HEAD is the upstream), nothing is amended;
    the re-rendered file stays in the work tree and the next tick commits it.
    """
    head = _commit_facts(checkout, "HEAD")
    if not paths or head is None or head.sha == upstream_sha:
        return
    ident = _Ident.of(head)
    sha = _write_commit(checkout, head, head.parents, paths, head.message, ident)
    if sha is not None:
        _land(checkout, sha, head.sha, "fleet: re-render after rebase")
        _sync_index(checkout, paths)


def _land(checkout: Checkout, new: str, old: str | None, reason: str) -> None:
    """Point the branch at `new` only if it still points at `old` (someone may have committed)."""
    done = _run(checkout, "update-ref", "-m", reason, "HEAD", new, old or "")
    if done.status != 0:
        raise GitError(
            f"HEAD moved while the reconciler worked ({first_error(done.err)}); the next tick retries"
        )


def _sync_index(checkout: Checkout, paths: Sequence[str]) -> None:
    """Make the index agree with the new HEAD for `paths`, so `git status` shows them clean.

    Best effort: if a person's git holds the index lock right now, the commit stands
    and the next commit resynchronizes these entries.
    """
    _run(checkout, "reset", "--quiet", "HEAD", "--", *paths)


# --- small helpers ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    status: int
    out: str
    err: str = field(repr=False)


def _run(
    checkout: Checkout, *args: str, env: Mapping[str, str] | None = None, network: bool = False
) -> _Done:
    """Run `git ARGS` at the top of the work tree; never raises for a non-zero exit.

    gitpython's wrapper sets LC_ALL=C, so the messages parsed above are git's English.
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
    return _Done(status or 0, out.strip(), err)


def _ok(checkout: Checkout, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run `git ARGS` and return its output; a failure is a GitError naming the command."""
    done = _run(checkout, *args, env=env)
    if done.status != 0:
        raise GitError(f"git {args[0]} failed in {checkout.root}: {first_error(done.err)}")
    return done.out


@contextmanager
def _temporary_index() -> Iterator[dict[str, str]]:
    """A private, initially absent index file, as the GIT_INDEX_FILE environment for the block.

    Building commits here leaves the checkout's own index, and whatever a person
    staged in it, alone.
    """
    with tempfile.TemporaryDirectory(prefix="fleet-index-") as folder:
        yield {"GIT_INDEX_FILE": str(Path(folder) / "index")}


def _commit_facts(checkout: Checkout, rev: str) -> CommitFacts | None:
    """One `git log` for everything about `rev`; None on an unborn branch."""
    done = _run(checkout, "log", "-1", "--date=raw", f"--format={COMMIT_FORMAT}", rev, "--")
    return parse_commit_facts(done.out) if done.status == 0 and done.out else None


def _safe_head(checkout: Checkout) -> Revision | None:
    """HEAD for an error result, when even reading it may fail."""
    try:
        return head_revision(checkout)
    except (git.GitError, OSError):
        return None


def _head(checkout: Checkout) -> str | None:
    return _run(checkout, "rev-parse", "--verify", "--quiet", "HEAD").out or None


def _commit_sha(checkout: Checkout, rev: str) -> str:
    done = _run(checkout, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if done.status != 0 or not done.out:
        raise GitError(f"unknown revision {rev!r} in {checkout.root}; fetch it first or check the name")
    return done.out


def _is_ancestor(checkout: Checkout, ancestor: str, descendant: str) -> bool:
    return _run(checkout, "merge-base", "--is-ancestor", ancestor, descendant).status == 0


def _empty_tree(checkout: Checkout) -> str:
    return _ok(checkout, "hash-object", "-t", "tree", "/dev/null")


def _projection(checkout: Checkout) -> str:
    return str(PurePosixPath(checkout.prefix) / PROJECTION) if checkout.prefix else PROJECTION


def _maybe_changed(checkout: Checkout, paths: Sequence[str]) -> bool:
    """Cheap pre-check: false only when `paths` are clean against both index and HEAD."""
    done = _run(
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


def _refuse_if_busy(checkout: Checkout) -> None:
    """Leave a checkout alone while a person is in the middle of a merge, rebase or pick."""
    git_dir = Path(checkout.repo.git_dir)
    for marker, what in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise GitError(
                f"{what} is in progress in {checkout.root}; finish or abort it, then the next tick goes on"
            )
