"""docs/reference.md's field tables are the generator's output, and the generator covers
every kind, field and value type of the models, so the reference cannot drift from them.

After changing a model, `UPDATE_REFERENCE=1 pytest -n 0 tests/spec/test_reference.py`
rewrites the tables in place (the way `--snapshot-update` rewrites snapshots).
"""

from __future__ import annotations

import json
import os

import pytest

from reconciler.drivers.files import write_atomic
from reconciler.spec.models import KINDS
from reconciler.spec.reference import (
    BEGIN,
    NOTES,
    VALUE_TYPES,
    VALUES,
    nested_models,
    own_description,
    update,
)
from reconciler.spec.schemas import render_schemas
from tests.spec.support import REPO_ROOT

REFERENCE = REPO_ROOT / "docs" / "reference.md"
REGENERATE = "UPDATE_REFERENCE=1 pytest -n 0 tests/spec/test_reference.py"


def test_reference_tables_are_current() -> None:
    assert REFERENCE.is_file(), f"{REFERENCE} is missing"
    text = REFERENCE.read_text(encoding="utf-8")
    fresh = update(text)
    if fresh != text and os.environ.get("UPDATE_REFERENCE") == "1":
        write_atomic(REFERENCE, fresh)
        text = REFERENCE.read_text(encoding="utf-8")
    assert fresh == text, f"docs/reference.md's field tables are stale: run `{REGENERATE}`"


def test_reference_has_a_table_block_for_every_kind_and_the_value_types() -> None:
    names = [m["name"] for m in BEGIN.finditer(REFERENCE.read_text(encoding="utf-8"))]
    assert sorted(names) == sorted([*KINDS, VALUES]), "each kind (and `values`) has exactly one <!-- fields:NAME --> block"


def test_every_field_says_what_it_means_once() -> None:
    fields = {f"{m.__name__}.{name}": field for kind in KINDS.values() for m in nested_models(kind)
              for name, field in m.model_fields.items()}
    stale = sorted(set(NOTES) - set(fields))
    assert not stale, f"NOTES names fields that no model has: {stale}"
    twice = sorted(key for key in NOTES if own_description(fields[key]))
    assert not twice, f"these fields have a description= in the model now; delete their NOTES entry: {twice}"
    silent = sorted(key for key, field in fields.items() if key not in NOTES and not own_description(field))
    assert not silent, f"give these fields a description= in the model (or a NOTES entry): {silent}"


def test_every_pattern_of_the_schemas_has_a_value_type() -> None:
    patterns: set[str] = set()

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.add(node["pattern"])
            patterns.update(node.get("patternProperties", {}))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for text in render_schemas().values():
        collect(json.loads(text))
    unnamed = sorted(patterns - set(VALUE_TYPES))
    assert not unnamed, f"add these patterns to VALUE_TYPES in reconciler/spec/reference.py: {unnamed}"


def test_update_replaces_only_what_is_between_the_markers() -> None:
    text = "intro\n<!-- fields:Tasks -->\nhand-edited\n<!-- /fields -->\noutro\n"
    fresh = update(text)
    assert fresh.startswith("intro\n<!-- fields:Tasks -->\n") and fresh.endswith("<!-- /fields -->\noutro\n")
    assert "hand-edited" not in fresh and "| `missions` |" in fresh
    assert update(fresh) == fresh


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- fields:Nope -->\n<!-- /fields -->\n", "no such block"),
    ("<!-- fields:Fleet -->\nno end\n", "has no <!-- /fields -->"),
])
def test_update_refuses_a_broken_marker(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        update(text)
