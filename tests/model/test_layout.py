"""The state directory's layout: one table, its methods and docs/guide.md agree.

`StateLayout.ENTRIES` is what the guide's state-directory section lists; each entry's
method builds exactly its pattern; the module stays importable by the stdlib-only hook
and stub agent (it imports nothing but the standard library).
"""

from __future__ import annotations

import ast
import doctest
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from reconciler.model import heartbeat, layout, observed, records
from reconciler.model.layout import StateLayout

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


@pytest.mark.parametrize("module", [layout, heartbeat, observed, records], ids=lambda m: m.__name__)
def test_doctests_pass(module: ModuleType) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0


def documented_entries() -> dict[str, str]:
    """pattern -> description, from the code block of the guide's state-directory section."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text.split("## The state directory", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL)
    assert block, "the state-directory section has no list"
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in block.group(1).splitlines() if line.strip())


def test_the_guide_lists_every_entry_and_nothing_else() -> None:
    documented = documented_entries()
    table = {e.pattern: e.what for e in StateLayout.ENTRIES}
    assert set(documented) - set(table) == set(), "documented, but not in StateLayout.ENTRIES"
    assert set(table) - set(documented) == set(), "in StateLayout.ENTRIES, but not in docs/guide.md"
    assert documented == table, "the guide's descriptions differ from the table's"


@pytest.mark.parametrize("entry", StateLayout.ENTRIES, ids=lambda e: e.pattern)
def test_each_entry_is_what_its_method_builds(entry: layout.Entry) -> None:
    method = getattr(StateLayout(Path("/root-of-state")), entry.method)
    names = list(inspect.signature(method).parameters)
    built = method(*(f"<{name}>" for name in names))
    assert built.relative_to("/root-of-state").as_posix() == entry.pattern


def test_entries_are_distinct() -> None:
    patterns = [e.pattern for e in StateLayout.ENTRIES]
    assert len(set(patterns)) == len(patterns) == 23


def test_layout_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(layout.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
