"""`fleet-hook`: the event -> heartbeat map (table-driven) and the console script itself."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.drivers.files import parse_heartbeat
from reconciler.hooks import fleet_hook
from reconciler.hooks.fleet_hook import next_heartbeat, transition
from reconciler.model.layout import StateLayout

HOOK = str(Path(sys.executable).with_name("fleet-hook"))


def test_doctests_pass() -> None:
    assert doctest.testmod(fleet_hook, raise_on_error=False).failed == 0


@pytest.mark.parametrize(("source", "event", "expected"), [
    ("claude", {"hook_event_name": "SessionStart", "source": "startup"}, ("idle", None)),
    ("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "hello [fleet:msg-abc123]"}, ("working", "msg-abc123")),
    ("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "typed by a person"}, ("working", None)),
    ("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "[fleet:msg-aa] then [fleet:msg-bb]"}, ("working", "msg-bb")),
    ("claude", {"hook_event_name": "PreToolUse", "tool_name": "Bash"}, ("working", None)),
    ("claude", {"hook_event_name": "PostToolUse", "tool_name": "Bash"}, ("working", None)),
    ("claude", {"hook_event_name": "Notification", "notification_type": "permission_prompt"}, ("waiting", None)),
    ("claude", {"hook_event_name": "Notification", "notification_type": "elicitation_dialog"}, ("waiting", None)),
    ("claude", {"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"}, ("waiting", None)),
    ("claude", {"hook_event_name": "Notification", "notification_type": "idle_prompt"}, ("idle", None)),
    ("claude", {"hook_event_name": "Notification", "notification_type": "auth_success"}, (None, None)),
    ("claude", {"hook_event_name": "Stop", "stop_hook_active": False}, ("idle", None)),
    ("claude", {"hook_event_name": "SubagentStop"}, ("working", None)),
    ("claude", {"hook_event_name": "SessionEnd", "reason": "exit"}, ("idle", None)),
    ("claude", {"hook_event_name": "SomethingNew"}, (None, None)),
    ("statusline", {"model": {"id": "claude-opus"}, "session_id": "s"}, (None, None)),
    ("codex-notify", {"type": "agent-turn-complete", "turn-id": "1", "input-messages": ["hi [fleet:msg-c0de]"],
                      "last-assistant-message": "Done."}, ("idle", "msg-c0de")),
    ("codex-notify", {"type": "agent-turn-complete", "input-messages": "not a list"}, ("idle", None)),
    ("codex-notify", {"type": "approval-requested"}, ("waiting", None)),
    ("codex-notify", {"type": "unknown"}, (None, None)),
])
def test_transition_table(source: str, event: dict[str, object], expected: tuple[str | None, str | None]) -> None:
    assert transition(source, event) == expected


IDENT = {"FLEET_TENANT": "jarvis", "FLEET_AGENT": "coder0-0", "FLEET_HOST": "w-jarvis", "FLEET_MODEL": "opus"}

#: StopFailure as Claude Code 2.1.328 sent it against the fake answering 401 (measured).
AUTH_FAILURE = {"session_id": "d1121a89", "hook_event_name": "StopFailure", "error": "authentication_failed",
                "last_assistant_message": "Invalid API key · Fix external API key"}


@pytest.mark.parametrize(("error", "state", "held"), [
    ("authentication_failed", "waiting", "auth"),
    ("oauth_org_not_allowed", "waiting", "auth"),
    ("billing_error", "waiting", "usage-limit"),
    ("rate_limit", "waiting", "usage-limit"),
    ("overloaded", "idle", None),
    ("server_error", "idle", None),
])
def test_a_stop_failure_holds_the_agent_only_when_it_cannot_pass_it(error: str, state: str, held: str | None) -> None:
    record = next_heartbeat(None, "claude", {**AUTH_FAILURE, "error": error}, IDENT, 42, 0.0)
    assert (record["state"], record["held"]) == (state, held)
    parsed = parse_heartbeat(json.dumps(record))
    assert parsed.held == held and (held is None or parsed.reason == f"{error}: Invalid API key · Fix external API key")


def test_a_hold_lasts_until_a_new_turn_or_a_new_runtime() -> None:
    held = next_heartbeat(None, "claude", AUTH_FAILURE, IDENT, 42, 0.0)
    for source, event in (("statusline", {}), ("claude", {"hook_event_name": "Notification",
                                                          "notification_type": "idle_prompt"}),
                          ("claude", {"hook_event_name": "SessionEnd"})):
        held = next_heartbeat(held, source, event, IDENT, 42, 1.0)
        assert (held["state"], held["held"]) == ("waiting", "auth"), (source, event)
    for source, event in (("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "again"}),
                          ("claude", {"hook_event_name": "SessionStart"}), ("launch", {}),
                          ("codex-notify", {"type": "agent-turn-complete"})):
        cleared = next_heartbeat(held, source, event, IDENT, 42, 2.0)
        assert cleared["held"] is None and cleared["reason"] is None and cleared["state"] != "waiting", source


def test_a_sequence_of_events_carries_ack_and_since_forward() -> None:
    events = [
        ("claude", {"hook_event_name": "SessionStart"}, 0.0),
        ("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "go [fleet:msg-01]"}, 10.0),
        ("claude", {"hook_event_name": "PreToolUse"}, 12.0),
        ("statusline", {"context_window": {"total_input_tokens": 900, "total_output_tokens": 40}}, 13.0),
        ("claude", {"hook_event_name": "Stop"}, 20.0),
    ]
    record: dict[str, object] | None = None
    history = []
    for source, event, now in events:
        record = next_heartbeat(record, source, event, IDENT, 4242, now)
        history.append(record)
    assert [r["state"] for r in history] == ["idle", "working", "working", "working", "idle"]
    assert [r["ack"] for r in history] == [None, "msg-01", "msg-01", "msg-01", "msg-01"]
    assert [r["seq"] for r in history] == [1, 2, 3, 4, 5]
    assert history[3]["since"] == "1970-01-01T00:00:10Z"  # working since the prompt, not the tick
    assert history[4]["usage"] == {"input_tokens": 900, "output_tokens": 40}
    assert parse_heartbeat(json.dumps(history[4])).ack == "msg-01"


def test_codex_thread_ids_are_kept_across_events_and_restarts() -> None:
    """The thread each `notify` names is kept (newest last, a few at most): the observe
    step resumes the agent's conversation from them after a restart (`launch`)."""
    main, title = "01a249b6-a332-7350-b445-9998cb79cd53", "01a249b6-a474-7850-910f-58c7af8ca795"
    turn = {"type": "agent-turn-complete", "thread-id": main, "input-messages": ["go"]}
    record = next_heartbeat(None, "codex-notify", turn, IDENT, 1, 0.0)
    record = next_heartbeat(record, "codex-notify", {**turn, "thread-id": title}, IDENT, 1, 1.0)
    record = next_heartbeat(record, "codex-notify", turn, IDENT, 1, 2.0)
    assert record["threads"] == [title, main]
    record = next_heartbeat(record, "launch", {}, IDENT, 2, 3.0)
    assert record["threads"] == [title, main], "a restart keeps them"
    assert parse_heartbeat(json.dumps(record)).threads == (title, main)
    ids = [f"01a249b6-0000-7000-8000-{n:012d}" for n in range(12)]
    for thread in ids:
        record = next_heartbeat(record, "codex-notify", {**turn, "thread-id": thread}, IDENT, 2, 4.0)
    assert record["threads"] == ids[-fleet_hook.MAX_THREADS:]
    record = next_heartbeat(record, "codex-notify", {**turn, "thread-id": "../../etc"}, IDENT, 2, 5.0)
    assert record["threads"] == ids[-fleet_hook.MAX_THREADS:], "only ids shaped like Codex's are kept"


def test_a_damaged_previous_record_starts_over() -> None:
    record = next_heartbeat({"seq": "x", "state": "asleep", "usage": 3}, "statusline", {}, IDENT, None, 0.0)
    assert (record["seq"], record["state"], record["usage"]) == (1, "idle", {})


def run_hook(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([HOOK, *args], input=stdin, env=env, capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def pane_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], **IDENT, "FLEET_STATE_DIR": str(tmp_path)}


def heartbeat(tmp_path: Path) -> dict[str, object]:
    return json.loads(StateLayout(tmp_path).heartbeat("jarvis", "coder0-0").read_text())


def test_the_script_writes_and_acks(tmp_path: Path, pane_env: dict[str, str]) -> None:
    run_hook(["claude"], pane_env, json.dumps({"hook_event_name": "SessionStart"}))
    done = run_hook(["claude"], pane_env, json.dumps({"hook_event_name": "UserPromptSubmit", "prompt": "x [fleet:msg-9a]"}))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    beat = heartbeat(tmp_path)
    assert (beat["seq"], beat["state"], beat["ack"], beat["pid"]) == (2, "working", "msg-9a", os.getpid())
    run_hook(["codex-notify", json.dumps({"type": "agent-turn-complete", "input-messages": []})], pane_env)
    assert heartbeat(tmp_path)["state"] == "idle" and heartbeat(tmp_path)["ack"] == "msg-9a"
    assert sorted(p.name for p in StateLayout(tmp_path).heartbeat("jarvis", "coder0-0").parent.iterdir()) == ["coder0-0.json"]


def test_concurrent_hooks_lose_no_update(tmp_path: Path, pane_env: dict[str, str]) -> None:
    """Ticks racing a prompt: every call counts (seq) and the ack survives."""
    tick = [HOOK, "statusline"]
    procs = [subprocess.Popen(tick, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=pane_env) for _ in range(12)]
    run_hook(["claude"], pane_env, json.dumps({"hook_event_name": "UserPromptSubmit", "prompt": "[fleet:msg-77]"}))
    for proc in procs:
        proc.communicate(b"{}", timeout=10)
    beat = heartbeat(tmp_path)
    assert (beat["seq"], beat["ack"]) == (13, "msg-77")


def test_the_runtime_pid_skips_the_shell_between(tmp_path: Path, pane_env: dict[str, str]) -> None:
    """Runtimes start hooks through `sh -c`; the heartbeat names the runtime, not the shell."""
    subprocess.run(["sh", "-c", f"echo '{{}}' | {HOOK} claude; true"], env=pane_env, check=True, timeout=10)
    assert heartbeat(tmp_path)["pid"] == os.getpid()


def test_the_status_line_prints_a_line_and_ticks(tmp_path: Path, pane_env: dict[str, str]) -> None:
    done = run_hook(["statusline"], pane_env, json.dumps({"model": {"id": "claude-x", "display_name": "Opus"}}))
    assert done.stdout == "Opus | fleet coder0-0: idle\n"
    assert heartbeat(tmp_path)["runtime_model"] == "claude-x"


def test_the_status_line_still_saves_subscription_usage(tmp_path: Path, pane_env: dict[str, str]) -> None:
    doc = {"model": {"display_name": "Opus"}, "rate_limits": {"seven_day": {"used_percentage": 41.2, "resets_at": 1795996800}}}
    done = run_hook(["statusline"], pane_env, json.dumps(doc))
    assert done.stdout.startswith("Opus | 7d 41%")
    saved = json.loads((tmp_path / "jarvis" / "statusline" / "coder0-0.json").read_text())
    assert saved["rate_limits"]["seven_day"]["used_percentage"] == 41.2


@pytest.mark.parametrize(("args", "stdin", "drop", "says"), [
    (["claude"], "not json", None, "Expecting value"),
    (["claude"], "[1, 2]", None, "not a JSON object"),
    (["claude"], "{}", "FLEET_AGENT", "missing FLEET_AGENT"),
    (["codex-notify"], "", None, "needs the event as its last argument"),
    (["codex-notify", "{"], "", None, "Expecting property name"),
    (["bogus"], "", None, "usage: fleet-hook"),
    ([], "", None, "usage: fleet-hook"),
])
def test_it_never_fails_the_runtime(
    tmp_path: Path, pane_env: dict[str, str], args: list[str], stdin: str, drop: str | None, says: str
) -> None:
    if drop:
        del pane_env[drop]
    done = run_hook(args, pane_env, stdin)
    assert done.returncode == 0 and says in done.stderr and done.stderr.count("\n") == 1
    assert not StateLayout(tmp_path).heartbeat("jarvis", "coder0-0").exists()


def test_an_unwritable_state_dir_is_a_line_on_stderr(tmp_path: Path, pane_env: dict[str, str]) -> None:
    (tmp_path / "jarvis").write_text("a file where a folder belongs")
    done = run_hook(["claude"], pane_env, "{}")
    assert done.returncode == 0 and done.stderr.startswith("fleet-hook: ")


def test_launch_heartbeats_then_becomes_the_runtime(tmp_path: Path, pane_env: dict[str, str]) -> None:
    done = run_hook(["launch", "--", "sh", "-c", 'echo "runtime pid $$"'], pane_env)
    assert done.returncode == 0 and done.stderr == ""
    beat = heartbeat(tmp_path)
    assert (beat["state"], beat["event"], beat["seq"]) == ("idle", "launch", 1)
    assert done.stdout == f"runtime pid {beat['pid']}\n"  # exec kept the pid


def test_launch_without_a_runtime(tmp_path: Path, pane_env: dict[str, str]) -> None:
    assert run_hook(["launch", "--"], pane_env).returncode == 2
    missing = run_hook(["launch", "--", str(tmp_path / "no-such-runtime")], pane_env)
    assert missing.returncode == 127 and "cannot start" in missing.stderr
