"""`fleet reconcile` runs the REAL Claude Code and Codex: spawn, heartbeat, no restart, send, respawn.

The whole loop through the command line, as a person runs it: a fleet repository whose
agents are an orchestrator on the `claude` adapter and an enhancer on the `codex`
adapter, the binaries from `.runtimes/` found on PATH, a fresh HOME, a private tmux
socket and the loopback fakes of tests/runtimes/fakes.py as the providers. No key is
pressed by the test: the adapters' prepared configs pass every dialog, and `fleet-hook`
writes every heartbeat from the runtimes' own events.

Every wait polls with a generous deadline (the machine may be loaded: CI runs this on
two cores beside the rest of the suite); nothing sleeps a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.observed import Heartbeat, SocketKey
from tests.plugins.tmux_server import kill_server, retry_until
from tests.runtimes.fakes import end_leftovers, serve

BIN = Path(__file__).resolve().parents[2] / ".runtimes" / "node_modules" / ".bin"
VENV_BIN = Path(sys.executable).parent
HOST = "w-real"
TENANT = "jarvis"
#: Generous: a cold start measured 0.7 s (Claude Code) and about 2 s (Codex) on an idle
#: machine; under a loaded two-core CI run the same start has taken many times that.
UP_S = 90.0
CLI_S = 120.0
KEY = "sk-fake-0123456789abcdefghijklmnop"

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(not ((BIN / "claude").exists() and (BIN / "codex").exists()),
                       reason=f"claude and codex are not installed in {BIN.parent.parent}: run ./dev setup (needs npm)"),
]

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: real
defaults:
  socket_name: {socket}
  heartbeat_timeout: 5s
  startup_grace: 90s
  runtime: claude
  model: opus
runtimes:
  claude:
    adapter: claude
    ladder: [opus, sonnet]
  codex:
    adapter: codex
    ladder: [gpt-5.5]
"""

ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: jarvis
host: w-real
agents:
  - name: orchestrator
    role: orchestrator
    runtime: claude
    workdir: {work}
    env:
      ANTHROPIC_BASE_URL: {anthropic}
      ANTHROPIC_API_KEY: {key}
  - name: enhancer
    role: enhancer
    runtime: codex
    workdir: {work}
    env:
      FAKE_KEY: {key}
"""

ROLE = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Role
name: orchestrator
persona: "You are Mos, the orchestrator. Persona marker P-4242."
"""

CODEX_CONFIG = """\
# the user's own settings: their provider, kept by the fleet's merge
model_provider = "fake"
approval_policy = "never"

[model_providers.fake]
name = "fake"
base_url = "{openai}/v1"
wire_api = "responses"
env_key = "FAKE_KEY"
"""


@dataclass
class World:
    repo: Path
    home: Path
    state: Path
    work: Path
    socket: str
    env: dict[str, str]

    def fleet(self, *args: str, timeout: float = CLI_S) -> subprocess.CompletedProcess[str]:
        """The installed CLI, as a person runs it, with this world's HOME and PATH."""
        return subprocess.run([str(VENV_BIN / "fleet"), *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)

    def reconcile(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.fleet("reconcile", str(self.repo), "--host", HOST, "--state-dir", str(self.state), *extra)

    def plan(self) -> dict[str, Any]:
        done = self.reconcile("--dry-run", "--output", "json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True,
                              timeout=30, stdin=subprocess.DEVNULL).stdout

    def pane(self, agent: str, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", f"={agent}:", fmt).strip()

    def screen(self, agent: str) -> str:
        try:
            return self.tmux("capture-pane", "-p", "-S", "-60", "-t", f"={agent}:")
        except subprocess.CalledProcessError as exc:
            return f"(no screen: {exc.stderr})"

    def heartbeat(self, agent: str) -> Heartbeat | None:
        try:
            return parse_heartbeat((self.state / TENANT / "heartbeats" / f"{agent}.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_beat(self, agent: str, why: str, ok: Callable[[Heartbeat], bool] | None = None,
                  seconds: float = UP_S) -> Heartbeat:
        """The first heartbeat of `agent` that `ok(beat)` accepts; a failure shows the pane."""
        seen: list[Heartbeat | None] = [None]

        def check() -> bool:
            seen[0] = self.heartbeat(agent)
            return seen[0] is not None and (ok is None or ok(seen[0]))

        assert retry_until(check, seconds, 0.05), f"{agent}: no heartbeat {why} in {seconds}s; last {seen[0]}\n" \
                                                  f"{self.screen(agent)}"
        assert seen[0] is not None
        return seen[0]


@pytest.fixture
def world(tmp_path: Path, tmux_socket: SocketKey) -> Iterator[World]:
    assert tmux_socket.name is not None
    home, state, work, repo = (tmp_path / n for n in ("home", "state", "work", "repo"))
    for folder in (home, state, work, repo / "roles", repo / "tenants" / TENANT, home / ".codex"):
        folder.mkdir(parents=True)
    with serve("anthropic") as anthropic, serve("openai") as openai:
        (repo / "fleet.yaml").write_text(FLEET.format(socket=tmux_socket.name))
        (repo / "roles" / "orchestrator.yaml").write_text(ROLE)
        (repo / "tenants" / TENANT / "roster.yaml").write_text(
            ROSTER.format(work=work, anthropic=anthropic.base_url, key=KEY))
        (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.format(openai=openai.base_url))
        (home / ".claude.json").write_text(json.dumps({"fleetTestUserKey": "kept"}))
        env = {key: value for key, value in os.environ.items() if key in ("TMUX_TMPDIR", "TZ", "LANG")}
        env.update(HOME=str(home), PATH=f"{VENV_BIN}:{BIN}:/usr/local/bin:/usr/bin:/bin", TERM="xterm-256color",
                   LANG="C.UTF-8", FLEET_STATE_DIR=str(state),
                   XDG_RUNTIME_DIR=str(tmp_path / "no-systemd"))  # tmux-only: no user manager is touched
        (tmp_path / "no-systemd").mkdir()
        world = World(repo, home, state, work, tmux_socket.name, env)
        world.anthropic, world.openai = anthropic, openai  # type: ignore[attr-defined]
        yield world
    kill_server(tmux_socket.name)
    left = end_leftovers(tmp_path)
    assert not left, f"the runtimes left processes behind after their tmux server exited: {left}"


def _dead(world: World, agent: str) -> bool:
    return world.pane(agent, "#{pane_dead}") == "1"


def _alive(pid: int | None) -> bool:
    return pid is not None and Path(f"/proc/{pid}").exists()


def _health(world: World) -> dict[str, str]:
    """Each agent's health as the last `fleet reconcile` wrote it to the status file."""
    text = (world.repo / "status" / HOST / f"{TENANT}.yaml").read_text()
    doc = json.loads(text[text.index("{"):])
    return {a["name"]: a["health"] for a in doc["agents"]}


def test_reconcile_spawns_real_claude_and_codex_keeps_them_healthy_and_respawns(world: World) -> None:
    # The plan shows what runs: the adapters' argv with the binaries found on PATH.
    plan = world.plan()
    commands = {a["agent"]: a["command"] for a in plan["actions"]}
    assert commands["orchestrator"][0] == str(BIN / "claude"), commands
    assert commands["enhancer"][0] == str(VENV_BIN / "fleet-hook") and commands["enhancer"][3] == str(BIN / "codex")
    assert "--settings" in commands["orchestrator"] and "--append-system-prompt-file" in commands["orchestrator"]

    # Time to first heartbeat, measured while the reconcile runs (it also writes status).
    started = time.monotonic()
    first = subprocess.Popen([str(VENV_BIN / "fleet"), "reconcile", str(world.repo), "--host", HOST, "--state-dir",
                              str(world.state)], env=world.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, stdin=subprocess.DEVNULL)
    up: dict[str, float] = {}

    def beats() -> bool:
        if "reconcile" not in up and first.poll() is not None:
            up["reconcile"] = time.monotonic() - started
        for agent in ("orchestrator", "enhancer"):
            if agent not in up and world.heartbeat(agent) is not None:
                up[agent] = time.monotonic() - started
        return "orchestrator" in up and "enhancer" in up

    ok = retry_until(beats, UP_S, 0.02)
    output, _ = first.communicate(timeout=CLI_S)
    assert first.returncode == 0, output
    assert ok, f"no first heartbeat from {sorted({'orchestrator', 'enhancer'} - set(up))}: {output}"
    print(f"\nfirst heartbeat after `fleet reconcile` started: claude {up['orchestrator']:.2f} s, "
          f"codex {up['enhancer']:.2f} s (the reconcile itself took {up.get('reconcile', 0.0):.2f} s)")
    claude = world.wait_beat("orchestrator", "from Claude Code")
    codex = world.wait_beat("enhancer", "from fleet-hook launch")
    assert claude.event in ("SessionStart", "statusline") and codex.event == "launch"
    # The pane's launch env holds the 200k context settings; the user's files kept their keys.
    env = world.tmux("show-environment", "-t", "=orchestrator")
    assert "CLAUDE_CODE_DISABLE_1M_CONTEXT=1" in env and "CLAUDE_CODE_AUTO_COMPACT_WINDOW=200000" in env
    assert json.loads((world.home / ".claude.json").read_text())["fleetTestUserKey"] == "kept"
    assert 'env_key = "FAKE_KEY"' in (world.home / ".codex" / "config.toml").read_text()

    # Both at their prompts, no dialog passed by hand; then past the 5 s heartbeat_timeout
    # the planner still calls them healthy: Claude Code's status line ticks, and Codex,
    # silent while idle, has its runtime pid alive in its pane. Nothing to do.
    assert retry_until(lambda: "? for shortcuts" in world.screen("enhancer"), UP_S), world.screen("enhancer")
    assert retry_until(lambda: (world.heartbeat("orchestrator") or claude).event == "statusline", UP_S)
    assert retry_until(lambda: time.time() - codex.ts.timestamp() > 6, 30, 0.2)
    second = world.reconcile("--dry-run", "--detailed-exitcode")
    assert second.returncode == 0, second.stdout + second.stderr
    again = world.reconcile()
    assert again.returncode == 0 and "0 to spawn, 0 to restart, 0 to stop" in again.stdout, again.stdout
    assert _health(world) == {"orchestrator": "healthy", "enhancer": "healthy"}
    ps = world.fleet("ps", str(world.repo), "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert ps.returncode == 0, ps.stderr
    rows = {row["agent"]: row for row in json.loads(ps.stdout)}
    assert {name: (r["health"], r["heartbeat_state"]) for name, r in rows.items()} == {
        "orchestrator": ("healthy", "idle"), "enhancer": ("healthy", "idle")}, rows
    assert "alive in the pane" in rows["enhancer"]["health_message"], rows["enhancer"]

    # `fleet agent send --verify` is acked by the runtimes' own events.
    for agent, text in (("orchestrator", "Plan the week"), ("enhancer", "Review the plan")):
        sent = world.fleet("agent", "send", str(world.repo), agent, text, "--verify", "--timeout", str(UP_S),
                           "--host", HOST, "--state-dir", str(world.state), "--output", "json")
        assert sent.returncode == 0, f"{agent}: {sent.stdout} {sent.stderr}\n{world.screen(agent)}"
        assert json.loads(sent.stdout)["status"] == "verified", sent.stdout
    turns = world.anthropic.turns()  # type: ignore[attr-defined]
    assert any("P-4242" in turn.system for turn in turns), "the role's persona reaches Claude Code's system prompt"
    assert any("Review the plan" in json.dumps(turn.messages) for turn in world.openai.turns())  # type: ignore[attr-defined]

    # A killed runtime: its pane is dead, reconcile restarts it, a new runtime beats.
    for agent in ("orchestrator", "enhancer"):
        before = world.wait_beat(agent, "before the kill")
        pane_pid = int(world.pane(agent, "#{pane_pid}"))
        os.killpg(pane_pid, signal.SIGKILL)
        assert retry_until(partial(_dead, world, agent), 30), world.screen(agent)
        done = world.reconcile()
        assert done.returncode == 0 and "1 to restart" in done.stdout, done.stdout + done.stderr

        def respawned(beat: Heartbeat, old: Heartbeat = before) -> bool:
            return beat.pid != old.pid and _alive(beat.pid)

        after = world.wait_beat(agent, "from the respawned runtime", respawned)
        assert int(world.pane(agent, "#{pane_pid}")) != pane_pid and after.state == "idle"
    final = world.reconcile()
    assert final.returncode == 0 and "0 to restart" in final.stdout, final.stdout
    assert _health(world) == {"orchestrator": "healthy", "enhancer": "healthy"}


def _send(world: World, agent: str, text: str) -> None:
    sent = world.fleet("agent", "send", str(world.repo), agent, text, "--verify", "--timeout", str(UP_S),
                       "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert sent.returncode == 0, f"{agent}: {sent.stdout} {sent.stderr}\n{world.screen(agent)}"
    assert json.loads(sent.stdout)["status"] == "verified", sent.stdout


def _turn_with(world: World, marker: str) -> Any:
    """The first request to the fake Anthropic API that holds `marker` (the message just sent)."""
    found: list[Any] = []

    def check() -> bool:
        found[:] = [t for t in world.anthropic.turns()  # type: ignore[attr-defined]
                    if marker in json.dumps(t.messages)]
        return bool(found)

    assert retry_until(check, UP_S, 0.05), f"no request with {marker}\n{world.screen('orchestrator')}\n" \
        f"{[(t.model, json.dumps(t.messages)[-300:]) for t in world.anthropic.turns()]}"  # type: ignore[attr-defined]
    return found[0]


def test_claude_resumes_its_conversation_after_a_kill_and_on_a_new_model(world: World) -> None:
    """The session id is fixed at the first spawn and kept in the state dir; a restart
    (the runtime killed) and a model change both resume it: the provider is sent the
    earlier turns again, the second time on the new model."""
    plan = {a["agent"]: a["command"] for a in world.plan()["actions"]}
    at = plan["orchestrator"].index("--session-id")
    session = plan["orchestrator"][at + 1]
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    assert (world.state / TENANT / "conversations" / "orchestrator").read_text().strip() == session
    world.wait_beat("orchestrator", "from Claude Code")
    _send(world, "orchestrator", "Remember the word ZEBRA-17")
    assert "ZEBRA-17" in json.dumps(_turn_with(world, "ZEBRA-17").messages)
    world.wait_beat("orchestrator", "after the first turn", lambda b: b.state == "idle")
    # Claude Code writes the transcript's records some time after the turn (measured: not
    # yet on disk at `Stop`); a kill before that loses the turn, so the test waits for it.
    assert retry_until(lambda: any("ZEBRA-17" in path.read_text() for path in
                                   (world.home / ".claude" / "projects").glob(f"*/{session}.jsonl")), UP_S)

    # Killed: the restart resumes the same conversation, and the spec hash did not move.
    pane_pid = int(world.pane("orchestrator", "#{pane_pid}"))
    spec_hash = world.pane("orchestrator", "#{@fleet-spec-hash}")
    os.killpg(pane_pid, signal.SIGKILL)
    assert retry_until(partial(_dead, world, "orchestrator"), 30), world.screen("orchestrator")
    plan = {a["agent"]: a["command"] for a in world.plan()["actions"]}
    assert plan["orchestrator"][plan["orchestrator"].index("--resume") + 1] == session, plan
    done = world.reconcile()
    assert done.returncode == 0 and "1 to restart" in done.stdout, done.stdout + done.stderr
    assert world.pane("orchestrator", "#{@fleet-spec-hash}") == spec_hash
    world.wait_beat("orchestrator", "from the resumed runtime", lambda b: b.pid is not None and _alive(b.pid)
                    and b.event in ("SessionStart", "statusline") and int(world.pane("orchestrator", "#{pane_pid}"))
                    != pane_pid)
    _send(world, "orchestrator", "Which word? MARK-2")
    second = _turn_with(world, "MARK-2")
    assert "ZEBRA-17" in json.dumps(second.messages), "the resumed runtime sent the earlier turn"
    assert "opus" in (second.model or ""), second.model
    steady = world.reconcile()
    assert steady.returncode == 0 and "0 to spawn, 0 to restart" in steady.stdout, steady.stdout
    world.wait_beat("orchestrator", "after the second turn", lambda b: b.state == "idle")
    assert retry_until(lambda: any("MARK-2" in path.read_text() for path in
                                   (world.home / ".claude" / "projects").glob(f"*/{session}.jsonl")), UP_S)

    # A model change (as a budget step down does): a restart on sonnet, same conversation.
    fleet = (world.repo / "fleet.yaml").read_text().replace("  model: opus\n", "  model: sonnet\n")
    (world.repo / "fleet.yaml").write_text(fleet)
    moved = world.reconcile()
    assert moved.returncode == 0 and "1 to restart" in moved.stdout, moved.stdout + moved.stderr
    world.wait_beat("orchestrator", "on sonnet", lambda b: b.model == "sonnet" and b.event in ("SessionStart",
                                                                                              "statusline"))
    _send(world, "orchestrator", "And now? MARK-3")
    third = _turn_with(world, "MARK-3")
    assert "sonnet" in (third.model or ""), third.model
    text = json.dumps(third.messages)
    assert "ZEBRA-17" in text and "MARK-2" in text, "the step down kept the whole conversation"
    assert (world.state / TENANT / "conversations" / "orchestrator").read_text().strip() == session


def _status_agent(world: World, agent: str) -> dict[str, Any]:
    text = (world.repo / "status" / HOST / f"{TENANT}.yaml").read_text()
    doc = json.loads(text[text.index("{"):])
    found: dict[str, Any] = next(a for a in doc["agents"] if a["name"] == agent)
    return found


def _ps(world: World) -> dict[str, dict[str, Any]]:
    ps = world.fleet("ps", str(world.repo), "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert ps.returncode == 0, ps.stderr
    return {row["agent"]: row for row in json.loads(ps.stdout)}


def _roster(world: World, old: str, new: str) -> None:
    path = world.repo / "tenants" / TENANT / "roster.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("status", "held", "said", "condition"), [
    (401, "auth", "Invalid API key", "AuthFailed"),
    (429, "usage-limit", "Request rejected (429)", "UsageLimit"),
], ids=["401", "429"])
def test_a_provider_refusal_holds_the_claude_agent_with_its_reason_and_no_restart_loop(
        world: World, status: int, held: str, said: str, condition: str) -> None:
    """The provider answers 401 (or 429): Claude Code retries, then fires `StopFailure`
    with `error: authentication_failed` (`rate_limit`) and stays at its prompt (measured
    with 2.1.328). fleet-hook makes that `waiting` with `held: auth` (`usage-limit`);
    reconcile after reconcile the agent is reported waiting with the reason and never
    restarted; a turn that succeeds once the login is fixed clears the hold."""
    # One retry instead of Claude Code's ten (about a minute of backoff): the same event, sooner.
    _roster(world, f"      ANTHROPIC_API_KEY: {KEY}\n", f"      ANTHROPIC_API_KEY: {KEY}\n"
            "      CLAUDE_CODE_MAX_RETRIES: \"1\"\n")
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    world.wait_beat("orchestrator", "from Claude Code", lambda b: b.event in ("SessionStart", "statusline"))
    world.anthropic.fail = status  # type: ignore[attr-defined]
    pane_pid = world.pane("orchestrator", "#{pane_pid}")
    sent = world.fleet("agent", "send", str(world.repo), "orchestrator", "Plan the week", "--host", HOST,
                       "--state-dir", str(world.state))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    beat = world.wait_beat("orchestrator", f"held by the {status}", lambda b: b.held == held)
    assert beat.state == "waiting" and said in (beat.reason or ""), beat
    for _ in range(3):
        done = world.reconcile()
        assert done.returncode == 0 and "0 to spawn, 0 to restart, 0 to stop" in done.stdout, done.stdout
        assert f"waiting  jarvis/orchestrator: held ({held})" in done.stdout, done.stdout
    assert world.pane("orchestrator", "#{pane_pid}") == pane_pid, "never restarted"
    restarts = world.state / TENANT / "restarts.json"
    assert not restarts.exists() or "orchestrator" not in restarts.read_text(), "no restart counted"
    agent = _status_agent(world, "orchestrator")
    healthy = next(c for c in agent["conditions"] if c["type"] == "Healthy")
    assert agent["health"] == "waiting" and healthy["reason"] == condition, agent
    assert said in healthy["message"]
    row = _ps(world)["orchestrator"]
    assert (row["health"], row["reason"], row["heartbeat_state"]) == ("waiting", held, "waiting"), row

    # The login fixed: the next turn succeeds, the hold clears, the agent is healthy again.
    world.anthropic.fail = None  # type: ignore[attr-defined]
    _send(world, "orchestrator", "Plan the week again")
    world.wait_beat("orchestrator", "after a good turn", lambda b: b.held is None and b.state == "idle")
    after = world.reconcile()
    assert after.returncode == 0 and "0 to restart" in after.stdout, after.stdout
    assert _health(world)["orchestrator"] == "healthy"


def test_a_claude_agent_held_by_a_usage_limit_is_resumed_by_reconcile_once_the_limit_is_over(world: World) -> None:
    """The provider answers 429 until the limit is over, then 200: once the back-off after
    the hold has passed (`usage_limit_retry: 2s` here, 15 min by default), a reconcile types
    the resume message itself, Claude Code sends the next turn, the hold clears, and the
    agent is healthy again in the same pane: no restart, no person."""
    _roster(world, f"      ANTHROPIC_API_KEY: {KEY}\n", f"      ANTHROPIC_API_KEY: {KEY}\n"
            "      CLAUDE_CODE_MAX_RETRIES: \"1\"\n")
    fleet = world.repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("  startup_grace: 90s\n", "  startup_grace: 90s\n  usage_limit_retry: 2s\n"))
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    world.wait_beat("orchestrator", "from Claude Code", lambda b: b.event in ("SessionStart", "statusline"))
    world.anthropic.fail = 429  # type: ignore[attr-defined]
    pane_pid = world.pane("orchestrator", "#{pane_pid}")
    sent = world.fleet("agent", "send", str(world.repo), "orchestrator", "Plan the week", "--host", HOST,
                       "--state-dir", str(world.state))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    world.wait_beat("orchestrator", "held by the 429", lambda b: b.held == "usage-limit")
    world.anthropic.fail = None  # type: ignore[attr-defined]  # the limit is over
    turns = len(world.anthropic.turns())  # type: ignore[attr-defined]

    # The dry-run lists the resume with its reason once the back-off has passed, and types nothing.
    seen: list[dict[str, Any]] = []
    assert retry_until(lambda: bool(seen.append(world.plan()) or seen[-1].get("resume")), 60, 0.5), seen[-1]
    [resume] = seen[-1]["resume"]
    assert resume["agent"] == "orchestrator" and "retry back-off 2s after the hold" in resume["reason"], resume
    assert world.heartbeat("orchestrator").held == "usage-limit"  # type: ignore[union-attr]

    done = world.reconcile()
    assert done.returncode == 0 and "0 to restart" in done.stdout, done.stdout + done.stderr
    assert "> resume" in done.stdout and "jarvis/orchestrator" in done.stdout, done.stdout
    record = json.loads((world.state / TENANT / "resumes.json").read_text())["orchestrator"]
    assert record["attempts"] == 1 and record["sent_at"], record
    beat = world.wait_beat("orchestrator", "after the resumed turn",
                           lambda b: b.held is None and b.state == "idle" and record["message"] in b.acks)
    assert beat.held is None
    later = world.anthropic.turns()[turns:]  # type: ignore[attr-defined]
    assert any("The usage limit has reset; continue where you left off." in t.text() for t in later), later
    after = world.reconcile()
    assert after.returncode == 0 and "0 to restart" in after.stdout and "> resume" not in after.stdout, after.stdout
    assert _health(world)["orchestrator"] == "healthy"
    assert world.pane("orchestrator", "#{pane_pid}") == pane_pid, "resumed in place, never restarted"
    assert "orchestrator" not in json.loads((world.state / TENANT / "resumes.json").read_text())


def test_a_claude_agent_on_its_trust_dialog_is_waiting_not_restarted(world: World) -> None:
    """`trust_workdir: false`: Claude Code stops on its folder-trust dialog before any
    hook fires, so no heartbeat comes; past the start-up grace the agent is silent, its
    screen is read and the dialog named: waiting (dialog-trust), not restarted."""
    _roster(world, "    runtime: claude\n", "    runtime: claude\n    trust_workdir: false\n")
    fleet = world.repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("startup_grace: 90s", "startup_grace: 8s"))
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    assert retry_until(lambda: "Yes, I trust this folder" in world.screen("orchestrator"), UP_S), \
        world.screen("orchestrator")
    world.wait_beat("enhancer", "from fleet-hook launch")
    pane_pid = world.pane("orchestrator", "#{pane_pid}")
    created = int(world.pane("orchestrator", "#{session_created}"))
    assert retry_until(lambda: time.time() - created > 10, 30, 0.2)
    for _ in range(3):
        done = world.reconcile()
        assert done.returncode == 0 and "0 to spawn, 0 to restart, 0 to stop" in done.stdout, done.stdout
        assert "waiting  jarvis/orchestrator: waiting on a dialog (dialog-trust)" in done.stdout, done.stdout
    assert world.pane("orchestrator", "#{pane_pid}") == pane_pid, "never restarted"
    assert world.heartbeat("orchestrator") is None, "no hook fired before the dialog"
    row = _ps(world)["orchestrator"]
    assert (row["health"], row["reason"]) == ("waiting", "dialog-trust"), row
    assert "trust_workdir" in row["health_message"]
    status = _status_agent(world, "orchestrator")
    assert status["health"] == "waiting", status
    assert next(c for c in status["conditions"] if c["type"] == "Healthy")["reason"] == "DialogTrust"
    assert _ps(world)["enhancer"]["health"] == "healthy"


def test_a_401_holds_the_codex_agent_read_from_its_rollout(world: World) -> None:
    """Codex 0.169.0 runs no `notify` for a failed turn and stays at its prompt; the only
    record is its rollout's `task_complete` with an `error` (http_status_code 401). The
    observe step reads it (only rollouts changed since the agent's last event): the agent
    is waiting (auth), never restarted; a good turn after it clears the hold."""
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    world.wait_beat("enhancer", "from fleet-hook launch")
    assert retry_until(lambda: "? for shortcuts" in world.screen("enhancer"), UP_S), world.screen("enhancer")
    world.openai.fail = 401  # type: ignore[attr-defined]
    pane_pid = world.pane("enhancer", "#{pane_pid}")
    sent = world.fleet("agent", "send", str(world.repo), "enhancer", "Review the plan", "--host", HOST,
                       "--state-dir", str(world.state))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert retry_until(lambda: _ps(world)["enhancer"]["reason"] == "auth", UP_S, 0.5), \
        f"{_ps(world)['enhancer']}\n{world.screen('enhancer')}"
    row = _ps(world)["enhancer"]
    assert row["health"] == "waiting" and "401" in row["health_message"], row
    for _ in range(2):
        done = world.reconcile()
        assert done.returncode == 0 and "0 to spawn, 0 to restart, 0 to stop" in done.stdout, done.stdout
        assert "waiting  jarvis/enhancer: held (auth)" in done.stdout, done.stdout
    assert world.pane("enhancer", "#{pane_pid}") == pane_pid, "never restarted"
    assert _status_agent(world, "enhancer")["health"] == "waiting"

    world.openai.fail = None  # type: ignore[attr-defined]
    _send(world, "enhancer", "Review the plan again")
    assert retry_until(lambda: _ps(world)["enhancer"]["health"] == "healthy", UP_S, 0.5), _ps(world)["enhancer"]


#: Both runtimes ask their provider for a title for each new prompt, in a request of its
#: own that quotes the prompt (measured with Claude Code 2.1.328 and Codex 0.169.0); it is
#: not a turn of the conversation.
TITLE_REQUESTS = ("Write the title in the predominant language of the session",  # Claude Code
                  "Generate a concise, single-line task title")  # Codex


def _conversation_turns(fake: Any, marker: str) -> list[Any]:
    """The provider's requests of the agent's conversation that hold `marker`."""
    return [t for t in fake.turns()
            if marker in json.dumps(t.messages) and not any(title in t.text() for title in TITLE_REQUESTS)]


def test_a_message_to_a_working_agent_waits_for_its_turn_and_arrives_once_and_a_split_changes_nothing(
    world: World,
) -> None:
    """Both runtimes, one slow turn each (the fakes hold every answer 8 s): a second
    message sent meanwhile is typed only after the turn ended and reaches the provider in
    exactly one request. Before that, a person splits each agent's window (the new pane
    listed first) and adds a window: reconcile plans nothing and the sends still reach the
    agents' own panes."""
    done = world.reconcile()
    assert done.returncode == 0, done.stdout + done.stderr
    world.wait_beat("orchestrator", "from Claude Code", lambda b: b.event in ("SessionStart", "statusline"))
    world.wait_beat("enhancer", "from fleet-hook launch")
    assert retry_until(lambda: "? for shortcuts" in world.screen("enhancer"), UP_S), world.screen("enhancer")
    for agent in ("orchestrator", "enhancer"):
        world.tmux("split-window", "-b", "-t", f"={agent}:", "sleep", "600")
        world.tmux("new-window", "-t", f"={agent}", "sleep", "600")
        assert world.pane(agent, "#{pane_id}") != world.pane(agent, "#{@fleet-pane}")
    steady = world.reconcile("--dry-run", "--detailed-exitcode")
    assert steady.returncode == 0, steady.stdout + steady.stderr

    for agent, fake in (("orchestrator", world.anthropic), ("enhancer", world.openai)):  # type: ignore[attr-defined]
        fake.delay = 8.0
        first = world.fleet("agent", "send", str(world.repo), agent, "First task TASK-A", "--host", HOST,
                            "--state-dir", str(world.state), "--output", "json")
        assert first.returncode == 0, first.stdout + first.stderr
        first_id = json.loads(first.stdout)["id"]
        assert retry_until(lambda f=fake, i=first_id: bool(_conversation_turns(f, i)), UP_S), world.screen(agent)
        second = world.fleet("agent", "send", str(world.repo), agent, "Second task TASK-B", "--verify", "--timeout",
                             str(UP_S), "--host", HOST, "--state-dir", str(world.state), "--output", "json")
        assert second.returncode == 0, f"{agent}: {second.stdout} {second.stderr}\n{world.screen(agent)}"
        assert json.loads(second.stdout)["status"] == "verified" and "waited" in second.stderr, second.stderr
        second_id = json.loads(second.stdout)["id"]
        fake.delay = 0.0
        # Claude Code acks at the submit: count once its turn is over, as Codex's ack is
        world.wait_beat(agent, "after the second turn", lambda b, i=second_id: b.state == "idle" and b.ack == i)
        assert retry_until(lambda f=fake, i=second_id: bool(_conversation_turns(f, i)), UP_S)

        turn_a = _conversation_turns(fake, first_id)[0]
        with_b = _conversation_turns(fake, second_id)
        assert len(with_b) == 1, f"{agent}: the second message reached the provider {len(with_b)} times"
        answered_a = fake.answered_at(turn_a)
        typed = {t["id"]: datetime.fromisoformat(t["at"]).timestamp() for t in json.loads(
            (world.state / TENANT / "outbox" / f"{agent}.json").read_text())["typed"]}
        assert answered_a is not None and typed[second_id] > answered_a and with_b[0].at > answered_a, \
            f"{agent}: the second message was typed into the first turn"
        print(f"\n{agent}: the second message arrived {with_b[0].at - answered_a:.2f} s after the first turn's answer")
    assert world.reconcile().returncode == 0
    assert _health(world) == {"orchestrator": "healthy", "enhancer": "healthy"}

    # The runtime's own pane dies while the person's split lives on: dead, restarted.
    pane = world.pane("enhancer", "#{@fleet-pane}")
    pid = int(world.tmux("display-message", "-p", "-t", pane, "#{pane_pid}").strip())
    os.killpg(pid, signal.SIGKILL)
    assert retry_until(lambda: world.tmux("display-message", "-p", "-t", pane, "#{pane_dead}").strip() == "1", 30)
    done = world.reconcile()
    assert done.returncode == 0 and "1 to restart" in done.stdout, done.stdout + done.stderr
    world.wait_beat("enhancer", "from the respawned Codex", lambda b: b.pid != pid and _alive(b.pid))
    assert world.pane("enhancer", "#{@fleet-pane}") != pane
