"""The headline proof: four REAL agents from the starter role library, up through `fleet reconcile`.

An orchestrator on Claude Code, an enhancer on Codex and a coder on each, their roles
copied from examples/fleets/starter/roles (what `fleet init` seeds), on a fresh HOME
that already holds a person's own `~/.claude.json` and `~/.codex/config.toml`, full of
keys the fleet does not own. No key is pressed by the test. It checks that all four
come up healthy by heartbeat (`fleet ps`), that a Claude pane's launch environment holds
the 200k context settings (tmux's session environment and the runtime's own
/proc/PID/environ), that each agent's persona (with its skills) is in the requests its
provider receives, and that the person's files keep every key they had once the
runtimes have started and answered a turn: only the keys the fleet merges differ, plus
what the runtime itself is known to rewrite (listed below, measured).

It prints the time from the start of `fleet reconcile` to the four healthy; that figure
is measured, not asserted (docs/runtimes.md, "Measured here").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from reconciler.model.observed import SocketKey
from reconciler.runtimes.claude import merge_claude_json
from tests.plugins.tmux_server import kill_server, retry_until
from tests.runtimes.fakes import FakeProvider, end_leftovers, serve
from tests.runtimes.test_fleet_reconcile_real import BIN, CLI_S, HOST, KEY, TENANT, UP_S, VENV_BIN, World
from tests.runtimes.test_fleet_reconcile_real import FLEET as REAL_FLEET

STARTER_ROLES = Path(__file__).resolve().parents[2] / "examples" / "fleets" / "starter" / "roles"
#: agent -> (role, runtime): the issue's four.
AGENTS = {
    "orchestrator": ("orchestrator", "claude"),
    "enhancer": ("enhancer", "codex"),
    "coder-claude": ("coder", "claude"),
    "coder-codex": ("coder", "codex"),
}

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(not ((BIN / "claude").exists() and (BIN / "codex").exists()),
                       reason=f"claude and codex are not installed in {BIN.parent.parent}: run ./dev setup (needs npm)"),
]

FLEET = REAL_FLEET.replace("name: real\n", "name: starter-real\n")  # the same runtimes and defaults

CLAUDE_AGENT = """\
  - name: {name}
    role: {role}
    runtime: claude
    workdir: {work}
    env:
      ANTHROPIC_BASE_URL: {anthropic}
      ANTHROPIC_API_KEY: {key}
"""

CODEX_AGENT = """\
  - name: {name}
    role: {role}
    runtime: codex
    workdir: {work}
    env:
      FAKE_KEY: {key}
"""

#: A person's ~/.claude.json as it looks after months of use (the values are made up).
CLAUDE_JSON: dict[str, Any] = {
    "numStartups": 212,
    "installMethod": "npm-global",
    "autoUpdates": True,
    "theme": "dark-daltonized",
    "verbose": True,
    "tipsHistory": {"new-user-warmup": 7, "memory-command": 3},
    "oauthAccount": {"accountUuid": "00000000-0000-4000-8000-00000000a11c", "emailAddress": "ada@example.com",
                     "organizationUuid": "00000000-0000-4000-8000-0000000000c0", "organizationName": "Ada's org"},
    "userID": "f" * 64,
    "projects": {
        "/home/ada/src/other": {"allowedTools": ["Bash(git status)"], "hasTrustDialogAccepted": True,
                                "lastCost": 1.25, "history": [{"display": "fix the build", "pastedContents": {}}]},
        "/home/ada/notes": {"hasTrustDialogAccepted": False, "mcpServers": {}},
    },
    "mcpServers": {"docs": {"type": "stdio", "command": "/bin/true", "args": [], "env": {}}},
    "customApiKeyResponses": {"approved": ["previously-approved-key-tail"], "rejected": ["some-rejected-tail"]},
    "adaCustomSetting": {"nested": [1, 2, {"three": 3}]},
}

CODEX_CONFIG = """\
# Ada's Codex settings. Her own comments stay where she put them.
model_provider = "fake"
approval_policy = "never"
model_reasoning_effort = "high"   # she likes it thorough

[model_providers.fake]
name = "fake"
base_url = "{openai}/v1"
wire_api = "responses"
env_key = "FAKE_KEY"

[profiles.fast]
model = "gpt-5.5"
model_reasoning_effort = "low"

# a folder she keeps untrusted on purpose
[projects."/home/ada/src/other"]
trust_level = "untrusted"

[mcp_servers.docs]
command = "/bin/true"
args = ["--stdio"]
enabled = false

[tui]
ada_custom_key = "kept"
"""

#: What Claude Code 2.1.328 itself rewrites in a person's ~/.claude.json (measured here,
#: after the fleet's merge): it counts its starts, and its migration drops each project's
#: `history` (saving the file first as ~/.claude/backups/.claude.json.backup.<ms>). It
#: also adds keys of its own (first start, caches, per-project metrics); those are new,
#: so nothing of the person's is lost by them. Everything else must be as it was.
CLAUDE_OWN_REWRITES = (re.compile(r"/numStartups: 212 -> \d+"), re.compile(r"/projects/[^ ]+/history \(gone\)"))


def _agents_yaml(anthropic: FakeProvider, work: Path) -> str:
    blocks = []
    for name, (role, runtime) in AGENTS.items():
        template = CLAUDE_AGENT if runtime == "claude" else CODEX_AGENT
        blocks.append(template.format(name=name, role=role, work=work / name, anthropic=anthropic.base_url, key=KEY))
    return f"apiVersion: fleet.mosaicstack.dev/v1\nkind: Roster\ntenant: {TENANT}\nhost: {HOST}\nagents:\n" + \
        "".join(blocks)


@pytest.fixture
def starter(tmp_path: Path, tmux_socket: SocketKey) -> Iterator[World]:
    assert tmux_socket.name is not None
    home, state, work, repo = (tmp_path / n for n in ("home", "state", "work", "repo"))
    for folder in (home / ".codex", state, repo / "tenants" / TENANT, *(work / name for name in AGENTS)):
        folder.mkdir(parents=True)
    shutil.copytree(STARTER_ROLES, repo / "roles")
    with serve("anthropic") as anthropic, serve("openai") as openai:
        (repo / "fleet.yaml").write_text(FLEET.format(socket=tmux_socket.name))
        (repo / "tenants" / TENANT / "roster.yaml").write_text(_agents_yaml(anthropic, work))
        (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.format(openai=openai.base_url))
        (home / ".claude.json").write_text(json.dumps(CLAUDE_JSON, indent=2))
        env = {key: value for key, value in os.environ.items() if key in ("TMUX_TMPDIR", "TZ")}
        env.update(HOME=str(home), PATH=f"{VENV_BIN}:{BIN}:/usr/local/bin:/usr/bin:/bin", TERM="xterm-256color",
                   LANG="C.UTF-8", FLEET_STATE_DIR=str(state), XDG_RUNTIME_DIR=str(tmp_path / "no-systemd"))
        (tmp_path / "no-systemd").mkdir()
        world = World(repo, home, state, work, tmux_socket.name, env)
        world.anthropic, world.openai = anthropic, openai  # type: ignore[attr-defined]
        yield world
    kill_server(tmux_socket.name)
    left = end_leftovers(tmp_path)
    assert not left, f"the runtimes left processes behind after their tmux server exited: {left}"


def _ps(world: World) -> dict[str, dict[str, Any]]:
    done = world.fleet("ps", str(world.repo), "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert done.returncode == 0, done.stderr
    return {row["agent"]: row for row in json.loads(done.stdout)}


def _at_prompts(world: World) -> bool:
    for agent, (_, runtime) in AGENTS.items():
        beat = world.heartbeat(agent)
        ready = (beat is not None and beat.event == "statusline") if runtime == "claude" else \
            "? for shortcuts" in world.screen(agent)
        if not ready:
            return False
    return True


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _prompt(role: str) -> str:
    """The text the adapter gives the runtime for `role`: its persona, then its skills."""
    from reconciler.core.desired import role_prompt  # noqa: PLC0415
    from reconciler.spec.load import load_repo  # noqa: PLC0415

    text = role_prompt(load_repo(STARTER_ROLES.parent).roles[role])
    assert text is not None
    return text


def _turns_with(fake: FakeProvider, marker: str, prompt: str, world: World, agent: str) -> list[str]:
    """What the model was shown in each request holding `marker`, once one of them also
    holds `prompt`. Claude Code sends side requests with the user's line too (a title for
    the session, under another system prompt), and the ack comes before the main request."""
    found: list[str] = []

    def check() -> bool:
        found[:] = [t.system + "\n" + "\n".join(_texts(t.messages)) for t in fake.turns()
                    if marker in json.dumps(t.messages)]
        return any(prompt in text for text in found)

    assert retry_until(check, UP_S, 0.05), f"{agent}: no request with {marker} and its persona; " \
        f"{len(found)} with the marker: {[text[:300] for text in found]}\n{world.screen(agent)}"
    return found


def _lost_keys(before: Any, after: Any, path: str = "") -> list[str]:
    """Every key path of `before` that `after` lacks or holds with another value; a list
    may only have gained items (an approved key appended), never lost one."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [lost for key, value in before.items()
                for lost in ([f"{path}/{key} (gone)"] if key not in after else
                             _lost_keys(value, after[key], f"{path}/{key}"))]
    if isinstance(before, list) and isinstance(after, list):
        return [] if all(item in after for item in before) else [f"{path}: {before!r} -> {after!r}"]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def test_four_real_agents_from_the_starter_library_come_up_healthy(starter: World) -> None:
    world = starter
    started = time.monotonic()
    first = subprocess.Popen([str(VENV_BIN / "fleet"), "reconcile", str(world.repo), "--host", HOST, "--state-dir",
                              str(world.state)], env=world.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, stdin=subprocess.DEVNULL)
    output, _ = first.communicate(timeout=CLI_S)
    reconciled = time.monotonic() - started
    assert first.returncode == 0 and "4 to spawn" in output, output
    rows: dict[str, dict[str, Any]] = {}

    def all_healthy() -> bool:
        rows.update(_ps(world))
        return all(rows.get(agent, {}).get("health") == "healthy" and rows[agent]["heartbeat_state"] == "idle"
                   for agent in AGENTS)

    assert retry_until(all_healthy, UP_S, 0.2), {a: (r["health"], r["health_message"]) for a, r in rows.items()}
    healthy = time.monotonic() - started
    print(f"\nfour real agents healthy (fleet ps) {healthy:.2f} s after `fleet reconcile` started "
          f"(the reconcile itself took {reconciled:.2f} s)")
    # Each at its prompt, no dialog passed by hand: Claude Code's status line ticks (its
    # TUI is drawn), Codex shows its prompt's footer.
    beats = {agent: world.wait_beat(agent, "from its runtime") for agent in AGENTS}
    assert retry_until(partial(_at_prompts, world), UP_S, 0.1), {a: world.screen(a)[-400:] for a in AGENTS}
    print(f"all four at their prompts {time.monotonic() - started:.2f} s after `fleet reconcile` started")
    for agent, (_, runtime) in AGENTS.items():
        expected = ("SessionStart", "statusline") if runtime == "claude" else ("launch",)
        assert beats[agent].event in expected, beats[agent]

    # The 200k context settings: in the session's launch env and in the runtime's own env.
    for agent in ("orchestrator", "coder-claude"):
        session_env = world.tmux("show-environment", "-t", f"={agent}")
        assert "CLAUDE_CODE_DISABLE_1M_CONTEXT=1" in session_env.splitlines(), session_env
        assert "CLAUDE_CODE_AUTO_COMPACT_WINDOW=200000" in session_env.splitlines(), session_env
        pid = beats[agent].pid
        assert pid is not None
        runtime_env = _environ(pid)
        assert runtime_env.get("CLAUDE_CODE_DISABLE_1M_CONTEXT") == "1", sorted(runtime_env)
        assert runtime_env.get("CLAUDE_CODE_AUTO_COMPACT_WINDOW") == "200000", sorted(runtime_env)
        assert "claude" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")

    # Each agent's persona and skills are in its provider's request, and only its own.
    providers = {"claude": world.anthropic, "codex": world.openai}  # type: ignore[attr-defined]
    for agent, (role, runtime) in AGENTS.items():
        marker = f"Status please, {agent}-MARK"
        sent = world.fleet("agent", "send", str(world.repo), agent, marker, "--verify", "--timeout", str(UP_S),
                           "--host", HOST, "--state-dir", str(world.state), "--output", "json")
        assert sent.returncode == 0 and json.loads(sent.stdout)["status"] == "verified", \
            f"{agent}: {sent.stdout} {sent.stderr}\n{world.screen(agent)}"
        shown = _turns_with(providers[runtime], marker, _prompt(role).strip(), world, agent)
        others = {r for r, _ in AGENTS.values()} - {role}
        assert not any(_prompt(other).splitlines()[0] in text for other in others for text in shown), \
            f"{agent}: another role's persona reached it"

    # The person's files keep every key they had. First the fleet's own merge, as prepare()
    # ran it for both workdirs (pure): nothing lost, only additions.
    merged = json.dumps(CLAUDE_JSON)
    for agent in ("orchestrator", "coder-claude"):
        merged = merge_claude_json(merged, str(world.work / agent), True, KEY)
    assert _lost_keys(CLAUDE_JSON, json.loads(merged)) == []
    # Then the file itself, after both runtimes started and answered a turn.
    claude_after = json.loads((world.home / ".claude.json").read_text())
    lost = _lost_keys(CLAUDE_JSON, claude_after)
    assert not [p for p in lost if not any(r.fullmatch(p) for r in CLAUDE_OWN_REWRITES)], \
        f"~/.claude.json lost the person's keys: {lost}"
    for agent in ("orchestrator", "coder-claude"):
        assert claude_after["projects"][str(world.work / agent)]["hasTrustDialogAccepted"] is True
    assert claude_after["hasCompletedOnboarding"] is True and KEY[-20:] in claude_after["customApiKeyResponses"][
        "approved"]
    changed = sorted(k for k in CLAUDE_JSON if claude_after.get(k) != CLAUDE_JSON[k])
    added = sorted(set(claude_after) - set(CLAUDE_JSON))
    print(f"~/.claude.json: Claude Code's own rewrites {lost}; top-level keys changed {changed}, added {added}")

    codex_text = (world.home / ".codex" / "config.toml").read_text()
    openai = world.openai  # type: ignore[attr-defined]
    original = CODEX_CONFIG.format(openai=openai.base_url)
    before, after = tomlkit.parse(original).unwrap(), tomlkit.parse(codex_text).unwrap()
    lost = _lost_keys({k: v for k, v in before.items() if k != "projects"}, after)
    lost += _lost_keys(before["projects"], after["projects"], "/projects")
    assert not lost, f"~/.codex/config.toml lost the person's keys: {lost}\n{codex_text}"
    comments = [line.strip() for line in original.splitlines() if "#" in line]
    assert all(comment in codex_text for comment in comments), codex_text
    for agent in ("enhancer", "coder-codex"):
        assert after["projects"][str(world.work / agent)]["trust_level"] == "trusted"
    print(f"~/.codex/config.toml: top-level keys added {sorted(set(after) - set(before))}")


def _texts(messages: list[Any]) -> Iterator[str]:
    """Every text of a request's messages (Anthropic content blocks, OpenAI input items)."""
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                yield content
            elif isinstance(content, list):
                yield from (str(b.get("text", "")) for b in content if isinstance(b, dict))


def _send(world: World, agent: str, text: str) -> None:
    sent = world.fleet("agent", "send", str(world.repo), agent, text, "--verify", "--timeout", str(UP_S),
                       "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert sent.returncode == 0 and json.loads(sent.stdout)["status"] == "verified", \
        f"{agent}: {sent.stdout} {sent.stderr}\n{world.screen(agent)}"


def _codex_turn(world: World, marker: str) -> Any:
    """The Codex agent's own request holding `marker` (not its side request for a title)."""
    found: list[Any] = []

    def check() -> bool:
        found[:] = [t for t in world.openai.turns()  # type: ignore[attr-defined]
                    if marker in json.dumps(t.messages) and "task title" not in json.dumps(t.messages)]
        return bool(found)

    assert retry_until(check, UP_S, 0.05), f"no request with {marker}\n{world.screen('coder-codex')}"
    return found[0]


def test_a_codex_agent_resumes_its_conversation_after_a_kill_and_on_a_new_model(starter: World) -> None:
    """Codex picks its own session id; the fleet reads it back (the thread `notify` named,
    whose rollout names the agent's workdir) and restarts with `codex resume ID`: the
    provider is sent the earlier turns again, the second time on the new model."""
    world, agent = starter, "coder-codex"
    first = world.reconcile()
    assert first.returncode == 0, first.stdout + first.stderr
    world.wait_beat(agent, "from fleet-hook launch")
    plan = {a["agent"]: a["command"] for a in world.plan()["actions"]}
    assert agent not in plan, "nothing to do while it runs"
    _send(world, agent, "Remember the word ZEBRA-17")
    beat = world.wait_beat(agent, "naming its thread", lambda b: bool(b.threads))
    assert retry_until(lambda: any((world.home / ".codex" / "sessions").rglob(f"rollout-*-{t}.jsonl")
                                   for t in (world.heartbeat(agent) or beat).threads), UP_S), beat.threads

    # Killed: the plan restarts it as `codex resume THREAD`, same spec hash.
    pane_pid = int(world.pane(agent, "#{pane_pid}"))
    spec_hash = world.pane(agent, "#{@fleet-spec-hash}")
    os.killpg(pane_pid, 9)
    assert retry_until(lambda: world.pane(agent, "#{pane_dead}") == "1", 30), world.screen(agent)
    command = {a["agent"]: a["command"] for a in world.plan()["actions"]}[agent]
    thread = command[command.index("resume") + 1]
    assert thread in beat.threads and command[command.index("resume") - 1] == str(BIN / "codex"), command
    done = world.reconcile()
    assert done.returncode == 0 and "1 to restart" in done.stdout, done.stdout + done.stderr
    assert world.pane(agent, "#{@fleet-spec-hash}") == spec_hash
    world.wait_beat(agent, "from the resumed runtime", lambda b: b.event == "launch" and b.pid != beat.pid)
    _send(world, agent, "Which word? MARK-2")
    second = _codex_turn(world, "MARK-2")
    assert "ZEBRA-17" in json.dumps(second.messages), "the resumed runtime sent the earlier turn"
    assert second.model == "gpt-5.5", second.model

    # A model change (as a budget step down does): a restart on gpt-5.4, same conversation.
    roster = world.repo / "tenants" / TENANT / "roster.yaml"
    roster.write_text(roster.read_text().replace("    role: coder\n    runtime: codex\n",
                                                 "    role: coder\n    runtime: codex\n    model: gpt-5.4\n"))
    fleet = world.repo / "fleet.yaml"
    fleet.write_text(fleet.read_text().replace("ladder: [gpt-5.5]", "ladder: [gpt-5.5, gpt-5.4]"))
    command = {a["agent"]: a["command"] for a in world.plan()["actions"]}[agent]
    assert command[command.index("resume") + 1] == thread and "gpt-5.4" in command, command
    moved = world.reconcile()
    assert moved.returncode == 0 and "1 to restart" in moved.stdout, moved.stdout + moved.stderr
    world.wait_beat(agent, "on gpt-5.4", lambda b: b.model == "gpt-5.4")
    _send(world, agent, "And now? MARK-3")
    third = _codex_turn(world, "MARK-3")
    assert third.model == "gpt-5.4", third.model
    text = json.dumps(third.messages)
    assert "ZEBRA-17" in text and "MARK-2" in text, "the step down kept the whole conversation"
    assert _prompt("coder").strip() in third.system + "\n".join(_texts(third.messages)), "and its persona"
    assert thread in world.wait_beat(agent, "after the third turn", lambda b: b.state == "idle").threads
