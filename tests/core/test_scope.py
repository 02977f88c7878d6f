"""Who reconciles which tenant (core/scope.py), from `user:` and who runs fleet."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.scope import Scope, split_scope, worst_code
from reconciler.spec.load import load_repo
from reconciler.spec.repo import FleetRepo
from tests.e2e.repos import example_repo, write

ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: {tenant}
host: demo
{user}
agents:
  - name: orchestrator
    role: orchestrator
  - name: enhancer
    role: enhancer
"""


@pytest.fixture
def repo(tmp_path: Path) -> FleetRepo:
    root = example_repo(tmp_path, "minimal", None)
    for tenant, user in (("demo", ""), ("mine", "user: me"), ("jarvis", "user: jarvis"), ("friday", "user: friday"),
                         ("jarvis2", "user: jarvis")):
        write(root, f"tenants/{tenant}/roster.yaml", ROSTER.format(tenant=tenant, user=user))
    write(root, "tenants/jarvis2/roster.yaml",
          ROSTER.format(tenant="jarvis2", user="user: jarvis\nsocket_name: other"))
    loaded = load_repo(root)
    assert loaded.ok, loaded.errors
    return loaded


def test_root_runs_each_other_user_once_for_all_its_tenants(repo: FleetRepo) -> None:
    scope = split_scope(repo, None, me="root", root=True)
    assert scope == Scope(frozenset({"demo"}), {"friday": ("friday",), "jarvis": ("jarvis", "jarvis2"),
                                                "me": ("mine",)}, ())


def test_an_ordinary_user_keeps_its_own_and_unowned_tenants_and_skips_the_rest(repo: FleetRepo) -> None:
    scope = split_scope(repo, None, me="me", root=False)
    assert scope.local == frozenset({"demo", "mine"}) and not scope.delegated
    assert [n.split(";")[0] for n in scope.skipped] == [
        "tenant friday runs as user friday", "tenant jarvis runs as user jarvis", "tenant jarvis2 runs as user jarvis"]


def test_nobody_else_means_no_narrowing(tmp_path: Path) -> None:
    loaded = load_repo(example_repo(tmp_path, "minimal", None))
    assert split_scope(loaded, None, me="root", root=True) == Scope(None)
    assert split_scope(loaded, {"demo"}, me="root", root=True) == Scope(frozenset({"demo"}))


def test_requested_tenants_narrow_the_scope_and_unknown_names_stay_for_the_check(repo: FleetRepo) -> None:
    scope = split_scope(repo, {"jarvis", "nope"}, me="root", root=True)
    assert scope.local == frozenset({"nope"}) and scope.delegated == {"jarvis": ("jarvis",)}


@pytest.mark.parametrize(("codes", "worst"), [([], 0), ([0, 0], 0), ([0, 2], 2), ([2, 1], 1), ([0, 3], 1)])
def test_worst_code(codes: list[int], worst: int) -> None:
    assert worst_code(codes) == worst
