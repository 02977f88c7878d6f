"""`fleet-hook`: turns a real runtime's own events into the fleet's heartbeat record.

It sits at the far end of the reconcile loop, where `fleet-stub-agent` sits for the
stub runtime. Claude Code and Codex never write a heartbeat themselves; the adapters
(reconciler/runtimes/) configure them to call this program on their events:

    fleet-hook claude               Claude Code hooks: the event as JSON on stdin
    fleet-hook statusline           Claude Code's status line: JSON on stdin every refresh
    fleet-hook codex-notify JSON    Codex `notify`: the event as the LAST argument
    fleet-hook launch -- ARGV...    write an `idle` heartbeat, then exec ARGV in its place
                                    (Codex has no start event; this is its first heartbeat)

Each call reads the previous record, applies `transition` (a pure, table-driven map of
event -> state and ack) and rewrites `$FLEET_STATE_DIR/<tenant>/heartbeats/<agent>.json`
atomically (temporary file + rename) holding a `flock` on the heartbeats folder, so
concurrent hooks never lose an ack. It runs on every tool call and every two seconds, so it imports only the standard
library, none of the reconciler's modules (drivers/files.py alone costs ~25 ms of
imports; its `write_atomic` is mirrored in `_write_atomic`); only a call that changes
the state in a pane with FLEET_TRACEPARENT loads hooks/hook_trace.py, for a span in the
run's trace. It must never break the runtime: every error ends in exit status 0 and one
line on stderr.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PROG = "fleet-hook"
IDENTITY_ENV = ("FLEET_TENANT", "FLEET_AGENT", "FLEET_HOST", "FLEET_STATE_DIR")
MAX_INPUT_BYTES = 1 << 20
#: Processes that may stand between a runtime and its hook (`sh -c CMD`); the runtime's
#: pid is the first ancestor that is not one of them.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "env"})
_TRAILER = re.compile(r"\[fleet:(msg-[0-9a-fA-F]+)\]")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
#: A Codex thread id as `notify` gives it (a UUID); anything else is not recorded.
_THREAD = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
#: How many of a Codex runtime's latest thread ids the record keeps: besides the agent's
#: conversation, Codex 0.169.0 runs a short side thread per turn (the session's title),
#: which also calls `notify`; the observe step keeps the one with a rollout file.
MAX_THREADS = 8
#: How many acked ids a record keeps in `acks` (newest last): a retry can tell a message
#: taken before a later one from a message never taken.
ACKS_KEEP = 16
#: Claude Code notification types that mean a person must answer before work goes on.
WAITING_NOTIFICATIONS = frozenset({"permission_prompt", "elicitation_dialog"})

#: Claude Code hook event -> the state it leaves the agent in (None: unchanged).
CLAUDE_STATES: Mapping[str, str | None] = {
    "SessionStart": "idle",
    "UserPromptSubmit": "working",
    "PreToolUse": "working",
    "PostToolUse": "working",
    "SubagentStop": "working",  # a subagent ended; the main agent goes on
    "PreCompact": "working",
    "Stop": "idle",
    "SessionEnd": "idle",
    "Notification": None,  # decided by its type, see `transition`
    "StopFailure": "idle",  # a turn ended on an API error; `held_by` says whether it holds the agent
}
#: Claude Code `StopFailure` errors (2.1.328's enum) the runtime cannot get past by itself:
#: the agent is `waiting` with `held` set to the kind. Other errors (overloaded,
#: server_error, ...) end the turn as `idle`: the next message may well succeed.
HELD_ERRORS: Mapping[str, str] = {
    "authentication_failed": "auth",
    "oauth_org_not_allowed": "auth",
    "account_on_hold": "auth",
    "verification_required": "auth",
    "billing_error": "usage-limit",
    "rate_limit": "usage-limit",
}
#: Events after which a held agent is no longer held: a new turn, a turn that completed,
#: a new runtime. Anything else (a status-line tick, Claude's idle reminder) keeps it held.
CLEARS_HELD = frozenset({"SessionStart", "UserPromptSubmit", "Stop", "launch", "agent-turn-complete"})
#: Codex `notify` type -> state.
CODEX_STATES: Mapping[str, str | None] = {
    "agent-turn-complete": "idle",
    "approval-requested": "waiting",
}


def message_id(text: object) -> str | None:
    """The last `[fleet:msg-…]` id in a prompt (`fleet agent send` appends it), or None.

    >>> message_id("fix the build [fleet:msg-7f3a]"), message_id("hello"), message_id(None)
    ('msg-7f3a', None, None)
    """
    found = _TRAILER.findall(text) if isinstance(text, str) else []
    return found[-1] if found else None


def acked_ids(source: str, event: Mapping[str, object]) -> list[str]:
    """Every message id one event acks, in order: the submitted prompt's, or each of the
    completed Codex turn's `input-messages` (two messages typed into one turn are both
    taken, though `ack` can name only the last).

    >>> acked_ids("codex-notify", {"type": "agent-turn-complete", "input-messages": ["a [fleet:msg-1]", "b [fleet:msg-2]"]})
    ['msg-1', 'msg-2']
    >>> acked_ids("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "hi [fleet:msg-3]"})
    ['msg-3']
    >>> acked_ids("claude", {"hook_event_name": "Stop"})
    []
    """
    if source == "codex-notify" and event.get("type") == "agent-turn-complete":
        return _TRAILER.findall(_codex_prompts(event))
    _, acked = transition(source, event)
    return [acked] if acked else []


def _merge_acks(previous: object, new: Sequence[str]) -> list[str]:
    """The record's `acks` after an event: the previous ones, then the new, no repeats."""
    acks = [a for a in previous if isinstance(a, str)] if isinstance(previous, list) else []
    acks += [a for a in dict.fromkeys(new) if a not in acks]
    return acks[-ACKS_KEEP:]


def _codex_prompts(event: Mapping[str, object]) -> str:
    messages = event.get("input-messages")
    return "\n".join(m for m in messages if isinstance(m, str)) if isinstance(messages, list) else ""


def transition(source: str, event: Mapping[str, object]) -> tuple[str | None, str | None]:
    """What one runtime event means for the heartbeat: (new state or None, acked id or None).

    `source` is the subcommand: `claude` (a hook event), `statusline` (a liveness tick,
    which changes nothing but `ts`) or `codex-notify`. Codex has no event when a turn
    starts, so its messages are acked when the turn completes, from `input-messages`.

    >>> transition("claude", {"hook_event_name": "UserPromptSubmit", "prompt": "hi [fleet:msg-ab12]"})
    ('working', 'msg-ab12')
    >>> transition("claude", {"hook_event_name": "Stop"})
    ('idle', None)
    >>> transition("claude", {"hook_event_name": "Notification", "notification_type": "permission_prompt"})
    ('waiting', None)
    >>> transition("codex-notify", {"type": "agent-turn-complete", "input-messages": ["do it [fleet:msg-c0de]"]})
    ('idle', 'msg-c0de')
    >>> transition("statusline", {"model": {"id": "claude-opus"}})
    (None, None)
    >>> transition("launch", {})
    ('idle', None)
    """
    if source == "claude":
        name = str(event.get("hook_event_name") or "")
        if name == "UserPromptSubmit":
            return "working", message_id(event.get("prompt"))
        if name == "Notification":
            return _notification_state(event), None
        return CLAUDE_STATES.get(name), None
    if source == "launch":
        return "idle", None
    if source == "codex-notify":
        kind = str(event.get("type") or "")
        return CODEX_STATES.get(kind), message_id(_codex_prompts(event)) if kind == "agent-turn-complete" else None
    return None, None


def held_by(source: str, event: Mapping[str, object]) -> tuple[str, str] | None:
    """(kind, the runtime's words) when `event` is a failure that holds the agent, else None.

    >>> held_by("claude", {"hook_event_name": "StopFailure", "error": "authentication_failed",
    ...                    "last_assistant_message": "Invalid API key · Fix external API key"})
    ('auth', 'authentication_failed: Invalid API key · Fix external API key')
    >>> held_by("claude", {"hook_event_name": "StopFailure", "error": "overloaded"}) is None
    True
    """
    if source != "claude" or event.get("hook_event_name") != "StopFailure":
        return None
    error = str(event.get("error") or "")
    kind = HELD_ERRORS.get(error)
    if kind is None:
        return None
    words = event.get("last_assistant_message") or event.get("error_details")
    return kind, f"{error}: {words}"[:300] if isinstance(words, str) and words else error


def _notification_state(event: Mapping[str, object]) -> str | None:
    """A permission or dialog prompt is `waiting`; Claude Code's idle reminder is `idle`.

    >>> _notification_state({"message": "Claude needs your permission to use Bash"})
    'waiting'
    >>> _notification_state({"notification_type": "idle_prompt", "message": "waiting for your input"})
    'idle'
    >>> _notification_state({"notification_type": "auth_success"}) is None
    True
    """
    kind = event.get("notification_type")
    if kind in WAITING_NOTIFICATIONS:
        return "waiting"
    if kind == "idle_prompt":
        return "idle"
    message = str(event.get("message") or "").lower()
    return "waiting" if kind is None and "permission" in message else None


def next_heartbeat(
    previous: Mapping[str, object] | None,
    source: str,
    event: Mapping[str, object],
    identity: Mapping[str, str],
    pid: int | None,
    now: float,
) -> dict[str, object]:
    """The record to write after `event`, from the previous one (None: the first).

    `seq` counts up, `ack` and `usage` carry forward until replaced (`acks` keeps the
    last ACKS_KEEP acked ids), `state` keeps its
    value on a tick, `since` is when the current state began (a tick keeps it) and
    `event_ts` when the runtime last sent an event that was not a tick, so a reader can
    tell "working for 20 minutes without an event" from "working, just ticked".
    A failure that holds the agent (`held_by`) makes it `waiting` with `held` (the kind)
    and `reason` (the runtime's words), kept until an event of `CLEARS_HELD`.

    >>> ident = {"FLEET_TENANT": "t", "FLEET_AGENT": "a", "FLEET_HOST": "h", "FLEET_MODEL": "opus"}
    >>> first = next_heartbeat(None, "claude", {"hook_event_name": "UserPromptSubmit",
    ...                        "prompt": "go [fleet:msg-1f]"}, ident, 42, 0.0)
    >>> first["seq"], first["state"], first["ack"], first["acks"], first["ts"], first["pid"]
    (1, 'working', 'msg-1f', ['msg-1f'], '1970-01-01T00:00:00Z', 42)
    >>> tick = next_heartbeat(first, "statusline", {}, ident, 42, 60.0)
    >>> tick["seq"], tick["state"], tick["ack"], tick["since"], tick["ts"], tick["event_ts"]
    (2, 'working', 'msg-1f', '1970-01-01T00:00:00Z', '1970-01-01T00:01:00Z', '1970-01-01T00:00:00Z')
    >>> held = next_heartbeat(tick, "claude", {"hook_event_name": "StopFailure", "error": "rate_limit"}, ident, 42, 90.0)
    >>> held["state"], held["held"], held["reason"]
    ('waiting', 'usage-limit', 'rate_limit')
    >>> still = next_heartbeat(held, "claude", {"hook_event_name": "Notification", "notification_type": "idle_prompt"},
    ...                        ident, 42, 99.0)
    >>> still["state"], still["held"], next_heartbeat(still, "claude", {"hook_event_name": "Stop"}, ident, 42, 120.0)["held"]
    ('waiting', 'usage-limit', None)
    """
    prev = previous or {}
    state, acked = transition(source, event)
    prev_state = prev.get("state") if prev.get("state") in ("idle", "working", "waiting") else None
    new_state = state or prev_state or "idle"
    name = {"claude": event.get("hook_event_name"), "codex-notify": event.get("type")}.get(source, source)
    held = held_by(source, event)
    if held is None and name not in CLEARS_HELD and isinstance(prev.get("held"), str):
        held = (str(prev["held"]), str(prev.get("reason") or ""))
    if held is not None:
        new_state = "waiting"
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    since = prev.get("since") if new_state == prev_state and isinstance(prev.get("since"), str) else ts
    seq = prev.get("seq")
    usage = _usage(event) or prev.get("usage")
    return {
        "tenant": identity["FLEET_TENANT"], "host": identity["FLEET_HOST"], "agent": identity["FLEET_AGENT"],
        "seq": seq + 1 if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 1,
        "ts": ts, "pid": pid, "state": new_state,
        "model": identity.get("FLEET_MODEL") or prev.get("model") or "unknown",
        "ack": acked or prev.get("ack"),
        "acks": _merge_acks(prev.get("acks"), acked_ids(source, event)),
        "usage": usage if isinstance(usage, dict) else {},
        "since": since, "event": source if source != "claude" else str(event.get("hook_event_name") or "claude"),
        "event_ts": ts if source != "statusline" or not isinstance(prev.get("event_ts"), str) else prev["event_ts"],
        "runtime_model": _runtime_model(event) or prev.get("runtime_model"),
        "held": held[0] if held else None,
        "reason": held[1] if held else None,
        "threads": _threads(prev.get("threads"), event.get("thread-id") if source == "codex-notify" else None),
    }


def _threads(kept: object, thread: object) -> list[str]:
    """The record's Codex thread ids, oldest first, with `thread` moved to the end (the
    latest MAX_THREADS, distinct). The observe step resumes the newest one whose rollout
    file says it is this agent's conversation (engine/observe.py).

    >>> _threads(["a1b2c3d4-0000-7000-8000-000000000001"], "a1b2c3d4-0000-7000-8000-000000000002")[-1][-1]
    '2'
    >>> _threads(None, "not a uuid"), _threads("junk", None)
    ([], [])
    """
    found = [t for t in kept if isinstance(t, str) and _THREAD.match(t)] if isinstance(kept, list) else []
    if isinstance(thread, str) and _THREAD.match(thread):
        found = [t for t in found if t != thread] + [thread]
    return found[-MAX_THREADS:]


def _usage(event: Mapping[str, object]) -> dict[str, int] | None:
    """Session token totals, when the status line reports them (`context_window`).

    >>> _usage({"context_window": {"total_input_tokens": 1200, "total_output_tokens": 300}})
    {'input_tokens': 1200, 'output_tokens': 300}
    """
    window = event.get("context_window")
    if not isinstance(window, dict):
        return None
    pairs = (("input_tokens", window.get("total_input_tokens")), ("output_tokens", window.get("total_output_tokens")))
    found = {k: v for k, v in pairs if isinstance(v, int) and not isinstance(v, bool) and v >= 0}
    return found or None


def _runtime_model(event: Mapping[str, object]) -> str | None:
    """The runtime's own model id (the provider's name, not the ladder's), when it says."""
    model = event.get("model")
    if isinstance(model, dict):
        model = model.get("id")
    return model if isinstance(model, str) and model else None


def runtime_pid(start: int, parent_of: Callable[[int], tuple[str, int] | None]) -> int:
    """The runtime's pid: the hook's parent, or above it while that is only a shell.

    `parent_of(pid)` gives (command name, parent pid), or None when unknown.

    >>> table = {10: ("sh", 9), 9: ("claude", 1)}
    >>> runtime_pid(10, table.get), runtime_pid(9, table.get), runtime_pid(77, table.get)
    (9, 9, 77)
    """
    pid = start
    for _ in range(4):
        info = parent_of(pid)
        if info is None or info[0] not in SHELLS or info[1] <= 1:
            return pid
        pid = info[1]
    return pid


def _proc_parent(pid: int) -> tuple[str, int] | None:
    """(comm, ppid) from /proc/PID/stat; None off Linux or when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        return comm, int(raw[raw.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _write_atomic(path: Path, data: str) -> None:
    """drivers/files.py's `write_atomic` without its imports: `.NAME.PID.tmp`, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data.encode())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_event(source: str, argv: Sequence[str]) -> dict[str, object]:
    if source == "codex-notify" and not argv:
        raise LookupError("codex-notify needs the event as its last argument (Codex's `notify` passes it)")
    raw = argv[-1] if source == "codex-notify" else sys.stdin.read(MAX_INPUT_BYTES)
    doc = json.loads(raw or "{}")
    if not isinstance(doc, dict):
        raise ValueError("the event is not a JSON object")
    return doc


def record_event(source: str, event: Mapping[str, object], env: Mapping[str, str], pid: int | None,
                 seen: dict[str, object] | None = None) -> dict[str, object]:
    """Rewrite the agent's heartbeat for one event, under the folder's lock; returns it
    (and, into `seen`, the previous record's `state`).

    The lock is held for one read and one small write (about a millisecond), so the
    tenant's agents sharing it do not wait on each other noticeably.
    """
    missing = [k for k in IDENTITY_ENV if not env.get(k)]
    if missing:
        raise LookupError(f"missing {', '.join(missing)}; the fleet sets them in the agent's pane")
    if not (_NAME.match(env["FLEET_TENANT"]) and _NAME.match(env["FLEET_AGENT"])):
        raise LookupError(f"tenant {env['FLEET_TENANT']!r} or agent {env['FLEET_AGENT']!r} is not a fleet name")
    # StateLayout.heartbeat (model/layout.py), spelled out: the hook imports only the standard
    # library to start fast; tests/runtimes/test_fleet_hook.py reads it back through the layout.
    folder = Path(env["FLEET_STATE_DIR"]) / env["FLEET_TENANT"] / "heartbeats"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{env['FLEET_AGENT']}.json"
    lock = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)  # the folder is the lock: no lock file to leave
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with path.open(encoding="utf-8") as handle:
                previous = json.loads(handle.read(MAX_INPUT_BYTES))
        except (OSError, ValueError):
            previous = None
        record = next_heartbeat(previous if isinstance(previous, dict) else None, source, event, env, pid, time.time())
        if seen is not None:
            seen["state"] = previous.get("state") if isinstance(previous, dict) else None
        _write_atomic(path, json.dumps(record) + "\n")
        return record
    finally:
        os.close(lock)


def _status_line(event: Mapping[str, object], record: Mapping[str, object] | None, env: Mapping[str, str]) -> str:
    """Claude Code shows our stdout as its status line; subscribers' usage is saved too.

    Only when the input carries `rate_limits` is `fleet-claude-statusline`'s logic
    imported (it saves the usage record that `fleet budget ingest` reads).
    """
    if isinstance(event.get("rate_limits"), dict):
        import argparse  # noqa: PLC0415 - the slow path only
        import io  # noqa: PLC0415
        from datetime import UTC, datetime  # noqa: PLC0415

        from reconciler.hooks import claude_statusline  # noqa: PLC0415

        args = argparse.Namespace(tenant=None, agent=None, state_dir=None)
        line, warning = claude_statusline.run(args, io.StringIO(json.dumps(event)), datetime.now(UTC))
        if warning:
            print(f"{PROG}: {warning}", file=sys.stderr)
        return line
    model = event.get("model")
    name = model.get("display_name") if isinstance(model, dict) else None
    state = f"{record['state']}" if record else "no heartbeat"
    return f"{name or 'Claude'} | fleet {env.get('FLEET_AGENT', '?')}: {state}"


def launch(args: Sequence[str]) -> int:
    """Heartbeat `idle` with this pid, then become the runtime (exec keeps the pid).

    A failed heartbeat never stops the runtime; a runtime that cannot be started is
    exit status 127, as a shell would give.
    """
    argv = list(args[1:] if args and args[0] == "--" else args)
    if not argv:
        print(f"{PROG}: launch needs the runtime's command after --", file=sys.stderr)
        return 2
    try:
        record_event("launch", {}, os.environ, os.getpid())
    except Exception as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"{PROG}: cannot start {argv[0]}: {exc.strerror}", file=sys.stderr)
    return 127


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; always returns 0, problems go to stderr (the runtime hides it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = args[0] if args else ""
    event: dict[str, object] = {}
    record: dict[str, object] | None = None
    seen: dict[str, object] = {}
    if source == "launch":
        return launch(args[1:])
    try:
        if source not in ("claude", "statusline", "codex-notify"):
            raise LookupError(f"usage: {PROG} claude|statusline|codex-notify [JSON] | launch -- ARGV; "
                              f"got {source or 'nothing'}")
        event = _read_event(source, args[1:])
        record = record_event(source, event, os.environ, runtime_pid(os.getppid(), _proc_parent), seen)
        if record["state"] != seen.get("state") and os.environ.get("FLEET_TRACEPARENT"):
            from reconciler.hooks.hook_trace import trace_state  # noqa: PLC0415  (only on a change, traced)

            trace_state(record, seen.get("state"), os.environ)
    except Exception as exc:  # never break the runtime that called us
        print(f"{PROG}: {exc}", file=sys.stderr)
    if source == "statusline":
        try:
            print(_status_line(event, record, os.environ))
        except Exception as exc:
            print("Claude")
            print(f"{PROG}: status line: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
