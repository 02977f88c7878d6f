"""`fleet agent send` waits for the agent's turn to end and never types a message twice;
the agent's pane is the one recorded at its spawn, whatever a person splits or adds.

The fleet of tests/e2e/test_ps_and_agent_verbs.py (the minimal example, real stub agents
heartbeating every 0.2 s on a private tmux socket, every verb a subprocess). The stub's
`/work SECONDS` makes its heartbeat say `working` for that long: a turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from reconciler.engine.agent_verbs import BUSY_EXIT
from reconciler.stub_agent import INPUT_TOKENS_PER_S
from tests.e2e import test_ps_and_agent_verbs as verbs
from tests.e2e.test_ps_and_agent_verbs import Fleet, wait_healthy
from tests.plugins.tmux_server import retry_until

AGENT = "orchestrator"
fleet, running = verbs.fleet, verbs.running  # the fixtures: a started minimal fleet


def _pane_id(f: Fleet) -> str:
    return f.pane(AGENT, "#{@fleet-pane}")


def _trailers(f: Fleet, msg_id: str) -> int:
    """How many times the agent's pane shows the message's trailer (its screen and history)."""
    return f.tmux("capture-pane", "-p", "-S", "-200", "-t", _pane_id(f)).count(f"[fleet:{msg_id}]")


def _working(f: Fleet) -> bool:
    beat = f.beat(AGENT)
    return beat is not None and beat.state == "working"


# --- a message never lands in a turn -------------------------------------------------------


def test_send_to_a_working_agent_waits_for_its_turn_to_end(running: Fleet) -> None:
    rc, work, err = running.send(AGENT, "/work 3", "--verify", "--timeout", "10")
    assert (rc, work["status"]) == (0, "verified"), err
    assert _working(running)
    rc, doc, err = running.send(AGENT, "after the turn", "--verify", "--timeout", "10")
    assert (rc, doc["status"]) == (0, "verified"), err
    assert "waited" in err and "for the agent to finish its turn" in err, err
    assert "waiting up to 600 s for demo/orchestrator to finish its turn: its heartbeat says working" in err, err
    # the stub took the line only once its 3 s turn was over: its simulated usage (tokens
    # per second worked) when the ack was seen already holds the whole turn
    beat = running.beat(AGENT)
    assert beat is not None and beat.ack == doc["id"]
    assert beat.usage["input_tokens"] >= 3 * INPUT_TOKENS_PER_S, beat.usage
    assert _trailers(running, doc["id"]) == 1


def test_send_gives_up_on_a_long_turn_typing_nothing_and_now_types_into_it(running: Fleet) -> None:
    rc, work, err = running.send(AGENT, "/work 60", "--verify", "--timeout", "10")
    assert (rc, work["status"]) == (0, "verified"), err
    rc, doc, err = running.send(AGENT, "too early", "--wait", "1")
    assert (rc, doc["status"]) == (BUSY_EXIT, "busy"), err
    assert "nothing typed: after 1 s its heartbeat says working" in err and "--now" in err, err
    assert _trailers(running, doc["id"]) == 0
    beat = running.beat(AGENT)
    assert beat is not None and beat.ack == work["id"]
    audit = (running.state_dir / "demo" / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit[-1])["result"] == "skipped" and doc["id"] in audit[-1]

    rc, now, err = running.send(AGENT, "into the turn", "--now", "--verify", "--timeout", "10")
    assert (rc, now["status"]) == (0, "verified"), err
    assert "waited" not in err
    beat = running.beat(AGENT)
    assert beat is not None and beat.state == "working"  # taken mid-turn: what --now is for


def test_a_typed_message_not_yet_acked_holds_the_next_one_back(running: Fleet) -> None:
    """Codex has no event when a turn starts, so the outbox stands in for it: the last
    message typed, not acked, and nothing heard from the agent since. Here the stub is
    hung (it stops reading and beating), so its `idle` record never moves again."""
    rc, hang, err = running.send(AGENT, "/hang", "--verify", "--timeout", "10")
    assert (rc, hang["status"]) == (0, "verified"), err
    assert retry_until(lambda: (b := running.beat(AGENT)) is not None and b.state == "idle", 10)
    rc, first, err = running.send(AGENT, "first")
    assert (rc, first["status"]) == (0, "sent"), err
    rc, second, err = running.send(AGENT, "second", "--wait", "1")
    assert (rc, second["status"]) == (BUSY_EXIT, "busy"), err
    assert f"{first['id']}, typed" in err and "is not acked" in err, err
    outbox = json.loads((running.state_dir / "demo" / "outbox" / f"{AGENT}.json").read_text())
    assert [t["id"] for t in outbox["typed"]][-1] == first["id"] and "first" not in json.dumps(outbox)


def test_two_sends_at_once_take_turns(running: Fleet) -> None:
    """Both find the stub idle; the outbox lock makes the second check again after the
    first typed, so it waits for the turn the first message started (the stub works 2 s
    on every message) instead of typing into it."""
    argv = ["agent", "send", str(running.repo), AGENT, "--verify", "--timeout", "20", "--output", "json"]
    procs = [subprocess.Popen([sys.executable, "-m", "reconciler.cli", *argv[:4], f"at once {i}", *argv[4:],
                               "--host", "demo", "--state-dir", str(running.state_dir)], env=running.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for i in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [json.loads(out)["status"] for out, _ in outs] == ["verified", "verified"]
    assert sum("for the agent to finish its turn" in err for _, err in outs) == 1, outs


# --- a retry checks first --------------------------------------------------------------------


def test_a_retry_of_an_acked_message_types_nothing(running: Fleet) -> None:
    rc, doc, err = running.send(AGENT, "once only", "--verify", "--timeout", "10")
    assert (rc, doc["status"]) == (0, "verified"), err
    rc, again, err = running.send(AGENT, "once only", "--id", doc["id"], "--verify", "--timeout", "10")
    assert (rc, again) == (0, {"id": doc["id"], "status": "verified"}), err
    assert "already acked" in err
    assert _trailers(running, doc["id"]) == 1


def test_a_retry_of_a_message_left_on_the_input_line_only_presses_enter(running: Fleet) -> None:
    tty = running.pane(AGENT, "#{pane_tty}")
    subprocess.run(["stty", "-F", tty, "-icrnl"], check=True, timeout=10)
    rc, doc, err = running.send(AGENT, "stuck on the line", "--verify", "--timeout", "1.5")
    assert (rc, doc["status"]) == (1, "typed_not_submitted"), err
    subprocess.run(["stty", "-F", tty, "icrnl"], check=True, timeout=10)
    rc, again, err = running.send(AGENT, "stuck on the line", "--id", doc["id"], "--verify", "--timeout", "10")
    assert (rc, again["status"]) == (0, "verified"), err
    assert "only Enter was pressed" in err
    assert _trailers(running, doc["id"]) == 1


def test_a_retry_when_a_later_message_is_acked_is_refused(running: Fleet) -> None:
    rc, early, _ = running.send(AGENT, "early", "--verify", "--timeout", "10")
    rc, _, _ = running.send(AGENT, "late", "--verify", "--timeout", "10")
    assert rc == 0
    rc, doc, err = running.send(AGENT, "early", "--id", early["id"])
    assert (rc, doc["status"]) == (1, "refused"), err
    assert "does not reach back far enough to show whether this one was taken" in err
    assert _trailers(running, early["id"]) == 1
    done = running.fleet("agent", "send", str(running.repo), AGENT, "x", "--id", "msg-nothex!")
    assert done.returncode == 1 and "is not a message id" in done.stderr


# --- the agent's pane, whatever a person adds ------------------------------------------------


def test_a_split_and_a_new_window_change_nothing_and_send_reaches_the_agents_pane(running: Fleet) -> None:
    agent_pane = _pane_id(running)
    assert agent_pane.startswith("%")
    split = running.tmux("split-window", "-b", "-P", "-F", "#{pane_id}", "-t", f"={AGENT}:", "sleep", "600").strip()
    running.tmux("new-window", "-t", f"={AGENT}", "sleep", "600")  # now the session's current window
    assert split != agent_pane and running.pane(AGENT, "#{pane_id}") != agent_pane
    plan = running.fleet("reconcile", str(running.repo), "--dry-run", "--detailed-exitcode", module="reconciler.cli")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    rows = wait_healthy(running, AGENT)
    assert rows[f"demo/{AGENT}"]["pid"] == int(running.tmux("display-message", "-p", "-t", agent_pane, "#{pane_pid}"))

    rc, doc, err = running.send(AGENT, "to the agent, not the split", "--verify", "--timeout", "10")
    assert (rc, doc["status"]) == (0, "verified"), err
    assert _trailers(running, doc["id"]) == 1
    assert f"[fleet:{doc['id']}]" not in running.tmux("capture-pane", "-p", "-t", split)


def test_the_agents_pane_dying_beside_a_live_split_is_dead_and_restarted(running: Fleet) -> None:
    agent_pane = _pane_id(running)
    running.tmux("split-window", "-b", "-t", f"={AGENT}:", "sleep", "600")  # listed before the agent
    os.kill(int(running.tmux("display-message", "-p", "-t", agent_pane, "#{pane_pid}")), signal.SIGKILL)
    assert retry_until(lambda: running.ps()[f"demo/{AGENT}"]["health"] == "dead", 10)
    done = running.reconcile()
    assert done.returncode == 0 and "1 to restart" in done.stdout, done.stdout + done.stderr
    wait_healthy(running, AGENT)
    assert _pane_id(running) != agent_pane

    # the agent's pane closed outright (a person's kill-pane), a split of theirs remains
    running.tmux("split-window", "-b", "-t", f"={AGENT}:", "sleep", "600")  # listed before the agent
    running.tmux("kill-pane", "-t", _pane_id(running))
    row = running.ps()[f"demo/{AGENT}"]
    assert row["health"] == "dead" and "is gone from its session" in row["health_message"], row
    done = running.reconcile()  # the second restart in a minute: it may back off first
    assert done.returncode == 0 and "is gone from its session" in done.stdout, done.stdout + done.stderr
