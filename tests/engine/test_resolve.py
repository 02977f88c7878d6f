"""Host facts are observed, not applied: programs and workdirs resolved into the plan.

The observe step looks up every program and workdir the desired launches name
(`host_facts`), and the pure core puts the answers into the launches
(`resolve_desired`) without touching a spec hash, so running sessions keep theirs.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

from reconciler.core.desired import host_facts, on_rung, resolve_desired
from reconciler.engine.observe import resolve_host
from reconciler.model.observed import HOME_WORKDIR, Resolved
from tests.core.factories import desired


def test_resolve_host_says_where_programs_are_and_which_workdirs_exist(tmp_path: Path) -> None:
    beside = Path(sys.executable).parent / "fleet-stub-agent"
    missing = tmp_path / "gone"
    found = resolve_host(
        ["sh", "no-such-program-fleet-test", "fleet-stub-agent"],
        [(None, str(tmp_path)), (None, str(missing)), ("someone-else-fleet-test", str(missing))],
    )
    assert found.missing == frozenset({"no-such-program-fleet-test"})
    assert found.programs["sh"] == shutil.which("sh"), "found on PATH: baked in as an absolute path"
    assert found.programs["fleet-stub-agent"] in (shutil.which("fleet-stub-agent"), str(beside))
    assert found.workdirs == {(None, str(tmp_path)): str(tmp_path), (None, str(missing)): HOME_WORKDIR}, \
        "another user's workdir is that user's own run's to check"


def test_host_facts_name_every_runtime_an_agent_may_move_to() -> None:
    fleet = desired("coding", "build-1")
    programs, workdirs = host_facts(fleet)
    agents = [a for t in fleet.tenants.values() for a in t.on_host("build-1").values()]
    assert {a.launch.argv[0] for a in agents} <= programs
    assert {"claude", "codex", "fleet-stub-agent"} <= programs, "every runtime of fleet.yaml: a rung may switch"
    assert {(a.launch.socket.user, a.launch.workdir) for a in agents if a.launch.workdir} == set(workdirs)


def test_resolution_changes_what_runs_but_never_the_spec_hash() -> None:
    fleet = desired("coding", "build-1")
    programs, workdirs = host_facts(fleet)
    facts = Resolved({p: f"/opt/bin/{p}" for p in programs}, frozenset(), dict.fromkeys(workdirs, HOME_WORKDIR))
    resolved = resolve_desired(fleet, facts)
    for name, tenant in fleet.tenants.items():
        for before, after in zip(tenant.agents, resolved.tenants[name].agents, strict=True):
            if before.host != "build-1":
                continue
            assert after.launch.spec_hash == before.launch.spec_hash
            assert after.launch.argv == (f"/opt/bin/{before.launch.argv[0]}", *before.launch.argv[1:])
            assert after.launch.workdir == (HOME_WORKDIR if before.launch.workdir else None)
            rung = on_rung(after, after.runtime, "another-model", after.ladder)  # the budget policy's rebuild
            assert rung.launch.argv[0].startswith("/opt/bin/"), "a budget rung is resolved too"
            assert rung.launch.spec_hash == on_rung(before, before.runtime, "another-model", before.ladder).launch.spec_hash
            assert replace(after.recipe, resolved=Resolved()) == before.recipe
