"""Malformed repositories, part 2: documents that are YAML but break their kind's schema
(unknown keys, wrong header, missing keys, bad patterns, literals and types).
See `corpus.py` for what a case asserts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.load import load_repo
from tests.spec.corpus import BASES, Case, budget, check, fleet, params, roster, tasks
from tests.spec.support import build_repo, error_lines

CASES = [
    Case(
        "unknown-key-typo",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
                runtme: stub
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:8:5",
        ("unknown key `runtme`", "did you mean `runtime`?"),
    ),
    Case(
        "key-not-a-string",
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
            1: one
        """),
        "tenants/demo/roster.yaml:10:1",
        ("unknown key `1`",),
    ),
    Case(
        "wrong-api-version",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v2
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:1:13",
        ("apiVersion is 'fleet.mosaicstack.dev/v2'", "write `apiVersion: fleet.mosaicstack.dev/v1`"),
    ),
    Case(
        "wrong-kind",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:2:7",
        ("kind is 'Budget'", "this file must say `kind: Roster`"),
    ),
    Case(
        "missing-kind",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:1:1",
        ("kind is missing", "this file must say `kind: Roster`"),
    ),
    Case(
        "missing-host",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:1:1",
        ("missing required key `host`", "add `host:` here"),
    ),
    Case(
        "agent-name-pattern",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: Enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:8:11",
        (
            "`name` 'Enhancer' is not allowed",
            "use lower-case letters, digits and '-', starting with a letter",
        ),
    ),
    Case(
        "agent-name-too-long",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
              - name: enhancer-whose-name-is-far-too-long-for-tmux
                role: enhancer
        """),
        "tenants/demo/roster.yaml:8:11",
        ("'enhancer-whose-name-is-far-too-long-for-tmux' is not allowed", "at most 40 characters"),
    ),
    Case(
        "lifecycle-literal",
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
                lifecycle: always
        """),
        "tenants/demo/roster.yaml:10:16",
        ("`lifecycle` is 'always'", "it must be 'core' or 'ephemeral'"),
    ),
    Case(
        "agents-is-a-mapping",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              orchestrator:
                role: orchestrator
              enhancer:
                role: enhancer
        """),
        "tenants/demo/roster.yaml:6:3",
        ("`agents` is a mapping", "it must be a list (`- item` lines)"),
    ),
    Case(
        "projected-tokens-is-a-word",
        tasks("""
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
                    projected_tokens: lots
        """),
        "tenants/demo/tasks.yaml:11:27",
        ("`projected_tokens` is 'lots'", "it must be a whole number"),
    ),
    Case(
        "projected-tokens-negative",
        tasks("""
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
                    projected_tokens: -5
        """),
        "tenants/demo/tasks.yaml:11:27",
        ("`projected_tokens` is -5", "it must be at least 0"),
    ),
    Case(
        "duration-with-words",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: stub-plan
                provider: local
                runtime: stub
                regime: subscription
                window: 90 seconds
        """),
        "tenants/demo/budget.yaml:9:13",
        ("'90 seconds' is not a duration", "write a number with a unit, e.g. 90s, 5m, 1h30m, 7d"),
    ),
    Case(
        "duration-without-unit",
        fleet("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Fleet
            name: minimal
            defaults:
              socket_name: mosaic-demo
              heartbeat_timeout: 90
              runtime: stub
              model: stub-large
            runtimes:
              stub:
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:6:22",
        ("90 is not a duration", "write a number with a unit"),
    ),
    Case(
        "duration-too-long",
        fleet("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Fleet
            name: minimal
            defaults:
              socket_name: mosaic-demo
              heartbeat_timeout: 99999999999w
              runtime: stub
              model: stub-large
            runtimes:
              stub:
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:6:22",
        ("`heartbeat_timeout`: '99999999999w' is longer than 10 years", "use a shorter duration"),
    ),
    Case(
        "subscription-without-window",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: stub-plan
                provider: local
                runtime: stub
                regime: subscription
        """),
        "tenants/demo/budget.yaml:5:5",
        ("a subscription account needs `window:`", "e.g. 7d"),
    ),
    Case(
        "api-without-hard-cap",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: stub-api
                provider: local
                runtime: stub
                regime: api
                period: 30d
        """),
        "tenants/demo/budget.yaml:5:5",
        ("an api account needs `hard_cap_usd:` and `period:`", "e.g. 200 and 30d"),
    ),
    Case(
        "reset-at-without-timezone",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: stub-plan
                provider: local
                runtime: stub
                regime: subscription
                window: 7d
                reset_at: 2026-11-30T00:00:00
        """),
        "tenants/demo/budget.yaml:10:15",
        ("`reset_at` needs a time zone", "write it like 2026-11-30T00:00:00Z"),
    ),
    Case(
        "reset-at-impossible-date",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: stub-plan
                provider: local
                runtime: stub
                regime: subscription
                window: 7d
                reset_at: 2026-02-30T00:00:00Z
        """),
        "tenants/demo/budget.yaml:10:15",
        ("`reset_at`", "a date-time like 2026-11-30T00:00:00Z"),
    ),
    Case(
        "command-unknown-placeholder",
        fleet("""
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
                command: "fleet-stub-agent --model {modle}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:11:14",
        ("unknown placeholder {modle}", "use one of {agent}, {model}, {role}, {tenant}"),
    ),
    Case(
        "command-unbalanced-quotes",
        fleet("""
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
                command: "fleet-stub-agent --model '{model}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:11:14",
        ("does not split into arguments", "check its quotes"),
    ),
    Case(
        "command-placeholder-with-format-spec",
        fleet("""
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
                command: "fleet-stub-agent --model {model:{size}}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:11:14",
        ("placeholder",),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_schema_violation(case: Case, tmp_path: Path) -> None:
    check(case, tmp_path)


def test_corpus_bases_are_valid(tmp_path: Path) -> None:
    """Every case breaks one thing in these; were they invalid, a case could pass by accident."""
    repo = load_repo(build_repo(tmp_path, BASES))
    assert error_lines(repo) == []
    assert set(repo.tenants) == {"demo"}
