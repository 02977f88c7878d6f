"""Agent verbs: `watch` (a read-only view), `attach` (the explicit takeover), `send` (a message).

They sit beside the reconcile loop, never inside it: each resolves one agent from the
repository's desired state, confirms with one tmux listing that the agent's session is
the fleet's own (a session without its marks is never watched or typed into), then
talks to that one pane through tmux argument lists; no value passes through a shell.
`send --verify` only reads the agent's heartbeat file, where the agent acks the message
id (docs/heartbeat-protocol.md). The one thing persisted is the audit log: `send` and
`attach` each append a record (drivers/audit.py) to the tenant's `audit.jsonl`, with the
message's id and size but never its text; `watch` only looks, so it records nothing.

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

from reconciler.core.desired import DesiredAgent, DesiredFleet, build_desired
from reconciler.core.traces import agent_attrs
from reconciler.drivers import telemetry, tmux
from reconciler.drivers.audit import AuditRecord, AuditResult, append_records, redact, whoami
from reconciler.drivers.files import DAMAGED, read_capped
from reconciler.errors import UserError
from reconciler.model.heartbeat import parse_heartbeat
from reconciler.model.layout import STATE_DIR_ENV, StateLayout
from reconciler.model.observed import ObservedSession
from reconciler.spec.load import load_repo

_ADDRESS = re.compile(r"(?:(?P<tenant>[a-z][a-z0-9-]{0,39})/)?(?P<name>[a-z][a-z0-9-]{0,39})")
#: Characters that would end, split or restyle the typed line: C0 controls and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Bytes of message text we type at once (tmux buffers are larger; agents' input lines are not).
MAX_MESSAGE_BYTES = 16_000
#: How often `--verify` re-reads the heartbeat file.
POLL_S = 0.1


class SendStatus(StrEnum):
    """What `fleet agent send` can say about a message (docs/heartbeat-protocol.md)."""

    SENT = "sent"  # typed and submitted; not verified
    VERIFIED = "verified"  # the agent's heartbeat acked the id
    TYPED_NOT_SUBMITTED = "typed_not_submitted"  # still on the agent's input line
    NOT_DELIVERED = "not_delivered"  # no ack, and not on the input line either


@dataclass(frozen=True, slots=True)
class SendOptions:
    verify: bool = False
    timeout: float = 30.0
    force: bool = False
    state_dir: Path | None = None  # where heartbeats are; None: the pane's FLEET_STATE_DIR


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


def _target(agent: DesiredAgent) -> str:
    """The agent's active pane; tmux 3.3a does not take a bare `=NAME` as a pane."""
    return f"={tmux.check_name(agent.name)}:"


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
    locate(agent)
    target = _target(agent)
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


def _acked(path: Path, msg_id: str) -> bool:
    try:
        return parse_heartbeat(read_capped(path)).ack == msg_id
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


def delivery(agent: DesiredAgent, msg_id: str) -> SendStatus:
    """Without an ack: is the message still on the agent's input line, or not there at all?"""
    done = tmux.run_tmux(agent.launch.socket, [
        "display-message", "-p", "-t", _target(agent), "#{cursor_y}", ";", "capture-pane", "-p", "-t", _target(agent),
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
}


def send(agent: DesiredAgent, text: str, options: SendOptions,
         warn: Callable[[str], None] | None = None, msg_id: str | None = None) -> SendResult:
    """Type one message into the agent's pane, press Enter, and optionally wait for its ack.

    Refused (Refused, exit 1) when the pane is in copy mode or a client that can type is
    attached, unless `options.force`; forcing first cancels copy mode, which would
    otherwise swallow the Enter. Every attempt past the message check is audited: its
    id and size (never its text), and whether it was sent, refused or failed. `msg_id`:
    the id to use (the lane dispatcher records it before it sends); default, a fresh one.
    """
    check_message(text)
    msg_id = msg_id or new_message_id()  # the dispatcher names its own, recorded before the send
    why = f"`fleet agent send`: message {msg_id}, {len(text.encode())} bytes (text not logged)"
    attrs = {**agent_attrs(agent.tenant, agent.host, agent.name, agent.model), "fleet.message.id": msg_id,
             "fleet.message.bytes": len(text.encode()), "fleet.send.verify": options.verify}
    with telemetry.span("fleet agent send", attrs) as span:  # its child: "verify" (docs/surfaces.md, "Traces")
        try:
            result = _send(agent, text, options, msg_id)
        except Refused as exc:
            audit_verb(agent, "send", why, "skipped", str(exc), warn)
            span.set({"fleet.send.status": "refused"})
            raise
        except BaseException as exc:
            audit_verb(agent, "send", why, "failed", str(exc) or type(exc).__name__, warn)
            raise
        span.set({"fleet.send.status": result.status.value})
    ok = result.status in {SendStatus.SENT, SendStatus.VERIFIED}
    audit_verb(agent, "send", f"{why}; {result.status.value}", "ok" if ok else "failed",
               "" if ok else result.detail, warn)
    return result


def _send(agent: DesiredAgent, text: str, options: SendOptions, msg_id: str) -> SendResult:
    session = locate(agent)
    if session.pane_dead:
        raise UserError(f"{agent.tenant}/{agent.name}: its pane has exited, so nothing would read the message; "
                        "`fleet reconcile` restarts it")
    reasons = refusals(session, writers(agent))
    if reasons and not options.force:
        raise Refused(f"not sending to {agent.tenant}/{agent.name}: " + "; ".join(reasons))
    # The session checked above, by its id: if the agent was restarted since, tmux refuses
    # rather than typing into a process nobody checked.
    target = f"{session.session_id}:"
    if session.in_mode:
        _tmux(agent, "copy-mode", "-q", "-t", target)
    _paste(agent, message_line(text, msg_id), msg_id, target)
    _tmux(agent, "send-keys", "-t", target, "Enter")
    if not options.verify:
        return SendResult(msg_id, SendStatus.SENT, _DETAIL[SendStatus.SENT])
    beats = StateLayout(_state_dir(agent, options.state_dir)).heartbeat(agent.tenant, agent.name)
    with telemetry.span("verify", {**agent_attrs(agent.tenant, agent.host, agent.name), "fleet.message.id": msg_id,
                                   "fleet.send.timeout_s": options.timeout}) as span:
        status = SendStatus.VERIFIED if wait_for_ack(beats, msg_id, options.timeout) else delivery(agent, msg_id)
        span.set({"fleet.send.status": status.value})
        if status != SendStatus.VERIFIED:
            span.fail(_DETAIL[status])
    return SendResult(msg_id, status, _DETAIL[status])


def load_desired(repo: Path, host: str, state_dir: Path) -> DesiredFleet:
    """The repository's desired state for `host`; spec errors leave their tenant out."""
    return build_desired(load_repo(repo), host=host, state_dir=str(state_dir),
                         command_override=os.environ.get("MOSAIC_AGENT_COMMAND") or None)
