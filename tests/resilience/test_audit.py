"""The audit log: every act on an agent, by whom and why, appended and never interleaved.

`fleet reconcile`, `fleet down` and `fleet agent send` run as subprocesses against the
minimal example on a private tmux socket with the real stub agents (the fleet fixture
of tests/e2e/test_ps_and_agent_verbs.py); the log is compared with what the run itself
reported (`--output json`). A dry-run and a run with nothing to do add nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.audit import AuditRecord, Who, append_records, audit_path, read_audit
from reconciler.engine import agent_verbs
from reconciler.engine.apply import apply_plan
from reconciler.engine.tick import plan_tick
from reconciler.errors import UserError
from reconciler.model.observed import SocketKey
from tests.e2e.test_ps_and_agent_verbs import Fleet
from tests.plugins.tmux_server import retry_until
from tests.resilience.conftest import Minimal

pytestmark = pytest.mark.tmux

SECRET = "swordfish-7f3a9c"


def log(fleet: Fleet) -> list[dict[str, Any]]:
    records, problems = read_audit(audit_path(fleet.state_dir, "demo"))
    assert problems == []
    return records


def applied(fleet: Fleet, *args: str) -> list[dict[str, Any]]:
    done = fleet.fleet(*args, "--output", "json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout).get("applied", []))


def summary(record: dict[str, Any]) -> tuple[str, str, str | None, str, str, str]:
    what, why = record["what"], record["why"]
    return what["kind"], what["agent"], what["model"], why["rule"], why["message"], record["result"]


def test_reconcile_and_down_are_audited_exactly_and_dry_runs_are_not(fleet: Fleet) -> None:
    repo = str(fleet.repo)
    assert fleet.fleet("reconcile", repo, "--dry-run").returncode == 0
    assert not audit_path(fleet.state_dir, "demo").exists()

    first = applied(fleet, "reconcile", repo)
    records = log(fleet)

    assert [summary(r) for r in records] == [
        (o["action"], o["agent"], o["model"], o["rule"], o["reason"], "ok") for o in first
    ]
    assert {r["what"]["kind"] for r in records} == {"spawn"} and len(records) == 2
    for record in records:
        who = record["who"]
        assert who["user"] == "root" and who["uid"] == os.geteuid() and who["host"] == socket.gethostname()
        assert who["command"] == "reconcile" and who["pid"] != os.getpid()
        assert record["ts"].endswith("Z") and datetime.fromisoformat(record["ts"]).tzinfo == UTC
        assert record["what"]["tenant"] == "demo" and record["error"] is None
    assert stat.S_IMODE(audit_path(fleet.state_dir, "demo").stat().st_mode) == 0o600

    assert applied(fleet, "reconcile", repo) == []  # nothing to do: nothing logged
    assert fleet.fleet("reconcile", repo, "--dry-run").returncode == 0
    assert len(log(fleet)) == 2

    tmux.kill_sessions(SocketKey(None, fleet.socket), ["enhancer"])
    again = applied(fleet, "reconcile", repo)
    assert [summary(r) for r in log(fleet)[2:]] == [("spawn", "enhancer", "stub-large", again[0]["rule"],
                                                     again[0]["reason"], "ok")]

    stopped = applied(fleet, "down", repo)
    tail = log(fleet)[3:]
    assert [summary(r) for r in tail] == [(o["action"], o["agent"], o["model"], o["rule"], o["reason"], "ok")
                                          for o in stopped]
    assert {r["who"]["command"] for r in tail} == {"down"} and len(tail) == 2


def test_send_is_audited_with_its_id_never_its_text(running: Fleet) -> None:
    code, said, _ = running.send("orchestrator", f"the word is {SECRET}")
    assert code == 0, said
    running.tmux("copy-mode", "-t", "=enhancer:")
    refused, _, stderr = running.send("enhancer", "are you there?")
    assert refused == 1 and "copy mode" in stderr

    sends = [r for r in log(running) if r["what"]["kind"] == "send"]

    assert [(r["what"]["agent"], r["result"], r["who"]["command"]) for r in sends] == [
        ("orchestrator", "ok", "agent send"), ("enhancer", "skipped", "agent send")]
    assert said["id"] in sends[0]["why"]["message"] and "text not logged" in sends[0]["why"]["message"]
    assert "copy mode" in sends[1]["error"]
    assert SECRET not in audit_path(running.state_dir, "demo").read_text()


def test_attach_is_audited_before_the_takeover_and_when_it_fails(running: Fleet) -> None:
    desired = agent_verbs.load_desired(running.repo, "demo", running.state_dir)
    warnings: list[str] = []
    code = agent_verbs.attach(agent_verbs.find_agent(desired, "orchestrator"), warnings.append)  # no terminal here
    running.tmux("kill-session", "-t", "=enhancer")
    with pytest.raises(UserError):
        agent_verbs.attach(agent_verbs.find_agent(desired, "enhancer"), warnings.append)

    attaches = [r for r in log(running) if r["what"]["kind"] == "attach"]

    assert code != 0 and warnings == []
    assert [(r["what"]["agent"], r["result"]) for r in attaches] == [
        ("orchestrator", "ok"), ("orchestrator", "failed"), ("enhancer", "failed")]
    assert "not running" in attaches[2]["error"]


def _append_many(state_dir: str, writer: int, count: int) -> None:
    who = Who("root", 0, os.getpid(), "h", "reconcile")
    for n in range(count):
        record = AuditRecord(datetime.now(UTC), who, "spawn", "demo", f"w{writer}-{n}", "m", "r",
                             f"{writer}" * 1900, "ok")
        assert append_records(Path(state_dir), [record]) == []


def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    """Four processes append 150 records of ~2 KB each at once: every line is whole."""
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_append_many, args=(str(tmp_path), w, 150)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0

    records, problems = read_audit(audit_path(tmp_path, "demo"))

    assert problems == []
    assert sorted(r["what"]["agent"] for r in records) == sorted(f"w{w}-{n}" for w in range(4) for n in range(150))
    assert all(set(r["why"]["message"]) == {r["what"]["agent"][1]} for r in records)


@pytest.mark.parametrize("blocker", ["directory", "symlink"])
def test_an_unwritable_audit_log_is_a_problem_never_a_failed_action(
    tmp_path: Path, minimal: Minimal, blocker: str
) -> None:
    path = audit_path(minimal.state, "demo")
    path.parent.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    if blocker == "directory":
        path.mkdir()
    else:
        path.symlink_to(elsewhere)  # a planted link must not redirect the reconciler's appends

    report = apply_plan(plan_tick(minimal.inputs()))

    assert not report.failed
    assert retry_until(lambda: sorted(tmux.observe_socket(minimal.socket).sessions) == ["enhancer", "orchestrator"])
    assert [p for p in report.problems if str(path) in p] == [
        f"{path}: could not append to the audit log "
        f"({'Is a directory' if blocker == 'directory' else 'Too many levels of symbolic links'}); "
        "not recorded: spawn enhancer, spawn orchestrator"]
    assert not elsewhere.exists()
