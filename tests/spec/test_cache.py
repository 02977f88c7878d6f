"""The loader's cache (spec/cache.py): the same bytes give the very same result without a
parse, an edited file is read again, and an edit that breaks validation is reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import SpecError
from reconciler.spec import load as load_module
from reconciler.spec.cache import BytesCache
from reconciler.spec.load import forget_loaded, load_repo
from reconciler.spec.yamlsource import Source
from tests.spec.support import build_repo

ROSTER = "tenants/demo/roster.yaml"


@pytest.fixture(autouse=True)
def cold() -> None:
    forget_loaded()


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The display paths parsed from here on (through the loader's own parse function)."""
    seen: list[str] = []
    real = load_module.parse_source

    def counting(raw: bytes, display: str) -> Source | SpecError:
        seen.append(display)
        return real(raw, display)

    monkeypatch.setattr(load_module, "parse_source", counting)
    return seen


def test_same_bytes_give_the_identical_repository_without_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_repo(tmp_path)
    first = load_repo(root)
    parsed = count_parses(monkeypatch)
    (root / ROSTER).write_bytes((root / ROSTER).read_bytes())  # rewritten, same bytes: a new mtime
    second = load_repo(root)
    assert second is first
    assert second.tenants["demo"].roster is first.tenants["demo"].roster
    assert parsed == []


def test_an_edited_file_is_read_again_and_only_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = build_repo(tmp_path)
    first = load_repo(root)
    parsed = count_parses(monkeypatch)
    roster = root / ROSTER
    roster.write_text(roster.read_text() + "  - name: worker-9\n    role: coder\n")
    second = load_repo(root)
    assert second is not first
    assert "worker-9" in [a.name for a in second.tenants["demo"].roster.agents]
    assert "worker-9" not in [a.name for a in first.tenants["demo"].roster.agents]
    assert parsed == [str(roster)]
    assert second.fleet is first.fleet  # fleet.yaml did not change: its model is the cached one


def test_an_edit_that_breaks_validation_is_reported_and_a_fix_is_seen(tmp_path: Path) -> None:
    root = build_repo(tmp_path)
    roster = root / ROSTER
    good = roster.read_text()
    assert load_repo(root).ok
    roster.write_text(good.replace("role: orchestrator", "role: orchestrator\n    lane: NOT A LANE"))
    broken = load_repo(root)
    assert not broken.ok and "demo" in broken.invalid_tenants and "demo" not in broken.tenants
    assert any(e.path == str(roster) and "lane" in e.message for e in broken.errors)
    roster.write_text(good)
    fixed = load_repo(root)
    assert fixed.ok and "demo" in fixed.tenants


def test_a_rule_across_files_is_checked_again_when_only_the_other_file_changes(tmp_path: Path) -> None:
    """The roster is unchanged (its cached model is reused) but fleet.yaml renames the runtime it names."""
    root = build_repo(tmp_path)
    roster = root / ROSTER
    roster.write_text(roster.read_text().replace("role: enhancer\n", "role: enhancer\n    runtime: stub\n"))
    fleet = root / "fleet.yaml"
    good = fleet.read_text()
    assert load_repo(root).ok
    fleet.write_text(good.replace("runtime: stub\n", "runtime: other\n").replace("  stub:\n", "  other:\n"))
    broken = load_repo(root)
    assert not broken.ok and "demo" in broken.invalid_tenants
    assert any(e.path == str(roster) and "stub" in e.message for e in broken.errors), broken.errors
    fleet.write_text(good)
    assert load_repo(root).ok


def test_a_deleted_file_is_not_served_from_the_cache(tmp_path: Path) -> None:
    root = build_repo(tmp_path)
    assert load_repo(root).ok
    (root / ROSTER).unlink()
    gone = load_repo(root)
    assert "demo" in gone.invalid_tenants
    assert any("has no roster.yaml" in e.message for e in gone.errors)


def test_an_added_unexpected_file_is_reported_though_every_read_file_is_unchanged(tmp_path: Path) -> None:
    root = build_repo(tmp_path)
    assert load_repo(root).ok
    (root / "tenants/demo/extra.yaml").write_text("a: 1\n")
    assert any("unexpected file extra.yaml" in e.message for e in load_repo(root).errors)


def test_bytes_cache_reuses_only_for_equal_bytes() -> None:
    cache: BytesCache[bytes, str] = BytesCache(limit=2)
    calls: list[bytes] = []

    def compute(raw: bytes) -> str:
        calls.append(raw)
        return raw.decode()

    assert cache.get("a", b"x", compute) == "x"
    assert cache.get("a", b"x", compute) == "x"
    assert cache.get("a", b"y", compute) == "y"
    assert calls == [b"x", b"y"]
    cache.get("b", b"z", compute)
    cache.get("c", b"w", compute)  # past the limit: starts over
    assert len(cache) == 1
