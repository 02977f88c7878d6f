"""The documentation stands on its own: nothing points outside the repository (a person
who clones the project has no design folder beside it), and every relative link of README.md and
docs/*.md reaches a file, and a heading or anchor of it, that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.spec.support import REPO_ROOT

#: Where the project's own text lives (not .venv, .git or build output).
PROJECT_PARTS = ("README.md", "pyproject.toml", "dev", "docs", "reconciler", "tests", "examples", "specs",
                 "benchmarks", "fuzz")
OUTSIDE = ("../" + "shared", "shared/" + "design")  # split so this file does not match itself
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def project_files() -> list[Path]:
    files: list[Path] = []
    for part in PROJECT_PARTS:
        path = REPO_ROOT / part
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return files


def test_nothing_points_outside_the_repository() -> None:
    found = []
    for path in project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{path.relative_to(REPO_ROOT)}: {needle}" for needle in OUTSIDE if needle in text]
    assert not found, f"these point at a folder a clone does not have; use docs/reference.md: {found}"


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors: each heading's slug, and every explicit `<a id="...">`."""
    found = set(re.findall(r'<a id="([^"]+)">', markdown))
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE):
        text = re.sub(r"&lt;|&gt;|&amp;", "", heading).lower()
        found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_relative_links_reach_what_they_name(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for link in LINK.finditer(re.sub(r"^```.*?^```$", "", text, flags=re.DOTALL | re.MULTILINE)):
        target = link["target"]
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, fragment = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists() or REPO_ROOT.resolve() not in path.parents:
            broken.append(f"{target}: no such file in the repository")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path.read_text(encoding="utf-8")):
            broken.append(f"{target}: {path.name} has no heading or anchor #{fragment}")
    assert not broken, f"{doc.name}: {broken}"
