"""Corrupt, truncated, hostile and wrong-typed state files: reported, skipped, never fatal.

Every file the reconciler reads back (heartbeats, usage records, restart history, budget
memory, the spend ledger, this host's status and another host's) is broken one at a
time in a real, converged fleet (tests/resilience/world.py), and one whole tick runs
over it: plan, write-back (status, TASKS.md) and `fleet ps`. The tick must finish, a
problem line must name the broken file, and the other agents must still be planned.
A second table swaps one value at a time inside each valid record for a wrong-typed or
out-of-range one: whatever the reader accepts must not crash anything downstream.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.plan import ActionKind
from reconciler.drivers import tmux
from reconciler.drivers.files import scan_heartbeats
from reconciler.drivers.ledger import read_ledger, update_ledger
from reconciler.drivers.usage import scan_usage
from reconciler.engine.reconcile import apply_and_write_back
from reconciler.engine.state import read_budget_memory, read_history
from reconciler.engine.tick import plan_tick
from reconciler.engine.writeback import read_status
from reconciler.model.ledger import LedgerEntry
from tests.resilience.faults import FAULTS, WEIRD, Fault, clear, deadline, dumps, mutations
from tests.resilience.world import AGENTS, World, running_world

pytestmark = pytest.mark.tmux

TENANT = "demo"
#: Every file a tick reads back, relative to the world's root.
READ_BACK = {
    "heartbeat": f"state/{TENANT}/heartbeats/orchestrator.json",
    "usage": f"state/{TENANT}/usage/stub-max.json",
    "restart-history": f"state/{TENANT}/restarts.json",
    "budget-memory": f"state/{TENANT}/budget.json",
    "ledger": f"state/{TENANT}/ledger.jsonl",
    "own-status": f"repo/status/demo/{TENANT}.yaml",
    "other-host-status": f"repo/status/other-host/{TENANT}.yaml",
}


#: Faults that leave a file its reader rightly accepts: an empty ledger is no spend yet,
#: and a byte-order mark is legal YAML (a status file that is not JSON is read as YAML).
STILL_VALID = {("ledger", "empty"), ("own-status", "utf8-bom"), ("other-host-status", "utf8-bom")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_world(tmp_path_factory.mktemp("world")) as built:
        yield built


@pytest.fixture
def fresh(world: World) -> Iterator[World]:
    world.restore()
    yield world
    world.restore()


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.test_id)
@pytest.mark.parametrize("kind", sorted(READ_BACK))
def test_a_broken_file_is_named_and_the_tick_goes_on(fresh: World, kind: str, fault: Fault) -> None:
    path = fresh.root / READ_BACK[kind]
    clear(path)
    fault.plant(path, fresh.files[READ_BACK[kind]])

    with deadline(10):
        tick, problems = fresh.tick()

    named = any(str(path) in p for p in problems)
    assert named != ((kind, fault.test_id) in STILL_VALID), problems
    assert {h.agent for h in tick.plan.health} == set(AGENTS)
    if kind == "heartbeat":
        # the other agents' heartbeats still count; the broken one is no answer at all
        healthy = {h.agent for h in tick.plan.health if h.health == "healthy"}
        assert healthy == {"coder0", "enhancer"}


#: Mutated records tried per kind through a whole tick (a fixed sample; the readers
#: alone get every mutation).
SAMPLE = 30

#: Each kind's reader alone: the file -> (records read, problem lines).
READERS: dict[str, Callable[[Path], tuple[int, list[str]]]] = {
    "heartbeat": lambda path: _counted(scan_heartbeats(path.parent)),
    "usage": lambda path: _counted(scan_usage(path.parent)),
    "restart-history": lambda path: _counted(read_history(path.parents[1], [TENANT])),
    "budget-memory": lambda path: _counted(read_budget_memory(path.parents[1], [TENANT])),
    "ledger": lambda path: _counted(read_ledger(path)),
    "other-host-status": lambda path: _status(read_status(path)),
}


def _counted(found: tuple[Sized, list[str]]) -> tuple[int, list[str]]:
    return len(found[0]), found[1]


def _status(found: tuple[object | None, str | None]) -> tuple[int, list[str]]:
    return int(found[0] is not None), [found[1]] if found[1] else []


def _sample(world: World, kind: str) -> Any:
    """The valid record of `kind` as JSON data (the ledger's first line)."""
    text = world.files[READ_BACK[kind]]
    if kind == "ledger":
        return json.loads(text.splitlines()[0])
    return json.loads("\n".join(line for line in text.splitlines() if not line.startswith("#")))


@pytest.mark.parametrize("kind", sorted(READERS))
def test_every_mutation_is_read_or_named_by_its_reader(tmp_path: Path, world: World, kind: str) -> None:
    """Every position of the record, every weird value: the reader returns, and what it
    does not read it names (a ledger line by `path:line`)."""
    path = tmp_path / READ_BACK[kind]
    path.parent.mkdir(parents=True)
    sample = _sample(world, kind)
    path.write_text(dumps(sample))
    whole, _ = READERS[kind](path)
    tried = 0
    for where, doc in mutations(sample):
        path.write_text(dumps(doc) + "\n")
        try:
            count, problems = READERS[kind](path)
        except Exception as exc:
            raise AssertionError(f"{kind} {where}: {type(exc).__name__}: {exc}") from exc
        # dropping one agent's record from a per-agent file is a smaller file, not damage
        agent_dropped = isinstance(doc, dict) and len(doc) < len(sample) and kind.endswith(("history", "memory"))
        assert count == whole - agent_dropped or any(str(path) in p for p in problems), (where, problems)
        tried += 1
    assert tried >= 50


@pytest.mark.parametrize("kind", sorted(set(READ_BACK) - {"own-status"}))
def test_wrong_types_and_ranges_never_crash_a_tick(fresh: World, kind: str) -> None:
    path = fresh.root / READ_BACK[kind]
    cases = list(mutations(_sample(fresh, kind), WEIRD if "status" not in kind else WEIRD[:8]))
    for where, doc in random.Random(11).sample(cases, min(SAMPLE, len(cases))):
        clear(path)
        path.write_text(dumps(doc) + "\n")
        try:
            fresh.tick()
        except Exception as exc:  # say which mutation broke what
            raise AssertionError(f"{kind} {where}: {type(exc).__name__}: {exc}") from exc


def test_everything_broken_at_once_still_reconciles_the_fleet(fresh: World) -> None:
    """One broken file of each kind, and a killed agent: the agent is restored, each file named."""
    for fault, rel in zip(FAULTS[::2], READ_BACK.values(), strict=False):
        path = fresh.root / rel
        clear(path)
        fault.plant(path, fresh.files[rel])
    tmux.kill_sessions(fresh.socket, ["enhancer"])

    tick = plan_tick(fresh.inputs)
    report, problems = apply_and_write_back(tick, None)

    assert (ActionKind.SPAWN, "enhancer") in [(a.kind, a.agent) for a in tick.plan.actions]
    assert not report.failed, report.failed
    assert sorted(tmux.observe_socket(fresh.socket).sessions) == sorted(AGENTS)
    unnamed = [rel for rel in READ_BACK.values() if not any(str(fresh.root / rel) in p for p in [*tick.problems, *problems])]
    assert unnamed == [], [*tick.problems, *problems]


def _link_to_a_file(path: Path, valid: str) -> None:
    (path.parent / "someone-elses-file").write_text(valid)
    path.symlink_to(path.parent / "someone-elses-file")


LEDGER_REFUSALS = [*(f for f in FAULTS if f.test_id in {"directory", "symlink-to-dev-zero", "fifo", "huge-sparse",
                                                        "symlink-loop"}),
                   Fault("symlink-to-a-file", _link_to_a_file)]


@pytest.mark.parametrize("fault", LEDGER_REFUSALS, ids=lambda f: f.test_id)
def test_an_ingest_never_appends_to_a_ledger_that_is_not_a_file_it_can_read(
    tmp_path: Path, world: World, fault: Fault
) -> None:
    """The ingester's read-then-append (under its flock) refuses, with one problem, rather
    than reading /dev/zero forever or appending to whatever a link points at."""
    path = tmp_path / "ledger.jsonl"
    fault.plant(path, world.files[READ_BACK["ledger"]])
    asked: list[int] = []

    def compute(old: Sequence[LedgerEntry]) -> list[LedgerEntry]:
        asked.append(len(old))
        return []

    with deadline(10):
        appended, problems = update_ledger(path, compute)

    assert appended == [] and asked == []
    assert len(problems) == 1 and problems[0].startswith(f"{path}: ") and "nothing was appended" in problems[0]
    if fault.test_id == "symlink-to-a-file":
        assert (tmp_path / "someone-elses-file").read_text() == world.files[READ_BACK["ledger"]]
