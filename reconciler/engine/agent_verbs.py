"""Agent verbs: `watch` (a read-only view), `attach` (the explicit takeover), `send` (a message).

They sit beside the reconcile loop, never inside it: each resolves one agent from the
repository's desired state, confirms with one tmux listing that the agent's session is
the fleet's own (a session without its marks is never watched or typed into), then
talks to the agent's own pane (`@fleet-pane`, never merely the active one) through tmux
argument lists; no value passes through a shell. `send` types only between turns: it
reads the agent's heartbeat and its outbox and asks core/messages.py, and `--verify`
reads the heartbeat, where the agent acks the message id (docs/heartbeat-protocol.md).
Persisted: the audit log, where `send` and `attach` each append a record
(drivers/audit.py) to the tenant's `audit.jsonl`, with the message's id and size but
never its text, and `send`'s outbox (the ids it typed, their times, no text); `watch`
only looks, so it records nothing.

Why `watch` looks the way it does (tmux 3.3a, measured): `attach-session -r` makes the
client read-only *and* ignore-size, but a client that ignores size still sizes the window
when it is the only client, so a lone watcher resized an 80x24 agent to its own 200x59.
A grouped viewer session does not help either: windows are shared by the group, so the
window was resized all the same, and killing the agent's session then leaves the agent's
process alive inside the viewer session (the window is still linked there), so a stop or
restart would silently leave a second agent running. What keeps the size is the window
option `window-size manual`; with it a read-only client attached to the agent's own
session shows the window as it is, its keys are dropped by tmux, nothing needs cleaning
up, and a restart simply closes the view.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from reconciler.core import messages
from reconciler.core.desired import DesiredAgent, DesiredFleet, build_desired
from reconciler.core.held import held_by_failure
from reconciler.core.traces import agent_attrs
from reconciler.drivers import telemetry, tmux, users
from reconciler.drivers.audit import AuditRecord, AuditResult, append_records, redact, whoami
from reconciler.drivers.files import DAMAGED, read_capped, write_atomic
from reconciler.drivers.lock import LockBusy, hold_lock
from reconciler.engine.observe import codex_turn_failure
from reconciler.errors import UserError
from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.model.observed import Heartbeat, ObservedSession
from reconciler.spec.load import load_repo

_ADDRESS = re.compile(r"(?:(?P<tenant>[a-z][a-z0-9-]{0,39})/)?(?P<name>[a-z][a-z0-9-]{0,39})")
#: Characters that would end, split or restyle the typed line: C0 controls and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Bytes of message text we type at once (tmux buffers are larger; agents' input lines are not).
MAX_MESSAGE_BYTES = 16_000
#: How often `--verify` re-reads the heartbeat file.
POLL_S = 0.1
#: How often a send waiting for the agent to finish its turn re-reads heartbeat and outbox.
READY_POLL_S = 0.2


class SendStatus(StrEnum):
    """What `fleet agent send` can say about a message (docs/heartbeat-protocol.md)."""

    SENT = "sent"  # typed and submitted; not verified
    VERIFIED = "verified"  # the agent's heartbeat acked the id
    TYPED_NOT_SUBMITTED = "typed_not_submitted"  # still on the agent's input line
    NOT_DELIVERED = "not_delivered"  # no ack, and not on the input line either
    BUSY = "busy"  # nothing typed: the agent stayed in its turn for the whole --wait


@dataclass(frozen=True, slots=True)
class SendOptions:
    verify: bool = False
    timeout: float = 30.0
    force: bool = False
    state_dir: Path | None = None  # where heartbeats are; None: the pane's FLEET_STATE_DIR
    now: bool = False  # type at once, even into a turn
    # Seconds to wait for the agent to be between turns. 0 (one look) for callers inside a
    # run, which must never block a tick on an agent's turn; the CLI's --wait is 600.
    wait: float = 0.0
    retry_id: str | None = None  # a retry of this earlier message (`--id`): never typed twice


@dataclass(frozen=True, slots=True)
class SendResult:
    id: str
    status: SendStatus
    detail: str


class Refused(UserError):
    """`send` would lose or garble the message; `--force` overrides."""


# --- pure: addressing, messages, reading the screen ----------------------------------


def parse_address(text: str) -> tuple[str | None, str]:
    """`NAME` or `TENANT/NAME` -> (tenant or None, name); UserError for anything else.

    >>> parse_address("orchestrator"), parse_address("jarvis/coder0-0")
    ((None, 'orchestrator'), ('jarvis', 'coder0-0'))
    >>> parse_address("Jarvis/x y")
    Traceback (most recent call last):
    ...
    reconciler.errors.UserError: 'Jarvis/x y' is not an agent address; write NAME or TENANT/NAME (e.g. demo/orchestrator)
    """
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise UserError(f"{text!r} is not an agent address; write NAME or TENANT/NAME (e.g. demo/orchestrator)")
    return match.group("tenant"), match.group("name")


def find_agent(desired: DesiredFleet, address: str) -> DesiredAgent:
    """The one agent of `desired.host` that `address` names, or a UserError that says why not."""
    tenant, name = parse_address(address)
    everywhere = [  # a lane's workers too: whether one runs now is the session's to say
        a for t in desired.tenants.values() for a in t.pool()
        if a.name == name and (tenant is None or a.tenant == tenant)
    ]
    here = [a for a in everywhere if a.host == desired.host]
    if len(here) == 1:
        return here[0]
    if len(here) > 1:
        choices = ", ".join(sorted(f"{a.tenant}/{a.name}" for a in here))
        raise UserError(f"agent {name!r} is in several tenants on host {desired.host}: {choices}; name one as TENANT/NAME")
    if everywhere:
        where = ", ".join(sorted(f"{a.tenant}/{a.name} on {a.host}" for a in everywhere))
        raise UserError(f"{address} does not run on host {desired.host} ({where}); run this there, or pass --host")
    known = ", ".join(sorted(f"{a.tenant}/{a.name}" for t in desired.tenants.values() for a in t.on_host(desired.host).values()))
    frozen = f"; tenants not loaded: {', '.join(sorted(desired.frozen))}" if desired.frozen else ""
    raise UserError(f"no agent {address} on host {desired.host} (agents here: {known or 'none'}){frozen}")


def new_message_id() -> str:
    """A fresh id: `msg-` and 8 hex digits (4 random bytes)."""
    return f"msg-{secrets.token_hex(4)}"


def message_line(text: str, msg_id: str) -> str:
    """The typed line: the text, a space and the trailer the agent acks.

    >>> message_line("review PR 12", "msg-0badc0de")
    'review PR 12 [fleet:msg-0badc0de]'
    """
    return f"{text} [fleet:{msg_id}]"


def check_message(text: str) -> str:
    """The message, if it is one non-empty line of printable text; else UserError.

    A newline would submit half the message, and escape sequences would drive the
    agent's terminal, so both are refused rather than typed.

    >>> check_message("hello")
    'hello'
    >>> check_message("two\\nlines")
    Traceback (most recent call last):
    ...
    reconciler.errors.UserError: the message must be one line of text without control characters (found '\\n' at 3)
    """
    if not text.strip():
        raise UserError("the message is empty")
    if found := _CONTROL.search(text):
        raise UserError(
            f"the message must be one line of text without control characters (found {found.group()!r} at {found.start()})"
        )
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise UserError(f"the message is {len(text.encode())} bytes; at most {MAX_MESSAGE_BYTES} can be typed at once")
    return text


def on_input_line(screen: Sequence[str], cursor_y: int, trailer: str) -> bool:
    """True when `trailer` ends on the cursor's row: typed there and never submitted.

    The trailer is the end of the typed line, so before Enter the cursor sits right
    after it. A line that was submitted has moved above the cursor (a terminal's echo
    of an accepted line stays visible, so "on the screen" alone proves nothing). A
    trailer wrapped across the previous row's end is found too.

    >>> on_input_line(["$ hi [fleet:msg-1]", ""], 0, "[fleet:msg-1]")
    True
    >>> on_input_line(["$ hi [fleet:msg-1]", ""], 1, "[fleet:msg-1]")
    False
    >>> on_input_line(["$ hi [fleet:m", "sg-1]"], 1, "[fleet:msg-1]")
    True
    """
    if not 0 <= cursor_y < len(screen):
        return False
    before = screen[cursor_y - 1] if cursor_y > 0 else ""
    joined = before + screen[cursor_y]
    at = joined.rfind(trailer)
    return at >= 0 and at + len(trailer) > len(before)


def refusals(session: ObservedSession, writers: int) -> list[str]:
    """Why typing now would go wrong; empty when it is safe.

    Copy mode swallows keys (Enter included); a person with write access would have
    their typing interleaved with the message. Read-only viewers (`fleet agent watch`)
    type nothing, so they do not count.
    """
    reasons = []
    if session.in_mode:
        reasons.append("its pane is in copy mode, which would swallow the keys and the Enter "
                       "(leave it with q, or --force cancels copy mode first)")
    if writers:
        reasons.append(f"{writers} client(s) with write access are attached, so a person may be typing "
                       "(--force sends anyway)")
    return reasons


# --- effectful: tmux -----------------------------------------------------------------


def pane_target(session: ObservedSession) -> str:
    """The agent's own pane as a tmux target: its id (`%N`, recorded at spawn as
    `@fleet-pane`), never "the active pane", which is a person's split as soon as they
    make one. A session started before the mark: its active pane, by session id (tmux
    refuses a session restarted since, rather than typing into one nobody checked).

    >>> from dataclasses import replace
    >>> s = ObservedSession("a", "$3", datetime.now(UTC), None, 0, 1, False, None, "x", False, pane_id="%7")
    >>> pane_target(s), pane_target(replace(s, pane_id=""))
    ('%7', '$3:')
    """
    return session.pane_id or f"{session.session_id}:"


def _tmux(agent: DesiredAgent, *args: str) -> tmux.Completed:
    """One tmux command on the agent's server; a refusal is a UserError with tmux's words."""
    done = tmux.run_tmux(agent.launch.socket, [tmux.tmux_arg(a) if a != ";" else a for a in args])
    if done.returncode != 0:
        said = done.stderr.strip() or f"exit status {done.returncode}"
        raise UserError(f"{agent.tenant}/{agent.name}: tmux {args[0]}: {said}")
    return done


def locate(agent: DesiredAgent) -> ObservedSession:
    """The agent's session, if it runs and the fleet created it; else UserError.

    One `list-panes` of the agent's server (`tmux.observe_socket`), the same view the
    planner has.
    """
    snap = tmux.observe_socket(agent.launch.socket)
    who = f"{agent.tenant}/{agent.name}"
    session = snap.sessions.get(agent.name)
    if session is None:
        if snap.error:
            raise UserError(f"{who}: {snap.error}")
        raise UserError(f"{who} is not running: no session {agent.name!r} on tmux socket "
                        f"{agent.launch.socket.label()}; `fleet reconcile` starts it")
    marks = session.marks
    if not (marks.owned and marks.tenant == agent.tenant and marks.agent == agent.name):
        raise UserError(f"session {agent.name!r} on tmux socket {agent.launch.socket.label()} is not {who}'s "
                        "(it lacks the fleet's @fleet-tenant/@fleet-agent marks for it); the fleet never "
                        "watches or types into a session it did not create")
    return session


def writers(agent: DesiredAgent) -> int:
    """Clients attached to the agent's session that can type (read-only ones cannot)."""
    done = _tmux(agent, "list-clients", "-t", f"={agent.name}", "-F", "#{client_readonly}")
    return sum(1 for line in done.stdout.splitlines() if line.strip() == "0")


def watch(agent: DesiredAgent) -> int:
    """A read-only view of the agent's pane that never resizes its window.

    `window-size manual` is set on the agent's window first (idempotent; it stays, so a
    second watcher or a later one cannot resize it either), then a read-only client
    attaches to the agent's own session.
    """
    target = pane_target(locate(agent))
    return tmux.run_interactive(agent.launch.socket, [
        "set-option", "-w", "-t", target, "window-size", "manual", ";",
        "attach-session", "-r", "-t", f"={agent.name}",
    ])


def attach(agent: DesiredAgent, warn: Callable[[str], None] | None = None) -> int:
    """The explicit takeover: a plain attach; keystrokes go to the agent.

    Audited before the client starts (a takeover may last hours, or never end cleanly),
    and again as `failed` when the client could not attach or the session was refused.
    `warn` gets an audit log that could not be written.
    """
    why = "`fleet agent attach`: interactive takeover, keystrokes go to the agent"
    try:
        locate(agent)
    except UserError as exc:
        audit_verb(agent, "attach", why, "failed", str(exc), warn)
        raise
    audit_verb(agent, "attach", why, "ok", "", warn)
    code = tmux.run_interactive(agent.launch.socket, ["attach-session", "-t", f"={agent.name}"])
    if code != 0:
        audit_verb(agent, "attach", why, "failed", f"tmux attach-session exited with status {code}", warn)
    return code


def audit_verb(agent: DesiredAgent, verb: str, why: str, result: AuditResult, error: str = "",
               warn: Callable[[str], None] | None = None) -> None:
    """Append one record of `fleet agent VERB` to the agent's tenant's audit log.

    The state directory is the one the agent was launched with (`--state-dir` or the
    default). An audit log that cannot be written goes to `warn` (default: one
    `warning:` line on stderr), never stops the verb.
    """
    record = AuditRecord(
        ts=datetime.now(UTC), who=whoami(f"agent {verb}"), kind=verb, tenant=agent.tenant, agent=agent.name,
        model=agent.model, rule=f"agent-{verb}", why=why, result=result, error=redact(error, agent.launch.env),
    )
    for problem in append_records(Path(agent.recipe.state_dir), [record]):
        (warn or _warn_stderr)(problem)


def _warn_stderr(problem: str) -> None:
    print(f"warning: {problem}", file=sys.stderr)


def _paste(agent: DesiredAgent, line: str, msg_id: str, target: str) -> None:
    """Type `line` as one block: load it into a buffer from stdin (so the text never sits
    in a process's argv for `ps` to show), paste it, delete the buffer.

    `-p` wraps the paste in bracketed-paste markers when the agent asked for them, so a
    TUI takes it as one paste; Enter is pressed separately afterwards.
    """
    buffer = f"fleet-{msg_id}"
    args = ["load-buffer", "-b", buffer, "-", ";", "paste-buffer", "-d", "-p", "-b", buffer, "-t", target]
    done = tmux.run_with_input(agent.launch.socket, args, line)
    if done.returncode != 0:
        tmux.run_tmux(agent.launch.socket, ["delete-buffer", "-b", buffer])
        raise UserError(f"{agent.tenant}/{agent.name}: could not type the message: {done.stderr.strip()}")


def _state_dir(agent: DesiredAgent, given: Path | None) -> Path:
    """Where the agent writes heartbeats: --state-dir if given, else its pane's FLEET_STATE_DIR."""
    if given is not None:
        return given
    done = tmux.run_tmux(agent.launch.socket, ["show-environment", "-t", f"={agent.name}", STATE_DIR_ENV])
    _, sep, value = done.stdout.strip().partition("=")
    if done.returncode == 0 and sep and value:
        return Path(value)
    return Path(dict(agent.launch.env).get(STATE_DIR_ENV, "."))


def _read_beat(path: Path) -> Heartbeat | None:
    """The agent's heartbeat, or None when absent or unreadable (read again next poll)."""
    try:
        return parse_heartbeat(read_capped(path))
    except OSError:
        return None
    except DAMAGED:
        return None


def _beat_now(agent: DesiredAgent, path: Path) -> tuple[Heartbeat | None, datetime | None]:
    """The agent's heartbeat as the planner sees it, and when its last turn failed: a
    Codex agent's failed turn is only in its rollout (Codex runs no `notify` for it), read
    as the observe step reads it (engine/observe.py `codex_turn_failure`)."""
    beat = _read_beat(path)
    if beat is None or beat.event is None or agent.launch.adapter != "codex" or not users.is_me(agent.launch.socket.user):
        return beat, None
    failure = codex_turn_failure(dict(agent.launch.env).get("CODEX_HOME") or "~/.codex", agent.launch.workdir or "~",
                                 beat)
    held = held_by_failure(beat, failure)
    if held is beat or failure is None:
        return beat, None
    return held, datetime.fromisoformat(failure[2])


def _read_outbox(path: Path) -> list[messages.Typed]:
    try:
        return messages.parse_outbox(read_capped(path))
    except OSError:
        return []
    except DAMAGED:
        return []


def _remember(path: Path, typed: messages.Typed, warn: Callable[[str], None] | None) -> None:
    """Add a typed id to the agent's outbox; one that cannot be written is a warning (the
    outbox only holds later sends back while this message's turn runs)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, messages.outbox_text(messages.remember(_read_outbox(path), typed)), 0o600)
    except OSError as exc:
        (warn or _warn_stderr)(f"{path}: could not record message {typed.id}: {exc.strerror or exc}")


def wait_until_ready(
    check: Callable[[], messages.Readiness], timeout: float,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[messages.Readiness], None] | None = None,
) -> tuple[messages.Readiness, float]:
    """Poll `check` until it says ready or `timeout` seconds pass: the last answer, and
    the seconds waited. `on_wait` hears the first answer that is not ready, once."""
    start = clock()
    while True:
        answer = check()
        waited = clock() - start
        if answer.ready or waited >= timeout:
            return answer, waited
        if on_wait is not None:
            on_wait(answer)
            on_wait = None
        sleep(READY_POLL_S)


def _acked(path: Path, msg_id: str) -> bool:
    try:
        return messages.acked(parse_heartbeat(read_capped(path)), msg_id)
    except OSError:
        return False  # absent: read again next poll
    except DAMAGED:
        return False  # mid-rename on a non-atomic writer: read again next poll


def wait_for_ack(
    path: Path, msg_id: str, timeout: float,
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll the heartbeat file until its `ack` is `msg_id` or `timeout` seconds pass."""
    deadline = clock() + timeout
    while True:
        if _acked(path, msg_id):
            return True
        if clock() >= deadline:
            return False
        sleep(POLL_S)


def delivery(agent: DesiredAgent, msg_id: str, target: str) -> SendStatus:
    """Without an ack: is the message still on the input line of the agent's pane
    (`target`), or not there at all?"""
    done = tmux.run_tmux(agent.launch.socket, [
        "display-message", "-p", "-t", target, "#{cursor_y}", ";", "capture-pane", "-p", "-t", target,
    ])
    lines = done.stdout.split("\n")
    if done.returncode != 0 or not lines[0].strip().isdigit():
        return SendStatus.NOT_DELIVERED
    typed = on_input_line(lines[1:], int(lines[0]), f"[fleet:{msg_id}]")
    return SendStatus.TYPED_NOT_SUBMITTED if typed else SendStatus.NOT_DELIVERED


_DETAIL = {
    SendStatus.SENT: "typed and submitted; not verified (pass --verify to wait for the agent's ack)",
    SendStatus.VERIFIED: "the agent acked it in its heartbeat",
    SendStatus.TYPED_NOT_SUBMITTED: "the text is still on the agent's input line: Enter did not submit it",
    SendStatus.NOT_DELIVERED: "no ack in time, and the text is not on the agent's input line",
    SendStatus.BUSY: "nothing typed: the agent was still in its turn",
}
#: `fleet agent send`'s exit status for BUSY: nothing was typed, try again later.
BUSY_EXIT = 3


def send(agent: DesiredAgent, text: str, options: SendOptions,
         warn: Callable[[str], None] | None = None, note: Callable[[str], None] | None = None,
         msg_id: str | None = None) -> SendResult:
    """Type one message into the agent's pane once it is between turns, press Enter, and
    optionally wait for its ack.

    Unless `options.now`, it first waits (up to `options.wait` seconds) until the agent's
    heartbeat says idle and the last message typed to it is acked (core/messages.py), so
    a message never lands in the middle of a turn; still busy then, nothing is typed
    (BUSY). With `options.retry_id` it retries that earlier message and first checks it
    was not taken (`messages.retry_step`), so a retry never makes a second copy.

    Refused (Refused, exit 1) when the pane is in copy mode or a client that can type is
    attached, unless `options.force`; forcing first cancels copy mode, which would
    otherwise swallow the Enter. Every attempt past the message check is audited: its
    id and size (never its text), and whether it was sent, refused or failed. `note`
    hears, once, that the send waits and why. `msg_id`: the id to use (the lane dispatcher
    records it before it sends); default, a fresh one.
    """
    check_message(text)
    if options.retry_id is not None and not messages.MESSAGE_ID.fullmatch(options.retry_id):
        raise UserError(f"--id {options.retry_id!r} is not a message id; give the id `fleet agent send` printed "
                        "(msg- and 8 hex digits)")
    msg_id = options.retry_id or msg_id or new_message_id()
    why = f"`fleet agent send`: message {msg_id}, {len(text.encode())} bytes (text not logged)"
    if options.retry_id:
        why += " (a retry)"
    attrs = {**agent_attrs(agent.tenant, agent.host, agent.name, agent.model), "fleet.message.id": msg_id,
             "fleet.message.bytes": len(text.encode()), "fleet.send.verify": options.verify}
    with telemetry.span("fleet agent send", attrs) as span:  # its child: "verify" (docs/surfaces.md, "Traces")
        try:
            result = _send(agent, text, options, msg_id, warn, note)
        except Refused as exc:
            audit_verb(agent, "send", why, "skipped", str(exc), warn)
            span.set({"fleet.send.status": "refused"})
            raise
        except BaseException as exc:
            audit_verb(agent, "send", why, "failed", str(exc) or type(exc).__name__, warn)
            raise
        span.set({"fleet.send.status": result.status.value})
    ok = result.status in {SendStatus.SENT, SendStatus.VERIFIED}
    audit_verb(agent, "send", f"{why}; {result.status.value}", "ok" if ok else "skipped" if
               result.status == SendStatus.BUSY else "failed", "" if ok else result.detail, warn)
    return result


def _checked(agent: DesiredAgent, options: SendOptions) -> ObservedSession:
    """The agent's session, alive and safe to type into (or forced); else UserError/Refused."""
    session = locate(agent)
    if session.pane_dead:
        raise UserError(f"{agent.tenant}/{agent.name}: its pane has exited, so nothing would read the message; "
                        "`fleet reconcile` restarts it")
    reasons = refusals(session, writers(agent))
    if reasons and not options.force:
        raise Refused(f"not sending to {agent.tenant}/{agent.name}: " + "; ".join(reasons))
    return session


def _send(agent: DesiredAgent, text: str, options: SendOptions, msg_id: str,
          warn: Callable[[str], None] | None, note: Callable[[str], None] | None) -> SendResult:
    """Wait for the turn to end (unlocked), then check again and type under the agent's
    outbox lock, so two sends to one agent never both find it idle and both type: the
    second finds the first's id in the outbox, not yet acked, and waits for it."""
    session = _checked(agent, options)
    layout = StateLayout(_state_dir(agent, options.state_dir))
    beats, outbox = layout.heartbeat(agent.tenant, agent.name), layout.outbox(agent.tenant, agent.name)
    created = session.created

    def check() -> messages.Readiness:
        if options.now:
            return messages.Readiness(True, "--now")
        beat, failed_at = _beat_now(agent, beats)
        return messages.readiness(beat, _read_outbox(outbox), session_created=created, now=datetime.now(UTC),
                                  failed_at=failed_at)

    told: list[bool] = []

    def waiting(answer: messages.Readiness) -> None:
        if note is not None and not told:
            told.append(True)
            note(f"waiting up to {options.wait:.0f} s for {agent.tenant}/{agent.name} to finish its turn: "
                 f"{answer.reason} (--now types at once)")

    start = time.monotonic()
    while True:
        left = max(0.0, options.wait - (time.monotonic() - start))
        answer, _ = wait_until_ready(check, left, on_wait=waiting)
        waited = time.monotonic() - start
        if not answer.ready:
            return _busy(msg_id, f"after {waited:.0f} s {answer.reason}")
        try:
            with hold_lock(layout.outbox_lock(agent.tenant, agent.name), timeout=max(left, 1.0)):
                if check().ready:  # still, now that no other send can type
                    if waited >= READY_POLL_S:
                        session = _checked(agent, options)  # the pane as it is now, after the wait
                    done = _type(agent, text, options, msg_id, session, beats, outbox, warn)
                    break
        except LockBusy:
            return _busy(msg_id, f"another `fleet agent send` to this agent held it for {options.wait:.0f} s")
    if isinstance(done, SendResult):
        return done
    target, extra = done
    if waited >= 1:
        extra = f"; waited {waited:.0f} s for the agent to finish its turn{extra}"
    if not options.verify:
        return SendResult(msg_id, SendStatus.SENT, _DETAIL[SendStatus.SENT] + extra)
    with telemetry.span("verify", {**agent_attrs(agent.tenant, agent.host, agent.name), "fleet.message.id": msg_id,
                                   "fleet.send.timeout_s": options.timeout}) as span:
        status = SendStatus.VERIFIED if wait_for_ack(beats, msg_id, options.timeout) else \
            delivery(agent, msg_id, target)
        span.set({"fleet.send.status": status.value})
        if status != SendStatus.VERIFIED:
            span.fail(_DETAIL[status])
    return SendResult(msg_id, status, _DETAIL[status] + extra)


def _busy(msg_id: str, why: str) -> SendResult:
    return SendResult(msg_id, SendStatus.BUSY, f"nothing typed: {why} (send again later, raise --wait, "
                                               "or --now to type into the turn)")


def _type(agent: DesiredAgent, text: str, options: SendOptions, msg_id: str, session: ObservedSession,
          beats: Path, outbox: Path, warn: Callable[[str], None] | None) -> SendResult | tuple[str, str]:
    """Type the message into the agent's pane (a retry: only what is left to do) and add
    its id to the outbox: the pane's target and a note, or the result when nothing was typed."""
    # The pane checked before, by its id: if the agent was restarted since, tmux refuses
    # rather than typing into a process nobody checked.
    target = pane_target(session)
    before = _read_beat(beats)
    step = messages.RetryStep.RETYPE
    if options.retry_id:
        on_line = delivery(agent, msg_id, target) == SendStatus.TYPED_NOT_SUBMITTED
        step = messages.retry_step(before, _read_outbox(outbox), msg_id, on_line=on_line)
        if step == messages.RetryStep.ACKED:
            return SendResult(msg_id, SendStatus.VERIFIED, "already acked by the agent: nothing typed again")
        if step == messages.RetryStep.UNKNOWN:
            raise Refused(f"not retrying {msg_id} to {agent.tenant}/{agent.name}: a message typed after it is "
                          "acked, and the heartbeat does not reach back far enough to show whether this one was "
                          "taken; look at the agent (`fleet agent watch`) before sending it again without --id")
    if session.in_mode:
        _tmux(agent, "copy-mode", "-q", "-t", target)
    if step == messages.RetryStep.RETYPE:
        _paste(agent, message_line(text, msg_id), msg_id, target)
    _tmux(agent, "send-keys", "-t", target, "Enter")
    _remember(outbox, messages.Typed(msg_id, datetime.now(UTC), before.seq if before else None), warn)
    return target, "; it was still on the input line, so only Enter was pressed" if \
        step == messages.RetryStep.PRESS_ENTER else ""


def load_desired(repo: Path, host: str, state_dir: Path) -> DesiredFleet:
    """The repository's desired state for `host`; spec errors leave their tenant out."""
    return build_desired(load_repo(repo), host=host, state_dir=str(state_dir),
                         command_override=os.environ.get("MOSAIC_AGENT_COMMAND") or None)
