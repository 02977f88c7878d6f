"""The real Claude Code and Codex, in real tmux, against loopback fakes, with our adapters.

Each runtime is installed by `./dev setup` into `.runtimes/` at the pinned versions; the
tests skip, saying so, when it is not there. Every test gets a fresh HOME, a private
tmux socket and a fake provider on 127.0.0.1: nothing leaves the machine. No key is
pressed by the test before the runtime is up; a message is pasted as `fleet agent send`
does (load-buffer, paste-buffer, then Enter as a separate key).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.drivers.runtime_config import write_configs
from reconciler.model.observed import SocketKey
from reconciler.runtimes.base import AgentRun, RuntimeAdapter, RuntimePaths
from reconciler.runtimes.claude import ClaudeAdapter
from reconciler.runtimes.codex import CodexAdapter
from tests.plugins.tmux_server import kill_server, retry_until
from tests.runtimes.fakes import FakeProvider, end_leftovers, serve

BIN = Path(__file__).resolve().parents[2] / ".runtimes" / "node_modules" / ".bin"
HOOK = str(Path(sys.executable).with_name("fleet-hook"))
PERSONA = "You are Mos, the orchestrator. Persona marker P-7731."
#: A cold start measured 0.7 s (Claude Code) and about 2 s (Codex) on an idle machine;
#: the deadline is for a loaded two-core CI run (polling, so a fast run stays fast).
UP_S = 90.0


def installed(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not (BIN / name).exists(),
                              reason=f"{name} is not installed in {BIN.parent.parent}: run ./dev setup (needs npm)")


pytestmark = pytest.mark.tmux


@dataclass
class Pane:
    socket: str
    target: str
    state_dir: Path
    home: Path

    def tmux(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], input=stdin, capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target)

    def heartbeat(self) -> dict[str, object] | None:
        try:
            return json.loads((self.state_dir / "jarvis" / "heartbeats" / f"{self.target}.json").read_text())
        except (OSError, ValueError):
            return None

    def send(self, text: str) -> None:
        """As `fleet agent send` does: paste the line as one block, then Enter on its own."""
        self.tmux("load-buffer", "-b", "fleet-msg", "-", stdin=text)
        self.tmux("paste-buffer", "-b", "fleet-msg", "-t", self.target, "-d")
        assert retry_until(lambda: text[:20] in self.screen(), UP_S), self.screen()
        self.tmux("send-keys", "-t", self.target, "Enter")

    def pane_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.target, "#{pane_pid}").strip())


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1 and len(chain) < 20:
        chain.append(pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return chain


@pytest.fixture
def world(tmp_path: Path, tmux_socket: SocketKey) -> Iterator[tuple[Path, Path, Path]]:
    home, state, work = tmp_path / "home", tmp_path / "state", tmp_path / "work"
    for folder in (home, state, work):
        folder.mkdir()
    yield home, state, work
    assert tmux_socket.name is not None
    kill_server(tmux_socket.name)
    left = end_leftovers(tmp_path)
    assert not left, f"the runtime left processes behind after its tmux server exited: {left}"


def start(adapter: RuntimeAdapter, run: AgentRun, paths: RuntimePaths, socket: SocketKey,
          extra_env: dict[str, str]) -> tuple[Pane, float]:
    """Write the adapter's files, start its launch in a new tmux session; seconds to first heartbeat."""
    write_configs(adapter.prepare(run, paths))
    launch = adapter.launch(run, paths)
    env = {"HOME": str(paths.home), "PATH": f"{BIN}:/usr/bin:/bin", "TERM": "xterm-256color", "LANG": "C.UTF-8",
           **extra_env, **launch.env}
    assert socket.name is not None
    pane = Pane(socket.name, run.agent, paths.state_dir, paths.home)
    started = time.monotonic()
    subprocess.run(["tmux", "-L", socket.name, "-f", "/dev/null", "new-session", "-d", "-s", run.agent,
                    "-x", "200", "-y", "50", "-c", str(run.workdir),
                    *[arg for key, value in env.items() for arg in ("-e", f"{key}={value}")],
                    launch.command()], env=env, check=True, timeout=10)
    assert retry_until(lambda: pane.heartbeat() is not None, UP_S, 0.02), pane.screen()
    return pane, time.monotonic() - started


def check_runtime_pid(pane: Pane, name: str) -> None:
    """The heartbeat's pid is the runtime itself, alive, inside the pane's process tree."""
    beat = pane.heartbeat()
    assert beat is not None and isinstance(beat["pid"], int)
    assert pane.pane_pid() in ancestors(beat["pid"])
    assert Path(f"/proc/{beat['pid']}/comm").read_text().strip() in (name, "node")


def acked(pane: Pane, msg: str) -> bool:
    beat = pane.heartbeat()
    return beat is not None and beat.get("ack") == msg and beat.get("state") == "idle"


@installed("claude")
def test_claude_code_heartbeats_acks_and_gets_its_persona(world: tuple[Path, Path, Path], tmux_socket: SocketKey) -> None:
    home, state, work = world
    # Claude Code moves some keys itself (it migrated `theme` out of this file): the test's
    # own key is one it does not know.
    (home / ".claude.json").write_text(json.dumps({"fleetTestUserKey": [1, 2], "projects": {"/elsewhere": {"allowedTools": ["Bash"]}}}))
    run = AgentRun("jarvis", "w", "orchestrator", "opus", work, str(uuid.uuid4()), PERSONA,
                   env={"ANTHROPIC_API_KEY": "sk-fake"})
    paths = RuntimePaths(home, state, HOOK, str(BIN / "claude"))
    fake: FakeProvider
    with serve("anthropic") as fake:
        pane, up = start(ClaudeAdapter(), run, paths, tmux_socket,
                         {"ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "sk-fake"})
        print(f"\nclaude: first heartbeat after {up:.2f} s")
        assert retry_until(lambda: "❯" in pane.screen(), UP_S), pane.screen()
        assert pane.heartbeat()["state"] == "idle"  # type: ignore[index]
        check_runtime_pid(pane, "claude")
        pane.send("Plan the week [fleet:msg-5a5a01]")
        assert retry_until(lambda: acked(pane, "msg-5a5a01"), UP_S), (pane.heartbeat(), pane.screen())
        turns = fake.turns()
    assert any("P-7731" in turn.system for turn in turns), [t.system[-200:] for t in turns]
    assert any("msg-5a5a01" in json.dumps(turn.messages) for turn in turns)
    assert any(str(turn.model).startswith("claude-opus") for turn in turns), {t.model for t in turns}
    kept = json.loads((home / ".claude.json").read_text())
    assert kept["fleetTestUserKey"] == [1, 2] and kept["projects"]["/elsewhere"] == {"allowedTools": ["Bash"]}
    assert kept["projects"][str(work)]["hasTrustDialogAccepted"] is True


@installed("claude")
def test_claude_code_status_line_keeps_ticking_while_idle(world: tuple[Path, Path, Path], tmux_socket: SocketKey) -> None:
    home, state, work = world
    run = AgentRun("jarvis", "w", "idler", "sonnet", work, str(uuid.uuid4()), env={"ANTHROPIC_API_KEY": "sk-fake"})
    paths = RuntimePaths(home, state, HOOK, str(BIN / "claude"))
    with serve("anthropic") as fake:
        pane, _ = start(ClaudeAdapter(), run, paths, tmux_socket,
                        {"ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "sk-fake"})
        first = pane.heartbeat()
        assert first is not None
        assert retry_until(lambda: (pane.heartbeat() or {}).get("event") == "statusline"
                           and (pane.heartbeat() or {})["seq"] >= int(first["seq"]) + 2, UP_S)  # type: ignore[call-overload]
        assert (pane.heartbeat() or {})["state"] == "idle" and fake.turns() == []


@installed("codex")
def test_codex_heartbeats_acks_and_gets_its_persona(world: tuple[Path, Path, Path], tmux_socket: SocketKey) -> None:
    home, state, work = world
    codex_home = home / ".codex"
    codex_home.mkdir()
    with serve("openai") as fake:
        user_config = ("# the user's own settings\n"
                       'model_provider = "fake"\n'
                       'approval_policy = "never"\n\n'
                       "[model_providers.fake]\n"
                       'name = "fake"\n'
                       f'base_url = "{fake.base_url}/v1"  # loopback\n'
                       'wire_api = "responses"\n'
                       'env_key = "FAKE_KEY"\n')
        (codex_home / "config.toml").write_text(user_config)
        run = AgentRun("jarvis", "w", "enhancer", "gpt-5.5", work, str(uuid.uuid4()), PERSONA)
        paths = RuntimePaths(home, state, HOOK, str(BIN / "codex"))
        started = time.monotonic()
        pane, up = start(CodexAdapter(), run, paths, tmux_socket, {"FAKE_KEY": "sk-fake"})
        assert pane.heartbeat()["state"] == "idle"  # type: ignore[index]
        assert retry_until(lambda: "? for shortcuts" in pane.screen(), UP_S), pane.screen()
        print(f"\ncodex: first heartbeat (fleet-hook launch) after {up:.2f} s, "
              f"at its prompt after {time.monotonic() - started:.2f} s")
        assert "Meet " not in pane.screen() and "trust" not in pane.screen().lower()
        pane.send("Review the plan [fleet:msg-c0dec1]")
        assert retry_until(lambda: acked(pane, "msg-c0dec1"), UP_S), (pane.heartbeat(), pane.screen())
        check_runtime_pid(pane, "codex")
        turns = fake.turns()
    assert any("P-7731" in turn.text() for turn in turns)
    assert any("msg-c0dec1" in json.dumps(turn.messages) for turn in turns)
    assert {turn.model for turn in turns} == {"gpt-5.5"}
    kept = (codex_home / "config.toml").read_text()
    assert kept.startswith(user_config.split("\n\n", maxsplit=1)[0]) and "# loopback" in kept and 'env_key = "FAKE_KEY"' in kept
    assert f'[projects."{work}"]' in kept and 'notify = ["' in kept
