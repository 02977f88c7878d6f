"""The documents people copy from: SPEC.md's examples, examples/fleets/ and specs/.

SPEC.md's YAML blocks are the project's acceptance fixtures; examples/fleets/spec-reference
holds the same documents so `fleet validate` can be run on them; the JSON Schemas in specs/
are generated from the models and every example names its schema for editors.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.spec.load import load_repo
from reconciler.spec.schemas import render_schemas
from tests.spec.support import EXAMPLES, REPO_ROOT, error_lines

SPEC_MD = Path(__file__).resolve().parents[3] / "shared" / "design" / "SPEC.md"
SPEC_REFERENCE = EXAMPLES / "spec-reference"
SPECS = REPO_ROOT / "specs"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S+)$")
#: Where SPEC.md's documents live in a repository, by their `kind:`.
SPEC_FILES = {
    "Fleet": "fleet.yaml",
    "Roster": "tenants/jarvis/roster.yaml",
    "Budget": "tenants/jarvis/budget.yaml",
    "Tasks": "tenants/jarvis/tasks.yaml",
}


def spec_documents() -> dict[str, str]:
    """SPEC.md's ```yaml blocks by the file they belong in."""
    if not SPEC_MD.is_file():
        pytest.skip(f"{SPEC_MD} is absent: the design folder is not checked out next to the repository")
    blocks = re.findall(
        r"^```yaml\n(.*?)^```$", SPEC_MD.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE
    )
    documents = {}
    for block in blocks:
        kind = re.search(r"^kind: (\S+)", block, flags=re.MULTILINE)
        assert kind is not None and kind.group(1) in SPEC_FILES, (
            f"a yaml block of SPEC.md of no known kind:\n{block}"
        )
        documents[SPEC_FILES[kind.group(1)]] = block
    assert len(blocks) == len(documents) == len(SPEC_FILES), "SPEC.md shows one document of each kind"
    return documents


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


def test_spec_md_examples_validate(tmp_path: Path) -> None:
    for rel, text in spec_documents().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    repo = load_repo(tmp_path)
    assert error_lines(repo) == []
    assert set(repo.tenants) == {"jarvis"}
    spec = repo.tenants["jarvis"]
    assert spec.budget is not None and spec.tasks is not None


def test_spec_reference_example_is_spec_md() -> None:
    documents = spec_documents()
    on_disk = {p.relative_to(SPEC_REFERENCE).as_posix() for p in SPEC_REFERENCE.rglob("*.yaml")}
    assert on_disk == set(documents)
    for rel, text in documents.items():
        modeline, _, body = (SPEC_REFERENCE / rel).read_text(encoding="utf-8").partition("\n")
        assert MODELINE.match(modeline), f"{rel}: the first line must be the yaml-language-server modeline"
        assert body == text, f"examples/fleets/spec-reference/{rel} differs from its block in SPEC.md"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()))
def test_example_validates(example: str) -> None:
    repo = load_repo(EXAMPLES / example)
    assert error_lines(repo) == []
    assert repo.tenants, "an example shows at least one tenant"
    assert not repo.invalid_tenants


def test_json_schemas_are_current() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SPECS.glob("*.schema.json")}
    stale = sorted(
        name for name in rendered.keys() | on_disk.keys() if rendered.get(name) != on_disk.get(name)
    )
    assert not stale, f"specs/ is stale ({', '.join(stale)}): run `fleet schema --out specs`"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_names_its_schema(path: Path) -> None:
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    found = MODELINE.match(first)
    assert found, f"first line must be `# yaml-language-server: $schema=<path to specs/>`, not {first!r}"
    schema = (path.parent / found["path"]).resolve()
    assert schema.is_file(), f"{found['path']} does not exist"
    assert schema.parent == SPECS.resolve(), f"{found['path']} is not in specs/"
    kind = re.search(r"^kind: (\S+)", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert kind is not None
    assert schema.name == f"{kind.group(1).lower()}.schema.json", "the modeline names another kind's schema"
