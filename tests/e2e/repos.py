"""Fleet repositories for end-to-end tests: copies of the examples on a private tmux socket."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleets"


def example_repo(tmp_path: Path, example: str, socket: str | None) -> Path:
    """Copy an example and point every socket at `socket`, so tests never touch a real fleet."""
    repo = tmp_path / example
    shutil.copytree(EXAMPLES / example, repo)
    for path in repo.rglob("*.yaml"):
        text = path.read_text()
        if socket is not None:
            text = re.sub(r"(?m)^(\s*)socket_name: .*$", rf"\1socket_name: {socket}", text)
        path.write_text(text)
    return repo


def write(repo: Path, rel: str, text: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
