"""load_repo as a whole: a broken tenant is set aside while the others load, and every
error is reported in one run (docs/reference.md, `fleet validate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.spec.load import load_repo
from tests.spec.corpus import BASE_BUDGET, BASE_ROSTER, BASE_TASKS, BUDGET, FLEET, ROSTER, TASKS, doc
from tests.spec.support import Files, build_repo, error_lines


def tenant_files(name: str, **texts: str | None) -> Files:
    """A valid tenant `name` on its own socket, with some of its files replaced (None: left out)."""
    roster = BASE_ROSTER.replace("tenant: demo", f"tenant: {name}").replace(
        "host: demo", f"host: demo\nsocket_name: fleet-{name}"
    )
    files = {"roster": roster, **texts}
    return {f"tenants/{name}/{kind}.yaml": text for kind, text in files.items() if text is not None}


class Breakage(NamedTuple):
    test_id: str
    texts: dict[str, str | None]
    """File kind -> text, with `{t}` standing for the broken tenant's name."""


NO_ENHANCER_ROSTER = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Roster
    tenant: {t}
    host: demo
    socket_name: fleet-{t}
    agents:
      - name: orchestrator
        role: orchestrator
""")

BREAKAGES = [
    Breakage("yaml-syntax", {"roster": "agents: [\n"}),
    Breakage("no-roster", {"roster": None, "tasks": BASE_TASKS.replace("tenant: demo", "tenant: {t}")}),
    Breakage("unknown-key", {"budget": BASE_BUDGET.replace("tenant: demo", "tenant: {t}\npacng: rapid")}),
    Breakage("no-enhancer", {"roster": NO_ENHANCER_ROSTER}),
    Breakage("tenant-differs-from-folder", {"tasks": BASE_TASKS}),
    Breakage(
        "task-names-unknown-agent",
        {
            "tasks": BASE_TASKS.replace("tenant: demo", "tenant: {t}").replace(
                "agent: orchestrator", "agent: ghost"
            ),
        },
    ),
]


@pytest.mark.parametrize("broken", ["aardvark", "zebra"], ids=["sorts-first", "sorts-last"])
@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.test_id for b in BREAKAGES])
def test_invalid_tenant_does_not_stop_the_others(breakage: Breakage, broken: str, tmp_path: Path) -> None:
    texts = {k: v and v.replace("{t}", broken) for k, v in breakage.texts.items()}
    repo = load_repo(build_repo(tmp_path, tenant_files(broken, **texts)))
    clean = load_repo(build_repo(tmp_path / "clean"))

    assert repo.errors, "the breakage must be reported"
    assert {e.tenant for e in repo.errors} == {broken}
    assert all(line.startswith(f"tenants/{broken}/") for line in error_lines(repo)), error_lines(repo)
    assert repo.invalid_tenants == {broken}
    assert set(repo.tenants) == {"demo"}
    assert repo.tenants["demo"].roster == clean.tenants["demo"].roster


def test_one_file_with_three_problems_reports_all_three(tmp_path: Path) -> None:
    roster = doc("""
        apiVersion: fleet.mosaicstack.dev/v1
        kind: Roster
        tenant: demo
        host: demo
        agents:
          - name: Orchestrator
            role: orchestrator
            lifecycle: forever
          - name: enhancer
            role: enhancer
            runtme: stub
    """)
    repo = load_repo(build_repo(tmp_path, {ROSTER: roster}))
    assert error_lines(repo) == [
        "tenants/demo/roster.yaml:6:11: `name` 'Orchestrator' is not allowed; use lower-case letters, "
        "digits and '-', starting with a letter, at most 40 characters",
        "tenants/demo/roster.yaml:8:16: `lifecycle` is 'forever'; it must be 'core' or 'ephemeral'",
        "tenants/demo/roster.yaml:11:5: unknown key `runtme`; did you mean `runtime`?",
    ]


def test_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    files = {
        FLEET: doc("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Fleet
            name: minimal
            defaults:
              socket_name: mosaic-demo
              runtime: stub
              model: stub-large
            runtimes:
              stub:
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
            downgrade: [claude]
        """),
        ROSTER: BASE_ROSTER.replace("role: enhancer", "role: enhancer\n    runtme: stub"),
        **tenant_files("other", budget=BASE_BUDGET.replace("tenant: demo", "tenant: other\npacing: rapid")),
    }
    repo = load_repo(build_repo(tmp_path, files))
    assert [line.split(": ")[0] for line in error_lines(repo)] == [
        "fleet.yaml:12:13",
        "tenants/demo/roster.yaml:10:5",
        "tenants/other/budget.yaml:4:9",
    ]
    assert repo.invalid_tenants == {"demo", "other"}


def test_a_schema_error_does_not_hide_rule_errors_in_other_files(tmp_path: Path) -> None:
    files = {
        ROSTER: BASE_ROSTER.replace("role: enhancer", "role: enhancer\n    runtme: stub"),
        TASKS: BASE_TASKS.replace("tenant: demo", "tenant: jarvis"),
    }
    repo = load_repo(build_repo(tmp_path, files))
    assert [line.split(": ")[0] for line in error_lines(repo)] == [
        "tenants/demo/roster.yaml:10:5",
        "tenants/demo/tasks.yaml:3:9",
    ]


def test_a_valid_budget_and_tasks_load_with_the_roster(tmp_path: Path) -> None:
    repo = load_repo(build_repo(tmp_path, {ROSTER: BASE_ROSTER, BUDGET: BASE_BUDGET, TASKS: BASE_TASKS}))
    assert repo.ok
    spec = repo.tenants["demo"]
    assert spec.budget is not None and spec.budget.accounts[0].name == "stub-plan"
    assert spec.tasks is not None and spec.tasks.missions[0].tasks[0].agent == "orchestrator"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    """Nested aliases that would expand to 8**10 values end as one located error, fast."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 8)}]" for i in range(1, 10)]
    repo = load_repo(build_repo(tmp_path, {ROSTER: "\n".join(lines) + "\n"}))
    assert [e.message for e in repo.errors] == [
        "the document expands to more than 200000 values (nested YAML aliases?); write it out plainly"
    ]
    assert repo.invalid_tenants == {"demo"}


class PolicyCase(NamedTuple):
    test_id: str
    policy: str
    error: str | None  # the located error's start, or None: it loads


POLICY = [
    PolicyCase("percentages", "policy:\n  tolerance: 10%\n  margin: 2.5%\n  reserve: 0%\n  hysteresis: 1m\n", None),
    PolicyCase("fractions", "policy:\n  tolerance: 0.1\n", None),
    PolicyCase("over-100-percent", "policy:\n  reserve: 100%\n", "tenants/demo/budget.yaml:11:12: `reserve`: '100%' must be at least 0%"),
    PolicyCase("a-number-over-one", "policy:\n  tolerance: 5\n", "tenants/demo/budget.yaml:11:14: `tolerance`: 5 is more than 1"),
    PolicyCase("zero-hysteresis", "policy:\n  hysteresis: 0s\n", "tenants/demo/budget.yaml:11:15: `hysteresis`: '0s' is zero"),
    PolicyCase("unknown-key", "policy:\n  tolerence: 5%\n", "tenants/demo/budget.yaml:11:3: unknown key `tolerence`"),
]


@pytest.mark.parametrize("case", POLICY, ids=lambda c: c.test_id)
def test_budget_policy_is_validated_with_its_location(case: PolicyCase, tmp_path: Path) -> None:
    repo = load_repo(build_repo(tmp_path, {ROSTER: BASE_ROSTER, BUDGET: BASE_BUDGET + case.policy}))
    lines = error_lines(repo)
    if case.error is None:
        assert lines == [] and repo.tenants["demo"].budget is not None
        return
    assert len(lines) == 1 and lines[0].startswith(case.error), lines
