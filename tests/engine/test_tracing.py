"""The apply step's action spans and the variables a started agent is handed (engine/tracing.py).

With the process's tracer swapped for a real SDK tracer whose exporter is the SDK's own
in-memory one (so no collector is needed, and nothing leaks into other tests), and with
traces off (the shared no-op): dressing a launch never moves its spec hash, Claude Code
gets its own telemetry and the stub does not, the spec's own variables win, and every
span ends with its outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from reconciler.core.plan import Action, ActionKind, Reason
from reconciler.drivers import telemetry
from reconciler.engine.apply import Outcome
from reconciler.engine.tracing import ActionSpans
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import Heartbeat, SocketKey

otel = pytest.importorskip("reconciler.drivers.telemetry.otel")
memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")

SOCKET = SocketKey(None, "fleet-test")
ENDPOINT = "http://127.0.0.1:4318"


def action(kind: ActionKind, agent: str, adapter: str | None, env: tuple[tuple[str, str], ...] = ()) -> Action:
    launch = LaunchSpec("jarvis", agent, "w1", SOCKET, ("claude",), env, None, "opus", f"hash-{agent}", adapter=adapter)
    return Action(kind, "jarvis", "w1", agent, SOCKET, "opus", Reason("absent", f"{agent} is not running"),
                  launch=launch)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Traces on for this test only: a real SDK tracer, spans kept in memory."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", ENDPOINT)
    sink = memory.InMemorySpanExporter()
    tracer = otel.OtelTracer({}, timeout=1.0, exporter=sink)
    monkeypatch.setattr(telemetry, "_tracer", tracer)
    yield lambda: (tracer.flush(), sink.get_finished_spans())[1]


class Dressed(NamedTuple):
    test_id: str
    adapter: str | None
    own_env: tuple[tuple[str, str], ...]
    claude: bool
    resource: str


CASES = [
    Dressed("claude-gets-its-own-telemetry", "claude", (), True,
            "fleet.tenant=jarvis,fleet.host=w1,fleet.agent=a,gen_ai.agent.name=a"),
    Dressed("stub-only-the-context", None, (), False,
            "fleet.tenant=jarvis,fleet.host=w1,fleet.agent=a,gen_ai.agent.name=a"),
    Dressed("the-spec-env-wins", "claude", (("OTEL_RESOURCE_ATTRIBUTES", "team=x"), ("TRACEPARENT", "old")), True,
            "team=x"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.test_id)
def test_a_started_agent_gets_its_spans_context_and_keeps_its_hash(exported: Any, case: Dressed) -> None:
    planned = action(ActionKind.SPAWN, "a", case.adapter, case.own_env)
    spans = ActionSpans([planned], {})
    assert planned.launch is not None
    dressed = spans.dress(planned.launch)
    env = dict(dressed.env)
    assert dressed.spec_hash == planned.launch.spec_hash, "switching traces on restarts nobody"
    assert env["TRACEPARENT"] == env["FLEET_TRACEPARENT"] != "old"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == ENDPOINT and env["OTEL_RESOURCE_ATTRIBUTES"] == case.resource
    assert ("CLAUDE_CODE_ENABLE_TELEMETRY" in env) is case.claude
    assert len([k for k, _ in dressed.env if k == "TRACEPARENT"]) == 1
    spans.finish([Outcome(planned, "done")])
    [span] = exported()
    assert env["TRACEPARENT"].split("-")[2] == f"{span.context.span_id:016x}", "the context names this action's span"
    assert span.name == "spawn" and span.attributes["fleet.result"] == "done"


def test_every_span_ends_with_its_outcome(exported: Any) -> None:
    stop, refuse, restart = (action(ActionKind.STOP, "s", None), action(ActionKind.REFUSE, "r", None),
                             action(ActionKind.RESTART, "b", "claude"))
    beat = Heartbeat("jarvis", "w1", "b", 7, None, "working", "opus", usage={"input_tokens": 5, "output_tokens": 2})  # type: ignore[arg-type]
    spans = ActionSpans([stop, refuse, restart], {("jarvis", "b"): beat})
    spans.finish([Outcome(stop, "done"), Outcome(refuse, "skipped", "refused by the budget policy"),
                  Outcome(restart, "failed", "tmux said no")])
    by_name = {s.name: s for s in exported()}
    assert sorted(by_name) == ["refuse", "restart", "stop"]
    assert by_name["refuse"].attributes["fleet.detail"] == "refused by the budget policy"
    assert by_name["restart"].status.status_code.name == "ERROR" and by_name["restart"].status.description == "tmux said no"
    assert (by_name["restart"].attributes["gen_ai.usage.input_tokens"],
            by_name["restart"].attributes["fleet.heartbeat.state"]) == (5, "working")
    assert by_name["restart"].attributes["fleet.reason"] == "b is not running"


def test_a_group_that_raised_still_ends_its_spans(exported: Any) -> None:
    spans = ActionSpans([action(ActionKind.SPAWN, "x", None)], {})
    spans.abandon("the apply of this group raised")
    [span] = exported()
    assert span.status.status_code.name == "ERROR"


def test_with_traces_off_nothing_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_tracer", None)
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    planned = action(ActionKind.SPAWN, "a", "claude")
    assert planned.launch is not None
    assert ActionSpans([planned], {}).dress(planned.launch) is planned.launch
    assert not telemetry.on()
