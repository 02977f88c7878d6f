"""The tmux driver against real tmux on a private socket per test (no mock backend)."""

from __future__ import annotations

import doctest
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.tmux import (
    SEP,
    TmuxError,
    kill_sessions,
    observe_socket,
    parse_list_panes,
    socket_args,
    spawn_sessions,
    tmux_arg,
)
from reconciler.drivers.tmux import argv as tmux_argv
from reconciler.drivers.tmux import client as tmux_client
from reconciler.drivers.tmux import parse as tmux_parse
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import Marks, ObservedSession, SocketKey, SocketSnapshot
from tests.plugins.tmux_server import kill_server, retry_until

KEY = SocketKey(None, "fleet")

#: Values that a shell or tmux would interpret if anything were not quoted right.
HOSTILE = (
    "; $(touch {marker})",
    "a b  c",
    "`touch {marker}`",
    "ünï ␞ 😀",
    "ends with;",
    ";",
    "back\\;",
    "#{session_name}",
    "#(touch {marker})",
    "$HOME '\" \\",
    "-x",
    "",
    "new\nline",
)

#: The agent used by the hostile tests: dumps its argv, cwd and FLEET_* env as JSON.
DUMP = (
    "import json, os, sys\n"
    "env = {k: v for k, v in os.environ.items() if k.startswith('FLEET_')}\n"
    "out = {'argv': sys.argv[2:], 'cwd': os.getcwd(), 'env': env}\n"
    "with open(sys.argv[1] + '.tmp', 'w') as f: json.dump(out, f)\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
)


def launch(
    socket: SocketKey,
    agent: str,
    argv: Sequence[str] = ("sleep", "600"),
    *,
    env: Sequence[tuple[str, str]] = (),
    workdir: str | None = None,
    model: str = "opus",
) -> LaunchSpec:
    return LaunchSpec(
        tenant="jarvis",
        agent=agent,
        host="w-jarvis",
        socket=socket,
        argv=tuple(argv),
        env=tuple(env),
        workdir=workdir,
        model=model,
        spec_hash="h-" + agent,
    )


def raw_tmux(socket: SocketKey, *args: str) -> None:
    """Drive tmux directly, as a person would: for foreign sessions the fleet never made."""
    assert socket.name is not None
    subprocess.run(["tmux", "-L", socket.name, *args], check=True, capture_output=True)


def server_pid(socket: SocketKey) -> int:
    assert socket.name is not None
    argv = ["tmux", "-L", socket.name, "display-message", "-p", "#{pid}"]
    return int(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def session(socket: SocketKey, name: str) -> ObservedSession | None:
    return observe_socket(socket).sessions.get(name)


def command_of(socket: SocketKey, name: str) -> str | None:
    observed = session(socket, name)
    return observed.current_command if observed else None


def dead(socket: SocketKey, name: str) -> ObservedSession:
    """Wait for the session's pane to be dead (its agent exited) and return it."""
    assert retry_until(lambda: bool((s := session(socket, name)) and s.pane_dead))
    observed = session(socket, name)
    assert observed is not None
    return observed


def wait_for_json(path: Path) -> dict[str, object]:
    assert retry_until(path.exists), f"{path} was never written: the agent did not run"
    loaded: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


# --- pure ------------------------------------------------------------------------------


def test_a_line_listed_again_is_the_known_session_and_a_changed_one_is_parsed() -> None:
    key = SocketKey(None, "fleet")
    fields = ["coder", "$3", "1795608000", "1795608060", "0", "4242", "0", "", "sleep", "0", "%1", "t", "coder", "h", "ab12",
              "m", "/srv/state", "%1"]
    line = tmux_parse.SEP.join(fields)
    seen: dict[str, ObservedSession] = {}
    first = tmux_parse.parse_snapshot(key, 0, line + "\n", "", None, seen)
    assert seen == {line: first.sessions["coder"]}

    again = tmux_parse.parse_snapshot(key, 0, line + "\n", "", seen, {})
    assert again.sessions["coder"] is first.sessions["coder"]

    died = tmux_parse.SEP.join([*fields[:6], "1", "3", *fields[8:]])
    later = tmux_parse.parse_snapshot(key, 0, died + "\n", "", seen, {})
    assert later.sessions["coder"].pane_dead and later.sessions["coder"].dead_status == 3


@pytest.mark.parametrize("module", [tmux_argv, tmux_parse], ids=lambda m: m.__name__)
def test_doctests(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def line(
    name: str = "coder",
    *,
    pid: str = "4242",
    is_dead: str = "0",
    status: str = "",
    activity: str = "1795608060",
    pane: str = "%1",
    marks: Sequence[str] = ("jarvis", "coder", "w-jarvis", "ab12", "opus", "/srv/state", "%1"),
) -> str:
    fields = [name, "$3", "1795608000", activity, "1", pid, is_dead, status, "claude", "0", pane]
    return SEP.join([*fields, *marks])


class ParseCase(NamedTuple):
    test_id: str
    text: str
    expected: dict[str, tuple[int | None, bool, int | None, Marks]]  # pid, dead, status, marks


OWNED = Marks("jarvis", "coder", "w-jarvis", "ab12", "opus", "/srv/state", "%1")
UNMARKED_PANE = ("jarvis", "coder", "w-jarvis", "ab12", "opus", "/srv/state", "")
PARSE_CASES = [
    ParseCase("empty", "", {}),
    ParseCase("owned", line() + "\n", {"coder": (4242, False, None, OWNED)}),
    ParseCase("dead-pane", line(is_dead="1", status="3"), {"coder": (4242, True, 3, OWNED)}),
    ParseCase(
        "foreign-unmarked",
        line("shell", marks=("", "", "", "", "", "", "")),
        {"shell": (4242, False, None, Marks())},
    ),
    ParseCase(
        "unmarked-first-pane-wins",
        line(pid="1", marks=UNMARKED_PANE) + "\n" + line(pid="2", pane="%2", marks=UNMARKED_PANE) + "\n",
        {"coder": (1, False, None, Marks(*UNMARKED_PANE))},
    ),
    ParseCase(
        "marked-pane-wins-over-a-split-listed-first",
        line(pid="9", pane="%2") + "\n" + line(pid="1") + "\n",
        {"coder": (1, False, None, OWNED)},
    ),
    ParseCase(
        "marked-pane-dead-split-alive",
        line(pid="9", pane="%2") + "\n" + line(pid="1", is_dead="1", status="0") + "\n",
        {"coder": (1, True, 0, OWNED)},
    ),
    ParseCase(
        "marked-pane-gone-split-alive",
        line(pid="9", pane="%2") + "\n" + line(pid="8", pane="%3") + "\n",
        {"coder": (None, True, None, OWNED)},
    ),
    ParseCase(
        "malformed-line-skipped",
        "garbage\n" + line("b") + "\n" + SEP.join(["x"] * 20) + "\n",
        {"b": (4242, False, None, OWNED)},
    ),
    ParseCase(
        "unicode-and-spaces",
        line("ünï code", marks=("t", "a", "h", "s", "m ü", "/ä b", "%1")),
        {"ünï code": (4242, False, None, Marks("t", "a", "h", "s", "m ü", "/ä b", "%1"))},
    ),
    ParseCase(
        "no-pid-no-activity",
        line(pid="", activity=""),
        {"coder": (None, False, None, OWNED)},
    ),
]


@pytest.mark.parametrize(list(ParseCase._fields), PARSE_CASES, ids=[c.test_id for c in PARSE_CASES])
def test_parse_list_panes(
    test_id: str, text: str, expected: dict[str, tuple[int | None, bool, int | None, Marks]]
) -> None:
    sessions = parse_list_panes(text, KEY)
    got = {n: (s.pane_pid, s.pane_dead, s.dead_status, s.marks) for n, s in sessions.items()}
    assert got == expected
    for observed in sessions.values():
        assert observed.created.utcoffset() is not None  # timezone-aware UTC
        assert observed.attached == 1


class SocketCase(NamedTuple):
    test_id: str
    key: SocketKey
    uid: int | None
    tmpdir: str | None
    expected: list[str]


SOCKET_CASES = [
    SocketCase("own-named", SocketKey(None, "fleet"), None, None, ["-L", "fleet"]),
    SocketCase("own-default", SocketKey(None, None), None, None, ["-L", "default"]),
    SocketCase("me-by-name", SocketKey("root", "fleet"), None, None, ["-L", "fleet"]),
    SocketCase("other-user", SocketKey("jarvis", "fleet"), 1001, None, ["-S", "/tmp/tmux-1001/fleet"]),
    SocketCase("other-default", SocketKey("jarvis", None), 1001, "", ["-S", "/tmp/tmux-1001/default"]),
    SocketCase("other-tmpdir", SocketKey("jarvis", "f"), 1001, "/run/x", ["-S", "/run/x/tmux-1001/f"]),
]


@pytest.mark.parametrize(list(SocketCase._fields), SOCKET_CASES, ids=[c.test_id for c in SOCKET_CASES])
def test_socket_args(
    test_id: str, key: SocketKey, uid: int | None, tmpdir: str | None, expected: list[str]
) -> None:
    assert socket_args(key, "root", uid, tmpdir) == expected


def test_socket_args_needs_the_other_users_uid() -> None:
    with pytest.raises(ValueError, match="uid of user 'jarvis'"):
        socket_args(SocketKey("jarvis", "fleet"), "root")


@pytest.mark.parametrize("value", ["a;", ";", "a\\;", "a;b", "", "x"])
def test_tmux_arg_escapes_only_a_trailing_semicolon(value: str) -> None:
    escaped = tmux_arg(value)
    assert escaped == value if not value.endswith(";") else escaped == value[:-1] + "\\;"


@pytest.mark.parametrize("name", ["a.b", "a:b", "", "x#{pid}", "-x", "a b", "ü"])
def test_names_tmux_would_rewrite_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="session name"):
        tmux.spawn_args(launch(KEY, name), "/root")


# --- real tmux -------------------------------------------------------------------------


@pytest.mark.tmux
def test_no_server_is_not_running_and_no_error(tmux_socket: SocketKey) -> None:
    assert observe_socket(tmux_socket) == SocketSnapshot(tmux_socket, running=False)


@pytest.mark.tmux
def test_unknown_user_is_an_error_not_an_exception() -> None:
    snapshot = observe_socket(SocketKey(f"no-such-user-{uuid.uuid4().hex[:8]}", "x"))
    assert not snapshot.running
    assert snapshot.error and "no-such-user" in snapshot.error


@pytest.mark.tmux
def test_spawn_then_observe_round_trip(tmux_socket: SocketKey) -> None:
    names = ["orchestrator", "enhancer", "coder0-0"]
    spawn_sessions([launch(tmux_socket, name, model=f"m-{name}") for name in names])

    snapshot = observe_socket(tmux_socket)
    assert snapshot.running and snapshot.error is None
    assert sorted(snapshot.sessions) == sorted(names)
    for name in names:
        observed = snapshot.sessions[name]
        assert observed.pane_id.startswith("%")
        assert observed.marks == Marks("jarvis", name, "w-jarvis", f"h-{name}", f"m-{name}", pane=observed.pane_id)
        assert observed.marks.owned
        assert observed.pane_pid and not observed.pane_dead
        assert observed.session_id.startswith("$")
        assert observed.created.utcoffset() is not None
    assert retry_until(lambda: command_of(tmux_socket, "coder0-0") == "sleep")


@pytest.mark.tmux
def test_foreign_unmarked_session_is_observed_not_owned(tmux_socket: SocketKey) -> None:
    raw_tmux(tmux_socket, "new-session", "-d", "-s", "mine-by-hand", "sleep", "600")
    spawn_sessions([launch(tmux_socket, "coder")])

    sessions = observe_socket(tmux_socket).sessions
    assert sessions["mine-by-hand"].marks == Marks()
    assert not sessions["mine-by-hand"].marks.owned
    assert sessions["coder"].marks.owned


@pytest.mark.tmux
def test_a_taken_name_is_never_marked_and_the_rest_still_start(tmux_socket: SocketKey) -> None:
    raw_tmux(tmux_socket, "new-session", "-d", "-s", "coder", "sleep", "600")

    with pytest.raises(TmuxError, match="coder: duplicate session"):
        spawn_sessions([launch(tmux_socket, n) for n in ("alpha", "coder", "zeta")])

    sessions = observe_socket(tmux_socket).sessions
    assert sessions["coder"].marks == Marks()  # the foreign session stays foreign
    assert sessions["alpha"].marks.owned and sessions["zeta"].marks.owned


@pytest.mark.tmux
@pytest.mark.parametrize(
    ("argv", "status"),
    [(("sh", "-c", "exit 3"), 3), (("true",), 0)],
    ids=["exit-3", "one-word-argv"],
)
def test_exited_agent_leaves_a_dead_pane(tmux_socket: SocketKey, argv: tuple[str, ...], status: int) -> None:
    spawn_sessions([launch(tmux_socket, "crashy", argv)])

    observed = dead(tmux_socket, "crashy")
    assert observed.marks.owned
    # The status comes with SIGCHLD, which Debian's tmux (built with libutempter) can
    # lose when the pane closes (tmux/tmux#311): the pane stays dead with no status until
    # the server's next SIGCHLD (about 1 run in 10 under load here). Nudge it as tmux's
    # maintainer suggests, so the status we parse is checked every time.
    if not retry_until(lambda: dead(tmux_socket, "crashy").dead_status is not None, 1.0):
        os.kill(server_pid(tmux_socket), signal.SIGCHLD)
    assert retry_until(lambda: dead(tmux_socket, "crashy").dead_status == status)


@pytest.mark.tmux
def test_hostile_argv_env_workdir_and_marks_arrive_intact(tmux_socket: SocketKey, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = [v.replace("{marker}", str(marker)) for v in HOSTILE]
    workdir = tmp_path / f"w #(touch {marker}) $(touch {marker}); x ;"
    workdir.mkdir(parents=True)
    out = tmp_path / "out.json"
    env = [(f"FLEET_V{i}", value) for i, value in enumerate(hostile)]
    model = "-m #{pid}; $(touch " + str(marker) + ");"
    argv = (sys.executable, "-c", DUMP, str(out), *hostile)
    spawn_sessions([launch(tmux_socket, "hostile", argv, env=env, workdir=str(workdir), model=model)])

    got = wait_for_json(out)
    assert got["argv"] == hostile
    assert got["env"] == dict(env)
    assert got["cwd"] == str(workdir)
    assert dead(tmux_socket, "hostile").marks.model == model
    assert not marker.exists()


@pytest.mark.tmux
def test_one_word_argv_is_not_split_or_run_by_the_shell(tmux_socket: SocketKey, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / f"a b; $(touch {marker})"
    folder.mkdir(parents=True)
    agent = folder / "my agent;"
    ran = tmp_path / "ran"
    agent.write_text(f"#!/bin/sh\necho ran > '{ran}'\n")
    agent.chmod(0o755)
    spawn_sessions([launch(tmux_socket, "oneword", [str(agent)])])

    assert retry_until(ran.exists)
    assert not marker.exists()


@pytest.mark.tmux
def test_tilde_workdir_is_the_users_home(tmux_socket: SocketKey, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    spawn_sessions([launch(tmux_socket, "homey", (sys.executable, "-c", DUMP, str(out)), workdir="~")])

    assert wait_for_json(out)["cwd"] == str(Path.home())


@pytest.mark.tmux
def test_no_workdir_is_the_users_home_not_where_fleet_runs(tmux_socket: SocketKey, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant user's run works in a private copy of the specs that is gone afterwards."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.json"
    spawn_sessions([launch(tmux_socket, "nowhere", (sys.executable, "-c", DUMP, str(out)))])

    assert wait_for_json(out)["cwd"] == str(Path.home())


@pytest.mark.tmux
def test_missing_workdir_falls_back_to_our_cwd(tmux_socket: SocketKey, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    argv = (sys.executable, "-c", DUMP, str(out))
    spawn_sessions([launch(tmux_socket, "lost", argv, workdir=str(tmp_path / "missing"))])

    assert wait_for_json(out)["cwd"] == str(Path.cwd())
    assert not (tmp_path / "missing").exists()


@pytest.mark.tmux
def test_many_agents_on_two_sockets(tmux_socket: SocketKey) -> None:
    other = SocketKey(None, f"{tmux_socket.name}-b")
    try:
        spawn_sessions([launch(tmux_socket, f"a{i}") for i in range(10)] + [launch(other, "b0")])
        assert len(observe_socket(tmux_socket).sessions) == 10
        assert list(observe_socket(other).sessions) == ["b0"]
    finally:
        assert other.name is not None
        kill_server(other.name)


@pytest.mark.tmux
def test_kill_sessions_kills_only_those_named(tmux_socket: SocketKey) -> None:
    spawn_sessions([launch(tmux_socket, n) for n in ("a", "b", "c")])

    kill_sessions(tmux_socket, ["a", "gone-already", "c"])

    assert list(observe_socket(tmux_socket).sessions) == ["b"]


@pytest.mark.tmux
def test_kill_sessions_without_a_server_is_a_no_op(tmux_socket: SocketKey) -> None:
    kill_sessions(tmux_socket, ["a", "b"])
    kill_sessions(tmux_socket, [])
    assert not observe_socket(tmux_socket).running


@pytest.mark.tmux
def test_an_unreadable_foreign_session_does_not_hide_the_others(tmux_socket: SocketKey) -> None:
    spawn_sessions([launch(tmux_socket, "coder")])
    raw_tmux(tmux_socket, "new-session", "-d", "-s", "odd", "sleep", "600")
    raw_tmux(tmux_socket, "set-option", "-t", "=odd:", "@fleet-model", f"x{SEP}y")

    snapshot = observe_socket(tmux_socket)
    assert list(snapshot.sessions) == ["coder"]
    assert snapshot.running
    assert snapshot.error and "skipped 1 unreadable line" in snapshot.error


@pytest.mark.tmux
def test_a_batch_over_tmuxs_size_limit_is_split_not_refused(
    tmux_socket: SocketKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    invocations: list[int] = []
    real_run = tmux.run_tmux

    def spy(key: SocketKey, args: Sequence[str], sources: Iterable[str] = ()) -> subprocess.CompletedProcess[str]:
        invocations.append(sum(len(a.encode()) + 1 for a in args))
        return real_run(key, args, sources)

    monkeypatch.setattr(tmux_client, "run_tmux", spy)
    env = [(f"FLEET_{k}", "/var/lib/fleet/" + "x" * 40) for k in ("A", "B", "C", "D", "E")]
    spawn_sessions([launch(tmux_socket, f"coder{i}", env=env) for i in range(100)])

    sessions = observe_socket(tmux_socket).sessions
    assert len(sessions) == 100 and all(s.marks.owned for s in sessions.values())
    assert 1 < len(invocations) <= 2 + sum(invocations) // tmux.CHAIN_BYTES
    assert max(invocations) <= tmux.CHAIN_BYTES


@pytest.mark.tmux
def test_an_agent_too_big_for_tmux_fails_alone(tmux_socket: SocketKey) -> None:
    huge = [("FLEET_HUGE", "x" * 20_000)]
    launches = [launch(tmux_socket, "a"), launch(tmux_socket, "big", env=huge)]
    with pytest.raises(TmuxError, match="big: "):
        spawn_sessions([*launches, launch(tmux_socket, "b")])

    assert sorted(observe_socket(tmux_socket).sessions) == ["a", "b"]
