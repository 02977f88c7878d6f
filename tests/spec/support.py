"""Fleet repositories for the loader's tests: the minimal example with files overridden.

Every malformed repository in this suite is `examples/fleets/minimal` with one file
replaced, added or deleted, so a failing case shows exactly one thing that is broken.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from reconciler.spec.repo import FleetRepo

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "fleets"
MINIMAL = EXAMPLES / "minimal"

#: Text (or raw bytes) per file relative to the repository; None deletes the file.
Files = Mapping[str, str | bytes | None]


def write_files(root: Path, files: Files) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def build_repo(parent: Path, files: Files | None = None) -> Path:
    """A copy of the minimal example under `parent`, with `files` applied."""
    root = parent / "repo"
    shutil.copytree(MINIMAL, root)
    write_files(root, files or {})
    return root


def error_lines(repo: FleetRepo) -> list[str]:
    """Every error as `relative/path.yaml:LINE:COL: message`, the way `fleet validate` prints it."""
    return [
        f"{Path(e.path).relative_to(repo.root).as_posix()}:{e.line}:{e.col}: {e.message}" for e in repo.errors
    ]
