"""One spec edit, end to end: `fleet task add|set-state` and `fleet agent add|remove`.

The change itself is pure (spec/edit.py); here it is applied to a copy of the fleet
folder (the work tree's, or HEAD's for `--branch`), the whole copy is validated with
the loader, and only a valid result is written (atomically) and committed: on the
current branch like the reconciler's own commits, or on a new branch for a pull
request, which leaves the work tree and the current branch as they are.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reconciler.drivers import git
from reconciler.drivers.files import write_atomic
from reconciler.drivers.git import branch as git_branch
from reconciler.drivers.lock import LockBusy, hold_lock
from reconciler.errors import SpecError, UserError
from reconciler.spec.load import load_repo
from reconciler.spec.repo import SPEC_PATHS

#: A change: the file's text (None: it does not exist yet) -> its new text and a one-line summary.
Change = Callable[[str | None], tuple[str, str]]


@dataclass(frozen=True)
class EditRequest:
    repo: Path
    tenant: str
    file: str  # a tenant file: roster.yaml or tasks.yaml
    change: Change
    host: str
    commit: bool = True
    branch: str | None = None
    push: bool = False
    #: The agent that asked (`tenant/agent` from its pane's FLEET_* environment), as a commit trailer.
    requested_by: str = ""


@dataclass(frozen=True)
class EditResult:
    """What was done, for people: the summary, then one line per step taken."""

    summary: str
    changed: bool
    lines: tuple[str, ...]


class InvalidEdit(Exception):
    """The edited repository does not validate; nothing was written."""

    def __init__(self, errors: tuple[SpecError, ...]) -> None:
        super().__init__(f"{len(errors)} error(s)")
        self.errors = errors


def edit(request: EditRequest) -> EditResult:
    """Apply, validate, write and commit one change (module docstring)."""
    if request.push and not request.commit:
        raise UserError("--push pushes the commit; it cannot be used with --no-commit")
    rel = f"tenants/{request.tenant}/{request.file}"
    if (request.repo / rel).is_symlink():
        raise UserError(f"{request.repo / rel} is a symbolic link; edit the file it points to instead")
    checkout = _checkout(request, rel)
    with _one_edit_at_a_time(checkout):
        if checkout is not None and git_branch.uncommitted(checkout, rel):
            raise UserError(f"{request.repo / rel} has uncommitted changes; commit or stash them first "
                            "(or use --no-commit to edit the file as it is, without a commit)")
        with tempfile.TemporaryDirectory(prefix="fleet-edit-") as tmp:
            copy = Path(tmp) / "fleet"
            _copy_specs(request, checkout, copy)
            if not (copy / "tenants" / request.tenant / "roster.yaml").is_file():
                raise UserError(_no_tenant(copy, request.tenant))
            target = copy / rel
            before = target.read_text(encoding="utf-8") if target.is_file() else None
            after, summary = request.change(before)
            if after == before:
                return EditResult(summary, False, ("nothing to change",))
            target.write_text(after, encoding="utf-8")
            errors = load_repo(copy).errors
            if errors:
                raise InvalidEdit(tuple(_relocated(e, str(copy), str(request.repo)) for e in errors))
        return _write_and_commit(request, checkout, rel, after, summary)


@contextmanager
def _one_edit_at_a_time(checkout: git.Checkout | None) -> Iterator[None]:
    """Two edits of one checkout at once (two agents' `fleet task add`) take turns, so
    neither writes over the other's file between its read and its commit."""
    if checkout is None:
        yield
        return
    try:
        with hold_lock(git_branch.edit_lock_path(checkout), timeout=30.0):
            yield
    except LockBusy:
        raise UserError(f"another fleet edit of {checkout.root} has held its lock for 30 s; "
                        "try again when it is done") from None


def _checkout(request: EditRequest, rel: str) -> git.Checkout | None:
    """The checkout to commit in (None with --no-commit), refusing a person's pending edit."""
    if not request.commit:
        if request.branch:
            raise UserError("--branch commits the edit on a new branch; it cannot be used with --no-commit")
        return None
    try:
        checkout = git.open_checkout(request.repo)
    except git.GitError as exc:
        raise UserError(str(exc)) from None
    if checkout is None:
        raise UserError(f"{request.repo} is not in a Git checkout, so the edit cannot be committed; "
                        "use --no-commit to only edit the file")
    if request.branch and (why := git_branch.check_branch_name(checkout, request.branch)):
        raise UserError(why)
    return checkout


def _copy_specs(request: EditRequest, checkout: git.Checkout | None, dest: Path) -> None:
    """The specs the edit starts from: HEAD's for a new branch, else the work tree's."""
    if request.branch and checkout is not None:
        try:
            git.show_tree_at(checkout, "HEAD", dest)
        except git.GitError as exc:
            raise UserError(str(exc)) from None
        return
    dest.mkdir(parents=True)
    for name in SPEC_PATHS:
        source = request.repo / name
        if source.is_dir():
            shutil.copytree(source, dest / name, symlinks=False)
        elif source.is_file():
            shutil.copyfile(source, dest / name)


def _no_tenant(copy: Path, tenant: str) -> str:
    tenants = sorted(p.name for p in (copy / "tenants").iterdir() if p.is_dir()) if (copy / "tenants").is_dir() else []
    return (f"no tenant {tenant!r} in this fleet (tenants/{tenant}/roster.yaml is missing); "
            f"tenants: {', '.join(tenants) or 'none'}")


def _relocated(error: SpecError, old: str, new: str) -> SpecError:
    """An error of the validated copy, pointing at the repository's own file."""
    if not error.path.startswith(old + "/"):
        return error
    rest = error.path[len(old) + 1:]
    path = rest if new == "." else f"{new}/{rest}"  # as the loader shows it (spec/load.py)
    return SpecError(path, error.line, error.col, error.message, error.tenant)


def _write_and_commit(request: EditRequest, checkout: git.Checkout | None, rel: str, text: str,
                      summary: str) -> EditResult:
    path = request.repo / rel
    if checkout is None:
        _write(path, text)
        return EditResult(summary, True, (f"wrote {path} (not committed)",))
    name, email = request.host, f"fleet@{request.host}"  # as the reconciler's own commits (engine/gitops.py)
    message = f"{summary}\n\nRequested-by: {request.requested_by}" if request.requested_by else summary
    try:
        if request.branch:
            made = git_branch.commit_to_new_branch(checkout, request.branch, {rel: text.encode()}, message, name,
                                                   email)
            lines = [f"committed {made[: git.SHORT_SHA]} on new branch {request.branch} by {name} <{email}>; "
                     f"{path} and the current branch are unchanged"]
            if request.push:
                why = git_branch.push_branch(checkout, request.branch)
                if why:
                    raise UserError(f"committed on branch {request.branch}, but the push to origin failed: {why}")
                lines.append(f"pushed {request.branch} to origin; open a pull request from it")
            return EditResult(summary, True, tuple(lines))
        _write(path, text)
        sha = git.commit_if_changed(checkout, [rel], message, name, email)
    except git.GitError as exc:
        raise UserError(f"{exc}{'' if request.branch else f'; {path} is written but not committed'}") from None
    lines = [f"wrote {path}", f"committed {(sha or '')[: git.SHORT_SHA]} by {name} <{email}>"]
    if request.push:
        pushed = git.push_with_retry(checkout, lambda: [])
        if not pushed.ok:
            raise UserError(f"committed, but the push failed: {pushed.message}")
        lines.append(pushed.message)
    return EditResult(summary, True, tuple(lines))


def _write(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    write_atomic(path, text, mode)
