"""`fleet reconcile --watch`: reacts to a pushed commit and to a local spec edit, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from tests.e2e.test_gitops import WORKER, host_clone, remote  # noqa: F401  (the `remote` fixture)
from tests.plugins.git_remote import PERSON, git, person_commit
from tests.plugins.tmux_server import retry_until

pytestmark = pytest.mark.tmux


def start_watch(repo: Path, state: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600"}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--watch", "--host", "demo",
         "--state-dir", str(state), "--interval", "1h", "--fetch-every", "1s"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def push_as_a_person(repo: Path) -> None:
    """Push, pulling with rebase first when a host pushed status in between (as people do)."""
    for _ in range(10):
        if git(repo, "push", "--quiet", "origin", "HEAD:main", check=False) == "" and git(
            repo, "rev-parse", "HEAD"
        ) == git(repo, "ls-remote", "origin", "main").split()[0]:
            return
        git(repo, *PERSON, "pull", "--quiet", "--rebase", "origin", "main")
    raise AssertionError("could not push the person's commit")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_watch_applies_a_pushed_commit_and_a_local_edit(remote: Path, tmp_path: Path, tmux_socket: SocketKey) -> None:  # noqa: F811
    host = host_clone(remote, tmp_path, "demo")
    proc = start_watch(host, tmp_path / "state")
    try:
        assert retry_until(lambda: len(tmux.observe_socket(tmux_socket).sessions) == 2, 20)
        person = host_clone(remote, tmp_path, "person")
        roster = (person / "tenants/demo/roster.yaml").read_text() + WORKER
        person_commit(person, {"tenants/demo/roster.yaml": roster}, "Add a docs worker")
        push_as_a_person(person)
        assert retry_until(lambda: "worker-1" in tmux.observe_socket(tmux_socket).sessions, 20)
        local = host / "tenants/demo/roster.yaml"
        local.write_text(local.read_text() + "  - name: worker-2\n    role: coder\n")
        assert retry_until(lambda: "worker-2" in tmux.observe_socket(tmux_socket).sessions, 20)
    finally:
        code, _out, err = stop(proc)
    assert code == 0, err
    assert "tick: spec change" in err  # the local edit (the pushed commit may arrive either way)
    # the local edit was a person's: applied, never committed by the reconciler
    assert "worker-2" not in git(remote, "show", "main:tenants/demo/roster.yaml")
    assert "Traceback" not in err
