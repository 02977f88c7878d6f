"""Malformed repositories, part 3: each document fits its schema, but a rule that spans
fields or files does not hold (docs/reference.md, "Validation rules").
See `corpus.py` for what a case asserts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.spec.corpus import (
    BASE_ROSTER,
    BASE_TASKS,
    ROSTER,
    TASKS,
    Case,
    budget,
    check,
    doc,
    fleet,
    params,
    roster,
)

OTHER_ROSTER = "tenants/other/roster.yaml"
ORCHESTRATOR_ROLE_ON_OPUS = doc("""
    apiVersion: fleet.mosaicstack.dev/v1
    kind: Role
    name: orchestrator
    defaults:
      model: opus
""")

CASES = [
    # --- roster: the two-agent floor, names, runtimes and ladders ----------------------
    Case(
        "no-orchestrator",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:5:1",
        ("no agent has `role: orchestrator`", "every tenant needs exactly one orchestrator"),
    ),
    Case(
        "two-orchestrators",
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
              - name: boss
                role: orchestrator
        """),
        "tenants/demo/roster.yaml:11:11",
        ("a second orchestrator ('boss', after 'orchestrator')", "give this agent another role"),
    ),
    Case(
        "no-enhancer",
        roster("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Roster
            tenant: demo
            host: demo
            agents:
              - name: orchestrator
                role: orchestrator
        """),
        "tenants/demo/roster.yaml:5:1",
        ("no agent has `role: enhancer`", "needs at least one enhancer"),
    ),
    Case(
        "duplicate-agent-names",
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
              - name: enhancer
                role: enhancer
        """),
        "tenants/demo/roster.yaml:10:11",
        ("agent name 'enhancer' is used twice in this roster (first at item 2)", "must be unique"),
    ),
    Case(
        "unknown-runtime",
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
                runtime: claude
        """),
        "tenants/demo/roster.yaml:10:14",
        ("runtime 'claude' is not defined in fleet.yaml", "use one of stub"),
    ),
    Case(
        "model-not-on-ladder",
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
                model: opus
        """),
        "tenants/demo/roster.yaml:10:12",
        ("model 'opus' is not on runtime 'stub''s ladder", "use one of stub-large, stub-small"),
    ),
    Case(
        "model-not-on-ladder-from-role",
        {ROSTER: BASE_ROSTER, "roles/orchestrator.yaml": ORCHESTRATOR_ROLE_ON_OPUS},
        "tenants/demo/roster.yaml:6:5",
        (
            "model 'opus' (from roles/orchestrator.yaml) is not on runtime 'stub''s ladder",
            "use one of stub-large",
        ),
    ),
    Case(
        "tenant-differs-from-folder-roster",
        {ROSTER: BASE_ROSTER.replace("tenant: demo", "tenant: dmeo")},
        "tenants/demo/roster.yaml:3:9",
        ("tenant is 'dmeo' but the folder is tenants/demo/", "they must be equal (rename one)"),
    ),
    # --- two tenants on one tmux socket -------------------------------------------------
    Case(
        "shared-socket-without-user",
        {OTHER_ROSTER: BASE_ROSTER.replace("tenant: demo", "tenant: other")},
        "tenants/other/roster.yaml:3:1",
        (
            "tenants 'demo' and 'other' both run as the reconciler's user (no `user:`)",
            "on tmux socket 'mosaic-demo'",
            "give each its own `socket_name:` or a different `user:`",
        ),
        invalid=frozenset({"demo", "other"}),
        echoes=1,
    ),
    Case(
        "shared-socket-same-user",
        {
            ROSTER: BASE_ROSTER.replace("host: demo", "host: demo\nuser: bob"),
            OTHER_ROSTER: BASE_ROSTER.replace("tenant: demo", "tenant: other").replace(
                "host: demo", "host: demo\nuser: bob"
            ),
        },
        "tenants/other/roster.yaml:3:1",
        ("tenants 'demo' and 'other' both run as user 'bob' on tmux socket 'mosaic-demo'",),
        invalid=frozenset({"demo", "other"}),
        echoes=1,
    ),
    # --- budget.yaml --------------------------------------------------------------------
    Case(
        "tenant-differs-from-folder-budget",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: jarvis
        """),
        "tenants/demo/budget.yaml:3:9",
        ("tenant is 'jarvis' but the folder is tenants/demo/",),
    ),
    Case(
        "rapid-without-authorized-by",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            pacing: rapid
        """),
        "tenants/demo/budget.yaml:4:9",
        ("`pacing: rapid`", "needs `authorized_by:`", "or use `pacing: even-spread`"),
    ),
    Case(
        "account-unknown-runtime",
        budget("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Budget
            tenant: demo
            accounts:
              - name: claude-max
                provider: anthropic
                runtime: claude
                regime: subscription
                window: 7d
        """),
        "tenants/demo/budget.yaml:7:14",
        ("runtime 'claude' is not defined in fleet.yaml", "use one of stub"),
    ),
    # --- tasks.yaml ---------------------------------------------------------------------
    Case(
        "tenant-differs-from-folder-tasks",
        {TASKS: BASE_TASKS.replace("tenant: demo", "tenant: jarvis")},
        "tenants/demo/tasks.yaml:3:9",
        ("tenant is 'jarvis' but the folder is tenants/demo/",),
    ),
    Case(
        "task-names-unknown-agent",
        {TASKS: BASE_TASKS.replace("agent: orchestrator", "agent: ghost")},
        "tenants/demo/tasks.yaml:10:16",
        ("task T1 names agent 'ghost', which is not in roster.yaml", "use one of enhancer, orchestrator"),
    ),
    Case(
        "duplicate-task-ids",
        {TASKS: BASE_TASKS + "      - id: T1\n        title: Say hello again\n"},
        "tenants/demo/tasks.yaml:12:13",
        ("task id 'T1' is used twice in this tenant", "ids must be unique"),
    ),
    # --- fleet.yaml: every tenant depends on it ------------------------------------------
    Case(
        "default-runtime-not-defined",
        fleet("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Fleet
            name: minimal
            defaults:
              socket_name: mosaic-demo
              heartbeat_timeout: 90s
              runtime: claude
              model: stub-large
            runtimes:
              stub:
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:7:12",
        ("default runtime 'claude' is not defined under `runtimes:`", "use one of stub"),
        # Each roster agent that relies on the default repeats it (see the report).
        echoes=2,
    ),
    Case(
        "default-model-not-on-ladder",
        fleet("""
            apiVersion: fleet.mosaicstack.dev/v1
            kind: Fleet
            name: minimal
            defaults:
              socket_name: mosaic-demo
              heartbeat_timeout: 90s
              runtime: stub
              model: opus
            runtimes:
              stub:
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
        """),
        "fleet.yaml:8:10",
        ("default model 'opus' is not on runtime 'stub''s ladder", "use one of stub-large, stub-small"),
    ),
    Case(
        "downgrade-unknown-runtime",
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
                command: "fleet-stub-agent --model {model}"
                ladder: [stub-large, stub-small]
            downgrade: [claude]
        """),
        "fleet.yaml:13:13",
        ("downgrade names runtime 'claude', which is not defined under `runtimes:`", "use one of stub"),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_rule_violation(case: Case, tmp_path: Path) -> None:
    check(case, tmp_path)
