"""`fleet ps` and `fleet agent watch|attach|send` against a fleet the engine really started.

Each test copies examples/fleets/minimal onto a private tmux socket, runs `fleet reconcile`
as a subprocess (the real stub agents, heartbeating every 0.2 s into a private state
directory), then runs the verbs as subprocesses too. Watching and attaching need a real
terminal: they run inside a second private tmux server ("outer") whose 200x60 pane is
that terminal, and what a person would type is sent to that pane. systemd is pinned
unavailable (XDG_RUNTIME_DIR points at an empty folder), so the tmux-only path is tested
the same way on every machine; tests/core/test_ps.py covers the unit columns.
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import agent_verbs
from reconciler.errors import UserError
from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.observed import Heartbeat, SocketKey
from tests.e2e.repos import example_repo, write
from tests.plugins.tmux_server import kill_server, retry_until

pytestmark = pytest.mark.tmux

HOST = "demo"
AGENTS = ("enhancer", "orchestrator")
PS_KEYS = ["agent", "tenant", "host", "lifecycle", "socket", "tmux", "systemd", "unit", "unit_enabled", "pid",
           "attached", "idle_s", "heartbeat_age_s", "heartbeat_state", "ack", "model", "model_source",
           "desired_model", "health", "reason", "health_message", "planned", "drift"]


def verbs_module() -> str:
    """The module the `fleet` console script runs."""
    return "reconciler.cli"


@dataclass
class Fleet:
    """One example fleet on a private socket, and the commands the tests run against it."""

    repo: Path
    socket: str
    state_dir: Path
    env: dict[str, str]
    outer: list[str] = field(default_factory=list)  # terminal servers to kill afterwards

    def fleet(self, *args: str, module: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        """`fleet ARGS --host demo --state-dir STATE` as a subprocess with no terminal."""
        return self.piped(b"", *args, module=module, **env)

    def piped(self, given: bytes, *args: str, module: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        """`fleet(*args)` with `given` on its stdin."""
        argv = [sys.executable, "-m", module or verbs_module(), *args, "--host", HOST, "--state-dir", str(self.state_dir)]
        done = subprocess.run(argv, capture_output=True, timeout=90, env={**self.env, **env}, input=given, check=False)
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(), done.stderr.decode())

    def reconcile(self, **env: str) -> subprocess.CompletedProcess[str]:
        return self.fleet("reconcile", str(self.repo), module="reconciler.cli", **env)

    def ps(self, **env: str) -> dict[str, dict[str, Any]]:
        done = self.fleet("ps", str(self.repo), "--output", "json", **env)
        assert done.returncode == 0, done.stderr
        return {f"{row['tenant']}/{row['agent']}": row for row in json.loads(done.stdout)}

    def send(self, agent: str, text: str, *flags: str) -> tuple[int, dict[str, Any], str]:
        done = self.fleet("agent", "send", str(self.repo), agent, text, "--output", "json", *flags)
        return done.returncode, json.loads(done.stdout) if done.stdout else {}, done.stderr

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10,
                              env=self.env, stdin=subprocess.DEVNULL, check=True)
        return done.stdout

    def pane(self, agent: str, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", f"={agent}:", fmt).strip()

    def screen(self, agent: str) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", f"={agent}:").split("\n")

    def beat(self, agent: str) -> Heartbeat | None:
        try:
            return parse_heartbeat((self.state_dir / "demo" / "heartbeats" / f"{agent}.json").read_text())
        except (OSError, ValueError):
            return None

    def wait_beats(self, agent: str, after: int, count: int = 3) -> Heartbeat:
        """A heartbeat `count` beats after seq `after`: proof that time passed for the agent."""
        assert retry_until(lambda: (b := self.beat(agent)) is not None and b.seq >= after + count, 10)
        beat = self.beat(agent)
        assert beat is not None
        return beat

    def terminal(self, *argv: str) -> str:
        """Run `argv` in a real 200x60 terminal: a pane of a second private tmux server.

        The command's exit status lands in a file next to the state dir, read by `exit_status`.
        """
        name = f"fleet-outer-{uuid.uuid4().hex[:10]}"
        self.outer.append(name)
        rc_file = self.state_dir.parent / f"{name}.rc"
        script = '"$@"; echo $? > "$0.tmp" && mv "$0.tmp" "$0"; sleep 600'
        subprocess.run(["tmux", "-L", name, "-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "60", "-s", "t",
                        "--", "sh", "-c", script, str(rc_file), *argv],
                       env=self.env, check=True, timeout=10, stdin=subprocess.DEVNULL)
        return name

    def exit_status(self, outer: str) -> int | None:
        rc_file = self.state_dir.parent / f"{outer}.rc"
        return int(rc_file.read_text()) if rc_file.exists() else None

    def verb_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", verbs_module(), "agent", *args, "--host", HOST, "--state-dir", str(self.state_dir)]


@pytest.fixture
def fleet(tmp_path: Path, tmux_socket: SocketKey) -> Iterator[Fleet]:
    """The minimal example on a private socket, nothing started yet; systemd pinned away."""
    assert tmux_socket.name is not None
    no_systemd = tmp_path / "no-systemd"
    no_systemd.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k not in {"MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"}}
    env |= {"FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}
    state = tmp_path / "state"
    state.mkdir()
    made = Fleet(example_repo(tmp_path, "minimal", tmux_socket.name), tmux_socket.name, state, env)
    try:
        yield made
    finally:
        for name in made.outer:
            kill_server(name)


def wait_healthy(fleet: Fleet, *agents: str, **env: str) -> dict[str, dict[str, Any]]:
    """ps rows once every named agent answered its first heartbeat (health `healthy`)."""
    rows: dict[str, dict[str, Any]] = {}

    def healthy() -> bool:
        rows.update(fleet.ps(**env))
        return all(rows.get(f"demo/{a}", {}).get("health") == "healthy" for a in agents)

    assert retry_until(healthy, 20, interval=0.2), rows
    return rows


@pytest.fixture
def running(fleet: Fleet) -> Fleet:
    """Both agents started by `fleet reconcile` and healthy."""
    done = fleet.reconcile()
    assert done.returncode == 0, done.stdout + done.stderr
    wait_healthy(fleet, *AGENTS)
    return fleet


# --- fleet ps -----------------------------------------------------------------------------


def test_ps_shows_both_agents_healthy(running: Fleet) -> None:
    rows = running.ps()
    assert sorted(rows) == ["demo/enhancer", "demo/orchestrator"]
    for agent in AGENTS:
        row = rows[f"demo/{agent}"]
        assert (row["tmux"], row["systemd"], row["health"], row["drift"]) == ("running", "tmux-only", "healthy", [])
        assert row["pid"] == int(running.pane(agent, "#{pane_pid}"))
        assert (row["model"], row["model_source"], row["desired_model"]) == ("stub-large", "heartbeat", "stub-large")
        assert row["heartbeat_state"] in {"idle", "working"} and row["heartbeat_age_s"] < 90
        assert row["lifecycle"] == "core" and row["host"] == HOST and row["socket"] == running.socket

    text = running.fleet("ps", str(running.repo))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "TENANT", "HOST", "TMUX", "SYSTEMD", "PID", "IDLE", "HEARTBEAT", "MODEL",
                                "HEALTH", "DRIFT"]
    enhancer = lines[1].split()
    assert enhancer[:5] == ["enhancer", "demo", "demo", "running", "tmux-only"]
    assert enhancer[-3:] == ["stub-large", "healthy", "—"]
    assert lines[3].startswith("systemd --user not available: running tmux-only (")
    assert "XDG_RUNTIME_DIR" in lines[3]  # the reason says where it looked


def test_ps_with_another_state_dir_says_where_the_heartbeats_are(running: Fleet, tmp_path: Path) -> None:
    """A forgotten FLEET_STATE_DIR: the agents' own state directory is named, not silently
    read as every agent silent with spec-hash drift."""
    elsewhere = tmp_path / "forgotten"

    def forgetful(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "reconciler.cli", *args, str(running.repo), "--host", HOST, "--state-dir", str(elsewhere)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=90, env=running.env, check=False)

    done = forgetful("ps")

    assert done.returncode == 0, done.stderr
    note = (f"tenant demo: 2 running agents (enhancer, orchestrator) were started with state directory "
            f"{running.state_dir}, not {elsewhere}, and write their heartbeats there; pass --state-dir "
            f"{running.state_dir} or set FLEET_STATE_DIR")
    assert note in done.stdout.splitlines()
    assert note not in running.fleet("ps", str(running.repo)).stdout  # the right directory: no such note
    plan = forgetful("reconcile", "--dry-run")
    assert note in plan.stdout, plan.stdout  # the dry run says it before any restart is taken for a change


def test_ps_json_is_a_list_of_rows_with_stable_keys(running: Fleet) -> None:
    done = running.fleet("ps", str(running.repo), "--output", "json")
    assert done.returncode == 0
    doc = json.loads(done.stdout)
    assert isinstance(doc, list) and [row["agent"] for row in doc] == list(AGENTS)
    assert all(list(row) == PS_KEYS for row in doc)
    assert doc[1]["ack"] is None and doc[1]["attached"] == 0 and isinstance(doc[1]["idle_s"], int)


def test_ps_flags_a_foreign_session_and_a_model_drift(fleet: Fleet) -> None:
    """The enhancer's name is taken by a session the fleet did not create; the orchestrator
    runs a model other than the roster's (its command pins --model stub-small)."""
    fleet.tmux("new-session", "-d", "-s", "enhancer", "sleep", "600")
    pinned = {"MOSAIC_AGENT_COMMAND": "fleet-stub-agent --model stub-small"}
    done = fleet.reconcile(**pinned)
    assert done.returncode == 1 and "conflict" in done.stdout  # the foreign session is reported, left alone
    rows = wait_healthy(fleet, "orchestrator", **pinned)

    orchestrator = rows["demo/orchestrator"]
    assert (orchestrator["model"], orchestrator["model_source"]) == ("stub-small", "heartbeat")
    assert orchestrator["desired_model"] == "stub-large"
    assert orchestrator["drift"] == ["model"]  # same command as reconcile's, so no spec-hash drift
    enhancer = rows["demo/enhancer"]
    assert (enhancer["tmux"], enhancer["health"], enhancer["drift"]) == ("foreign", None, ["foreign-session"])
    assert "did not create it" in enhancer["health_message"]
    assert enhancer["pid"] == int(fleet.pane("enhancer", "#{pane_pid}"))

    text = fleet.fleet("ps", str(fleet.repo), **pinned).stdout.splitlines()
    assert text[1].split()[3] == "foreign" and text[1].split()[-1] == "foreign-session"
    assert text[2].split()[-1] == "model"
    # without the reconciler's command, ps sees the spec hash differ too: it plans like reconcile
    assert fleet.ps()["demo/orchestrator"]["drift"] == ["spec-hash", "model"]


def test_ps_without_agents_on_the_host_says_so(fleet: Fleet) -> None:
    done = subprocess.run([sys.executable, "-m", verbs_module(), "ps", str(fleet.repo), "--host", "elsewhere",
                           "--state-dir", str(fleet.state_dir)], capture_output=True, text=True, env=fleet.env,
                          timeout=60, check=False)
    assert done.returncode == 0
    assert "no agent runs on host elsewhere (hosts in the repository: demo)" in done.stdout


# --- fleet agent send ---------------------------------------------------------------------


def test_send_verify_is_verified_and_acked(running: Fleet) -> None:
    rc, doc, err = running.send("orchestrator", "review PR 12; $(touch /tmp/pwned)", "--verify", "--timeout", "10")
    assert rc == 0, err
    assert list(doc) == ["id", "status"] and doc["status"] == "verified"
    assert len(doc["id"]) == 12 and doc["id"].startswith("msg-") and int(doc["id"][4:], 16) >= 0
    beat = running.beat("orchestrator")
    assert beat is not None and beat.ack == doc["id"]
    assert any(f"review PR 12; $(touch /tmp/pwned) [fleet:{doc['id']}]" in line for line in running.screen("orchestrator"))

    text = running.fleet("agent", "send", str(running.repo), "demo/enhancer", "hi", "--verify")
    assert (text.returncode, text.stdout) == (0, "verified\n")
    assert "acked" in text.stderr


def test_send_reads_the_message_from_a_file_or_stdin_so_ps_never_shows_it(running: Fleet, tmp_path: Path) -> None:
    note = tmp_path / "message.txt"
    note.write_text("from a file; $(touch /tmp/pwned)\n")
    big = tmp_path / "big.txt"
    big.write_text("y" * 17_000)
    for source, given, shown in ((str(note), b"", "from a file; $(touch /tmp/pwned)"),
                                 ("-", "from stdin ✓\n".encode(), "from stdin ✓")):
        done = running.piped(given, "agent", "send", str(running.repo), "orchestrator", "--message-file", source,
                             "--verify", "--timeout", "10", "--output", "json")
        assert done.returncode == 0, done.stderr
        msg_id = json.loads(done.stdout)["id"]
        assert any(f"{shown} [fleet:{msg_id}]" in line for line in running.screen("orchestrator"))

    for args, given, said in (
        (["hi", "--message-file", str(note)], b"", "two messages: give the message as an argument or with --message-file"),
        ([], b"", "no message: give it as an argument, or with --message-file PATH"),
        (["--message-file", "-"], b"\xff\xfe", "--message-file -: the message is not UTF-8 text"),
        (["--message-file", str(tmp_path)], b"", f"--message-file {tmp_path}: "),
        (["--message-file", "-"], b"x" * 20_000, "more than 16000 bytes"),
        (["--message-file", "-"], "é".encode() * 8_002, "more than 16000 bytes"),  # cut inside a character
        (["--message-file", str(big)], b"", "more than 16000 bytes"),
        (["--message-file", "-"], b"two\nlines\n", "the message must be one line of text"),
    ):
        done = running.piped(given, "agent", "send", str(running.repo), "orchestrator", *args)
        assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)


def test_send_never_types_into_an_agent_restarted_after_it_was_checked(
    running: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks (copy mode, attached writers, a live pane) hold for the session send
    located; a restart in between gets a refusal, not the message (found by a review)."""
    agent = agent_verbs.find_agent(agent_verbs.load_desired(running.repo, HOST, running.state_dir), "orchestrator")
    checked = agent_verbs.locate(agent)
    running.tmux("kill-session", "-t", "=orchestrator")
    running.tmux("new-session", "-d", "-s", "orchestrator", "sleep 600")  # the same name, another process
    monkeypatch.setattr(agent_verbs, "locate", lambda _agent: checked)

    with pytest.raises(UserError, match="can't find pane"):  # its pane id, recorded at its spawn
        agent_verbs.send(agent, "for the process that was checked", agent_verbs.SendOptions(state_dir=running.state_dir))
    assert "for the process that was checked" not in "".join(running.screen("orchestrator"))


def test_send_without_verify_is_sent(running: Fleet) -> None:
    rc, doc, _ = running.send("orchestrator", "fire and forget")
    assert (rc, doc["status"]) == (0, "sent")
    assert retry_until(lambda: (b := running.beat("orchestrator")) is not None and b.ack == doc["id"])


def test_send_refuses_a_pane_in_copy_mode_and_force_cancels_it(running: Fleet) -> None:
    running.tmux("copy-mode", "-t", "=orchestrator:")
    before = running.beat("orchestrator")
    assert before is not None
    rc, doc, err = running.send("orchestrator", "lost in copy mode", "--verify", "--timeout", "5")
    assert (rc, doc) == (1, {"id": None, "status": "refused"})
    assert err.startswith("error: not sending to demo/orchestrator: its pane is in copy mode")
    after = running.wait_beats("orchestrator", before.seq)
    assert after.ack == before.ack  # nothing was typed
    assert running.pane("orchestrator", "#{pane_in_mode}") == "1"

    rc, doc, err = running.send("orchestrator", "forced", "--verify", "--timeout", "10", "--force")
    assert (rc, doc["status"]) == (0, "verified"), err
    assert running.pane("orchestrator", "#{pane_in_mode}") == "0"


def test_send_to_a_hung_agent_is_not_delivered(running: Fleet) -> None:
    """The stub acks `/hang`, then stops reading and heartbeating. The next message is
    pasted and its Enter taken by the terminal (the tty echoes the line and moves the
    cursor below it), so it is not `typed_not_submitted`; no ack ever comes, so it is
    `not_delivered`."""
    rc, hang, _ = running.send("orchestrator", "/hang", "--verify", "--timeout", "10")
    assert (rc, hang["status"]) == (0, "verified")
    rc, doc, err = running.send("orchestrator", "are you there", "--verify", "--timeout", "1.5")
    assert (rc, doc["status"]) == (1, "not_delivered"), err
    assert "no ack in time" in err
    beat = running.beat("orchestrator")
    assert beat is not None and beat.ack == hang["id"]
    screen, cursor = running.screen("orchestrator"), int(running.pane("orchestrator", "#{cursor_y}"))
    echoed = [i for i, line in enumerate(screen) if f"[fleet:{doc['id']}]" in line]
    assert echoed and echoed[-1] < cursor  # visible, but above the input line


def test_send_typed_but_not_submitted(running: Fleet) -> None:
    """With the pane's terminal set to `-icrnl`, Enter (CR) no longer ends a line: the
    text stays on the input line and the agent never reads it."""
    tty = running.pane("orchestrator", "#{pane_tty}")
    subprocess.run(["stty", "-F", tty, "-icrnl"], check=True, timeout=10)
    rc, doc, err = running.send("orchestrator", "stuck on the line", "--verify", "--timeout", "1.5")
    assert (rc, doc["status"]) == (1, "typed_not_submitted"), err
    cursor = int(running.pane("orchestrator", "#{cursor_y}"))
    assert f"[fleet:{doc['id']}]" in running.screen("orchestrator")[cursor]


def test_send_refuses_when_a_person_is_attached_and_attach_warns(running: Fleet) -> None:
    outer = running.terminal(*running.verb_argv("attach", str(running.repo), "orchestrator"))
    assert retry_until(lambda: running.pane("orchestrator", "#{session_attached}") == "1", 15)
    shown = subprocess.run(["tmux", "-L", outer, "capture-pane", "-p", "-S", "-60", "-t", "t"], capture_output=True,
                           text=True, check=True, env=running.env).stdout
    assert "fleet-stub-agent" in shown  # the agent's screen, in the person's terminal
    rc, doc, err = running.send("orchestrator", "while you type", "--verify", "--timeout", "5")
    assert (rc, doc["status"]) == (1, "refused")
    assert "1 client(s) with write access are attached" in err
    rc, doc, err = running.send("orchestrator", "anyway", "--verify", "--timeout", "10", "--force")
    assert (rc, doc["status"]) == (0, "verified"), err


def test_attach_prints_its_warning_before_attaching(running: Fleet, tmp_path: Path) -> None:
    """The warning goes to stderr before tmux takes the screen; capture it in a file."""
    log = tmp_path / "attach.err"
    outer = running.terminal("sh", "-c", '"$@" 2> "$0"', str(log),
                             *running.verb_argv("attach", str(running.repo), "orchestrator"))
    assert retry_until(lambda: running.pane("orchestrator", "#{session_attached}") == "1", 15)
    assert log.read_text().startswith("warning: attaching to demo/orchestrator: your keystrokes go to the agent")
    subprocess.run(["tmux", "-L", outer, "send-keys", "-t", "t", "C-b", "d"], check=True, env=running.env)
    assert retry_until(lambda: running.exit_status(outer) == 0, 10)


# --- fleet agent watch --------------------------------------------------------------------


def test_watch_keeps_the_window_size_and_drops_keystrokes(running: Fleet) -> None:
    size = running.pane("orchestrator", "#{window_width}x#{window_height}")
    outer = running.terminal(*running.verb_argv("watch", str(running.repo), "orchestrator"))
    assert retry_until(lambda: running.tmux("list-clients", "-F", "#{client_readonly}").split() == ["1"], 15)
    assert running.tmux("list-clients", "-F", "#{client_width}x#{client_height}").strip() == "200x60"
    assert running.pane("orchestrator", "#{window_width}x#{window_height}") == size  # 200x60 viewer, same window
    assert running.tmux("show-options", "-w", "-v", "-t", "=orchestrator:", "window-size").strip() == "manual"

    before = running.beat("orchestrator")
    assert before is not None
    keys = "typed-by-watcher [fleet:msg-0000beef]"
    subprocess.run(["tmux", "-L", outer, "send-keys", "-t", "t", "-l", keys], check=True, env=running.env)
    subprocess.run(["tmux", "-L", outer, "send-keys", "-t", "t", "Enter"], check=True, env=running.env)
    after = running.wait_beats("orchestrator", before.seq)
    assert after.ack == before.ack
    assert not any("typed-by-watcher" in line for line in running.screen("orchestrator"))

    # a watcher cannot type, so it does not stop a message; and it sees it arrive
    rc, doc, err = running.send("orchestrator", "hello watcher", "--verify", "--timeout", "10")
    assert (rc, doc["status"]) == (0, "verified"), err

    def viewer_shows_it() -> bool:
        shown = subprocess.run(["tmux", "-L", outer, "capture-pane", "-p", "-t", "t"], capture_output=True,
                               text=True, check=True, env=running.env).stdout
        return f"[fleet:{doc['id']}]" in shown

    assert retry_until(viewer_shows_it, 10)

    subprocess.run(["tmux", "-L", outer, "send-keys", "-t", "t", "C-b", "d"], check=True, env=running.env)
    assert retry_until(lambda: running.exit_status(outer) == 0, 10)
    assert running.tmux("list-clients").strip() == ""
    assert running.tmux("list-sessions", "-F", "#{session_name}").split() == list(AGENTS)  # nothing left behind
    assert running.pane("orchestrator", "#{window_width}x#{window_height}") == size
    assert wait_healthy(running, *AGENTS)


def test_a_restart_while_watched_closes_the_view_and_leaves_no_agent_behind(running: Fleet) -> None:
    """Killing the watched session ends the view; no second copy of the agent survives."""
    old_pid = int(running.pane("orchestrator", "#{pane_pid}"))
    outer = running.terminal(*running.verb_argv("watch", str(running.repo), "orchestrator"))
    assert retry_until(lambda: running.tmux("list-clients").strip() != "", 15)
    running.tmux("kill-session", "-t", "=orchestrator")
    assert retry_until(lambda: running.exit_status(outer) is not None, 10)

    def gone() -> bool:
        try:
            os.kill(old_pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert retry_until(gone, 10)
    assert running.tmux("list-sessions", "-F", "#{session_name}").split() == ["enhancer"]


@pytest.mark.parametrize("verb", ["watch", "attach"])
def test_watch_and_attach_need_a_terminal(running: Fleet, verb: str) -> None:
    done = running.fleet("agent", verb, str(running.repo), "orchestrator")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: `fleet agent {verb}` needs a terminal")
    assert running.tmux("list-clients").strip() == ""


# --- addressing -----------------------------------------------------------------------------


def test_an_ambiguous_name_lists_the_choices(fleet: Fleet) -> None:
    roster = (fleet.repo / "tenants" / "demo" / "roster.yaml").read_text()
    write(fleet.repo, "tenants/other/roster.yaml",
          roster.replace("tenant: demo", "tenant: other") + f"socket_name: {fleet.socket}-other\n")
    done = fleet.fleet("agent", "send", str(fleet.repo), "orchestrator", "hi")
    assert done.returncode == 1
    assert done.stderr.strip() == ("error: agent 'orchestrator' is in several tenants on host demo: "
                                   "demo/orchestrator, other/orchestrator; name one as TENANT/NAME")
    done = fleet.fleet("agent", "send", str(fleet.repo), "other/orchestrator", "hi")
    assert "error: other/orchestrator is not running: no session 'orchestrator'" in done.stderr


def test_unknown_agents_and_foreign_sessions_are_errors(fleet: Fleet) -> None:
    done = fleet.fleet("agent", "send", str(fleet.repo), "nobody", "hi")
    assert done.stderr.strip() == "error: no agent nobody on host demo (agents here: demo/enhancer, demo/orchestrator)"
    done = fleet.fleet("agent", "send", str(fleet.repo), "Bad/Name!", "hi")
    assert "is not an agent address" in done.stderr
    fleet.tmux("new-session", "-d", "-s", "orchestrator", "sleep", "600")
    done = fleet.fleet("agent", "send", str(fleet.repo), "orchestrator", "hi")
    assert done.returncode == 1 and "the fleet never watches or types into a session it did not create" in done.stderr
    assert "hi" not in "".join(fleet.screen("orchestrator"))


def test_doctests_pass() -> None:
    assert doctest.testmod(agent_verbs, raise_on_error=False).failed == 0
