"""The malformed-repository corpus: one broken thing per case, and the error it must give.

A case is `examples/fleets/minimal` plus a few files replaced (the documents below are the
minimal example's, without comments, so line numbers are easy to count), the `path:line:col`
the error must point at, and fragments its message must contain: the problem and, where
there is one, the fix. The `test_corpus_*.py` modules hold the tables.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent
from typing import NamedTuple

import pytest

from reconciler.spec.load import load_repo
from tests.spec.support import Files, build_repo, error_lines

FLEET = "fleet.yaml"
ROSTER = "tenants/demo/roster.yaml"
BUDGET = "tenants/demo/budget.yaml"
TASKS = "tenants/demo/tasks.yaml"


def doc(text: str) -> str:
    """A YAML document written indented in a table; its first line is line 1."""
    return dedent(text).lstrip("\n")


def fleet(text: str) -> Files:
    return {FLEET: doc(text)}


def roster(text: str) -> Files:
    return {ROSTER: doc(text)}


def budget(text: str) -> Files:
    return {BUDGET: doc(text)}


def tasks(text: str) -> Files:
    return {TASKS: doc(text)}


#: Valid documents the cases start from; `test_corpus_bases_are_valid` keeps them honest.
BASE_FLEET = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Fleet
    name: minimal
    defaults:
      socket_name: mosaic-demo
      heartbeat_timeout: 90s
      runtime: stub
      model: stub-large
    runtimes:
      stub:
        command: "fleet-stub-agent --model {model}"
        ladder: [stub-large, stub-small]
""")

BASE_ROSTER = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Roster
    tenant: demo
    host: demo
    agents:
      - name: orchestrator
        role: orchestrator
      - name: enhancer
        role: enhancer
""")

BASE_BUDGET = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Budget
    tenant: demo
    accounts:
      - name: stub-plan
        provider: local
        runtime: stub
        regime: subscription
        window: 7d
""")

BASE_TASKS = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Tasks
    tenant: demo
    missions:
      - id: M1
        title: First light
        tasks:
          - id: T1
            title: Say hello
            agent: orchestrator
            projected_tokens: 1000
""")

BASES: Files = {FLEET: BASE_FLEET, ROSTER: BASE_ROSTER, BUDGET: BASE_BUDGET, TASKS: BASE_TASKS}


class Case(NamedTuple):
    test_id: str
    files: Files
    where: str
    """`relative/path.yaml:LINE:COL` of the one error the mistake must produce."""
    says: tuple[str, ...]
    """Fragments of that error's message: what is wrong and how to fix it."""
    invalid: frozenset[str] = frozenset({"demo"})
    """Tenants the mistake must set aside (every other tenant folder must load)."""
    echoes: int = 0
    """Further errors the same mistake causes elsewhere."""
    xfail: str | None = None
    """Why the loader gets this case wrong today (a known bug; see the test report)."""


def params(cases: list[Case]) -> list[object]:
    assert len({c.test_id for c in cases}) == len(cases), "test ids must be unique"
    return [
        pytest.param(
            c, id=c.test_id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        )
        for c in cases
    ]


def check(case: Case, tmp_path: Path) -> None:
    """Load the case's repository and hold the result to the case."""
    root = build_repo(tmp_path, case.files)
    repo = load_repo(root)
    lines = error_lines(repo)
    listing = "\n".join(lines) or "(no errors)"

    at = [
        (err, line)
        for err, line in zip(repo.errors, lines, strict=True)
        if line.startswith(f"{case.where}: ")
    ]
    assert len(at) == 1, f"expected one error at {case.where}; got:\n{listing}"
    err, line = at[0]
    for fragment in case.says:
        assert fragment in line
    assert "\n" not in err.message, "an error is one line: `file:line:col: message`"
    parts = case.where.split("/")
    assert err.tenant == (parts[1] if parts[0] == "tenants" else None)
    assert len(lines) == 1 + case.echoes, listing

    folders = {p.name for p in (root / "tenants").iterdir() if p.is_dir()}
    assert repo.invalid_tenants == case.invalid
    assert set(repo.tenants) == folders - case.invalid
