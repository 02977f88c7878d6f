"""The Git driver against real git: a bare repository as the remote, clones as hosts.

What must hold whatever the timing: a person's uncommitted edits (staged or not) are
never committed, stashed or rewritten; a commit happens only when the reconciler's
bytes changed; hosts pushing at once all land; TASKS.md is re-rendered, never merged;
any other conflict leaves the checkout exactly as it was; a network failure is a
result, and the local commit stays.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

from reconciler.drivers.files import write_atomic
from reconciler.drivers.git import (
    Checkout,
    GitError,
    PushLine,
    Revision,
    SyncOutcome,
    commit_if_changed,
    head_revision,
    incoming,
    open_checkout,
    parse,
    plumbing,
    publish,
    pull,
    push_with_retry,
    remote_moved,
    remote_revision,
    show_tree_at,
    worktree,
)
from tests.plugins.git_remote import SEED, git, person_commit, remote_tree

ROSTER = "tenants/jarvis/roster.yaml"
MARKERS = ("<<<<<<<", ">>>>>>>")


def checkout_of(path: Path) -> Checkout:
    checkout = open_checkout(path)
    assert checkout is not None, f"{path} should be a checkout"
    return checkout


def render_tasks(repo: Path) -> str:
    """The tests' TASKS.md: a pure function of the status files on disk, like the real one."""
    lines = [
        f"- {path.relative_to(repo).as_posix()}: {path.read_text().strip()}\n"
        for path in sorted((repo / "status").rglob("*.yaml"))
    ]
    return "# TASKS (generated)\n" + "".join(lines)


def rerender_for(repo: Path, calls: list[str] | None = None) -> Callable[[], list[str]]:
    def rerender() -> list[str]:
        if calls is not None:
            calls.append("rerender")
        write_atomic(repo / "TASKS.md", render_tasks(repo))
        return ["TASKS.md"]

    return rerender


def tick(repo: Path, host: str, text: str, extra: str | None = None) -> str | None:
    """What the reconciler writes back each tick: its status, TASKS.md, then commit."""
    write_atomic(repo / "status" / host / "jarvis.yaml", text)
    if extra is not None:
        write_atomic(repo / "status" / host / f"{extra}.yaml", f"{extra}\n")
    write_atomic(repo / "TASKS.md", render_tasks(repo))
    return commit_if_changed(
        checkout_of(repo), [f"status/{host}/", "TASKS.md"], f"status: {host}", host, f"fleet@{host}"
    )


def people_state(repo: Path) -> tuple[str, str, str]:
    """What a person has in flight: staged diff, unstaged diff, short status."""
    return (git(repo, "diff", "--cached"), git(repo, "diff"), git(repo, "status", "--porcelain"))


def assert_clean_checkout(repo: Path) -> None:
    """Not mid-rebase, nothing unmerged, no extra worktree, no conflict markers in tracked files."""
    git_dir = repo / ".git"
    assert not (git_dir / "rebase-merge").exists() and not (git_dir / "rebase-apply").exists()
    assert git(repo, "ls-files", "--unmerged") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    for marker in MARKERS:
        assert git(repo, "grep", "-n", marker, check=False) == ""


def stage_person_edits(repo: Path) -> None:
    """A person's work in progress: a staged and then a further unstaged edit to a roster."""
    with (repo / ROSTER).open("a") as handle:
        handle.write("  - name: enhancer  # staged\n")
    git(repo, "add", ROSTER)
    with (repo / ROSTER).open("a") as handle:
        handle.write("  - name: coder0-0  # not staged yet\n")


@pytest.mark.parametrize("module", [incoming, parse, plumbing, publish, worktree], ids=lambda m: m.__name__)
def test_doctests_pass(module: ModuleType) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0


class MovedCase(NamedTuple):
    test_id: str
    line: PushLine
    moved: bool


MOVED_CASES = [
    MovedCase("fetch-first", PushLine("!", "HEAD", "refs/heads/main", "[rejected] (fetch first)"), True),
    MovedCase("non-ff", PushLine("!", "HEAD", "refs/heads/main", "[rejected] (non-fast-forward)"), True),
    MovedCase(
        "lock-race", PushLine("!", "HEAD", "refs/heads/main", "[remote rejected] (cannot lock ref 'x')"), True
    ),
    MovedCase(
        "hook",
        PushLine("!", "HEAD", "refs/heads/main", "[remote rejected] (pre-receive hook declined)"),
        False,
    ),
    MovedCase("pushed", PushLine(" ", "HEAD", "refs/heads/main", "ab..cd"), False),
]


@pytest.mark.parametrize("case", MOVED_CASES, ids=[c.test_id for c in MOVED_CASES])
def test_remote_moved_only_for_races(case: MovedCase) -> None:
    assert remote_moved(case.line) is case.moved


# --- opening ------------------------------------------------------------------------


def test_open_checkout_finds_work_trees_only(clone: Callable[[str], Path], tmp_path: Path) -> None:
    repo = clone("host-a")
    (repo / "untracked-folder").mkdir()
    plain = tmp_path / "plain"
    plain.mkdir()

    top = checkout_of(repo)
    assert (top.root, top.prefix, top.path) == (repo, "", repo)
    assert checkout_of(repo / "tenants").prefix == "tenants"
    assert open_checkout(plain) is None
    assert open_checkout(repo / "untracked-folder") is None, (
        "never commit into a repository that does not track REPO"
    )
    assert open_checkout(tmp_path / "remote.git") is None
    assert open_checkout(tmp_path / "missing") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the clone to another user")
def test_a_checkout_git_refuses_is_an_error_not_a_silent_no_git(clone: Callable[[str], Path]) -> None:
    repo = clone("host-a")
    subprocess.run(["chown", "-R", "nobody", str(repo)], check=True)

    with pytest.raises(GitError, match=r"safe\.directory"):
        open_checkout(repo)


# --- commit ---------------------------------------------------------------------------


def test_commit_only_when_bytes_changed(clone: Callable[[str], Path]) -> None:
    repo = clone("host-a")
    sha = tick(repo, "host-a", "ready: true\n")

    assert sha is not None and head_revision(checkout_of(repo)) == Revision(sha)
    assert (
        git(repo, "log", "-1", "--format=%an <%ae> / %cn <%ce>")
        == "host-a <fleet@host-a> / host-a <fleet@host-a>"
    )
    assert git(repo, "show", "--name-only", "--format=", sha).splitlines() == [
        "TASKS.md",
        "status/host-a/jarvis.yaml",
    ]
    assert tick(repo, "host-a", "ready: true\n") is None, "same bytes, no commit"
    assert git(repo, "rev-parse", "HEAD") == sha
    assert git(repo, "status", "--porcelain") == ""


def test_commit_records_deleted_status_files(clone: Callable[[str], Path]) -> None:
    repo = clone("host-a")
    tick(repo, "host-a", "ready: true\n", extra="old-tenant")
    (repo / "status/host-a/old-tenant.yaml").unlink()

    sha = commit_if_changed(checkout_of(repo), ["status/host-a/"], "status: host-a", "host-a", "fleet@host-a")

    assert sha is not None
    assert git(repo, "show", "--name-status", "--format=", sha) == "D\tstatus/host-a/old-tenant.yaml"


def test_a_temporary_file_left_by_a_crash_is_never_committed(clone: Callable[[str], Path]) -> None:
    """write_atomic's `.NAME.<random>.tmp`, left half-written by a SIGKILL or caught in
    flight by another run, stays out of every commit (found by a review: it was pushed)."""
    repo = clone("host-a")
    (repo / "status/host-a").mkdir(parents=True, exist_ok=True)
    (repo / "status/host-a/.jarvis.yaml.14yr1k8w.tmp").write_text("torn {")
    sha = tick(repo, "host-a", "ready: true\n")

    assert sha is not None
    assert git(repo, "show", "--name-only", "--format=", sha).splitlines() == ["TASKS.md", "status/host-a/jarvis.yaml"]
    assert ".jarvis.yaml.14yr1k8w.tmp" not in git(repo, "ls-tree", "-r", "--name-only", "HEAD")


def test_an_index_left_stale_by_a_killed_run_is_repaired_without_a_commit(clone: Callable[[str], Path]) -> None:
    """A kill between moving HEAD and syncing the index left `D status/...` staged; a
    person's next `git commit` would have deleted the file (found by a review)."""
    repo = clone("host-a")
    sha = tick(repo, "host-a", "ready: true\n")
    git(repo, "rm", "--cached", "--quiet", "TASKS.md", "status/host-a/jarvis.yaml")
    assert git(repo, "status", "--porcelain") != ""

    assert tick(repo, "host-a", "ready: true\n") is None, "same bytes, no commit"
    assert git(repo, "rev-parse", "HEAD") == sha
    assert git(repo, "status", "--porcelain") == ""


def test_people_staged_and_unstaged_edits_stay_uncommitted(clone: Callable[[str], Path]) -> None:
    repo = clone("host-a")
    stage_person_edits(repo)
    write_atomic(repo / "notes.txt", "a person's new file, staged\n")
    git(repo, "add", "notes.txt")
    before = people_state(repo)

    sha = tick(repo, "host-a", "ready: true\n")

    assert sha is not None
    assert git(repo, "show", "--name-only", "--format=", sha).splitlines() == [
        "TASKS.md",
        "status/host-a/jarvis.yaml",
    ]
    assert git(repo, "show", f"{sha}:{ROSTER}") + "\n" == SEED[ROSTER]
    assert people_state(repo) == before, "staged stays staged, unstaged stays unstaged"


def test_commit_in_a_fleet_folder_inside_a_bigger_repository(tmp_path: Path, git_isolated: None) -> None:
    mono = tmp_path / "mono"
    git(tmp_path, "init", "--quiet", str(mono))
    first = person_commit(mono, {"fleet/fleet.yaml": "v1\n", "app/main.py": "print()\n"}, "fleet v1")
    person_commit(mono, {"fleet/fleet.yaml": "v2\n"}, "fleet v2")
    checkout = checkout_of(mono / "fleet")
    write_atomic(mono / "fleet/status/h/t.yaml", "ok\n")

    sha = commit_if_changed(checkout, ["status/h/"], "status: h", "h", "fleet@h")

    assert checkout.prefix == "fleet"
    assert git(mono, "show", "--name-only", "--format=", sha or "") == "fleet/status/h/t.yaml"
    dest = tmp_path / "at-first"
    assert show_tree_at(checkout, first, dest) == Revision(first)
    assert sorted(p.name for p in dest.iterdir()) == ["fleet.yaml"]
    assert (dest / "fleet.yaml").read_text() == "v1\n"


def test_a_persons_merge_in_progress_is_left_alone(clone: Callable[[str], Path]) -> None:
    repo = clone("host-a")
    git(repo, "checkout", "--quiet", "-b", "side")
    person_commit(repo, {"fleet.yaml": "name: side\n"}, "side")
    git(repo, "checkout", "--quiet", "main")
    person_commit(repo, {"fleet.yaml": "name: main\n"}, "main")
    git(repo, "-c", "user.name=Person", "-c", "user.email=p@example.com", "merge", "side", check=False)
    before = (git(repo, "rev-parse", "HEAD"), (repo / "fleet.yaml").read_text())

    with pytest.raises(GitError, match="a merge is in progress"):
        tick(repo, "host-a", "ready: true\n")
    pulled = pull(checkout_of(repo))

    assert pulled.outcome is SyncOutcome.FAILED and "a merge is in progress" in pulled.message
    assert (git(repo, "rev-parse", "HEAD"), (repo / "fleet.yaml").read_text()) == before
    assert (repo / ".git/MERGE_HEAD").exists()


def test_a_persons_hooks_do_not_gate_the_write_back(clone: Callable[[str], Path], bare_remote: Path) -> None:
    repo = clone("host-a")
    for hook in ("pre-commit", "commit-msg", "pre-push", "post-checkout"):
        (repo / ".git/hooks" / hook).write_text("#!/bin/sh\nexit 1\n")
        (repo / ".git/hooks" / hook).chmod(0o755)

    sha = tick(repo, "host-a", "ready: true\n")

    assert sha is not None
    assert push_with_retry(checkout_of(repo), rerender_for(repo)).outcome is SyncOutcome.UPDATED
    assert git(bare_remote, "rev-parse", "main") == sha


# --- pull -----------------------------------------------------------------------------


def test_pull_fast_forwards_and_reports_the_revision(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    pushed = person_commit(b, {ROSTER: SEED[ROSTER] + "  - name: enhancer\n"}, "add enhancer", push=True)

    result = pull(checkout_of(a))

    assert result.outcome is SyncOutcome.UPDATED and result.ok
    assert result.head == Revision(pushed) and result.head.short == pushed[:12]
    assert result.before is not None and result.before != result.head
    assert "enhancer" in (a / ROSTER).read_text()
    assert pull(checkout_of(a)).outcome is SyncOutcome.UP_TO_DATE


def test_pull_keeps_a_persons_uncommitted_roster_edit(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    stage_person_edits(a)
    before = people_state(a)
    pushed = person_commit(b, {"fleet.yaml": SEED["fleet.yaml"] + "# tuned\n"}, "tune fleet", push=True)

    result = pull(checkout_of(a))

    assert result.outcome is SyncOutcome.UPDATED and result.head == Revision(pushed)
    assert (a / "fleet.yaml").read_text().endswith("# tuned\n")
    assert people_state(a)[:2] == before[:2], "the roster edit, staged and unstaged, is as it was"
    assert git(a, "stash", "list") == ""


def test_pull_refuses_when_incoming_commits_touch_an_edited_file(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    stage_person_edits(a)
    before, head = people_state(a), git(a, "rev-parse", "HEAD")
    person_commit(b, {ROSTER: SEED[ROSTER] + "  - name: reviewer\n"}, "add reviewer", push=True)

    result = pull(checkout_of(a))

    assert result.outcome is SyncOutcome.FAILED and not result.ok
    assert ROSTER in result.message and "uncommitted edits" in result.message
    assert git(a, "rev-parse", "HEAD") == head and people_state(a) == before
    assert_clean_checkout(a)


def test_pull_rebases_an_unpushed_status_commit(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    tick(a, "host-a", "ready: true\n")
    stage_person_edits(a)
    before = people_state(a)[:2]
    pushed = person_commit(b, {"fleet.yaml": SEED["fleet.yaml"] + "# tuned\n"}, "tune fleet", push=True)

    result = pull(checkout_of(a))

    assert result.outcome is SyncOutcome.UPDATED and "rebased" in result.message
    assert git(a, "rev-parse", "HEAD~1") == pushed
    assert git(a, "log", "-1", "--format=%an") == "host-a"
    assert people_state(a)[:2] == before
    assert_clean_checkout(a)


def test_pull_replays_several_commits_in_order_with_their_authors(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    person_commit(a, {"notes/plan.md": "plan\n"}, "a person's local note")
    tick(a, "host-a", "ready: true\n")
    pushed = person_commit(b, {"fleet.yaml": SEED["fleet.yaml"] + "# tuned\n"}, "tune fleet", push=True)

    result = pull(checkout_of(a))

    assert result.outcome is SyncOutcome.UPDATED
    log = git(a, "log", "--format=%an|%s", f"{pushed}..HEAD").splitlines()
    assert log == ["host-a|status: host-a", "Person|a person's local note"]
    assert git(a, "rev-parse", "HEAD~2") == pushed
    assert_clean_checkout(a)


def test_a_commit_left_empty_by_the_replay_is_dropped(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    write_atomic(a / "TASKS.md", "# rendered on host-a\n")
    commit_if_changed(checkout_of(a), ["TASKS.md"], "render", "host-a", "fleet@host-a")
    pushed = person_commit(b, {"TASKS.md": "# rendered on host-b\n"}, "render on b", push=True)

    result = pull(checkout_of(a))

    assert (result.outcome, result.head) == (SyncOutcome.UPDATED, Revision(pushed))
    assert (a / "TASKS.md").read_text() == "# rendered on host-b\n"


def test_pull_into_an_unborn_branch(bare_remote: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    git(tmp_path, "init", "--quiet", str(fresh))
    git(fresh, "remote", "add", "origin", str(bare_remote))
    git(fresh, "config", "branch.main.remote", "origin")
    git(fresh, "config", "branch.main.merge", "refs/heads/main")

    result = pull(checkout_of(fresh))

    assert (result.outcome, result.before) == (SyncOutcome.UPDATED, None)
    assert result.head == Revision(git(bare_remote, "rev-parse", "main"))
    assert (fresh / ROSTER).read_text() == SEED[ROSTER]


def test_pull_discards_an_uncommitted_tasks_md(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    write_atomic(a / "TASKS.md", "# half-written projection\n")
    person_commit(b, {"TASKS.md": "# TASKS (generated) v2\n"}, "render", push=True)

    assert pull(checkout_of(a)).outcome is SyncOutcome.UPDATED
    assert (a / "TASKS.md").read_text() == "# TASKS (generated) v2\n"


# --- push -----------------------------------------------------------------------------


def test_push_then_nothing_left_to_push(clone: Callable[[str], Path], bare_remote: Path) -> None:
    a = clone("host-a")
    sha = tick(a, "host-a", "ready: true\n")

    first = push_with_retry(checkout_of(a), rerender_for(a))
    second = push_with_retry(checkout_of(a), rerender_for(a))

    assert (first.outcome, first.attempts, first.head) == (SyncOutcome.UPDATED, 1, Revision(sha or ""))
    assert second.outcome is SyncOutcome.UP_TO_DATE
    assert git(bare_remote, "rev-parse", "main") == sha
    assert remote_revision(checkout_of(a)).outcome is SyncOutcome.UP_TO_DATE, "our own push is no news"


def test_two_hosts_push_at_once_and_both_land(clone: Callable[[str], Path], bare_remote: Path) -> None:
    hosts = {name: clone(name) for name in ("host-a", "host-b")}
    for name, repo in hosts.items():
        tick(repo, name, f"{name}: ready\n")
    start = threading.Barrier(len(hosts))
    results = {}

    def push(name: str) -> None:
        start.wait()
        results[name] = push_with_retry(checkout_of(hosts[name]), rerender_for(hosts[name]))

    threads = [threading.Thread(target=push, args=(name,)) for name in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(r.outcome is SyncOutcome.UPDATED for r in results.values()), results
    tree = remote_tree(bare_remote)
    assert {"status/host-a/jarvis.yaml", "status/host-b/jarvis.yaml"} <= set(tree)
    assert "host-a: ready" in tree["TASKS.md"] and "host-b: ready" in tree["TASKS.md"]


def test_a_tasks_md_conflict_is_re_rendered(clone: Callable[[str], Path], bare_remote: Path) -> None:
    a, b = clone("host-a"), clone("host-b")
    tick(a, "host-a", "a: ready\n")
    tick(b, "host-b", "b: ready\n")
    assert push_with_retry(checkout_of(a), rerender_for(a)).outcome is SyncOutcome.UPDATED
    stage_person_edits(b)
    before = people_state(b)[:2]
    calls: list[str] = []

    result = push_with_retry(checkout_of(b), rerender_for(b, calls), sleep=lambda _: None)

    assert (result.outcome, result.attempts, calls) == (SyncOutcome.UPDATED, 2, ["rerender"])
    tree = remote_tree(bare_remote)
    assert tree["TASKS.md"] == render_tasks(b) == (b / "TASKS.md").read_text()
    assert "a: ready" in tree["TASKS.md"] and "b: ready" in tree["TASKS.md"]
    assert not any(marker in text for text in tree.values() for marker in MARKERS)
    assert git(bare_remote, "log", "--format=%an", "main").splitlines() == ["host-b", "host-a", "Person"]
    assert people_state(b)[:2] == before
    assert_clean_checkout(b)


def test_any_other_conflict_aborts_cleanly(clone: Callable[[str], Path], bare_remote: Path) -> None:
    a, b = clone("host-a"), clone("host-b")
    person_commit(a, {"fleet.yaml": "name: from-a\n"}, "local edit on host-a")
    local = tick(a, "host-a", "a: ready\n")
    remote = person_commit(b, {"fleet.yaml": "name: from-b\n"}, "merged edit", push=True)

    result = push_with_retry(checkout_of(a), rerender_for(a), sleep=lambda _: None)

    assert result.outcome is SyncOutcome.FAILED and "fleet.yaml" in result.message
    assert git(a, "rev-parse", "HEAD") == local, "the local commit stays"
    assert git(a, "status", "--porcelain") == ""
    assert (a / "fleet.yaml").read_text() == "name: from-a\n"
    assert git(bare_remote, "rev-parse", "main") == remote
    assert_clean_checkout(a)


def test_unreachable_remote_is_a_result_and_the_commit_stays(
    clone: Callable[[str], Path], tmp_path: Path
) -> None:
    a = clone("host-a")
    local = tick(a, "host-a", "a: ready\n")
    git(a, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    checkout = checkout_of(a)

    pushed, pulled, polled = (
        push_with_retry(checkout, rerender_for(a)),
        pull(checkout),
        remote_revision(checkout),
    )

    assert (pushed.outcome, pushed.attempts) == (SyncOutcome.FAILED, 1)
    assert "gone.git" in pushed.message and "local commit stays" in pushed.message
    assert pulled.outcome is SyncOutcome.FAILED and pulled.head == Revision(local or "")
    assert polled.outcome is SyncOutcome.FAILED and polled.revision is None
    assert git(a, "rev-parse", "HEAD") == local


def test_without_a_remote_git_stays_local(tmp_path: Path, git_isolated: None) -> None:
    repo = tmp_path / "solo"
    git(tmp_path, "init", "--quiet", str(repo))
    person_commit(repo, SEED, "seed")
    checkout = checkout_of(repo)

    pushed, pulled, polled = (
        push_with_retry(checkout, rerender_for(repo)),
        pull(checkout),
        remote_revision(checkout),
    )

    assert {pushed.outcome, pulled.outcome, polled.outcome} == {SyncOutcome.NO_UPSTREAM}
    assert "no remote configured" in pushed.message
    git(repo, "remote", "add", "origin", str(tmp_path / "elsewhere.git"))
    assert "git push -u origin main" in push_with_retry(checkout, rerender_for(repo)).message


# --- revisions --------------------------------------------------------------------------


def test_remote_revision_notices_a_new_remote_commit(clone: Callable[[str], Path]) -> None:
    a, b = clone("host-a"), clone("host-b")
    checkout = checkout_of(a)
    assert remote_revision(checkout).outcome is SyncOutcome.UP_TO_DATE

    pushed = person_commit(b, {"fleet.yaml": "name: next\n"}, "next", push=True)
    moved = remote_revision(checkout)

    assert (moved.outcome, moved.revision) == (SyncOutcome.UPDATED, Revision(pushed))
    pull(checkout)
    assert remote_revision(checkout).outcome is SyncOutcome.UP_TO_DATE


def test_show_tree_at_materializes_an_older_revision(clone: Callable[[str], Path], tmp_path: Path) -> None:
    a = clone("host-a")
    seed = git(a, "rev-parse", "HEAD")
    person_commit(a, {ROSTER: "kind: Roster\nchanged: true\n"}, "change roster")
    stage_person_edits(a)
    before = people_state(a)

    revision = show_tree_at(checkout_of(a), "HEAD~1", tmp_path / "at-seed")

    assert revision == Revision(seed)
    assert {
        p.relative_to(tmp_path / "at-seed").as_posix()
        for p in (tmp_path / "at-seed").rglob("*")
        if p.is_file()
    } == set(SEED)
    assert (tmp_path / "at-seed" / ROSTER).read_text() == SEED[ROSTER]
    assert people_state(a) == before
    with pytest.raises(GitError, match="unknown revision 'no-such-branch'"):
        show_tree_at(checkout_of(a), "no-such-branch", tmp_path / "nowhere")


# --- many hosts at once -----------------------------------------------------------------


def test_stress_three_hosts_ten_rounds_concurrently(clone: Callable[[str], Path], bare_remote: Path) -> None:
    """Each round all three hosts pull, write and push at the same moment.

    Rounds start together, as ticks of hosts on the same timer would; without that
    pause, a host that keeps rebasing can lose to two that never stop pushing (its
    commit then waits for the next tick, as the unreachable-remote test shows). The
    jittered backoff is kept but scaled down tenfold, to keep the suite fast.
    """
    hosts = {name: clone(name) for name in ("host-a", "host-b", "host-c")}
    rounds = 10
    tick_starts = threading.Barrier(len(hosts))
    failures: list[str] = []
    attempts: list[int] = []

    def run(name: str) -> None:
        repo = hosts[name]
        for n in range(rounds):
            tick_starts.wait(timeout=30)  # every host's timer fires at once: the worst case
            checkout = checkout_of(repo)
            pulled = pull(checkout)
            tick(repo, name, f"{name}: round {n}\n", extra=f"round-{n}")
            pushed = push_with_retry(checkout, rerender_for(repo), sleep=lambda s: time.sleep(s / 10))
            attempts.append(pushed.attempts)
            if not (pulled.ok and pushed.ok):
                failures.append(f"{name} round {n}: {pulled.message} / {pushed.message}")

    threads = [threading.Thread(target=run, args=(name,)) for name in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    tree = remote_tree(bare_remote)
    expected = {f"status/{h}/round-{n}.yaml" for h in hosts for n in range(rounds)}
    assert expected <= set(tree)
    assert all(tree[f"status/{h}/jarvis.yaml"] == f"{h}: round {rounds - 1}\n" for h in hosts)
    assert not any(marker in text for text in tree.values() for marker in MARKERS)
    projected = "# TASKS (generated)\n" + "".join(
        f"- {path}: {text.strip()}\n" for path, text in sorted(tree.items()) if path.startswith("status/")
    )
    assert tree["TASKS.md"] == projected, "TASKS.md is the projection of the merged status"
    git(bare_remote, "fsck", "--strict", "--no-progress")
    for repo in hosts.values():
        git(repo, "fsck", "--no-progress")
        assert_clean_checkout(repo)
        assert git(repo, "status", "--porcelain") == ""
    assert max(attempts) > 1, "the hosts really raced"


def test_a_mission_manifest_conflict_is_re_rendered_like_tasks_md(clone: Callable[[str], Path], bare_remote: Path) -> None:
    """MISSION-MANIFEST.md is the second projection: when both hosts changed it, the rebase
    takes the remote's copy and `rerender()` writes it again from the merged status files."""
    def manifest(repo: Path) -> str:
        return render_tasks(repo).replace("# TASKS", "# MANIFEST")

    def both(repo: Path, host: str, text: str) -> None:
        write_atomic(repo / "status" / host / "jarvis.yaml", text)
        write_atomic(repo / "TASKS.md", render_tasks(repo))
        write_atomic(repo / "MISSION-MANIFEST.md", manifest(repo))
        commit_if_changed(checkout_of(repo), [f"status/{host}/", "TASKS.md", "MISSION-MANIFEST.md"], f"status: {host}",
                          host, f"fleet@{host}")

    def rerender(repo: Path) -> Callable[[], list[str]]:
        def again() -> list[str]:
            write_atomic(repo / "TASKS.md", render_tasks(repo))
            write_atomic(repo / "MISSION-MANIFEST.md", manifest(repo))
            return ["TASKS.md", "MISSION-MANIFEST.md"]
        return again

    a, b = clone("host-a"), clone("host-b")
    both(a, "host-a", "a: ready\n")
    both(b, "host-b", "b: ready\n")
    assert push_with_retry(checkout_of(a), rerender(a)).outcome is SyncOutcome.UPDATED

    result = push_with_retry(checkout_of(b), rerender(b), sleep=lambda _: None)

    assert (result.outcome, result.attempts) == (SyncOutcome.UPDATED, 2), result
    tree = remote_tree(bare_remote)
    assert tree["MISSION-MANIFEST.md"] == manifest(b) == (b / "MISSION-MANIFEST.md").read_text()
    assert "a: ready" in tree["MISSION-MANIFEST.md"] and "b: ready" in tree["MISSION-MANIFEST.md"]
    assert not any(marker in text for text in tree.values() for marker in MARKERS)
