"""Two lanes on two hosts through one remote: a person pushes tasks for both lanes; each host
(its own clone, tmux and state directory) runs only its own lane's worker, hands it only
its own lane's task, and the status and TASKS.md both hosts write back converge on the
remote (docs/lanes.md, "Lanes on several hosts")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.render import status_json
from reconciler.model.layout import StateLayout
from tests.e2e.repos import example_repo
from tests.e2e.test_watch import push_as_a_person
from tests.plugins.git_remote import git, person_commit, remote_tree
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux

HOSTS = ("h0", "h1")
ROSTER = """apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: shop
host: h0
agents:
  - name: orchestrator
    role: orchestrator
  - name: enhancer
    role: enhancer
    host: h1
lanes:
  - name: api
    role: coder
    max: 2
    cooldown: 1h
  - name: web
    role: coder
    host: h1
    max: 2
    cooldown: 1h
"""
TASKS = """apiVersion: fleet.mosaicstack.dev/v1
kind: Tasks
tenant: shop
missions:
  - id: M1
    title: Two lanes
    tasks:
      - id: T1
        title: Paginate the API
        lane: api
      - id: T2
        title: Show pages in the web app
        lane: web
"""
WORKER = {"h0": ("coder0-0", "T1"), "h1": ("coder1-0", "T2")}


class Host:
    def __init__(self, root: Path, bare: Path, name: str, socket: str) -> None:
        self.name, self.socket = name, socket
        self.clone = root / "hosts" / name
        git(root, "clone", "--quiet", str(bare), str(self.clone))
        self.state = root / "state" / name
        tmux_dir = root / "tmux" / name
        tmux_dir.mkdir(parents=True)
        no_systemd = root / "no-systemd" / name
        no_systemd.mkdir(parents=True, mode=0o700)
        self.env = {k: v for k, v in os.environ.items() if k not in {"MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"}}
        self.env |= {"TMUX_TMPDIR": str(tmux_dir), "FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}

    def reconcile(self) -> str:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(self.clone), "--host", self.name,
                               "--state-dir", str(self.state)],
                              capture_output=True, text=True, timeout=120, env=self.env, check=False)
        assert done.returncode == 0, f"{self.name}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              env=self.env, stdin=subprocess.DEVNULL, check=False).stdout

    def sessions(self) -> set[str]:
        return set(self.tmux("list-sessions", "-F", "#{session_name}").split())

    def held(self) -> dict[str, str]:
        path = StateLayout(self.state).lanes("shop")
        if not path.exists():
            return {}
        return {t: a["agent"] for t, a in json.loads(path.read_text())["assignments"].items() if a["acked"]}


@pytest.fixture
def world(tmp_path: Path, git_isolated: None) -> Iterator[tuple[Path, Path, dict[str, Host]]]:
    socket = f"fleet-lh-{uuid.uuid4().hex[:8]}"
    seed = example_repo(tmp_path / "seed-src", "lanes", socket)
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    person = tmp_path / "person"
    git(tmp_path, "init", "--quiet", "--initial-branch=main", str(person))
    git(person, "remote", "add", "origin", str(bare))
    person_commit(person, {"fleet.yaml": (seed / "fleet.yaml").read_text(), "tenants/shop/roster.yaml": ROSTER},
                  "Seed: two lanes, no tasks")
    git(person, "push", "--quiet", "-u", "origin", "main")
    hosts = {name: Host(tmp_path, bare, name, socket) for name in HOSTS}
    yield bare, person, hosts
    for host in hosts.values():
        host.tmux("kill-server")


def test_two_lanes_on_two_hosts_through_one_remote(world: tuple[Path, Path, dict[str, Host]]) -> None:
    bare, person, hosts = world
    for host in hosts.values():
        host.reconcile()
    assert hosts["h0"].sessions() == {"orchestrator"} and hosts["h1"].sessions() == {"enhancer"}, "no task, no worker"

    git(person, "pull", "--quiet", "--rebase", "origin", "main")
    person_commit(person, {"tenants/shop/tasks.yaml": TASKS}, "Two tasks, one per lane")
    push_as_a_person(person)

    def briefed() -> bool:  # each host pulls the commit, starts its lane's worker, briefs it, hears the ack
        for host in hosts.values():
            host.reconcile()
        return all(host.held() == {WORKER[name][1]: WORKER[name][0]} for name, host in hosts.items())

    assert retry_until(briefed, 60), {name: host.held() for name, host in hosts.items()}
    assert hosts["h0"].sessions() == {"orchestrator", "coder0-0"}, "h0 runs only lane api's worker"
    assert hosts["h1"].sessions() == {"enhancer", "coder1-0"}, "h1 runs only lane web's worker"

    for name, host in hosts.items():
        worker, task = WORKER[name]
        host.tmux("send-keys", "-t", f"={worker}:", "-l", f"/done {task} merged on {name}")
        host.tmux("send-keys", "-t", f"={worker}:", "Enter")

    def converged() -> bool:  # both hosts write their reports back; the remote says both tasks are done
        for host in hosts.values():
            host.reconcile()
        tree = remote_tree(bare)
        if not {"status/h0/shop.yaml", "status/h1/shop.yaml", "TASKS.md"} <= set(tree):
            return False
        views = {name: {t["task"]: t for t in status_json(tree[f"status/{name}/shop.yaml"]).get("tasks", [])}
                 for name in HOSTS}
        return all(views[name].get(WORKER[name][1], {}).get("state") == "done" for name in HOSTS) and \
            all(f"merged on {name}" in tree["TASKS.md"] for name in HOSTS)

    assert retry_until(converged, 60), remote_tree(bare).get("TASKS.md")
    tree = remote_tree(bare)
    for name in HOSTS:
        tasks = {t["task"] for t in status_json(tree[f"status/{name}/shop.yaml"]).get("tasks", [])}
        assert tasks == {WORKER[name][1]}, f"{name}'s status speaks only of its own lane's tasks: {tasks}"
    rows = {line.split("|")[1].strip(): line for line in tree["TASKS.md"].splitlines() if line.startswith("| T")}
    assert "done" in rows["T1"] and "coder0-0" in rows["T1"] and "merged on h0" in rows["T1"], rows
    assert "done" in rows["T2"] and "coder1-0" in rows["T2"] and "merged on h1" in rows["T2"], rows


    def quiet() -> bool:  # a round in which neither host has anything new to write back
        before = git(bare, "rev-parse", "main")
        for host in hosts.values():
            host.reconcile()
        return {git(host.clone, "rev-parse", "HEAD") for host in hosts.values()} == {before}

    assert retry_until(quiet, 60), "both hosts settle on the remote's head"
    assert all(git(host.clone, "status", "--porcelain") == "" for host in hosts.values())
