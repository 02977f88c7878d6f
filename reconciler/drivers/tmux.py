"""The tmux driver: the only code that talks to tmux, for the observe and apply steps.

Observe reads a whole server with one `tmux list-panes -a -F LIST_FORMAT`, whatever the
number of sessions; apply creates and marks many sessions, or kills many, with one chained
tmux invocation per socket (split only where tmux's 16 KiB command limit forces it, about
every 30 to 60 agents). It persists nothing itself: the fleet's ownership lives in
the sessions' `@fleet-*` user options. Pure `parse_*()`/`*_args()` functions build and read
tmux's text; only `run_tmux()` and the three verbs below it touch a process.

Quoting, because every value here may be hostile and nothing may reach a shell:

- tmux gets an argument list (never a shell line). Within it, an argument ending in `;`
  would end a tmux command, so `tmux_arg()` escapes that final `;` as `\\;`.
- tmux expands formats in `new-session -s` and `-c` (`#(cmd)` there runs a shell
  command!), so the workdir's `#` is doubled and names are restricted to `[A-Za-z0-9_-]`.
  `-e` values, option values and multi-word commands are not expanded.
- `new-session` execs a command of two or more words directly, but runs a single word
  through `default-shell -c`; a one-word argv is therefore passed as `shlex.quote(word)`
  (always quoted when it starts with `-`, which sh would take for its options), which a
  POSIX shell turns back into exactly that word and execs.
- A missing workdir is not created: tmux 3.3a then starts the pane in the calling
  process's working directory (tested), and the agent is still marked and observed.

Each session gets `remain-on-exit on`, so an agent that exits leaves a dead pane to
observe. Its exit status can lag: Debian's tmux (libutempter) may lose the SIGCHLD that
carries it (tmux/tmux#311), leaving `pane_dead` true and `dead_status` None for a while.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.drivers import stuck_server, users
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import (
    FLEET_OPTIONS,
    Marks,
    ObservedSession,
    SocketKey,
    SocketSnapshot,
)

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
    *FLEET_OPTIONS,
)
#: The `list-panes -a -F` format: one line per pane, every field observe needs.
LIST_FORMAT = SEP.join(f"#{{{name}}}" for name in _FIELDS)

#: How long one tmux invocation may take before we give up on that server.
TIMEOUT_S = 30.0
#: Bytes of packed arguments per invocation; tmux 3.3a refuses more than 16364.
CHAIN_BYTES = 16_000

#: What an agent gets of the reconciler's environment, through the tmux server it may
#: start (a server keeps its first client's environment for every session) and tmux's
#: `update-environment` (SSH_AUTH_SOCK and the like, copied at each new-session). Nothing
#: else: not the operator's tokens, SSH agent or Kerberos ticket, so an agent's environment
#: is the same whether the timer or a person started its server. `env:` and `env_from:`
#: add what a spec asks for; LC_* and the stub agent's FLEET_STUB_* knobs pass too.
CLIENT_ENV = frozenset({
    "HOME", "USER", "LOGNAME", "SHELL", "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TMUX_TMPDIR",
    "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS",
})
CLIENT_ENV_PREFIXES = ("LC_", "FLEET_STUB_")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TmuxError(RuntimeError):
    """tmux refused an apply-step command; the message says which sessions and why."""


#: One tmux command as its argument list (no `;` separators).
Command = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Unit:
    """One session's share of a chained invocation: its name and its tmux commands."""

    name: str
    commands: tuple[Command, ...]


# --- pure: sockets and quoting -------------------------------------------------------


def socket_args(
    key: SocketKey,
    current_user: str,
    other_uid: int | None = None,
    tmux_tmpdir: str | None = None,
) -> list[str]:
    """tmux's global flags that select `key`'s server.

    Always explicit, so a reconciler running inside tmux never talks to `$TMUX`'s server.
    Another user's server is addressed by path, as tmux itself would find it.

    >>> socket_args(SocketKey(None, "fleet"), "root")
    ['-L', 'fleet']
    >>> socket_args(SocketKey("root", None), "root")
    ['-L', 'default']
    >>> socket_args(SocketKey("jarvis", "fleet"), "root", other_uid=1001)
    ['-S', '/tmp/tmux-1001/fleet']
    >>> socket_args(SocketKey("jarvis", None), "root", 1001, tmux_tmpdir="/run/t")
    ['-S', '/run/t/tmux-1001/default']
    """
    name = key.name or "default"
    if key.user is None or key.user == current_user:
        return ["-L", name]
    if other_uid is None:
        raise ValueError(f"socket {key.label()}: the uid of user {key.user!r} is needed")
    return ["-S", str(Path(tmux_tmpdir or "/tmp") / f"tmux-{other_uid}" / name)]


def tmux_arg(value: str) -> str:
    r"""Escape `value` so tmux takes it as one argument, not the end of a command.

    >>> tmux_arg("a;"), tmux_arg(";"), tmux_arg("a\\;"), tmux_arg("a;b")
    ('a\\;', '\\;', 'a\\\\;', 'a;b')
    """
    return value[:-1] + "\\;" if value.endswith(";") else value


def check_name(name: str) -> str:
    """Return `name` if tmux keeps it verbatim as a session name, else raise ValueError.

    tmux rewrites `.` and `:`, escapes control characters and expands `#` in names; a
    rewritten name could not be targeted to mark it, so such names are refused.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"session name {name!r} must match {_NAME.pattern}")
    return name


def expand_workdir(workdir: str, home: str) -> str:
    """Expand a leading `~` against `home` (the agent's user, not necessarily ours).

    >>> expand_workdir("~/src/stack", "/home/jarvis"), expand_workdir("/srv", "/root")
    ('/home/jarvis/src/stack', '/srv')
    """
    if workdir == "~" or workdir.startswith("~/"):
        return home + workdir[1:]
    return workdir


def command_args(argv: Sequence[str]) -> list[str]:
    """`new-session`'s command words: one word is shell-quoted, since tmux runs it via sh.

    A word that starts with `-` is quoted too: `sh -c -rf` would read it as options.

    >>> command_args(["sleep", "600"]), command_args(["my agent; rm -rf ~"])
    (['sleep', '600'], ["'my agent; rm -rf ~'"])
    >>> command_args(["-rf"])
    ["'-rf'"]
    """
    if not argv:
        raise ValueError("an agent needs a command (argv is empty)")
    if len(argv) > 1:
        return list(argv)
    word = shlex.quote(argv[0])  # unquoted only when every character is safe (no `'`)
    return [f"'{word}'" if word.startswith("-") else word]


def spawn_args(launch: LaunchSpec, home: str) -> tuple[Command, ...]:
    """tmux commands that create one agent's session, keep its dead pane, and mark it.

    They run in one chain: tmux stops a chain at its first failure, so a duplicate name
    never gets marked (the foreign session stays foreign) and a created session is marked
    before tmux reads anything else.
    """
    name = check_name(launch.agent)
    target = f"={name}:"
    new = ["new-session", "-d", "-s", name]
    if launch.workdir:
        new += ["-c", expand_workdir(launch.workdir, home).replace("#", "##")]
    for env_key, value in launch.env:
        if not _ENV_KEY.fullmatch(env_key):
            raise ValueError(f"{name}: environment variable name {env_key!r} is invalid")
        new += ["-e", f"{env_key}={value}"]
    new += ["--", *command_args(launch.argv)]
    values = (launch.tenant, launch.agent, launch.host, launch.spec_hash, launch.model)
    return (
        tuple(new),
        ("set-option", "-w", "-t", target, "remain-on-exit", "on"),
        *(
            ("set-option", "-t", target, option, value)
            for option, value in zip(FLEET_OPTIONS, values, strict=True)
        ),
    )


def chain_args(units: Sequence[_Unit]) -> list[str]:
    """One tmux argument list running every unit, each followed by a progress line.

    Every argument is escaped with `tmux_arg`, and `;` is inserted only between commands.
    `display-message -p NAME` prints NAME once the unit's commands all succeeded, so
    stdout says how far a failed chain got.

    >>> chain_args([_Unit("a", (("kill-session", "-t", "=a"),))])
    ['kill-session', '-t', '=a', ';', 'display-message', '-p', 'a']
    """
    args: list[str] = []
    for unit in units:
        for command in (*unit.commands, ("display-message", "-p", unit.name)):
            if args:
                args.append(";")
            args += [tmux_arg(arg) for arg in command]
    return args


def fit_units(units: Sequence[_Unit], budget: int = CHAIN_BYTES) -> int:
    """How many leading units one invocation can carry (at least one, to report it).

    tmux packs a command's arguments, NUL-terminated, into one 16 KiB message and
    refuses longer ones ("command too long"), so a big batch is split.

    >>> unit = _Unit("a", (("x" * 99,),))  # 125 bytes with its progress line and ";"
    >>> fit_units([unit] * 500, budget=1000), fit_units([unit], budget=10)
    (8, 1)
    """
    used = count = 0
    for unit in units:
        used += sum(len(arg.encode()) + 1 for arg in chain_args([unit])) + 2
        if count and used > budget:
            break
        count += 1
    return count


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


def client_environment(environ: Mapping[str, str], sources: Iterable[str] = ()) -> dict[str, str]:
    """The environment a tmux client runs with: CLIENT_ENV of `environ`, and the
    variables `sources` names (what `env_from: [{env: VAR}]` reads in the pane).

    >>> sorted(client_environment({"PATH": "/bin", "AWS_SECRET": "x", "LC_ALL": "C", "GH": "t"}, ["GH"]))
    ['GH', 'LC_ALL', 'PATH']
    """
    wanted = set(sources)
    return {k: v for k, v in environ.items() if k in CLIENT_ENV or k in wanted or k.startswith(CLIENT_ENV_PREFIXES)}


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
        marks=Marks(*fields[10:]),
    )


def _parse(text: str) -> tuple[dict[str, ObservedSession], list[str]]:
    sessions: dict[str, ObservedSession] = {}
    bad: list[str] = []
    for line in text.splitlines():
        if not line:
            continue
        try:
            session = parse_pane_line(line)
        except ValueError as exc:
            bad.append(f"{exc}: {line[:80]!r}")
            continue
        sessions.setdefault(session.name, session)
    return sessions, bad


def parse_list_panes(text: str, key: SocketKey) -> dict[str, ObservedSession]:
    """Sessions by name from `list-panes -a -F LIST_FORMAT` output on socket `key`.

    tmux lists panes session by session in window and pane index order; each session is
    represented by its first pane. Unreadable lines are skipped (`parse_snapshot` reports
    them), so one odd foreign session cannot blind the reconciler to the rest.

    >>> line = SEP.join(["coder", "$3", "1795608000", "1795608060", "0", "4242", "0", "",
    ...                  "claude", "0", "jarvis", "coder", "w-jarvis", "ab12", "opus"])
    >>> dead = SEP.join(["coder", "$3", "1795608000", "", "0", "4243", "1", "3",
    ...                  "", "0", "", "", "", "", ""])
    >>> s = parse_list_panes(line + "\\n" + dead + "\\n", SocketKey(None, "fleet"))["coder"]
    >>> s.created.isoformat(), s.activity.minute, s.pane_pid, s.pane_dead, s.dead_status
    ('2026-11-25T12:00:00+00:00', 1, 4242, False, None)
    >>> s.marks.owned, s.marks.model
    (True, 'opus')
    >>> parse_pane_line(dead).pane_dead, parse_pane_line(dead).dead_status
    (True, 3)
    >>> parse_list_panes("garbage\\n", SocketKey(None, "fleet"))
    {}
    """
    del key  # the sessions do not carry it; the signature matches parse_snapshot
    return _parse(text)[0]


def parse_snapshot(key: SocketKey, returncode: int, stdout: str, stderr: str) -> SocketSnapshot:
    """Turn one `list-panes` run into a snapshot; a server that is not there is no error.

    >>> parse_snapshot(SocketKey(None, "x"), 1, "", "no server running on /tmp/tmux-0/x\\n")
    SocketSnapshot(key=SocketKey(user=None, name='x'), running=False, sessions={}, error=None, stuck_pid=None)
    >>> parse_snapshot(SocketKey(None, "x"), 1, "", "access not allowed\\n").error
    'tmux x: access not allowed'
    >>> parse_snapshot(SocketKey(None, "x"), 0, "junk\\n", "").error
    "tmux x: skipped 1 unreadable line(s): expected 15 fields, got 1: 'junk'"
    """
    message = stderr.strip()
    if returncode != 0:
        if not_running(message):
            return SocketSnapshot(key=key, running=False)
        return SocketSnapshot(key=key, running=False, error=f"tmux {key.label()}: {message}")
    sessions, bad = _parse(stdout)
    error = None
    if bad:
        error = f"tmux {key.label()}: skipped {len(bad)} unreadable line(s): {bad[0]}"
    return SocketSnapshot(key=key, running=True, sessions=sessions, error=error)


# --- effectful: running tmux ----------------------------------------------------------


def resolve(key: SocketKey) -> list[str]:
    """`socket_args` with the facts looked up: our user, the other user's uid, TMUX_TMPDIR."""
    me = users.current_user()
    if users.is_me(key.user):
        return socket_args(key, me)
    uid = pwd.getpwnam(str(key.user)).pw_uid
    return socket_args(key, me, uid)  # a tenant user's runs never inherit our TMUX_TMPDIR: /tmp


def _home(key: SocketKey) -> str:
    """The home of the user whose server this is, for `~` in workdirs."""
    if users.is_me(key.user):
        return str(Path.home())
    return pwd.getpwnam(str(key.user)).pw_dir


def socket_path(key: SocketKey) -> Path:
    """Where `key`'s server listens, as tmux itself finds it."""
    flag, where = resolve(key)
    if flag == "-S":
        return Path(where)
    return Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.geteuid()}" / where


def run_tmux(key: SocketKey, args: Sequence[str], sources: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run one tmux client against `key`'s server and return what it said (never checks).

    `-u` makes tmux print UTF-8 (the separator, names) whatever the locale says. The
    client gets client_environment(), with the variables `sources` names.
    """
    argv = ["tmux", "-u", *resolve(key), *args]
    return subprocess.run(
        argv,
        env=client_environment(os.environ, sources),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def observe_socket(key: SocketKey) -> SocketSnapshot:
    """Every session on `key`'s server, with exactly one tmux invocation; never raises
    over tmux (a missing binary, user or server is a snapshot with `running=False`)."""
    try:
        result = run_tmux(key, ["list-panes", "-a", "-F", LIST_FORMAT])
        if result.returncode != 0 and stuck_server.leaving(result.stderr):
            return _observe_leaving(key)
    except (OSError, LookupError, subprocess.SubprocessError) as exc:
        return SocketSnapshot(key=key, running=False, error=f"tmux {key.label()}: {exc}")
    return parse_snapshot(key, result.returncode, result.stdout, result.stderr)


def _observe_leaving(key: SocketKey) -> SocketSnapshot:
    """The server hung up on us: give it time to go and read again; if it still hangs up
    and still has panes, name it stuck (the apply step ends it)."""
    path = socket_path(key)
    stuck_server.settle(path)
    result = run_tmux(key, ["list-panes", "-a", "-F", LIST_FORMAT])
    if not stuck_server.leaving(result.stderr):  # gone, or a new server answered
        return parse_snapshot(key, result.returncode, result.stdout, result.stderr)
    pid = stuck_server.stuck_pid(path)
    if pid is None:
        return SocketSnapshot(key=key, running=False, error=(
            f"tmux {key.label()}: {result.stderr.strip()}: its server is exiting but still listens on {path}, "
            "with no agent left (a client it waits for has not gone); the next run looks again"))
    return SocketSnapshot(key=key, running=False, stuck_pid=pid)


def _run_units(key: SocketKey, units: Sequence[_Unit], tolerate: Callable[[str], bool],
               sources: Iterable[str] = ()) -> list[str]:
    """Run units in as few chained invocations as tmux's size limit allows.

    After a failure, goes on past the failed unit. Returns one message per failed unit,
    leaving out those whose error `tolerate` accepts; stops if the server is gone.
    """
    failures: list[str] = []
    pending = list(units)
    waited = False
    while pending:
        batch = pending[: fit_units(pending)]
        result = run_tmux(key, chain_args(batch), sources)
        done = len(result.stdout.splitlines())
        if result.returncode == 0 or done >= len(batch):
            pending = pending[len(batch) :]
            continue
        message = result.stderr.strip()
        lost = stuck_server.leaving(message) or not_running(message)
        if lost and not waited and not tolerate(message) and stuck_server.settle(socket_path(key)):
            # The server exited as we spoke (its last session was just killed, or someone
            # killed it), taking this call's sessions with it: all of them again, once. A
            # server stuck in its exit is left to the next run, which ends it and audits it.
            waited = True
            failures, pending = [], list(units)
            continue
        if not tolerate(message):
            failures.append(f"{batch[done].name}: {message}")
        if not_running(message) or stuck_server.leaving(message):
            break
        pending = pending[done + 1 :]
    return failures


def _by_socket(launches: Iterable[LaunchSpec]) -> dict[SocketKey, list[LaunchSpec]]:
    groups: dict[SocketKey, list[LaunchSpec]] = {}
    for launch in launches:
        groups.setdefault(launch.socket, []).append(launch)
    return groups


def spawn_sessions(launches: Sequence[LaunchSpec]) -> None:
    """Create and mark every agent's session: one tmux invocation per socket and 16 KiB.

    An agent that tmux refuses (say, its name is taken by a foreign session) is skipped,
    the others are still created, and TmuxError lists what failed at the end.
    """
    failures: list[str] = []
    for key, group in _by_socket(launches).items():
        home = _home(key)
        units = [_Unit(launch.agent, spawn_args(launch, home)) for launch in group]
        sources = sorted({name for launch in group for name in launch.env_sources()})
        for failure in _run_units(key, units, tolerate=lambda _message: False, sources=sources):
            failures.append(f"{key.label()}/{failure}")
    if failures:
        raise TmuxError("could not start " + "; ".join(failures))


def end_stuck(key: SocketKey, pid: int) -> str | None:
    """End `key`'s server if it is still the stuck one observed as `pid` (it hangs up on
    a client again, and the kernel names `pid` as its listener); says what it did. None:
    it exited or answers again, or another process listens now, and nothing was signalled.

    Raises OSError when a stuck server cannot be ended.
    """
    path = socket_path(key)

    def still_stuck() -> bool:
        said = run_tmux(key, ["list-sessions"]).stderr
        return stuck_server.leaving(said) and stuck_server.stuck_pid(path) == pid

    return stuck_server.end(pid, path, still_stuck)


def _gone(message: str) -> bool:
    """A kill needs nothing more: the session, or its whole server, is gone or going."""
    return message.startswith("can't find session") or not_running(message) or stuck_server.leaving(message)


def kill_sessions(key: SocketKey, names: Iterable[str]) -> None:
    """Kill the named sessions on `key` in one invocation; sessions already gone are fine.

    The caller passes only sessions it owns (marked); names are exact-matched (`=NAME`).
    """
    units = [_Unit(check_name(name), (("kill-session", "-t", f"={name}"),)) for name in names]
    if not units:
        return
    failures = _run_units(key, units, tolerate=_gone)
    if failures:
        raise TmuxError(f"could not stop on {key.label()}: " + "; ".join(failures))
