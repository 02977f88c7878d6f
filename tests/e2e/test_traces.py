"""Traces as an operator gets them: `fleet reconcile` through the CLI, real tmux on a
private socket, real stub agents, the real OTLP/HTTP exporter to a receiver on loopback
that decodes the protobuf (tests/plugins/otlp_receiver.py).

One run spawns, restarts and downgrades: its span has the steps as children, the apply
step one child per action with its attributes, and a started stub agent's environment
holds the trace context of its own action's span. Switching traces off afterwards
plans nothing: the context is not part of the spec hash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.model.observed import SocketKey
from tests.engine.test_budget_apply import STUB, TENANT, fleet_repo, set_usage, wait_beat
from tests.plugins.otlp_receiver import Receiver

pytestmark = pytest.mark.tmux

STEPS = ["apply", "load", "observe", "plan", "write-back"]


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """Traces off (no OTEL_* at all), tmux-only (no systemd units in the way), fast stub beats."""
    assert STUB.exists(), f"{STUB} is missing: run `pip install -e '.[dev]'`"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OTEL_") and k not in {"TRACEPARENT", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS",
                                                       "MOSAIC_AGENT_COMMAND"}}
    return {**env, "FLEET_STUB_INTERVAL": "0.2", "FLEET_STATE_DIR": str(tmp_path / "state")}


def pane_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_one_reconcile_is_one_trace_with_a_span_per_action(
        tmp_path: Path, tmux_socket: SocketKey, base_env: dict[str, str], otlp_receiver: Receiver) -> None:
    assert tmux_socket.name
    state = tmp_path / "state"
    reset = datetime.now(UTC) + timedelta(days=3, hours=12)  # half the 7d window gone: 55% allowed
    repo = fleet_repo(tmp_path / "repo", tmux_socket.name, reset)
    args = ("reconcile", str(repo), "--no-git", "--host", "demo")
    first = fleet(base_env, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    old = {a: wait_beat(state, a, "stub-large") for a in ("orchestrator", "enhancer", "coder0")}

    # the next run has one of each: coder0 over pace (downgrade), enhancer's spec changed
    # (restart), a new agent (spawn)
    set_usage(state, 0.90, reset, datetime.now(UTC))
    roster = repo / "tenants" / TENANT / "roster.yaml"
    roster.write_text(roster.read_text().replace(
        "  - name: enhancer\n    role: enhancer\n",
        "  - name: enhancer\n    role: enhancer\n    env:\n      MOOD: curious\n"
        "  - name: reviewer\n    role: enhancer\n"))
    traced = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}
    second = fleet(traced, *args)
    assert second.returncode == 0, second.stdout + second.stderr

    runs = otlp_receiver.named("fleet reconcile")
    assert len(runs) == 1, [s.name for s in otlp_receiver.spans]
    run = runs[0]
    assert run.parent_id == "", "the run is the trace's root"
    assert run.attrs["fleet.host"] == "demo" and run.attrs["fleet.tenant"] == TENANT
    assert (run.attrs["fleet.actions.spawn"], run.attrs["fleet.actions.restart"],
            run.attrs["fleet.actions.downgrade"], run.attrs["fleet.exit_code"]) == (1, 1, 1, 0)
    assert run.resource["service.name"] == "mosaic-fleet"
    assert sorted(s.name for s in otlp_receiver.children(run)) == STEPS
    for step in otlp_receiver.children(run):
        assert step.attrs["fleet.host"] == "demo" and step.attrs["fleet.tenant"] == TENANT, step

    apply = next(s for s in otlp_receiver.children(run) if s.name == "apply")
    actions = {s.name: s for s in otlp_receiver.children(apply)}
    assert sorted(actions) == ["downgrade", "restart", "spawn"], "one span per action"
    expected = {  # span -> agent, model, rule
        "spawn": ("reviewer", "stub-large", "absent"),
        "restart": ("enhancer", "stub-large", "spec-changed"),
        "downgrade": ("coder0", "stub-small", "budget-downgrade"),
    }
    for name, (agent, model, rule) in expected.items():
        span = actions[name]
        assert (span.attrs["fleet.agent"], span.attrs["gen_ai.agent.name"], span.attrs["gen_ai.request.model"],
                span.attrs["fleet.rule"]) == (agent, agent, model, rule), span.attrs
        assert span.attrs["fleet.tenant"] == TENANT and span.attrs["fleet.host"] == "demo"
        assert span.attrs["fleet.action"] == name and span.attrs["fleet.result"] == "done"
        assert span.attrs["fleet.reason"], "the reason in words"
        assert not span.error
    assert "used 90.0%" in actions["downgrade"].attrs["fleet.reason"]
    assert actions["downgrade"].attrs["gen_ai.usage.input_tokens"] >= 0, "what the replaced session had used"

    # each started agent holds its own action span's context, under both names
    for name, (agent, model, _rule) in expected.items():
        beat = wait_beat(state, agent, model, not_pid=old[agent].pid if agent in old else None)
        assert beat.pid is not None
        env = pane_environ(beat.pid)
        given = env.get("TRACEPARENT", "")
        assert given.startswith(f"00-{run.trace_id}-{actions[name].span_id}-"), (agent, given)  # flags: sampled
        assert env.get("FLEET_TRACEPARENT") == given
        assert env["OTEL_RESOURCE_ATTRIBUTES"] == (f"fleet.tenant={TENANT},fleet.host=demo,fleet.agent={agent},"
                                                   f"gen_ai.agent.name={agent}")
        assert "CLAUDE_CODE_ENABLE_TELEMETRY" not in env, "only Claude Code agents get their own telemetry"
    assert "TRACEPARENT" not in pane_environ(old["orchestrator"].pid), "an untouched agent keeps its environment"

    # traces off again: the context was never part of the spec, so nothing is restarted
    again = fleet(base_env, *args, "--dry-run", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr


def test_an_unreachable_collector_does_not_hold_a_run(tmp_path: Path, base_env: dict[str, str]) -> None:
    """A hang guard, not a timing measurement: a port nobody listens on, and the run still
    ends well within the bound (the exporter's timeout is 1 s unless OTEL_* says otherwise)."""
    repo = fleet_repo(tmp_path / "repo", "unused", datetime.now(UTC) + timedelta(days=3))
    import socket  # noqa: PLC0415

    with socket.socket() as probe:  # a free port, closed again: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    began = time.monotonic()
    done = fleet(env, "reconcile", str(repo), "--dry-run", "--host", "demo")
    took = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 10, f"the run waited {took:.1f}s on its exporter"



IMPORTS = """\
import sys
from reconciler.cli.app import main
sys.argv = ["fleet", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("EXIT", code, sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""


def test_with_traces_off_nothing_of_opentelemetry_is_imported(
        tmp_path: Path, tmux_socket: SocketKey, base_env: dict[str, str], otlp_receiver: Receiver) -> None:
    """An applying `fleet reconcile` that spawns, in one process: no `opentelemetry` module
    in sys.modules after it. The same run with an endpoint set does import it (so the
    check can fail)."""
    assert tmux_socket.name
    repo = fleet_repo(tmp_path / "repo", tmux_socket.name, datetime.now(UTC) + timedelta(days=3))
    args = ["reconcile", str(repo), "--no-git", "--host", "demo"]
    off = fleet_code(base_env, *args)
    assert off.startswith("EXIT 0 []"), off
    on = fleet_code({**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}, *args, "--dry-run")
    assert on.startswith("EXIT 0 [") and "'opentelemetry.sdk.trace'" in on, on


def fleet_code(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", IMPORTS, *args], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    return done.stdout.splitlines()[-1] if done.stdout else done.stderr


def test_agent_send_and_its_verification_are_spans(
        tmp_path: Path, tmux_socket: SocketKey, base_env: dict[str, str], otlp_receiver: Receiver) -> None:
    """`fleet agent send --verify`, run where a TRACEPARENT is set (a CI job, or an agent's
    own tool call): the send continues that trace, its verification a child of it."""
    assert tmux_socket.name
    state = tmp_path / "state"
    repo = fleet_repo(tmp_path / "repo", tmux_socket.name, datetime.now(UTC) + timedelta(days=3))
    started = fleet(base_env, "reconcile", str(repo), "--no-git", "--host", "demo")
    assert started.returncode == 0, started.stdout + started.stderr
    wait_beat(state, "orchestrator", "stub-large")
    outer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    env = {**base_env, "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "TRACEPARENT": outer}
    sent = fleet(env, "agent", "send", str(repo), "orchestrator", "hello", "--verify", "--timeout", "20",
                 "--host", "demo", "--output", "json")
    assert sent.returncode == 0, sent.stdout + sent.stderr

    [send] = otlp_receiver.named("fleet agent send")
    assert (send.trace_id, send.parent_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert send.attrs["fleet.tenant"] == TENANT and send.attrs["fleet.host"] == "demo"
    assert send.attrs["gen_ai.agent.name"] == "orchestrator" and send.attrs["gen_ai.request.model"] == "stub-large"
    assert send.attrs["fleet.send.status"] == "verified" and send.attrs["fleet.send.verify"] is True
    assert send.attrs["fleet.message.id"] in sent.stdout and "hello" not in str(send.attrs), "never the text"
    [verify] = otlp_receiver.children(send)
    assert verify.name == "verify" and verify.attrs["fleet.send.status"] == "verified" and not verify.error
    assert verify.attrs["fleet.agent"] == "orchestrator"


def test_fleet_hook_sends_a_span_per_heartbeat_state_change(tmp_path: Path, otlp_receiver: Receiver) -> None:
    """Claude Code calls `fleet-hook` with the pane's FLEET_TRACEPARENT (its own TRACEPARENT
    is Claude's): each change of state is one `heartbeat` span under the spawn's span, a
    call that keeps the state sends none."""
    hook = Path(sys.executable).with_name("fleet-hook")
    spawn = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    env = {"PATH": os.environ["PATH"], "FLEET_TENANT": TENANT, "FLEET_AGENT": "coder0", "FLEET_HOST": "demo",
           "FLEET_MODEL": "opus", "FLEET_STATE_DIR": str(tmp_path), "FLEET_TRACEPARENT": spawn,
           "TRACEPARENT": "00-11111111111111111111111111111111-2222222222222222-01",  # Claude's, not ours
           "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint}
    for name in ("UserPromptSubmit", "PreToolUse", "Stop"):  # idle -> working, working again, -> idle
        done = subprocess.run([str(hook), "claude"], input=f'{{"hook_event_name": "{name}"}}', env=env,
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    beats = otlp_receiver.named("heartbeat")
    assert [b.events for b in beats] == [
        (("heartbeat.state", {"fleet.heartbeat.state": "working", "fleet.heartbeat.previous": "",
                              "fleet.heartbeat.event": "UserPromptSubmit", "fleet.heartbeat.seq": 1}),),
        (("heartbeat.state", {"fleet.heartbeat.state": "idle", "fleet.heartbeat.previous": "working",
                              "fleet.heartbeat.event": "Stop", "fleet.heartbeat.seq": 3}),),
    ]
    for beat in beats:
        assert (beat.trace_id, beat.parent_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        assert beat.attrs["fleet.tenant"] == TENANT and beat.attrs["fleet.host"] == "demo"
        assert beat.attrs["gen_ai.agent.name"] == "coder0" and beat.attrs["gen_ai.request.model"] == "opus"
