"""Pure parsers of git's text for the Git driver: git's output in, facts out.

No git runs here; every function is doctested. plumbing.py, incoming.py and publish.py
read git's porcelain and plumbing output through these.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_MOVED_REASONS = (
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)


@dataclass(frozen=True)
class PushLine:
    """One ref of `git push --porcelain`: flag (` `, `+`, `-`, `*`, `=`, `!`), refs, summary."""

    flag: str
    source: str
    destination: str
    summary: str


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

