"""Many hosts, one repository: three clones reconcile concurrently for 20 rounds while people merge
roster edits. Each host has its own tmux (TMUX_TMPDIR), state directory and status file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.core.render import parse_status
from tests.e2e.repos import example_repo
from tests.e2e.test_watch import push_as_a_person
from tests.plugins.git_remote import git, person_commit, remote_tree

pytestmark = pytest.mark.tmux

HOSTS = ("h0", "h1", "h2")
ROUNDS = 20


def roster(workers: dict[str, str]) -> str:
    lines = ["apiVersion: fleet.mosaicstack.dev/v1", "kind: Roster", "tenant: demo", "host: h0", "agents:",
             "  - name: orchestrator", "    role: orchestrator", "  - name: enhancer", "    role: enhancer", "    host: h1"]
    for name, host in sorted(workers.items()):
        lines += [f"  - name: {name}", "    role: coder", f"    host: {host}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def world(tmp_path: Path, git_isolated: None):  # type: ignore[no-untyped-def]
    socket = f"fleet-mh-{uuid.uuid4().hex[:8]}"
    seed = example_repo(tmp_path / "seed-src", "minimal", socket)
    fleet_yaml = (seed / "fleet.yaml").read_text().replace("heartbeat_timeout: 90s", "heartbeat_timeout: 90s\n  startup_grace: 1h")
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "person"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    git(work, "remote", "add", "origin", str(bare))
    person_commit(work, {"fleet.yaml": fleet_yaml, "tenants/demo/roster.yaml": roster({})}, "Seed")
    git(work, "push", "--quiet", "-u", "origin", "main")
    clones = {}
    for host in HOSTS:
        clones[host] = tmp_path / "hosts" / host
        git(tmp_path, "clone", "--quiet", str(bare), str(clones[host]))
        (tmp_path / "tmux" / host).mkdir(parents=True)
    yield bare, work, clones
    for host in HOSTS:
        subprocess.run(["tmux", "-L", socket, "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmp_path / "tmux" / host)},
                       capture_output=True, check=False)


def merge_round(person: Path, workers: dict[str, str], round_no: int) -> None:
    """Every third round but the last ones, a person merges a roster change: a worker
    added, and every other time the oldest retired (`workers` is updated)."""
    if round_no >= ROUNDS - 3 or round_no % 3:
        return
    workers[f"w{round_no}"] = HOSTS[(round_no // 3) % len(HOSTS)]
    if round_no % 6 == 0 and len(workers) > 2:
        workers.pop(next(iter(workers)))
    git(person, "pull", "--quiet", "--rebase", "origin", "main")
    person_commit(person, {"tenants/demo/roster.yaml": roster(workers)}, f"round {round_no}")
    push_as_a_person(person)


def reconcile(clone: Path, host: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600", "TMUX_TMPDIR": str(root / "tmux" / host)}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "reconcile", str(clone), "--host", host,
         "--state-dir", str(root / "state" / host)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def sessions(root: Path, host: str, socket: str) -> set[str]:
    env = {**os.environ, "TMUX_TMPDIR": str(root / "tmux" / host)}
    out = subprocess.run(["tmux", "-L", socket, "list-sessions", "-F", "#{session_name}"], env=env,
                         capture_output=True, text=True, check=False).stdout
    return set(out.split())


def test_three_hosts_twenty_rounds(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bare, person, clones = world
    socket = next(line.split(": ")[1] for line in (person / "fleet.yaml").read_text().splitlines() if "socket_name" in line)
    workers: dict[str, str] = {}
    quiet_heads = []
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        for round_no in range(ROUNDS):
            merge_round(person, workers, round_no)
            results = list(pool.map(lambda h: reconcile(clones[h], h, tmp_path), HOSTS))
            for host, result in zip(HOSTS, results, strict=True):
                assert result.returncode == 0, f"{host} round {round_no}:\n{result.stdout}\n{result.stderr}"
            if round_no >= ROUNDS - 2:
                quiet_heads.append(git(bare, "rev-parse", "main"))
    tree = remote_tree(bare)
    assert {f"status/{h}/demo.yaml" for h in HOSTS} <= set(tree)
    assert not any("<<<<<<<" in text or ">>>>>>>" in text for text in tree.values())
    # rounds with nothing new commit nothing
    assert quiet_heads[0] == quiet_heads[1]
    # each host runs exactly its agents of the final roster, and says so in its status
    final = {"orchestrator": "h0", "enhancer": "h1", **workers}
    for host in HOSTS:
        mine = {name for name, where in final.items() if where == host}
        assert sessions(tmp_path, host, socket) == mine
        status = parse_status(tree[f"status/{host}/demo.yaml"])
        assert {a.name for a in status.agents} == mine
    # TASKS.md is consistent: one row per agent of the final roster, with the host that reported it
    tasks = tree["TASKS.md"]
    for name, host in final.items():
        assert f"| {name} | " in tasks and f"| {host} |" in tasks
    for clone in clones.values():
        assert git(clone, "status", "--porcelain") == ""
