"""The provider fakes answer the way the runtimes expect, and record what they were sent."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.runtimes.fakes import serve


def post(url: str, doc: dict[str, object]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers.items()), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def events(payload: bytes) -> list[str]:
    return [line.split(": ", 1)[1] for line in payload.decode().splitlines() if line.startswith("event: ")]


def test_anthropic_streams_a_turn_and_records_the_system_prompt() -> None:
    with serve("anthropic", headers={"anthropic-ratelimit-unified-status": "allowed"}) as fake:
        status, headers, body = post(f"{fake.base_url}/v1/messages", {
            "model": "claude-opus-x", "stream": True, "system": [{"type": "text", "text": "You are Mos."}],
            "messages": [{"role": "user", "content": "hi [fleet:msg-ab]"}]})
    assert status == 200 and headers["anthropic-ratelimit-unified-status"] == "allowed"
    assert events(body) == ["message_start", "content_block_start", "content_block_delta",
                            "content_block_stop", "message_delta", "message_stop"]
    (turn,) = fake.turns()
    assert turn.model == "claude-opus-x" and turn.system == "You are Mos." and "msg-ab" in turn.text()


def test_openai_streams_a_turn_with_usage_and_records_the_instructions() -> None:
    with serve("openai") as fake:
        status, _, body = post(f"{fake.base_url}/v1/responses", {
            "model": "gpt-5.5", "stream": True, "instructions": "Be brief.", "input": [{"role": "user"}]})
    assert status == 200
    assert events(body) == ["response.created", "response.output_item.done", "response.completed"]
    completed = json.loads(body.decode().strip().splitlines()[-1].split(": ", 1)[1])
    assert completed["response"]["usage"]["total_tokens"] == 15
    assert fake.turns()[0].system == "Be brief." and fake.turns()[0].model == "gpt-5.5"


@pytest.mark.parametrize(("kind", "path", "status", "kind_of_error"), [
    ("anthropic", "/v1/messages", 401, "authentication_error"),
    ("anthropic", "/v1/messages", 429, "rate_limit_error"),
    ("openai", "/v1/responses", 401, "invalid_api_key"),
    ("openai", "/v1/responses", 429, "rate_limit_exceeded"),
])
def test_switches_answer_errors(kind: str, path: str, status: int, kind_of_error: str) -> None:
    with serve(kind, fail=status) as fake:
        got, headers, body = post(fake.base_url + path, {"model": "m", "stream": True})
    assert got == status and kind_of_error in body.decode()
    assert (headers.get("retry-after") == "1") == (status == 429)
    assert len(fake.turns()) == 1
