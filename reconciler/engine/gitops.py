"""The Git ends of a tick: pull before the specs are read, commit and push what was written.

Only the reconciler's own files are committed (`status/<host>/`, TASKS.md and
MISSION-MANIFEST.md; with a register, the two projections only by the lease holder),
only when their bytes changed, authored as the host. A failing
remote never fails the tick: the host is reconciled from the specs it has, and the
failure is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.render import render_manifest, render_tasks
from reconciler.drivers import git
from reconciler.drivers.files import write_if_changed
from reconciler.engine.writeback import MANIFEST_FILE, STATUS_DIR, TASKS_FILE, read_all_statuses
from reconciler.spec.load import load_repo
from reconciler.spec.repo import SPEC_PATHS

UNVERSIONED = "unversioned"


@dataclass(frozen=True, slots=True)
class GitReport:
    """What Git did this tick, in words for the run's output."""

    pulled: str = ""
    committed: str | None = None
    pushed: str = ""
    problems: tuple[str, ...] = ()


NESTED = (
    "{path} is a folder inside the larger Git work tree {root}; reconcile pulls, commits "
    "and pushes only a fleet repository of its own (`fleet init`), so it writes status "
    "and TASKS.md here and leaves Git alone"
)


def open_repo(path: Path, enabled: bool) -> tuple[git.Checkout | None, str]:
    """The checkout to pull, commit and push, or None, with a note when Git is skipped.

    A fleet folder inside someone else's repository (this project's examples, a
    monorepo) is never pulled or pushed by a reconcile: committing status there would
    put it on that repository's branch and push it to its remote."""
    if not enabled:
        return None, ""
    checkout = git.open_checkout(path)
    if checkout is not None and checkout.prefix:
        return None, NESTED.format(path=path, root=checkout.root)
    return checkout, ""


def pull(checkout: git.Checkout | None) -> tuple[str, tuple[str, ...]]:
    if checkout is None:
        return "", ()
    result = git.pull(checkout)
    return result.message, (() if result.ok else (f"git pull: {result.message}",))


def spec_revision(checkout: git.Checkout | None) -> str:
    """The last commit that changed the specs: status commits by other hosts do not move it,
    so TASKS.md and status, which carry it, do not churn."""
    if checkout is None:
        return UNVERSIONED
    last = git.last_commit(checkout, SPEC_PATHS)  # None: an unborn branch or a broken repository
    return last.short if last else UNVERSIONED


def rerender_tasks(repo: Path, revision_of: git.Checkout | None) -> Sequence[str]:
    """TASKS.md and MISSION-MANIFEST.md again from the merged status files (after a rebase onto another host)."""
    loaded = load_repo(repo)
    if loaded.fleet is None:
        return []
    statuses, _ = read_all_statuses(repo)
    revision = spec_revision(revision_of)
    return [name for name, render in ((TASKS_FILE, render_tasks), (MANIFEST_FILE, render_manifest))
            if write_if_changed(repo / name, render(loaded, statuses, revision))]


def restore(repo: Path, texts: Mapping[str, str]) -> Sequence[str]:
    """The projections this run rendered from the register, written back after a rebase took
    the remote's copy (another holder's, before the lease passed); nothing is rendered again."""
    return [name for name, text in texts.items() if write_if_changed(repo / name, text)]


def publish(checkout: git.Checkout | None, repo: Path, host: str, revision: str,
            projections: Mapping[str, str] | None = None) -> GitReport:
    """Commit this host's status, TASKS.md and MISSION-MANIFEST.md if they changed, then push with rebase-and-retry.

    `projections` None: as without a register, TASKS.md and MISSION-MANIFEST.md are
    committed and re-rendered from the merged status files after a rebase. Otherwise they
    are the texts the register's lease holder rendered (empty for every other host):
    only those files are committed with the status, and a rebase re-renders nothing."""
    if checkout is None:
        return GitReport()
    paths = [f"{STATUS_DIR}/{host}", *((TASKS_FILE, MANIFEST_FILE) if projections is None else sorted(projections))]
    try:
        sha = git.commit_if_changed(checkout, paths, f"fleet status from {host} at {revision}", host, f"fleet@{host}")
    except git.GitError as exc:
        return GitReport(problems=(f"git commit: {exc}",))
    push = git.push_with_retry(checkout, (lambda: rerender_tasks(repo, checkout)) if projections is None
                               else (lambda: restore(repo, projections)))
    problems = () if push.ok else (f"git push: {push.message}",)
    return GitReport(committed=sha, pushed=push.message, problems=problems)
