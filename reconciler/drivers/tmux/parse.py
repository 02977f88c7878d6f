"""Reading tmux's answers, pure: `list-panes` lines as observed sessions, errors as facts.

The observe step's one `tmux list-panes -a -F LIST_FORMAT` per server is parsed here;
client.py runs it. Doctested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.model.observed import FLEET_OPTIONS, Marks, ObservedSession, SocketKey, SocketSnapshot

#: Field separator of LIST_FORMAT (as libtmux); needs `tmux -u`, or tmux prints it as `_`.
SEP = "␞"
_FIELDS = (
    "session_name",
    "session_id",
    "session_created",
    "session_activity",
    "session_attached",
    "pane_pid",
    "pane_dead",
    "pane_dead_status",
    "pane_current_command",
    "pane_in_mode",
    "pane_id",
    *FLEET_OPTIONS,
)
#: The `list-panes -a -F` format: one line per pane, every field observe needs.
LIST_FORMAT = SEP.join(f"#{{{name}}}" for name in _FIELDS)


def not_running(message: str) -> bool:
    """True when tmux's error means no server listens on the socket (not a failure).

    >>> not_running("no server running on /tmp/tmux-0/x")
    True
    >>> not_running("error connecting to /tmp/tmux-0/x (No such file or directory)")
    True
    >>> not_running("error connecting to /tmp/tmux-0/x (Permission denied)")
    False
    """
    return message.startswith("no server running on ") or (
        message.startswith("error connecting to ") and message.endswith("(No such file or directory)")
    )


# --- pure: reading list-panes ---------------------------------------------------------


def _epoch(text: str) -> datetime | None:
    return datetime.fromtimestamp(int(text), tz=UTC) if text and text != "0" else None


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


def parse_pane_line(line: str) -> ObservedSession:
    """One `LIST_FORMAT` line as the session it belongs to; ValueError if malformed.

    A pane can be dead before its exit status is known (tmux sees the pty close and
    reaps the child in separate events): then `pane_dead` is True, `dead_status` None.
    """
    fields = line.split(SEP)
    if len(fields) != len(_FIELDS):
        raise ValueError(f"expected {len(_FIELDS)} fields, got {len(fields)}")
    created = _epoch(fields[2])
    if created is None:
        raise ValueError("session_created is empty")
    return ObservedSession(
        name=fields[0],
        session_id=fields[1],
        created=created,
        activity=_epoch(fields[3]),
        attached=int(fields[4] or 0),
        pane_pid=_int_or_none(fields[5]),
        pane_dead=fields[6] == "1",
        dead_status=_int_or_none(fields[7]),
        current_command=fields[8],
        in_mode=fields[9] == "1",
        pane_id=fields[10],
        marks=Marks(*fields[11:]),
    )


def _parse(text: str, known: Mapping[str, ObservedSession] | None = None,
           seen: dict[str, ObservedSession] | None = None) -> tuple[dict[str, ObservedSession], list[str]]:
    """Sessions and unreadable lines; a line found in `known` is that session, not parsed
    again. Every line read is recorded in `seen`."""
    sessions: dict[str, ObservedSession] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        session = known.get(line) if known else None
        if session is None:
            try:
                session = parse_pane_line(line)
            except ValueError as exc:
                bad.append(f"{exc}: {line[:80]!r}")
                continue
        if seen is not None:
            seen[line] = session
        first = sessions.setdefault(session.name, session)
        if session.marks.pane and session.pane_id == session.marks.pane:
            sessions[session.name] = session  # the agent's own pane, wherever it stands
        elif first is session and session.marks.pane:
            sessions[session.name] = _missing(session)  # until the marked pane is listed
    return sessions, bad


def _missing(session: ObservedSession) -> ObservedSession:
    """The session whose marked pane is not (yet) listed: seen as that pane, dead."""
    return replace(session, pane_id=session.marks.pane, pane_pid=None, pane_dead=True, dead_status=None,
                   current_command="", in_mode=False, pane_missing=True)


def parse_list_panes(text: str, key: SocketKey) -> dict[str, ObservedSession]:
    """Sessions by name from `list-panes -a -F LIST_FORMAT` output on socket `key`.

    tmux lists panes session by session in window and pane index order; each session is
    represented by the pane its `@fleet-pane` mark names, else by its first pane, so a
    pane a person splits off (or a window they add) never stands in for the agent. A
    marked pane that is not listed is seen dead (`pane_missing`). Unreadable lines are
    skipped (`parse_snapshot` reports them), so one odd foreign session cannot blind the
    reconciler to the rest.

    >>> marks = ["jarvis", "coder", "w-jarvis", "ab12", "opus", "/srv/state", "%7"]
    >>> split = SEP.join(["coder", "$3", "1795608000", "", "0", "4243", "0", "", "bash", "1", "%6", *marks])
    >>> agent = SEP.join(["coder", "$3", "1795608000", "1795608060", "0", "4242", "0", "",
    ...                   "claude", "0", "%7", *marks])
    >>> s = parse_list_panes(split + "\\n" + agent + "\\n", SocketKey(None, "fleet"))["coder"]
    >>> s.created.isoformat(), s.activity.minute, s.pane_id, s.pane_pid, s.pane_dead, s.in_mode
    ('2026-11-25T12:00:00+00:00', 1, '%7', 4242, False, False)
    >>> s.marks.owned, s.marks.model, s.marks.state_dir
    (True, 'opus', '/srv/state')
    >>> gone = parse_list_panes(split + "\\n", SocketKey(None, "fleet"))["coder"]
    >>> gone.pane_id, gone.pane_dead, gone.pane_missing, gone.pane_pid
    ('%7', True, True, None)
    >>> dead = SEP.join(["shell", "$4", "1795608000", "", "0", "4244", "1", "3", "", "0", "%9", *[""] * 7])
    >>> parse_pane_line(dead).pane_dead, parse_pane_line(dead).dead_status, parse_pane_line(dead).marks.owned
    (True, 3, False)
    >>> parse_list_panes("garbage\\n", SocketKey(None, "fleet"))
    {}
    """
    del key  # the sessions do not carry it; the signature matches parse_snapshot
    return _parse(text)[0]


def parse_snapshot(key: SocketKey, returncode: int, stdout: str, stderr: str,
                   known: Mapping[str, ObservedSession] | None = None,
                   seen: dict[str, ObservedSession] | None = None) -> SocketSnapshot:
    """Turn one `list-panes` run into a snapshot; a server that is not there is no error.

    >>> parse_snapshot(SocketKey(None, "x"), 1, "", "no server running on /tmp/tmux-0/x\\n")
    SocketSnapshot(key=SocketKey(user=None, name='x'), running=False, sessions={}, error=None, stuck_pid=None)
    >>> parse_snapshot(SocketKey(None, "x"), 1, "", "access not allowed\\n").error
    'tmux x: access not allowed'
    >>> parse_snapshot(SocketKey(None, "x"), 0, "junk\\n", "").error
    "tmux x: skipped 1 unreadable line(s): expected 18 fields, got 1: 'junk'"

    `known` maps lines of an earlier listing to their sessions: such a line is not parsed
    again (a resident loop lists the same panes every tick); every line read this time is
    put in `seen`, for the next call.
    """
    message = stderr.strip()
    if returncode != 0:
        if not_running(message):
            return SocketSnapshot(key=key, running=False)
        return SocketSnapshot(key=key, running=False, error=f"tmux {key.label()}: {message}")
    sessions, bad = _parse(stdout, known, seen)
    error = None
    if bad:
        error = f"tmux {key.label()}: skipped {len(bad)} unreadable line(s): {bad[0]}"
    return SocketSnapshot(key=key, running=True, sessions=sessions, error=error)

