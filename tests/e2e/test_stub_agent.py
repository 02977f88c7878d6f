"""`fleet-stub-agent` as the reconciler runs it: the installed console script in a real
tmux pane on a private socket, typed at with `send-keys` the way `fleet agent send` does.

Every heartbeat read here goes through `parse_heartbeat`, so a file that fails to parse
(a torn write, a missing field) fails the test that read it. Configuration errors and
the no-terminal case need no tmux and run as plain subprocesses.
"""

from __future__ import annotations

import doctest
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler import stub_agent
from reconciler.drivers.reports import read_reports
from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.layout import StateLayout
from reconciler.model.observed import Heartbeat, SocketKey
from tests.plugins.tmux_server import retry_until

STUB = Path(sys.executable).with_name("fleet-stub-agent")
INTERVAL = 0.2
IDENTITY = {"FLEET_TENANT": "jarvis", "FLEET_AGENT": "coder0-0", "FLEET_HOST": "w-test"}


@pytest.fixture(scope="module", autouse=True)
def _stub_installed() -> None:
    assert STUB.exists(), f"{STUB} is missing: run `pip install -e '.[dev]'` to install the console script"


@dataclass
class StubPane:
    """One stub agent in its own session; the helpers the tests below share."""

    socket: str
    name: str
    heartbeat_path: Path

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True, text=True, timeout=10, check=True, stdin=subprocess.DEVNULL,
        )
        return done.stdout

    @property
    def target(self) -> str:
        return f"={self.name}:"  # tmux 3.3a does not take a bare `=NAME` as a pane

    def heartbeat(self) -> Heartbeat | None:
        try:
            text = self.heartbeat_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return parse_heartbeat(text)

    def wait_beat(self, what: str, predicate: Callable[[Heartbeat], bool], seconds: float = 5.0) -> Heartbeat:
        """The first heartbeat that satisfies `predicate`, or a failure that shows the last one."""
        seen: list[Heartbeat | None] = [None]

        def check() -> bool:
            seen[0] = self.heartbeat()
            return seen[0] is not None and predicate(seen[0])

        assert retry_until(check, seconds), f"no heartbeat with {what} within {seconds}s; last: {seen[0]}"
        assert seen[0] is not None
        return seen[0]

    def type(self, text: str, *, enter: bool = True) -> None:
        """Type like `fleet agent send`: the text as one literal block, Enter as its own key."""
        self.tmux("send-keys", "-t", self.target, "-l", text)
        if enter:
            self.tmux("send-keys", "-t", self.target, "Enter")

    def pane(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", self.target, fmt).strip()

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.target)

    def exit_status(self) -> int:
        """The dead pane's exit status.

        Debian's tmux (libutempter) can lose the SIGCHLD that carries the status
        (tmux/tmux#311): the pane is dead with no status until the server's next
        SIGCHLD. As in tests/drivers/test_tmux.py, nudge the server after a second.
        """
        assert retry_until(lambda: self.pane("#{pane_dead}") == "1"), "the pane is still alive"
        if not retry_until(lambda: self.pane("#{pane_dead_status}") != "", 1.0):
            os.kill(int(self.tmux("display-message", "-p", "#{pid}")), signal.SIGCHLD)
        assert retry_until(lambda: self.pane("#{pane_dead_status}") != ""), "dead without a status"
        return int(self.pane("#{pane_dead_status}"))


@pytest.fixture
def stub(tmux_socket: SocketKey, tmp_path: Path) -> StubPane:
    """A running stub (interval 0.2 s, `--model m` over FLEET_MODEL), its first beat written."""
    assert tmux_socket.name is not None
    pane = StubPane(tmux_socket.name, "coder0-0", tmp_path / "jarvis" / "heartbeats" / "coder0-0.json")
    env = {**IDENTITY, "FLEET_MODEL": "from-env", "FLEET_STATE_DIR": str(tmp_path)}
    pane.tmux(
        "new-session", "-d", "-s", pane.name, *(f"-e{key}={value}" for key, value in env.items()),
        "--", str(STUB), "--model", "m", "--interval", str(INTERVAL),
        ";", "set-option", "-w", "-t", pane.target, "remain-on-exit", "on",
    )
    pane.wait_beat("seq 1", lambda hb: hb.seq >= 1)
    return pane


@pytest.mark.tmux
def test_heartbeats_appear_with_the_pane_identity_and_seq_increases(stub: StubPane) -> None:
    first = stub.wait_beat("seq >= 1", lambda hb: hb.seq >= 1)
    assert (first.tenant, first.agent, first.host, first.model) == ("jarvis", "coder0-0", "w-test", "m")
    assert (first.state, first.ack, dict(first.usage)) == ("idle", None, {"input_tokens": 0, "output_tokens": 0})
    assert first.pid == int(stub.pane("#{pane_pid}"))
    assert first.ts.utcoffset() is not None
    assert '"ts": "' in stub.heartbeat_path.read_text() and 'Z", "pid"' in stub.heartbeat_path.read_text()
    later = stub.wait_beat(f"seq > {first.seq + 2}", lambda hb: hb.seq > first.seq + 2)
    assert later.ts >= first.ts


@pytest.mark.tmux
def test_a_message_trailer_is_acked_and_shown_on_the_status(stub: StubPane) -> None:
    stub.type("hello [fleet:msg-ab12]")
    acked = stub.wait_beat("ack msg-ab12", lambda hb: hb.ack == "msg-ab12")
    assert acked.state == "working"  # any message keeps the stub busy for a moment
    assert retry_until(lambda: "ack msg-ab12" in stub.screen())
    screen = stub.screen()
    assert "jarvis/coder0-0 on w-test" in screen and "model m" in screen
    assert "hello [fleet:msg-ab12]" in screen  # the tty's echo, below the pinned status
    stub.type("no trailer here")
    busy = stub.wait_beat("a later beat", lambda hb: hb.seq > acked.seq + 1)
    assert busy.ack == "msg-ab12"  # a line without an id keeps the last ack


@pytest.mark.tmux
def test_a_line_typed_without_enter_is_not_acked_and_stays_on_the_input_line(stub: StubPane) -> None:
    stub.type("draft [fleet:msg-0d]", enter=False)
    assert retry_until(lambda: "draft [fleet:msg-0d]" in stub.screen())
    start = stub.wait_beat("any beat", lambda hb: True)
    later = stub.wait_beat("three more beats", lambda hb: hb.seq >= start.seq + 3)
    assert later.ack is None
    cursor_row = int(stub.pane("#{cursor_y}"))
    assert stub.screen().splitlines()[cursor_row].startswith("draft [fleet:msg-0d]")


@pytest.mark.tmux
def test_work_makes_it_working_and_usage_grows_at_the_burn_rate(stub: StubPane) -> None:
    stub.type("/work 1 [fleet:msg-1]")
    working = stub.wait_beat("state working", lambda hb: hb.state == "working" and hb.ack == "msg-1")
    grown = stub.wait_beat(
        "more input tokens", lambda hb: hb.usage["input_tokens"] > working.usage["input_tokens"]
    )
    assert grown.usage["output_tokens"] >= working.usage["output_tokens"]
    done = stub.wait_beat("state idle again", lambda hb: hb.state == "idle")
    # exactly 1 s of work at 400 in / 100 out tokens per second, give or take rounding
    assert 395 <= done.usage["input_tokens"] <= 400 and 98 <= done.usage["output_tokens"] <= 100
    after = stub.wait_beat("two beats later", lambda hb: hb.seq >= done.seq + 2)
    assert after.usage == done.usage  # idle burns nothing


@pytest.mark.tmux
def test_hang_stops_heartbeats_but_the_pane_stays_alive(stub: StubPane) -> None:
    stub.type("/hang [fleet:msg-cafe]")
    hung = stub.wait_beat("ack msg-cafe", lambda hb: hb.ack == "msg-cafe")  # acked before hanging
    stub.type("later [fleet:msg-beef]")
    time.sleep(5 * INTERVAL)  # proving an absence takes waiting: five missed beats
    assert stub.heartbeat() == hung
    assert stub.pane("#{pane_dead}") == "0"
    os.kill(int(stub.pane("#{pane_pid}")), 0)  # still running
    assert retry_until(lambda: "hung (not heartbeating)" in stub.screen())


@pytest.mark.tmux
def test_crash_acks_then_exits_with_status_1(stub: StubPane) -> None:
    stub.type("/crash [fleet:msg-dead]")
    assert stub.exit_status() == 1
    last = stub.heartbeat()
    assert last is not None and last.ack == "msg-dead"


class Stop(NamedTuple):
    test_id: str
    stop: Callable[[StubPane], object]


STOPS = [
    Stop("ctrl-c", lambda pane: pane.tmux("send-keys", "-t", pane.target, "C-c")),
    Stop("sigterm", lambda pane: os.kill(int(pane.pane("#{pane_pid}")), signal.SIGTERM)),
    Stop("sighup", lambda pane: os.kill(int(pane.pane("#{pane_pid}")), signal.SIGHUP)),
]


@pytest.mark.tmux
@pytest.mark.parametrize("case", STOPS, ids=[case.test_id for case in STOPS])
def test_stop_signals_exit_cleanly_with_status_0(stub: StubPane, case: Stop) -> None:
    case.stop(stub)
    assert stub.exit_status() == 0
    assert "Traceback" not in stub.screen()


@pytest.mark.tmux
def test_kill_session_ends_the_process(stub: StubPane) -> None:
    pid = int(stub.pane("#{pane_pid}"))
    stub.tmux("kill-session", "-t", f"={stub.name}")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert retry_until(gone)


def _env(**changes: str) -> dict[str, str]:
    """This process's environment without any FLEET_ variable, plus `changes`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}, **changes}


class BadConfig(NamedTuple):
    test_id: str
    env: dict[str, str]
    args: tuple[str, ...]
    says: str


BAD_CONFIGS = [
    BadConfig("no-environment", _env(), ("--model", "m"), "missing FLEET_TENANT, FLEET_AGENT, FLEET_HOST, FLEET_STATE_DIR"),
    BadConfig("no-state-dir", _env(**IDENTITY), ("--model", "m"), "missing FLEET_STATE_DIR;"),
    BadConfig("no-model", _env(**IDENTITY, FLEET_STATE_DIR="/tmp"), (), "missing FLEET_MODEL (or --model)"),
    BadConfig("zero-interval", _env(**IDENTITY, FLEET_STATE_DIR="/tmp"), ("--model", "m", "--interval", "0"), "interval"),
    BadConfig(
        "bad-env-interval", _env(**IDENTITY, FLEET_STATE_DIR="/tmp", FLEET_STUB_INTERVAL="soon"),
        ("--model", "m"), "got 'soon'",
    ),
]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[case.test_id for case in BAD_CONFIGS])
def test_bad_configuration_exits_2_with_one_clear_line(case: BadConfig) -> None:
    done = subprocess.run(
        [str(STUB), *case.args], env=case.env, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL, check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("fleet-stub-agent: ") and done.stderr.count("\n") == 1, done.stderr
    assert case.says in done.stderr


def test_the_first_heartbeat_is_written_at_start_not_after_an_interval(tmp_path: Path) -> None:
    path = tmp_path / "jarvis" / "heartbeats" / "coder0-0.json"
    env = _env(**IDENTITY, FLEET_STATE_DIR=str(tmp_path), FLEET_STUB_INTERVAL="0.05")
    started = time.monotonic()
    with subprocess.Popen([str(STUB), "--model", "m", "--interval", "30"], env=env,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as proc:
        try:
            assert retry_until(path.exists, 10, interval=0.002)
            latency = time.monotonic() - started
            time.sleep(0.5)  # ten beats at the environment's 0.05 s, none at the flag's 30 s
            assert parse_heartbeat(path.read_text()).seq == 1
        finally:
            proc.terminate()
        assert proc.wait(10) == 0
    print(f"first heartbeat {latency * 1000:.0f} ms after start")
    assert latency < 5.0


def test_it_runs_without_a_terminal_and_prints_plain_lines(tmp_path: Path) -> None:
    path = tmp_path / "jarvis" / "heartbeats" / "coder0-0.json"
    env = _env(**IDENTITY, FLEET_STATE_DIR=str(tmp_path), FLEET_MODEL="env-model", FLEET_STUB_INTERVAL="0.1")
    with subprocess.Popen([str(STUB)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write("/work 0.3 [fleet:msg-0f]\n")
            proc.stdin.flush()
            assert retry_until(lambda: path.exists() and parse_heartbeat(path.read_text()).ack == "msg-0f")
            beat = parse_heartbeat(path.read_text())
            assert beat.model == "env-model"
            proc.stdin.close()  # end of input: it keeps heartbeating
            assert retry_until(lambda: parse_heartbeat(path.read_text()).seq >= beat.seq + 3)
        finally:
            proc.send_signal(signal.SIGINT)
        proc.wait(10)  # before reading: one line fits any pipe buffer
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert out == "accepted msg-0f: /work 0.3\n" and err == ""


def test_doctests_pass() -> None:
    assert doctest.testmod(stub_agent, raise_on_error=False).failed == 0


@pytest.mark.tmux
def test_done_and_blocked_are_reported_as_fleet_task_would(stub: StubPane, tmp_path: Path) -> None:
    stub.type("/done T1 merged as PR 42 [fleet:msg-d1]")
    stub.wait_beat("ack msg-d1", lambda hb: hb.ack == "msg-d1")
    stub.type("/blocked T2 needs the staging key")
    stub.type("/blocked T3")  # no note: refused with its usage, nothing written
    assert retry_until(lambda: "usage: /blocked ID NOTE" in stub.screen())
    reports, problems = read_reports(StateLayout(tmp_path), "jarvis")
    assert problems == []
    got = {r.task: (r.agent, r.state, r.note) for r in reports}
    assert got == {"T1": ("coder0-0", "done", "merged as PR 42"), "T2": ("coder0-0", "blocked", "needs the staging key")}
