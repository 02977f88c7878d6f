"""Loopback fakes of the two provider APIs the real runtimes call, for tests/runtimes.

Claude Code speaks Anthropic's Messages API (`POST /v1/messages`, streamed as SSE) and
Codex speaks OpenAI's Responses API (`POST /v1/responses`, SSE). Each fake listens on
127.0.0.1 at a free port, answers every turn with one short text, and records every
request (model, system prompt or instructions, messages) so a test can assert what the
runtime really sent: the persona, the model after a switch. Switches make it answer 401
or a rate-limit error, `delay` holds each turn's answer that many seconds (a long turn,
so a test can act while the agent works), and `headers` are added to every answer
(rate-limit headers).
Nothing here leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPLY = "Done."


@dataclass(frozen=True)
class Recorded:
    """One request the runtime sent: what a test asserts on."""

    method: str
    path: str
    model: str | None
    system: str  # Anthropic `system` or OpenAI `instructions`, as one text
    messages: list[Any]  # Anthropic `messages` or OpenAI `input`
    body: dict[str, Any]
    headers: dict[str, str]
    at: float = field(default_factory=time.time)  # when it arrived (epoch seconds), to order it against answers

    def text(self) -> str:
        """Everything the model was shown, as one string (system prompt and messages)."""
        return self.system + "\n" + json.dumps(self.messages)


@dataclass
class FakeProvider:
    """State shared by the handler threads: the switches and the request log."""

    kind: str  # "anthropic" | "openai"
    reply: str = REPLY
    fail: int | None = None  # 401 or 429: every model request answers this
    delay: float = 0.0  # seconds each turn waits before it is answered: the agent is working
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    answered: dict[int, float] = field(default_factory=dict)  # request index -> when its answer was sent (epoch s)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def turns(self) -> list[Recorded]:
        """The model requests (not token counts or model lists), oldest first."""
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0] in TURN_PATHS]

    def answered_at(self, request: Recorded) -> float | None:
        """When the answer to `request` was sent (epoch seconds), None while it waits."""
        with self.lock:
            return next((self.answered.get(i) for i, r in enumerate(self.requests) if r is request), None)


TURN_PATHS = ("/v1/messages", "/v1/responses")


def _system_text(value: object) -> str:
    """Anthropic's `system` is a string or a list of text blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(b.get("text", "")) for b in value if isinstance(b, dict))
    return ""


def _sse(event: str, data: Mapping[str, object]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream(model: str, text: str) -> bytes:
    """One assistant turn as the Messages API streams it."""
    usage = {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return b"".join([
        _sse("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}}),
        _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
        _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
        _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"output_tokens": 5}}),
        _sse("message_stop", {"type": "message_stop"}),
    ])


def anthropic_message(model: str, text: str) -> dict[str, object]:
    """The same turn, for a request without `stream`."""
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 5}}


def openai_stream(model: str, text: str) -> bytes:
    """One assistant turn as the Responses API streams it."""
    response = {"id": "resp_fake", "object": "response", "model": model, "status": "in_progress", "output": []}
    item = {"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}
    return b"".join([
        _sse("response.created", {"type": "response.created", "response": response}),
        _sse("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
        _sse("response.completed", {"type": "response.completed",
                                    "response": {**response, "status": "completed", "output": [item], "usage": usage}}),
    ])


ERRORS = {
    ("anthropic", 401): {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
    ("anthropic", 429): {"type": "error", "error": {"type": "rate_limit_error", "message": "rate limited (fake)"}},
    ("openai", 401): {"error": {"message": "Incorrect API key provided (fake)", "type": "invalid_request_error",
                                "code": "invalid_api_key"}},
    ("openai", 429): {"error": {"message": "Rate limit reached (fake)", "type": "requests",
                                "code": "rate_limit_exceeded"}},
}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read `requests`
        return

    def do_GET(self) -> None:
        self._record({})
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            self._json(200, {"object": "list", "data": [], "models": []})
        else:
            self._json(404, {"error": {"message": f"no such path {path} (fake)"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        index = self._record(body if isinstance(body, dict) else {})
        fake = self.server.fake
        path = self.path.split("?")[0]
        model = str(body.get("model") or "fake-model")
        if path.endswith("/count_tokens"):
            self._json(200, {"input_tokens": 12})
        elif path not in TURN_PATHS:
            self._json(404, {"error": {"message": f"no such path {path} (fake)"}})
        elif fake.fail is not None:
            self._json(fake.fail, ERRORS[(fake.kind, fake.fail)], {"retry-after": "1"} if fake.fail == 429 else {})
        elif fake.kind == "anthropic" and not body.get("stream"):
            self._json(200, anthropic_message(model, fake.reply))
        else:
            if fake.delay:
                time.sleep(fake.delay)
            stream = anthropic_stream if fake.kind == "anthropic" else openai_stream
            self._send(200, stream(model, fake.reply), "text/event-stream")
            with fake.lock:
                fake.answered[index] = time.time()

    def _record(self, body: dict[str, Any]) -> int:
        fake = self.server.fake
        system = _system_text(body.get("system")) if fake.kind == "anthropic" else str(body.get("instructions") or "")
        messages = body.get("messages") if fake.kind == "anthropic" else body.get("input")
        entry = Recorded(self.command, self.path, body.get("model"), system,
                         messages if isinstance(messages, list) else [], body, dict(self.headers.items()))
        with fake.lock:
            fake.requests.append(entry)
            return len(fake.requests) - 1

    def _json(self, status: int, doc: object, extra: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", extra)

    def _send(self, status: int, payload: bytes, ctype: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in {**self.server.fake.headers, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@contextmanager
def serve(kind: str, **switches: Any) -> Iterator[FakeProvider]:
    """A running fake of `kind` ("anthropic" or "openai") on 127.0.0.1, stopped on exit."""
    fake = FakeProvider(kind, **switches)
    server = _Server(fake)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name=f"fake-{kind}", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def processes_under(root: Path) -> dict[int, str]:
    """Processes whose program or command line lies under `root` (a test's HOME): what a
    runtime left behind, e.g. a daemon reparented to init after its tmux server exited."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if str(root) in command.split(" ", 1)[0] or f"HOME={root}" in command:
            found[int(entry.name)] = command[:200]
    return found


def end_leftovers(root: Path, seconds: float = 15.0) -> dict[int, str]:
    """After the test's tmux server is gone: wait for the runtimes under `root` to exit;
    end (SIGKILL) and return whatever is still running then."""
    deadline = time.monotonic() + seconds
    while (left := processes_under(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def codex_rate_headers(used_percent: float, resets_at: int) -> dict[str, str]:
    """The rate-limit headers Codex reads from a Responses API answer (names found in the
    0.169.0 binary; it copies them into its rollout's `token_count` events as
    `rate_limits`): both windows, primary 5 h and secondary 7 d, at the same use."""
    headers = {}
    for window, minutes in (("primary", 300), ("secondary", 10080)):
        headers |= {f"x-codex-{window}-used-percent": f"{used_percent:.1f}",
                    f"x-codex-{window}-window-minutes": str(minutes),
                    f"x-codex-{window}-reset-at": str(resets_at)}
    return headers
