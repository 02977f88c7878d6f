"""Malformed repositories, part 1: files that are not YAML, not one mapping, or not where
the layout (docs/reference.md) wants them. See `corpus.py` for what a case asserts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spec.corpus import BASE_BUDGET, BASE_ROSTER, FLEET, ROSTER, Case, check, doc, params, roster

LATIN1_ROSTER = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Roster
    tenant: demo
    host: demo
    agents:
      - name: orchestrator
        role: orchestrator
        alias: Mös
      - name: enhancer
        role: enhancer
""").encode("latin-1")

CASES = [
    Case(
        "yaml-syntax-error",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
               role: enhancer
        """),
        "tenants/demo/roster.yaml:9:4",
        ("fix the YAML syntax",),
    ),
    Case(
        "yaml-missing-colon",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:4:1",
        ("could not find expected ':'", "fix the YAML syntax"),
    ),
    Case(
        "yaml-unclosed-quote",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: "enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:8:11",
        ("quoted", "fix the YAML syntax"),
    ),
    Case(
        "tab-indentation",
        {
            ROSTER: (
                "apiVersion: fleet.mosaicstack.dev/v1\n"
                "kind: Roster\n"
                "tenant: demo\n"
                "host: demo\n"
                "agents:\n"
                "\t- name: orchestrator\n"
                "\t  role: orchestrator\n"
            )
        },
        "tenants/demo/roster.yaml:6:1",
        ("a tab character is used for indentation", "indent with spaces, never tabs"),
    ),
    Case(
        "duplicate-key",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            host: demo-2
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:5:1",
        ('duplicate key "host"', "keep one of the two"),
    ),
    Case(
        "empty-file",
        {ROSTER: ""},
        "tenants/demo/roster.yaml:1:1",
        ("file is empty", "it needs at least `apiVersion:` and `kind:`"),
    ),
    Case(
        "comments-only",
        {ROSTER: "# the agents are still to be decided\n"},
        "tenants/demo/roster.yaml:1:1",
        ("file is empty",),
    ),
    Case(
        "list-instead-of-mapping",
        roster("""
            - name: orchestrator
              role: orchestrator
            - name: enhancer
              role: enhancer
        """),
        "tenants/demo/roster.yaml:1:1",
        ("the document is a list", "it must be a mapping starting with `apiVersion:` and `kind:`"),
    ),
    Case(
        "two-documents",
        {ROSTER: BASE_ROSTER + "---\n" + BASE_ROSTER},
        "tenants/demo/roster.yaml:10:1",
        ("a second YAML document (---)", "keep one document per file"),
    ),
    Case(
        "not-utf8",
        {ROSTER: LATIN1_ROSTER},
        "tenants/demo/roster.yaml:8:13",
        ("not UTF-8", "save it as UTF-8"),
    ),
    Case(
        "control-character",
        {ROSTER: BASE_ROSTER.replace("role: enhancer", "role: enhancer\x07")},
        "tenants/demo/roster.yaml:9:19",
        ("character",),
    ),
    Case(
        "fleet-yaml-missing",
        {FLEET: None},
        "fleet.yaml:1:1",
        ("no fleet.yaml", "`fleet init`"),
    ),
    Case(
        "unexpected-file",
        {"tenants/demo/budget.yml": BASE_BUDGET},
        "tenants/demo/budget.yml:1:1",
        ("unexpected file budget.yml", "a tenant folder holds roster.yaml, budget.yaml and tasks.yaml"),
    ),
    Case(
        "tenant-without-roster",
        {ROSTER: None},
        "tenants/demo/roster.yaml:1:1",
        ("tenant 'demo' has no roster.yaml", "add one or remove the folder"),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_malformed_file(case: Case, tmp_path: Path) -> None:
    check(case, tmp_path)
