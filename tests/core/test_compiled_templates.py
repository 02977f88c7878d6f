"""TASKS.md's and MISSION-MANIFEST.md's templates are compiled once per user, not on every run
(core/render.py _CompiledTemplates); a damaged or unwritable cache is passed over."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from reconciler.core.render import _CompiledTemplates, markdown_cell

TEMPLATES = ("TASKS.md.j2", "MISSION-MANIFEST.md.j2")
TENANTS = [{"name": "shop", "agents": [], "missions": [], "accounts": [], "queue": [], "lanes": []}]


def environment(cache: jinja2.BytecodeCache) -> jinja2.Environment:
    """A fresh environment (as a new process has) over `cache`, as core/render.py's."""
    return jinja2.Environment(loader=jinja2.PackageLoader("reconciler", "templates"), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False, finalize=markdown_cell,
                              bytecode_cache=cache)


def rendered(env: jinja2.Environment) -> list[str]:
    return [env.get_template(name).render(tenants=TENANTS, revision="abc") for name in TEMPLATES]


def no_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a template was compiled again")

    monkeypatch.setattr(jinja2.Environment, "compile", refuse)


def test_a_second_process_loads_the_templates_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = rendered(environment(_CompiledTemplates(str(tmp_path))))
    assert len(list(tmp_path.iterdir())) == len(TEMPLATES)
    no_compiling(monkeypatch)
    assert rendered(environment(_CompiledTemplates(str(tmp_path)))) == first


def test_a_damaged_entry_is_compiled_again_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = rendered(environment(_CompiledTemplates(str(tmp_path))))
    for entry in tmp_path.iterdir():
        entry.write_bytes(entry.read_bytes()[:40])  # the header and a cut-off body
    assert rendered(environment(_CompiledTemplates(str(tmp_path)))) == first
    no_compiling(monkeypatch)
    assert rendered(environment(_CompiledTemplates(str(tmp_path)))) == first


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    fresh = rendered(environment(_CompiledTemplates(str(tmp_path / "fresh"))))
    assert rendered(environment(_CompiledTemplates(str(not_a_folder)))) == fresh
