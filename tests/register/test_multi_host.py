"""Three hosts, one repository, one register: the clones of tests/e2e/test_multi_host.py
reconcile concurrently for 20 rounds while a person merges roster edits, each writing to
the same Postgres; then the register holds exactly each host's agents of the final
roster, as each host's status file says them, and TASKS.md and MISSION-MANIFEST.md in
the remote are what the status files render, committed only by the projection lease's
holder, with no push re-rendering them after a rebase."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.core.render import parse_status, render_manifest, render_tasks
from reconciler.drivers import git as git_driver
from reconciler.engine.gitops import spec_revision
from reconciler.engine.writeback import read_all_statuses
from reconciler.spec.load import load_repo
from tests.e2e.repos import example_repo
from tests.e2e.test_multi_host import HOSTS, ROUNDS, merge_round, reconcile, roster
from tests.plugins.git_remote import git, person_commit, remote_tree
from tests.register.support import REGISTER_BLOCK, URL_ENV, fleet, query

pytestmark = pytest.mark.tmux


@pytest.fixture
def world(tmp_path: Path, git_isolated: None, pg_url: str,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, dict[str, Path], str]]:
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    socket = f"fleet-mhr-{uuid.uuid4().hex[:8]}"
    seed = example_repo(tmp_path / "seed-src", "minimal", socket)
    fleet_yaml = (seed / "fleet.yaml").read_text().replace("heartbeat_timeout: 90s",
                                                            "heartbeat_timeout: 90s\n  startup_grace: 1h")
    fleet_yaml += REGISTER_BLOCK
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    work = tmp_path / "person"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(work))
    git(work, "remote", "add", "origin", str(bare))
    person_commit(work, {"fleet.yaml": fleet_yaml, "tenants/demo/roster.yaml": roster({})}, "Seed")
    git(work, "push", "--quiet", "-u", "origin", "main")
    assert fleet("register", "migrate", str(work), url=pg_url).returncode == 0
    monkeypatch.setenv(URL_ENV, pg_url)  # every host's reconcile (a subprocess) inherits it
    clones = {}
    for host in HOSTS:
        clones[host] = tmp_path / "hosts" / host
        git(tmp_path, "clone", "--quiet", str(bare), str(clones[host]))
        (tmp_path / "tmux" / host).mkdir(parents=True)
    yield bare, work, clones, socket
    for host in HOSTS:
        subprocess.run(["tmux", "-L", socket, "kill-server"], env={**os.environ, "TMUX_TMPDIR": str(tmp_path / "tmux" / host)},
                       capture_output=True, check=False)


def test_three_hosts_twenty_rounds_one_register(world: tuple[Path, Path, dict[str, Path], str], tmp_path: Path,
                                                pg_url: str) -> None:
    bare, person, clones, _socket = world
    workers: dict[str, str] = {}
    with ThreadPoolExecutor(len(HOSTS)) as pool:
        for round_no in range(ROUNDS):
            merge_round(person, workers, round_no)
            results = list(pool.map(lambda h: reconcile(clones[h], h, tmp_path), HOSTS))
            for host, result in zip(HOSTS, results, strict=True):
                assert result.returncode == 0, f"{host} round {round_no}:\n{result.stdout}\n{result.stderr}"
                assert "register" not in result.stderr, result.stderr
    final = {"orchestrator": "h0", "enhancer": "h1", **workers}
    registered = query(pg_url, "SELECT host, agent, health FROM fleet.agents WHERE tenant_id = 'demo'")
    assert {(h, a) for h, a, _ in registered} == {(h, a) for a, h in final.items()}
    tree = remote_tree(bare)
    for host in HOSTS:
        status = parse_status(tree[f"status/{host}/demo.yaml"])
        assert {(a.name, a.health) for a in status.agents} == {(a, hl) for h, a, hl in registered if h == host}
    assert {h for (h,) in query(pg_url, "SELECT host FROM fleet.hosts")} == set(HOSTS)
    spools = list((tmp_path / "state").rglob("spool.jsonl"))
    assert spools == [], "every batch reached the register"
    assert_projections(bare, person, clones, pg_url)


def assert_projections(bare: Path, person: Path, clones: dict[str, Path], pg_url: str) -> None:
    """The remote's projections equal a rendering from its status files; only the lease
    holder committed them; no host amended a re-rendering into a rebased commit."""
    git(person, "pull", "--quiet", "--rebase", "origin", "main")
    assert git(person, "rev-parse", "HEAD") == git(bare, "rev-parse", "main")
    repo = load_repo(person)
    statuses, problems = read_all_statuses(person)
    assert not problems and {s.host for s in statuses} == set(HOSTS)
    revision = spec_revision(git_driver.open_checkout(person))
    tree = remote_tree(bare)
    assert tree["TASKS.md"] == render_tasks(repo, statuses, revision)
    assert tree["MISSION-MANIFEST.md"] == render_manifest(repo, statuses, revision)
    ((holder,),) = query(pg_url, "SELECT holder FROM fleet.leases WHERE name = 'projections'")
    for name in ("TASKS.md", "MISSION-MANIFEST.md"):
        assert set(git(person, "log", "--format=%an", "--", name).split()) == {holder}, name
    for host, clone in clones.items():
        assert "re-render after rebase" not in git(clone, "reflog", "--format=%gs"), host
