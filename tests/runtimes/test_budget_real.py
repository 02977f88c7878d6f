"""The budget loop closed with the REAL Codex: usage over pace steps a worker down, and back.

Through `fleet reconcile` as a person runs it: a fleet whose worker runs Codex with a
ladder of two models, its provider the loopback OpenAI fake. The fake answers each turn
with Codex's rate-limit headers; Codex itself writes them into its rollout's
`token_count` events, and `fleet reconcile` ingests those from its cursors each tick (no
`fleet budget ingest`, no hand-set usage). Over pace, the next reconcile restarts the
worker one rung down and the fake sees the cheaper model; once the provider reports the
window back under pace (its usage reset), the next reconcile returns it to the top rung
and the fake sees the original model. budget.yaml's `policy: hysteresis: 1s` lets the
return happen within the test rather than after the default 30 minutes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.model.observed import Heartbeat, SocketKey
from tests.plugins.tmux_server import kill_server
from tests.runtimes.fakes import codex_rate_headers, end_leftovers, serve
from tests.runtimes.test_fleet_reconcile_real import (
    BIN,
    CODEX_CONFIG,
    HOST,
    KEY,
    TENANT,
    UP_S,
    VENV_BIN,
    World,
)

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(not (BIN / "codex").exists(),
                       reason=f"codex is not installed in {BIN.parent.parent}: run ./dev setup (needs npm)"),
]

TOP, CHEAP = "gpt-5.5", "gpt-5.4-mini"

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: budget-real
defaults:
  socket_name: {socket}
  heartbeat_timeout: 5s
  startup_grace: 90s
  runtime: stub
  model: stub-large
runtimes:
  stub:
    command: "fleet-stub-agent --model {{model}}"
    ladder: [stub-large]
  codex:
    adapter: codex
    ladder: [{top}, {cheap}]
"""

ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: jarvis
host: w-real
agents:
  - name: orchestrator
    role: orchestrator
  - name: enhancer
    role: enhancer
  - name: coder
    role: coder
    runtime: codex
    model: {top}
    workdir: {work}
    env:
      FAKE_KEY: {key}
"""

BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: jarvis
accounts:
  - name: codex-plus
    provider: openai
    runtime: codex
    regime: subscription
    window: 7d
policy:
  hysteresis: 1s
"""


@pytest.fixture
def world(tmp_path: Path, tmux_socket: SocketKey) -> Iterator[World]:
    assert tmux_socket.name is not None
    home, state, work, repo = (tmp_path / n for n in ("home", "state", "work", "repo"))
    for folder in (home / ".codex", state, work, repo / "tenants" / TENANT):
        folder.mkdir(parents=True)
    with serve("openai") as openai:
        (repo / "fleet.yaml").write_text(FLEET.format(socket=tmux_socket.name, top=TOP, cheap=CHEAP))
        (repo / "tenants" / TENANT / "roster.yaml").write_text(ROSTER.format(top=TOP, work=work, key=KEY))
        (repo / "tenants" / TENANT / "budget.yaml").write_text(BUDGET)
        (home / ".codex" / "config.toml").write_text(CODEX_CONFIG.format(openai=openai.base_url))
        env = {"HOME": str(home), "PATH": f"{VENV_BIN}:{BIN}:/usr/local/bin:/usr/bin:/bin", "TERM": "xterm-256color",
               "LANG": "C.UTF-8", "FLEET_STATE_DIR": str(state), "XDG_RUNTIME_DIR": str(tmp_path / "no-systemd")}
        (tmp_path / "no-systemd").mkdir()
        world = World(repo, home, state, work, tmux_socket.name, env)
        world.openai = openai  # type: ignore[attr-defined]
        yield world
    kill_server(tmux_socket.name)
    left = end_leftovers(tmp_path)
    assert not left, f"the runtimes left processes behind after their tmux server exited: {left}"


def _report(world: World, used_percent: float) -> None:
    """From now on the provider answers that the week's window is `used_percent` used,
    resetting in six days (so about 14% of it has elapsed)."""
    with world.openai.lock:  # type: ignore[attr-defined]
        world.openai.headers.clear()  # type: ignore[attr-defined]
        world.openai.headers.update(codex_rate_headers(used_percent, int(time.time()) + 6 * 86400))  # type: ignore[attr-defined]


def _turn(world: World, text: str) -> str | None:
    """Send `text` to the worker (verified: acked at its turn's end); the model the
    provider was asked for in that turn."""
    sent = world.fleet("agent", "send", str(world.repo), "coder", text, "--verify", "--timeout", str(UP_S),
                       "--host", HOST, "--state-dir", str(world.state), "--output", "json")
    assert sent.returncode == 0, f"{sent.stdout} {sent.stderr}\n{world.screen('coder')}"
    assert json.loads(sent.stdout)["status"] == "verified", sent.stdout
    turns = [t for t in world.openai.turns() if text in json.dumps(t.messages)]  # type: ignore[attr-defined]
    assert turns, f"the provider never saw {text!r}"
    return turns[-1].model


def _on(world: World, model: str, before: Heartbeat | None) -> Heartbeat:
    """The worker's first heartbeat from a runtime started on `model` after `before`."""
    return world.wait_beat("coder", f"on {model}", lambda b: b.model == model and b.state == "idle" and (
        before is None or b.pid != before.pid))


def _reconcile(world: World) -> str:
    done = world.reconcile()
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _usage(world: World) -> dict[str, object]:
    doc: dict[str, object] = json.loads((world.state / TENANT / "usage" / "codex-plus.json").read_text())
    return doc


def test_over_pace_steps_the_codex_worker_down_and_back_up(world: World) -> None:
    _report(world, 80.0)
    first = _reconcile(world)
    assert "3 to spawn" in first, first
    beat = _on(world, TOP, None)
    assert _turn(world, "First task T-1") == TOP

    # Codex wrote the provider's 80% into its rollout; this reconcile ingests it itself and,
    # 80% used with ~14% of the week gone being over pace, restarts the worker one rung down.
    cursors = world.state / TENANT / "ingest" / "cursors.json"
    book = cursors.read_text() if cursors.exists() else None
    plan = world.plan()
    moves = {a["agent"]: (a["action"], a["model"]) for a in plan["actions"]}
    assert moves == {"coder": ("downgrade", CHEAP)}, plan["actions"]
    assert (cursors.read_text() if cursors.exists() else None) == book, "a dry-run moves no cursor"
    assert not (world.state / TENANT / "usage" / "codex-plus.json").exists(), "nor writes a usage record"
    down = _reconcile(world)
    assert "1 to restart" in down or "downgrade" in down, down
    usage = _usage(world)
    assert (usage["used_fraction"], usage["source"], usage["window"]) == (0.8, "codex-rollout", "7d"), usage
    assert cursors.exists() and cursors.read_text() != book
    beat = _on(world, CHEAP, beat)
    assert _turn(world, "Second task T-2") == CHEAP, "the provider sees the cheaper model"

    # The provider's window resets: its next answer says 5% used. Codex records it, the
    # next reconcile reads only what was appended and returns the worker to the top rung.
    _report(world, 5.0)
    assert _turn(world, "Third task T-3") == CHEAP
    back = _reconcile(world)
    assert "1 to restart" in back, back
    assert _usage(world)["used_fraction"] == 0.05
    _on(world, TOP, beat)
    assert _turn(world, "Fourth task T-4") == TOP, "back under pace, the provider sees the original model"
    steady = _reconcile(world)
    assert "0 to spawn, 0 to restart, 0 to stop" in steady, steady
