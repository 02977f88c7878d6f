"""Unit files: quoting for ExecStart=, unit names, rendering, and their round trip through systemd.

Pure functions by table and by property; then the real `systemd --user` checks that what
we write means what we think: every hostile argument reaches the program byte for byte,
and every server unit name is one the manager loads.
"""

from __future__ import annotations

import doctest
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.drivers import units
from reconciler.drivers.units import (
    Host,
    agent_unit_name,
    agent_unit_text,
    environment_line,
    exec_line,
    exec_quote,
    is_valid_unit_name,
    server_unit_name,
    server_unit_text,
)
from reconciler.engine import systemd_apply
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey
from reconciler.spec.models import SOCKET_PATTERN
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import kill_server

HOST = Host("/usr/bin/tmux", None, "/home/u")


def test_doctests_pass() -> None:
    assert doctest.testmod(units, raise_on_error=False).failed == 0
    assert doctest.testmod(systemd_apply, raise_on_error=False).failed == 0


class QuoteCase(NamedTuple):
    test_id: str
    arg: str
    quoted: str


QUOTE_CASES = [
    QuoteCase("plain", "sleep", '"sleep"'),
    QuoteCase("empty", "", '""'),
    QuoteCase("spaces", "  a  b ", '"  a  b "'),
    QuoteCase("double-quotes", 'say "hi"', '"say \\"hi\\""'),
    QuoteCase("single-quotes", "it's", '"it\'s"'),
    QuoteCase("lone-semicolon", ";", '";"'),
    QuoteCase("tmux-escaped-semicolon", "a\\;", '"a\\\\;"'),
    QuoteCase("command-substitution", "$(rm -rf ~)", '"$$(rm -rf ~)"'),
    QuoteCase("braced-variable", "${HOME}", '"$${HOME}"'),
    QuoteCase("specifier", "%h/%%", '"%%h/%%%%"'),
    QuoteCase("backslashes", "C:\\x41\\", '"C:\\\\x41\\\\"'),
    QuoteCase("escape-look-alike", "\\n", '"\\\\n"'),
    QuoteCase("tab-and-escape", "\t\x1b[0m", '"\\x09\\x1b[0m"'),
    QuoteCase("del", "\x7f", '"\\x7f"'),
    QuoteCase("c1-control", "\x85", '"\\u0085"'),
    QuoteCase("unicode", "é✓😀 日本", '"é✓😀 日本"'),
    QuoteCase("line-separator-kept", "\u2028", '"\u2028"'),
    QuoteCase("dash-prefix-look-alike", "-x", '"-x"'),
]


@pytest.mark.parametrize("case", QUOTE_CASES, ids=[c.test_id for c in QUOTE_CASES])
def test_exec_quote(case: QuoteCase) -> None:
    assert exec_quote(case.arg) == case.quoted


@pytest.mark.parametrize("bad", ["nul\0", "\0", "\ud800"], ids=["nul", "only-nul", "surrogate"])
def test_exec_quote_refuses_what_a_unit_line_cannot_carry(bad: str) -> None:
    with pytest.raises(ValueError, match=r"newline or NUL|surrogate"):
        exec_quote(bad)


def test_exec_quote_carries_a_newline_as_an_escape_and_environment_lines_refuse_it() -> None:
    assert exec_quote("set -e\necho hi\n") == '"set -e\\x0aecho hi\\x0a"'
    with pytest.raises(ValueError, match="newline"):
        environment_line("X", "a\nb")


@given(st.text(alphabet=st.characters(exclude_characters="\n\0", exclude_categories=["Cs"])))
def test_exec_quote_is_one_quoted_line_with_every_special_doubled(arg: str) -> None:
    quoted = exec_quote(arg)
    assert quoted.startswith('"') and quoted.endswith('"') and len(quoted) >= 2
    assert not any(ch in quoted for ch in "\n\r\0")
    body = quoted[1:-1]
    assert body.count("%") == 2 * arg.count("%") and body.count("$") == 2 * arg.count("$")
    assert bare_quotes(body) == 0


def bare_quotes(body: str) -> int:
    """Double quotes in `body` not escaped by a backslash (each `\\x` pair skipped)."""
    count, i = 0, 0
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        count += body[i] == '"'
        i += 1
    return count


def test_exec_line_needs_an_absolute_program() -> None:
    assert exec_line(["/bin/true"]) == '"/bin/true"'
    assert exec_line(["/bin/true", "x"], ignore_failure=True) == '-"/bin/true" "x"'
    for program in ("true", "-/bin/true", "@/bin/true", ""):
        with pytest.raises(ValueError, match="absolute path"):
            exec_line([program])


@given(st.from_regex(SOCKET_PATTERN, fullmatch=True))
def test_every_allowed_socket_name_makes_a_valid_server_unit_name(socket: str) -> None:
    name = server_unit_name(SocketKey(None, socket))
    assert is_valid_unit_name(name) and name.startswith(units.SERVER_PREFIX)
    assert name.removeprefix(units.SERVER_PREFIX).removesuffix(".service") == socket  # injective


def test_server_units_are_apart_from_agent_units() -> None:
    """`fleet-tmux-x.foo` could be tenant `tmux-x`'s agent `foo`; the `@` rules that out."""
    assert server_unit_name(SocketKey(None, "x.foo")) == "fleet-tmux@x.foo.service"
    assert agent_unit_name("tmux-x", "foo") == "fleet-tmux-x.foo.service"
    with pytest.raises(ValueError):
        server_unit_name(SocketKey("jarvis", "x"))


def launch(socket: SocketKey, argv: tuple[str, ...] = ("/bin/sleep", "600"), agent: str = "coder0-0") -> LaunchSpec:
    env = (("FLEET_AGENT", agent), ("FLEET_TENANT", "jarvis"))
    return LaunchSpec("jarvis", agent, "w-jarvis", socket, argv, env, "~/src/#x", "opus", "0123abcd")


def test_agent_unit_runs_the_direct_paths_chain_and_kills_only_its_session() -> None:
    text = agent_unit_text(launch(SocketKey(None, "mosaic-fleet")), HOST)
    lines = text.splitlines()
    assert lines[0].startswith(units.HEADER)
    for expected in (
        "Requires=fleet-tmux@mosaic-fleet.service",
        "After=fleet-tmux@mosaic-fleet.service",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "WantedBy=default.target",
        'ExecStop=-"/usr/bin/tmux" "-u" "-L" "mosaic-fleet" "kill-session" "-t" "=coder0-0"',
    ):
        assert expected in lines
    start = next(line for line in lines if line.startswith("ExecStart="))
    assert start.startswith('ExecStart="/usr/bin/tmux" "-u" "-L" "mosaic-fleet" "new-session" "-d" "-s" "coder0-0"')
    assert '"-c" "/home/u/src/##x"' in start  # the chain's own tmux quoting survives inside
    assert '";" "set-option" "-t" "=coder0-0:" "@fleet-spec-hash" "0123abcd"' in start


def test_server_unit_runs_tmux_in_the_foreground_and_waits_for_its_socket() -> None:
    text = server_unit_text(SocketKey(None, None), Host("/usr/bin/tmux", "/run/t $x", "/root"))
    assert 'ExecStart="/usr/bin/tmux" "-L" "default" "-D"' in text.splitlines()
    assert 'Environment="TMUX_TMPDIR=/run/t $x"' in text.splitlines()
    assert "[Install]" not in text  # pulled in by agents (Requires=), never on its own
    assert "list-sessions" in text and "ExecStartPost=" in text


def test_a_value_a_unit_cannot_carry_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        agent_unit_text(launch(SocketKey(None, "s"), ("/bin/echo", "nul\0")), HOST)


def test_write_unit_writes_only_changed_bytes_and_remove_spares_foreign_files(tmp_path: Path) -> None:
    text = agent_unit_text(launch(SocketKey(None, "s")), HOST)
    assert units.write_unit(tmp_path, "fleet-a.b.service", text)
    stamp = (tmp_path / "fleet-a.b.service").stat().st_mtime_ns
    assert not units.write_unit(tmp_path, "fleet-a.b.service", text)
    assert (tmp_path / "fleet-a.b.service").stat().st_mtime_ns == stamp
    (tmp_path / "fleet-mine.x.service").write_text("[Unit]\nDescription=someone else's\n")
    assert not units.remove_unit(tmp_path, "fleet-mine.x.service")
    assert (tmp_path / "fleet-mine.x.service").exists()
    assert units.remove_unit(tmp_path, "fleet-a.b.service") and not (tmp_path / "fleet-a.b.service").exists()
    assert not units.remove_unit(tmp_path, "fleet-gone.x.service")


def test_enable_linger_reports_instead_of_raising() -> None:
    note = units.enable_linger("no-such-user-fleet-test")
    assert note.startswith("loginctl enable-linger no-such-user-fleet-test:"), note


def test_systemctl_without_a_manager_is_a_failed_ran() -> None:
    ran = units.systemctl("is-active", "fleet-x.service", timeout=5.0)
    assert not ran.ok and "\n" not in ran.said


#: Characters a hostile value is made of: shell, tmux and systemd syntax, escapes, unicode.
HOSTILE = ' "\'\\;$%(){}`#~*?[]!&|<>=-@+:\t\x01\x1b\x7f\x85é✓😀日\u2028'


def hostile_args(count: int, seed: int = 1721) -> list[str]:
    rng = random.Random(seed)
    values = [case.arg for case in QUOTE_CASES]
    values += ["".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, 12))) for _ in range(count)]
    return values


@pytest.mark.systemd
def test_hostile_arguments_reach_the_program_unchanged(systemd_user: SystemdUser) -> None:
    out = systemd_user.config_home / "argv.json"
    dump = f"import json, sys; open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))"
    args = hostile_args(300)
    unit = (
        f"[Service]\nType=oneshot\nExecStart={exec_line([sys.executable, '-c', dump, *args])}\n"
        f"ExecStop={exec_line(['/bin/false', *args], ignore_failure=True)}\n"
    )
    (systemd_user.unit_dir / "fleet-test-quote.service").write_text(unit, encoding="utf-8")
    systemd_user.systemctl("daemon-reload")

    started = systemd_user.systemctl("start", "fleet-test-quote.service", check=False)
    stopped = systemd_user.systemctl("stop", "fleet-test-quote.service", check=False)

    assert started.returncode == 0, started.stderr
    assert json.loads(out.read_text()) == args
    assert stopped.returncode == 0, stopped.stderr  # `-` kept outside the quotes still counts


EDGE_SOCKETS = ["_", "a.b", "x-.-_", "A..z-", "9", "d" * 64]


@pytest.mark.systemd
@pytest.mark.tmux
def test_the_manager_loads_server_units_for_edge_socket_names(systemd_user: SystemdUser) -> None:
    host = systemd_apply.this_host()
    assert host is not None
    sockets = [SocketKey(None, name) for name in EDGE_SOCKETS]
    for key in sockets:
        assert units.write_unit(systemd_user.unit_dir, server_unit_name(key), server_unit_text(key, host))
    systemd_user.systemctl("daemon-reload")
    names = [server_unit_name(key) for key in sockets]
    shown = systemd_user.systemctl("show", "--property=Id,LoadState", *names).stdout
    assert shown.split() == [line for name in names for line in (f"Id={name}", "LoadState=loaded")]
    weird = sockets[2]
    try:
        systemd_user.systemctl("start", server_unit_name(weird))
        answered = units.systemctl("is-active", server_unit_name(weird))
        assert answered.ok, answered.said
        assert weird.name
        listing = subprocess.run(["tmux", "-L", weird.name, "list-sessions"], capture_output=True, check=False)
        assert listing.returncode == 0  # ExecStartPost returned only once the socket answered
    finally:
        assert weird.name
        kill_server(weird.name)
