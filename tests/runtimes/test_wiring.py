"""The adapters wired into the fleet: fleet.yaml `adapter:`, the desired launch, health.

Pure, no runtime needed: the spec errors carry file:line:col, the desired launch is the
adapter's argv and environment with the hash covering what it prepares, and the health
rule of event-driven runtimes (docs/runtimes.md) in its cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.core.desired import (
    build_desired,
    conversation_facts,
    default_session_id,
    host_facts,
    on_rung,
    resolve_desired,
)
from reconciler.core.health import Health, assess
from reconciler.model.observed import Conversation, Heartbeat, ObservedSession, Resolved, SocketKey
from reconciler.spec.load import load_repo
from tests.spec.support import build_repo, error_lines

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: minimal
defaults:
  socket_name: mosaic-demo
  runtime: claude
  model: opus
runtimes:
  claude:
    adapter: claude{claude_command}
    ladder: [opus, sonnet]
  codex:
    adapter: codex
    command: /opt/codex/bin/codex
    ladder: [gpt-5.5]
  stub:
    adapter: {stub_adapter}
    command: "fleet-stub-agent --model {{model}}"
    ladder: [stub-large]
"""
ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: demo
host: demo
agents:
  - name: orchestrator
    role: orchestrator
    workdir: ~/src
    env: {ANTHROPIC_API_KEY: sk-fake-0123456789abcdefghij, DISABLE_AUTOUPDATER: "0"}
  - name: enhancer
    role: enhancer
    runtime: codex
    trust_workdir: false
  - name: coder
    role: coder
    runtime: stub
"""
ROLE = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Role
name: orchestrator
persona: You are Mos.
"""


def repo(tmp_path: Path, claude_command: str = "", stub_adapter: str = "stub", persona: str = ROLE) -> Path:
    return build_repo(tmp_path, {
        "fleet.yaml": FLEET.format(claude_command=claude_command, stub_adapter=stub_adapter),
        "tenants/demo/roster.yaml": ROSTER,
        "roles/orchestrator.yaml": persona,
    })


@pytest.mark.parametrize(("claude_command", "stub_adapter", "where", "says"), [
    ("\n    command: claude --model {model}", "stub", "fleet.yaml:10:5", "names only the program"),
    ("", "command\n    command: null", "fleet.yaml:17:5", "needs `command:`"),
    ("", "claud", "fleet.yaml:17:14", "claude"),
])
def test_adapter_errors_point_at_the_runtime(tmp_path: Path, claude_command: str, stub_adapter: str,
                                             where: str, says: str) -> None:
    root = repo(tmp_path, claude_command, stub_adapter)
    text = (root / "fleet.yaml").read_text().replace("    command: \"fleet-stub-agent --model {model}\"\n", "", 1) \
        if "null" in stub_adapter else (root / "fleet.yaml").read_text()
    (root / "fleet.yaml").write_text(text.replace("    command: null\n", ""))
    errors = error_lines(load_repo(root))
    assert any(line.startswith(where) and says in line for line in errors), errors


def test_desired_launch_is_the_adapters(tmp_path: Path) -> None:
    desired = build_desired(load_repo(repo(tmp_path)), host="demo", state_dir="/state")
    agents = desired.tenants["demo"].on_host("demo")
    claude, codex, stub = agents["orchestrator"].launch, agents["enhancer"].launch, agents["coder"].launch
    session = default_session_id("/state", "demo", "orchestrator")
    assert claude.argv == ("claude", "--model", "opus", "--session-id", session, "--settings",
                           "/state/demo/runtimes/orchestrator/claude-settings.json",
                           "--append-system-prompt-file", "/state/demo/runtimes/orchestrator/persona.md")
    env = dict(claude.env)
    assert env["CLAUDE_CODE_DISABLE_1M_CONTEXT"] == "1" and env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "200000"
    assert env["DISABLE_AUTOUPDATER"] == "0", "the agent's own env wins over the adapter's"
    assert (claude.adapter, claude.persona, claude.trust_workdir) == ("claude", "You are Mos.", True)
    assert codex.argv == ("fleet-hook", "launch", "--", "/opt/codex/bin/codex", "--model", "gpt-5.5",
                          "-c", "features.daemon_auto_start=false")
    assert (codex.adapter, codex.trust_workdir) == ("codex", False)
    assert stub.argv == ("fleet-stub-agent", "--model", "stub-large") and stub.adapter is None
    programs, _ = host_facts(desired)
    assert {"claude", "fleet-hook", "/opt/codex/bin/codex", "fleet-stub-agent"} <= programs


def test_a_kept_conversation_is_resumed_on_every_rung_without_changing_the_hash(tmp_path: Path) -> None:
    desired = build_desired(load_repo(repo(tmp_path)), host="demo", state_dir="/state")
    # every agent here may be moved to the claude runtime by the budget policy: all are looked up
    assert conversation_facts(desired) == {(None, "demo", a, "~/.claude") for a in ("orchestrator", "enhancer", "coder")}
    first = desired.tenants["demo"].on_host("demo")["orchestrator"]
    kept = "0f0e0d0c-0b0a-4909-8807-060504030201"
    resumed = resolve_desired(desired, Resolved(conversations={("demo", "orchestrator"): Conversation(kept, True)}))
    agent = resumed.tenants["demo"].on_host("demo")["orchestrator"]
    assert agent.launch.argv[3:5] == ("--resume", kept) and agent.launch.session_id == kept
    assert agent.launch.spec_hash == first.launch.spec_hash, "the resume flag alone restarts nothing"
    cheaper = on_rung(agent, "claude", "sonnet", ("opus", "sonnet"))
    assert cheaper.launch.argv[1:5] == ("--model", "sonnet", "--resume", kept), "a step down keeps the conversation"
    assert cheaper.launch.spec_hash != first.launch.spec_hash
    fresh = resolve_desired(desired, Resolved(conversations={("demo", "orchestrator"): Conversation(kept)}))
    assert fresh.tenants["demo"].on_host("demo")["orchestrator"].launch.argv[3:5] == ("--session-id", kept)


def test_resolving_bakes_in_the_binaries_and_the_hook(tmp_path: Path) -> None:
    desired = build_desired(load_repo(repo(tmp_path)), host="demo", state_dir="/state")
    launch = desired.tenants["demo"].on_host("demo")["enhancer"].launch
    found = Resolved({"fleet-hook": "/v/bin/fleet-hook", "codex": "/usr/bin/codex"}).launch(
        replace(launch, argv=("fleet-hook", "launch", "--", "codex", "--model", "m")))
    assert found.argv == ("/v/bin/fleet-hook", "launch", "--", "/usr/bin/codex", "--model", "m")
    assert found.hook == "/v/bin/fleet-hook" and found.spec_hash == launch.spec_hash


def test_a_persona_or_skills_edit_changes_the_spec_hash(tmp_path: Path) -> None:
    def hashes(root: Path) -> dict[str, str]:
        agents = build_desired(load_repo(root), host="demo", state_dir="/s").tenants["demo"].on_host("demo")
        return {name: a.launch.spec_hash for name, a in agents.items()}

    before = hashes(repo(tmp_path / "a"))
    after = hashes(repo(tmp_path / "b", persona=ROLE.replace("Mos.", "Mos, and terse.")))
    assert before["orchestrator"] != after["orchestrator"]
    assert before["enhancer"] == after["enhancer"] and before["coder"] == after["coder"]
    skilled = repo(tmp_path / "c", persona=ROLE + "skills: [triage, delegation]\n")
    agent = build_desired(load_repo(skilled), host="demo", state_dir="/s").tenants["demo"].on_host("demo")["orchestrator"]
    assert agent.launch.persona == "You are Mos.\n\nYour skills in this role:\n- triage\n- delegation\n"
    assert agent.launch.spec_hash not in (before["orchestrator"], after["orchestrator"]), "a skill edit restarts too"


T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
SESSION = ObservedSession("a", "$1", T0, None, 0, 100, False, None, "claude", False)


def beat(state: str = "idle", ago: int = 600, event_ago: int | None = None, lineage: tuple[int, ...] | None = (
        4242, 100, 1)) -> Heartbeat:
    now = T0 + timedelta(hours=1)
    return Heartbeat("t", "h", "a", 3, now - timedelta(seconds=ago), state, "opus", pid=4242, event="Stop",
                     event_ts=now - timedelta(seconds=ago if event_ago is None else event_ago), lineage=lineage)


@pytest.mark.parametrize(("record", "health", "says"), [
    (beat(ago=2), Health.HEALTHY, "heartbeat 2s ago"),
    (beat(), Health.HEALTHY, "runtime pid 4242 alive in the pane"),
    (beat("waiting"), Health.HEALTHY, "state waiting"),
    (beat(lineage=()), Health.SILENT, "runtime pid 4242 is gone"),
    (beat(lineage=(4242, 77, 1)), Health.SILENT, "not in the pane's process tree"),
    (beat(lineage=None), Health.SILENT, "names no runtime pid"),
    (beat("working", ago=1, event_ago=3600), Health.STALE, "over the 30m working_timeout"),
    (beat("working", ago=1, event_ago=60), Health.HEALTHY, "state working"),
])
def test_event_driven_health(record: Heartbeat, health: Health, says: str) -> None:
    verdict = assess(SESSION, record, now=T0 + timedelta(hours=1), timeout=timedelta(seconds=90),
                     grace=timedelta(seconds=30), working_timeout=timedelta(minutes=30))
    assert verdict.health is health and says in verdict.message, verdict


def test_a_command_runtime_keeps_the_heartbeat_timeout() -> None:
    verdict = assess(SESSION, beat(), now=T0 + timedelta(hours=1), timeout=timedelta(seconds=90),
                     grace=timedelta(seconds=30))
    assert verdict.health is Health.STALE, "pane and pid alive are not enough for a runtime that beats on a timer"


def test_a_missing_runtime_binary_is_reported_not_started(tmp_path: Path, tmux_socket: SocketKey) -> None:
    root = repo(tmp_path)
    (root / "fleet.yaml").write_text((root / "fleet.yaml").read_text().replace("mosaic-demo", str(tmux_socket.name)))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("MOSAIC_AGENT_COMMAND", None)
    for _ in range(3):  # every run says the same; none starts it, none backs off toward Stalled
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(root), "--host", "demo",
                               "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "! missing  demo/orchestrator: not started: claude is not found" in done.stdout, done.stdout
        assert "demo/enhancer: not started: /opt/codex/bin/codex is not found" in done.stdout, done.stdout
        assert "0 to restart" in done.stdout and "backs off" not in done.stdout and "Stalled" not in done.stdout
    sessions = subprocess.run(["tmux", "-L", str(tmux_socket.name), "list-sessions", "-F", "#{session_name}"],
                              capture_output=True, text=True, timeout=30, check=False).stdout.split()
    assert sessions == ["coder"], "the stub agent runs; the two without a binary are not started, so not looped"


def test_a_budget_rung_is_launched_by_the_same_adapter(tmp_path: Path) -> None:
    desired = build_desired(load_repo(repo(tmp_path)), host="demo", state_dir="/state")
    agent = desired.tenants["demo"].on_host("demo")["orchestrator"]
    cheaper = on_rung(agent, "claude", "sonnet", agent.ladder)
    assert cheaper.launch.argv[:3] == ("claude", "--model", "sonnet") and cheaper.launch.adapter == "claude"
    assert "--settings" in cheaper.launch.argv and cheaper.launch.spec_hash != agent.launch.spec_hash
    assert dict(cheaper.launch.env)["FLEET_MODEL"] == "sonnet"


def test_observe_reads_the_kept_id_and_skips_an_empty_transcript(tmp_path: Path) -> None:
    from reconciler.core.desired import next_session_id  # noqa: PLC0415
    from reconciler.engine.observe import observe_conversations  # noqa: PLC0415
    from reconciler.model.layout import StateLayout  # noqa: PLC0415

    state, claude = StateLayout(tmp_path / "state"), tmp_path / "claude"
    facts = [(None, "demo", "orchestrator", str(claude))]
    default = default_session_id(str(state.root), "demo", "orchestrator")
    assert observe_conversations(state, facts) == {("demo", "orchestrator"): Conversation(default)}
    kept = "0f0e0d0c-0b0a-4909-8807-060504030201"
    state.conversation("demo", "orchestrator").parent.mkdir(parents=True)
    state.conversation("demo", "orchestrator").write_text(kept + "\n")
    project = claude / "projects" / "-work"
    project.mkdir(parents=True)
    transcript = project / f"{kept}.jsonl"
    transcript.write_text('{"type":"mode","sessionId":"x"}\n')  # started, killed before its records
    assert observe_conversations(state, facts)[("demo", "orchestrator")] == Conversation(next_session_id(kept))
    transcript.write_text('{"type":"mode"}\n{"type":"user","message":{"role":"user","content":"hi"}}\n')
    assert observe_conversations(state, facts)[("demo", "orchestrator")] == Conversation(kept, resume=True)
    state.conversation("demo", "orchestrator").write_text("not a uuid\n")
    assert observe_conversations(state, facts)[("demo", "orchestrator")] == Conversation(default)


MAIN = "01a249b6-a332-7350-b445-9998cb79cd53"  # UUIDv7 of 2026-12-06, as Codex 0.169.0 names threads
TITLE = "01a249b6-a474-7850-910f-58c7af8ca795"  # the per-turn title thread: notify, but no rollout
ELSEWHERE = "01a249b6-f2ff-7b52-843b-570a2ead9360"  # a thread started in another folder


def rollout(codex_home: Path, thread: str, cwd: Path, kind: str = "session_meta") -> None:
    day = codex_home / "sessions" / "2026" / "12" / "06"
    day.mkdir(parents=True, exist_ok=True)
    meta = {"timestamp": "2026-12-06T04:57:15Z", "type": kind, "payload": {"id": thread, "cwd": str(cwd)}}
    (day / f"rollout-2026-12-06T04-57-15-{thread}.jsonl").write_text(json.dumps(meta) + "\n{}\n")


def test_a_codex_agent_resumes_the_thread_its_own_notify_named_in_its_workdir(tmp_path: Path) -> None:
    from reconciler.core.desired import read_back_facts  # noqa: PLC0415
    from reconciler.engine.observe import observe_read_back  # noqa: PLC0415
    from reconciler.model.observed import ObservedFleet  # noqa: PLC0415

    root = repo(tmp_path)
    roster = (root / "tenants/demo/roster.yaml").read_text()
    work, codex_home = tmp_path / "work", tmp_path / "codex"
    work.mkdir()
    (root / "tenants/demo/roster.yaml").write_text(roster.replace(
        "    runtime: codex\n", f"    runtime: codex\n    workdir: {work}\n    env: {{CODEX_HOME: {codex_home}}}\n"))
    desired = build_desired(load_repo(root), host="demo", state_dir="/s")
    facts = read_back_facts(desired)
    # every agent a budget move may put on Codex; only the one that ran there has threads
    assert (None, "demo", "enhancer", "codex", str(codex_home), str(work)) in facts
    rollout(codex_home, MAIN, work)
    rollout(codex_home, ELSEWHERE, tmp_path / "other")
    beat = Heartbeat("demo", "demo", "enhancer", 3, T0, "idle", "gpt-5.5", threads=(MAIN, TITLE, ELSEWHERE))

    def read_back(*threads: str) -> dict[tuple[str, str, str], str]:
        observed = ObservedFleet(T0, heartbeats={("demo", "enhancer"): replace(beat, threads=threads)})
        return observe_read_back(observed, facts)

    # Newest first: another folder's thread and the title thread (no rollout) are passed over.
    assert read_back(MAIN, TITLE, ELSEWHERE) == {("demo", "enhancer", "codex"): MAIN}
    assert read_back(TITLE, ELSEWHERE) == {}, "no rollout of this workdir: a new session, never a guess"
    assert read_back() == {}
    rollout(codex_home, MAIN, work, kind="response_item")  # not a session_meta first line: not trusted
    assert read_back(MAIN) == {}
    rollout(codex_home, MAIN, work)

    resolved = Resolved(read_back=read_back(MAIN, TITLE))
    agents = resolve_desired(desired, resolved).tenants["demo"].on_host("demo")
    launch = agents["enhancer"].launch
    assert launch.argv[3:6] == ("/opt/codex/bin/codex", "resume", MAIN), launch.argv
    assert launch.spec_hash == desired.tenants["demo"].on_host("demo")["enhancer"].launch.spec_hash, \
        "resuming is no spec change: it restarts nothing by itself"
    assert "resume" not in agents["orchestrator"].launch.argv and MAIN not in agents["orchestrator"].launch.argv
    assert on_rung(agents["enhancer"], "codex", "gpt-5.5", agents["enhancer"].ladder).launch.argv[4:6] == (
        "resume", MAIN), "a budget move resumes it too"
