"""`fleet-stub-agent`: the dogfood runtime that runs in an agent's tmux pane.

It sits at the far end of the reconcile loop: the reconciler spawns it (runtime `stub`
in fleet.yaml) with the pane environment of docs/reference.md's runtime contract, and it answers
the heartbeat protocol by rewriting `$FLEET_STATE_DIR/<tenant>/heartbeats/<agent>.json`
through `write_atomic`, the only file it persists. Lines typed into the pane are
messages (docs/heartbeat-protocol.md), so `fleet agent send --verify`, hung agents and
crashed agents can be tested and demonstrated without a paid model. Benchmarks start it
a hundred times, so it imports only the standard library, `reconciler.drivers.files`,
`reconciler.drivers.reports` (`/done` and `/blocked` report on a task as `fleet task`
does) and `reconciler.model`'s stdlib-only layout and task report.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import select
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

from reconciler.drivers.files import write_atomic
from reconciler.drivers.reports import record_report
from reconciler.model.layout import StateLayout

PROG = "fleet-stub-agent"
REQUIRED_ENV = ("FLEET_TENANT", "FLEET_AGENT", "FLEET_HOST", "FLEET_STATE_DIR")
DEFAULT_INTERVAL = 5.0
#: Simulated burn rate, in tokens per second spent `working`: usage is a pure function
#: of the time worked, so a test can tell growth from noise.
INPUT_TOKENS_PER_S = 400
OUTPUT_TOKENS_PER_S = 100
#: How long an ordinary message keeps the agent `working`.
BRIEF_WORK_S = 2.0
_TRAILER = re.compile(r"\s*\[fleet:(msg-[0-9a-fA-F]+)\]\s*$")
_STATUS_ROWS = 5  # rows pinned at the top of a terminal; typed input scrolls below


def split_trailer(line: str) -> tuple[str, str | None]:
    """The text of a typed line and its message id, when it ends with the fleet trailer.

    >>> split_trailer("hello [fleet:msg-ab12]")
    ('hello', 'msg-ab12')
    >>> split_trailer("  /work 3  ")
    ('/work 3', None)
    """
    if match := _TRAILER.search(line):
        return line[: match.start()].strip(), match.group(1)
    return line.strip(), None


class ConfigError(Exception):
    """A user error in the command line or environment: one line, exit status 2."""


class Identity:
    """Who this agent is, from the pane environment that the reconciler sets."""

    def __init__(self, env: Mapping[str, str], model: str | None) -> None:
        missing = [key for key in REQUIRED_ENV if not env.get(key)]
        model = model or env.get("FLEET_MODEL")
        if not model:
            missing.append("FLEET_MODEL (or --model)")
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)}; the reconciler sets them in the agent's pane "
                "(docs/reference.md, runtime contract), set them by hand to run it elsewhere"
            )
        self.tenant, self.agent, self.host = env["FLEET_TENANT"], env["FLEET_AGENT"], env["FLEET_HOST"]
        self.model = model
        self.state = StateLayout(Path(env["FLEET_STATE_DIR"]))
        self.path = self.state.heartbeat(self.tenant, self.agent)


def heartbeat_interval(flag: float | None, env: Mapping[str, str]) -> float:
    """Seconds between heartbeats: `--interval`, else `$FLEET_STUB_INTERVAL`, else 5."""
    raw = str(flag if flag is not None else env.get("FLEET_STUB_INTERVAL") or DEFAULT_INTERVAL)
    seconds = _seconds(raw)
    if not seconds:
        raise ConfigError(f"the heartbeat interval must be a positive number of seconds, got {raw!r}")
    return seconds


def _seconds(text: str) -> float | None:
    """A finite, non-negative number of seconds, or None.

    >>> _seconds("1.5"), _seconds("-1"), _seconds("nan"), _seconds("soon")
    (1.5, None, None, None)
    """
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class Screen:
    """The pane's live status, or plain event lines when stdout is not a terminal.

    The tty keeps echoing what is typed (`fleet agent send --verify` looks for text
    still on the input line), and echoed lines would throw off cursor-up redraws; so the
    status, last event included, is pinned to the top rows with a scroll region and
    drawn between save-cursor and restore-cursor, never touching a half-typed line.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream
        self.tty = stream.isatty()
        self.last = "started"

    def start(self) -> None:
        """Clear the pane and leave the cursor on the first row below the status."""
        self._write(f"\x1b[2J\x1b[{_STATUS_ROWS + 1};r\x1b[{_STATUS_ROWS + 1};1H" if self.tty else "")

    def status(self, rows: Sequence[str]) -> None:
        """The agent's rows, then the last event and a help row."""
        self._draw([*rows, f"last: {self.last}", "-" * 8 + " type a message, or /work SECONDS, /hang, /crash"])

    def event(self, text: str) -> None:
        self.last = text
        if self.tty:
            self._draw([f"last: {text}"], first=_STATUS_ROWS - 1)
        else:
            self._write(text + "\n")

    def close(self) -> None:
        self._write("\x1b[r" if self.tty else "")  # give the whole pane back to scrolling

    def _draw(self, rows: Sequence[str], first: int = 1) -> None:
        """Redraw pinned rows; re-set the scroll region too, since a resize drops it."""
        if self.tty:
            drawn = "".join(f"\x1b[{n};1H{row}\x1b[K" for n, row in enumerate(rows, first))
            self._write(f"\x1b7\x1b[{_STATUS_ROWS + 1};r{drawn}\x1b8")

    def _write(self, text: str) -> None:
        """Write, or go quiet for good: a closed pane must not stop the heartbeats."""
        if self.stream is None or not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None


class StubAgent:
    """Heartbeat timer and message reader in one `select` loop; no threads to stop."""

    def __init__(self, who: Identity, interval: float, screen: Screen) -> None:
        self.who, self.interval, self.screen = who, interval, screen
        self.seq, self.hung, self.problem = 0, False, ""
        self.ack: str | None = None
        self.worked = 0.0  # seconds spent working, the source of simulated usage
        self.clock, self.busy_until = time.monotonic(), 0.0  # monotonic seconds

    def run(self, stdin_fd: int | None) -> int:
        """Beat at once, then every interval, reading lines in between; exit code of /crash."""
        self.screen.start()
        try:
            self.beat()
            next_beat = time.monotonic() + self.interval
            pending = b""
            while True:
                readers = [stdin_fd] if stdin_fd is not None and not self.hung else []
                timeout = None if self.hung else max(0.0, next_beat - time.monotonic())
                if select.select(readers, [], [], timeout)[0]:
                    try:
                        chunk = os.read(readers[0], 4096)
                    except OSError:  # EIO: the terminal is gone; SIGHUP follows
                        chunk = b""
                    if not chunk:  # end of input: take a last unterminated line, keep beating
                        stdin_fd, chunk = None, b"\n" if pending else b""
                    pending += chunk
                    while b"\n" in pending and not self.hung:
                        line, pending = pending.split(b"\n", 1)
                        if self.accept(line.decode(errors="replace").rstrip("\r")):
                            return 1
                if not self.hung and time.monotonic() >= next_beat:
                    self.beat()
                    next_beat = max(next_beat + self.interval, time.monotonic())
        finally:
            self.screen.close()

    def accept(self, line: str) -> bool:
        """Take one typed line: ack its id in a heartbeat first, then act; True on /crash."""
        text, msg_id = split_trailer(line)
        if not text and msg_id is None:
            return False
        command, _, arg = text.partition(" ")
        now, note = self._advance(), ""
        if command == "/work":
            seconds = _seconds(arg)
            if seconds is None:
                seconds, note = 0.0, " (usage: /work SECONDS)"
            self.busy_until = max(self.busy_until, now + seconds)
        elif command == "/hang":
            note = " (hanging: no more heartbeats until stopped)"
        elif command == "/crash":
            note = " (crashing: exit status 1)"
        elif command in ("/done", "/blocked"):
            note = self.report(command[1:], arg)
        else:
            self.busy_until = max(self.busy_until, now + BRIEF_WORK_S)
        self.ack = msg_id or self.ack
        self.beat()
        self.screen.event(f"accepted {msg_id or '(no id)'}: {text}{note}")
        if command == "/hang":
            self.hung = True
            self._draw()
        return command == "/crash"

    def report(self, verdict: str, arg: str) -> str:
        """`/done ID [NOTE]`, `/blocked ID NOTE`: what `fleet task done|blocked` records."""
        task, _, text = arg.strip().partition(" ")
        if not task or (verdict == "blocked" and not text.strip()):
            return f" (usage: /{verdict} ID{' NOTE' if verdict == 'blocked' else ' [NOTE]'})"
        try:
            record_report(self.who.state, self.who.tenant, self.who.agent, task, verdict, text,
                          datetime.now(UTC))
        except OSError as exc:
            return f" (cannot write the report: {exc.strerror})"
        return f" (reported {task} {verdict})"

    def beat(self) -> None:
        """Write the next heartbeat; a failed write is shown and retried next beat."""
        self._advance()
        self.seq += 1
        try:
            write_atomic(self.who.path, json.dumps(self.record()) + "\n")
            self.problem = ""
        except OSError as exc:
            problem = f"cannot write {self.who.path}: {exc.strerror}"
            if problem != self.problem:
                self.screen.event(problem)
            self.problem = problem
        self._draw()

    def record(self) -> dict[str, object]:
        """The heartbeat, fields in docs/reference.md's order."""
        return {
            "tenant": self.who.tenant, "host": self.who.host, "agent": self.who.agent,
            "seq": self.seq, "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pid": os.getpid(), "state": self.state(), "model": self.who.model, "ack": self.ack,
            "usage": self.usage(),
        }

    def usage(self) -> dict[str, int]:
        """Simulated token usage: the burn rates times the seconds spent working."""
        worked = self.worked
        return {"input_tokens": int(worked * INPUT_TOKENS_PER_S), "output_tokens": int(worked * OUTPUT_TOKENS_PER_S)}

    def state(self) -> str:
        return "working" if self.clock < self.busy_until else "idle"

    def _advance(self) -> float:
        """Count the working time since the last call; returns now (monotonic)."""
        now = time.monotonic()
        if self.busy_until > self.clock:
            self.worked += min(now, self.busy_until) - self.clock
        self.clock = now
        return now

    def _draw(self) -> None:
        usage = self.usage()
        state = "hung (not heartbeating)" if self.hung else self.state()
        self.screen.status([
            f"{PROG}  {self.who.tenant}/{self.who.agent} on {self.who.host}  pid {os.getpid()}",
            f"model {self.who.model}  state {state}  seq {self.seq}  ack {self.ack or '-'}",
            f"tokens in {usage['input_tokens']} out {usage['output_tokens']}  heartbeat every {self.interval:g}s",
        ])


def _exit_cleanly(signum: int, frame: FrameType | None) -> NoReturn:
    """SIGTERM, SIGINT and SIGHUP (tmux kill-session) are the normal way to stop: exit 0."""
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (`fleet-stub-agent`); returns the exit status."""
    parser = argparse.ArgumentParser(prog=PROG, description="The fleet's dogfood agent runtime.")
    parser.add_argument("--model", help="model name to report (default: $FLEET_MODEL)")
    parser.add_argument("--interval", type=float, help="seconds between heartbeats (default: 5)")
    args = parser.parse_args(argv)
    try:
        who = Identity(os.environ, args.model)
        interval = heartbeat_interval(args.interval, os.environ)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_cleanly)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="replace")
    try:
        stdin_fd: int | None = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        stdin_fd = None
    return StubAgent(who, interval, Screen(sys.stdout)).run(stdin_fd)
