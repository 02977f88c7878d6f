"""Helpers for tests/web: a real uvicorn on 127.0.0.1 in a thread, and `fleet serve` as a
subprocess; server-sent events read off a real HTTP stream."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.plugins.tmux_server import retry_until


@contextmanager
def uvicorn_thread(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """`app` served on a free loopback port (or on `sock`); yields its base URL."""
    if sock is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert retry_until(lambda: server.started, 20), "uvicorn did not start"
        name = sock.getsockname()
        yield f"http://127.0.0.1:{name[1]}" if isinstance(name, tuple) else "http://fleet"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def iter_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of a streaming response, decoded, as they come (a response's
    lines can be iterated once: keep this iterator to read more later)."""
    name, data = "", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and name:
            yield name, json.loads(data)
            name, data = "", ""


def read_events(response: httpx.Response, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` server-sent events of a streaming response, decoded."""
    events: list[tuple[str, dict[str, Any]]] = []
    for event in iter_events(response):
        events.append(event)
        if len(events) == count:
            break
    return events


@contextmanager
def fleet_serve(repo: Path, state_dir: Path, env: dict[str, str], *args: str, host: str = "demo") -> Iterator[str]:
    """`fleet serve REPO --port 0` as a subprocess; yields the URL it prints."""
    argv = [sys.executable, "-m", "reconciler.cli", "serve", str(repo), "--host", host, "--state-dir",
            str(state_dir), "--port", "0", *args]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    with printed_url(proc) as url:
        yield url


@contextmanager
def printed_url(proc: subprocess.Popen[str]) -> Iterator[str]:
    """The URL a started `fleet serve` prints on stderr; the server is stopped on leaving."""
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"http://[\d.]+:\d+/", line)
        assert found, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield found.group(0).rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment the e2e fleets use: no inherited fleet settings, systemd pinned away."""
    no_systemd = tmp_path / "no-systemd"
    no_systemd.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in {"MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"}}
    return env | {"FLEET_STUB_INTERVAL": "0.2", "XDG_RUNTIME_DIR": str(no_systemd)}
