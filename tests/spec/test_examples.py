"""The documents people copy from: docs/reference.md's examples, examples/fleets/ and specs/.

The ```yaml blocks of docs/reference.md are the project's acceptance fixtures: each is a
whole document, and together they must validate as one repository. The test fails, never
skips, when the reference or its examples are missing. examples/fleets/spec-reference
holds the same documents (all but the role) so `fleet validate` can be run on them; the
JSON Schemas in specs/ are generated from the models and every example names its schema
for editors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.spec.load import load_repo
from reconciler.spec.models import RoleDefaults
from reconciler.spec.schemas import render_schemas
from tests.spec.support import EXAMPLES, REPO_ROOT, error_lines

REFERENCE = REPO_ROOT / "docs" / "reference.md"
SPEC_REFERENCE = EXAMPLES / "spec-reference"
SPECS = REPO_ROOT / "specs"
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<path>\S+)$")
#: Where the reference's documents live in a repository, by their `kind:`.
SPEC_FILES = {
    "Fleet": "fleet.yaml",
    "Roster": "tenants/jarvis/roster.yaml",
    "Budget": "tenants/jarvis/budget.yaml",
    "Tasks": "tenants/jarvis/tasks.yaml",
}
#: Kinds the reference shows that examples/fleets/spec-reference does not hold.
NOT_MIRRORED = ("roles/",)


def _path(kind: str, block: str) -> str:
    if kind == "Role":
        name = re.search(r"^name: (\S+)", block, flags=re.MULTILINE)
        assert name is not None, f"a Role example of docs/reference.md has no `name:`:\n{block}"
        return f"roles/{name.group(1)}.yaml"
    assert kind in SPEC_FILES, f"a yaml block of docs/reference.md of no known kind ({kind}):\n{block}"
    return SPEC_FILES[kind]


def spec_documents(reference: Path = REFERENCE) -> dict[str, str]:
    """docs/reference.md's ```yaml blocks by the file they belong in."""
    assert reference.is_file(), f"{reference} is missing: it is the project's reference and holds its acceptance fixtures"
    blocks = re.findall(
        r"^```yaml\n(.*?)^```$", reference.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE
    )
    documents: dict[str, str] = {}
    for block in blocks:
        kind = re.search(r"^kind: (\S+)", block, flags=re.MULTILINE)
        assert kind is not None, f"a yaml block of docs/reference.md is not a whole document (no `kind:`):\n{block}"
        path = _path(kind.group(1), block)
        assert path not in documents, f"docs/reference.md shows {path} twice"
        documents[path] = block
    missing = set(SPEC_FILES.values()) - set(documents)
    assert not missing, f"docs/reference.md lacks an example of {', '.join(sorted(missing))}"
    return documents


def test_a_missing_reference_or_example_fails_and_never_skips(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="is missing"):
        spec_documents(tmp_path / "reference.md")
    (tmp_path / "reference.md").write_text("# Reference\n\nNo examples here.\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"lacks an example of fleet\.yaml"):
        spec_documents(tmp_path / "reference.md")


def test_reference_examples_validate(tmp_path: Path) -> None:
    documents = spec_documents()
    for rel, text in documents.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    repo = load_repo(tmp_path)
    assert error_lines(repo) == []
    assert set(repo.tenants) == {"jarvis"}
    spec = repo.tenants["jarvis"]
    assert spec.budget is not None and spec.tasks is not None
    shown_roles = {Path(rel).stem for rel in documents if rel.startswith("roles/")}
    assert set(repo.roles) == shown_roles and shown_roles, "the reference shows a role, and it loads"


def test_spec_reference_example_is_the_reference() -> None:
    documents = {rel: text for rel, text in spec_documents().items() if not rel.startswith(NOT_MIRRORED)}
    on_disk = {p.relative_to(SPEC_REFERENCE).as_posix() for p in SPEC_REFERENCE.rglob("*.yaml")}
    assert on_disk == set(documents)
    for rel, text in documents.items():
        modeline, _, body = (SPEC_REFERENCE / rel).read_text(encoding="utf-8").partition("\n")
        assert MODELINE.match(modeline), f"{rel}: the first line must be the yaml-language-server modeline"
        assert body == text, f"examples/fleets/spec-reference/{rel} differs from its block in docs/reference.md"


def example_files() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.yaml"))


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


# --- the starter role library (examples/fleets/starter/roles, seeded by `fleet init`) ---------


class Mandate(NamedTuple):
    """A role of the Fleet doctrine and phrases its persona must hold (its mandate)."""

    role: str
    says: tuple[str, ...]


DOCTRINE = [
    Mandate("orchestrator", ("single point of contact", "Compose the fleet", "Delegate delivery",
                             "Never be the sole worker")),
    Mandate("enhancer", ("Monitor.", "Upgrade tools, skills and the harness", "Report bugs",
                         "You do not write product code and you do not review pull requests")),
    Mandate("coder", ("Stop at an open pull request", "You do not merge")),
    Mandate("code-review", ("run its tests", "do not merge it")),
    Mandate("security-review", ("never copy a secret", "critical, high, medium, low")),
    Mandate("research", ("primary sources", "what you verified")),
    Mandate("board", ("Moonshot:", "Contrarian:", "Technical:", "Business:", "Financial:")),
    Mandate("operations", ("roll it back", "incident")),
]
STARTER_ROLES = frozenset(m.role for m in DOCTRINE)
#: What every persona says about this fleet: how messages arrive and how to answer.
FLEET_PROTOCOL = ("`TEXT [fleet:msg-ID]`", "fleet agent send REPO", "$FLEET_AGENT", "status/ or TASKS.md")


def test_the_starter_library_is_the_doctrines_roles() -> None:
    repo = load_repo(EXAMPLES / "starter")
    assert set(repo.roles) == STARTER_ROLES
    for name, role in repo.roles.items():
        assert role.defaults == RoleDefaults(), f"{name}: no defaults, so `fleet init` can seed it into any fleet"
        assert role.skills, f"{name}: lists its skills"


@pytest.mark.parametrize("mandate", DOCTRINE, ids=lambda m: m.role)
def test_a_starter_persona_states_its_mandate_and_the_fleets_protocol(mandate: Mandate) -> None:
    persona = load_repo(EXAMPLES / "starter").roles[mandate.role].persona or ""
    missing = [phrase for phrase in (*mandate.says, *FLEET_PROTOCOL) if phrase not in persona]
    assert not missing, f"roles/{mandate.role}.yaml's persona lacks {missing}"
