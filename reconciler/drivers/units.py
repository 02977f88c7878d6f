"""systemd `--user` unit files for the fleet: names, quoting, rendering, and the verbs apply uses.

The apply step (engine/systemd_apply.py) puts each core agent under its own unit and every tmux
server under its socket's server unit, so stopping one agent never ends its siblings and
no server lives in the reconciler's own cgroup (docs/systemd.md). This module persists
the unit files in the user manager's folder (`$XDG_CONFIG_HOME/systemd/user`). Naming,
quoting and rendering are pure and doctested; the few functions at the bottom run
`systemctl` and touch files, and never raise over what systemd answers.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from reconciler.drivers import tmux
from reconciler.drivers.files import write_atomic
from reconciler.drivers.systemd import systemctl_user
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import SocketKey
from reconciler.spec.models import SOCKET_PATTERN

#: The first line of every unit file the fleet writes: only such files are ever removed.
HEADER = "# Written by fleet reconcile"
#: Server units are `fleet-tmux@SOCKET.service`: the `@` keeps them apart from agent units,
#: whose tenant and agent names never contain one.
SERVER_PREFIX = "fleet-tmux@"
#: How long a unit may take to start: the server's socket wait, or one tmux chain.
START_TIMEOUT_S = 30
#: The server's ExecStartPost polls `list-sessions` this often, this many times (5 s).
WAIT_TRIES, WAIT_STEP_S = 100, "0.05"
#: systemctl verbs that start units wait for their jobs; longer than START_TIMEOUT_S.
JOB_TIMEOUT_S = 90.0

_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\-]+(?:@[A-Za-z0-9:_.\\-]+)?\.service")
#: systemd's UNIT_NAME_MAX is 256 bytes including the terminating NUL.
_UNIT_NAME_MAX = 255
#: The server's ExecStartPost: wait until the socket answers, so units ordered After= it
#: (and apply's own new-session) find a server instead of starting a second one.
_WAIT_SCRIPT = (
    f'n=0; while [ "$n" -lt {WAIT_TRIES} ]; do "$0" "$@" list-sessions >/dev/null 2>&1 && exit 0; '
    f'n=$((n+1)); sleep {WAIT_STEP_S}; done; echo "tmux $* did not answer" >&2; exit 1'
)


# --- pure: quoting --------------------------------------------------------------------


def _quoted(value: str, *, dollar: bool) -> str:
    """`value` in double quotes with C escapes and `%%`; `$$` too where `dollar` is set
    (Exec lines, where a newline is carried as `\\x0a` too; Environment= takes none)."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\0" or (ch == "\n" and not dollar):
            raise ValueError(f"{value!r}: a unit file cannot carry a newline or NUL in a value")
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and dollar:
            out.append("$$")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")  # one byte, and an ASCII byte is that character
        elif unicodedata.category(ch) in {"Cc", "Cs"}:
            if 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"{value!r}: a lone surrogate cannot be written as UTF-8")
            out.append(f"\\u{code:04x}")  # C1 controls as code points, never raw bytes
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def exec_quote(arg: str) -> str:
    r"""One ExecStart=/ExecStop= argument in unit syntax: systemd hands the program exactly `arg`.

    Always double-quoted with C escapes, so spaces, quotes and a lone `;` (otherwise a
    command separator) stay one literal argument; `%` (specifiers) becomes `%%` and `$`
    (environment expansion) `$$`. A newline is `\x0a` (a multi-line `sh -c` script); a
    NUL cannot be carried: ValueError.

    >>> print(exec_quote('say "hi"; $(rm -rf ~) 100% \\o/'))
    "say \"hi\"; $$(rm -rf ~) 100%% \\o/"
    >>> print(exec_quote(";"), exec_quote(""), exec_quote("tab\there"), exec_quote("é✓\x85"), exec_quote("a\nb"))
    ";" "" "tab\x09here" "é✓\u0085" "a\x0ab"
    >>> exec_quote("nul\0")
    Traceback (most recent call last):
    ValueError: 'nul\x00': a unit file cannot carry a newline or NUL in a value
    """
    return _quoted(arg, dollar=True)


def exec_line(argv: Sequence[str], *, ignore_failure: bool = False) -> str:
    """A whole ExecStart=/ExecStop= value; `ignore_failure` adds systemd's `-` prefix.

    The program must be an absolute path: systemd reads `-`, `@`, `+`, `!` and `:` at
    the start of the first word as prefixes even inside quotes, and `/` rules them out.

    >>> print(exec_line(["/usr/bin/tmux", "-L", "s", "kill-session", "-t", "=a"], ignore_failure=True))
    -"/usr/bin/tmux" "-L" "s" "kill-session" "-t" "=a"
    >>> exec_line(["tmux"])
    Traceback (most recent call last):
    ValueError: the program must be an absolute path, not 'tmux'
    """
    if not argv or not argv[0].startswith("/"):
        raise ValueError(f"the program must be an absolute path, not {argv[0] if argv else ''!r}")
    return ("-" if ignore_failure else "") + " ".join(exec_quote(arg) for arg in argv)


def environment_line(key: str, value: str) -> str:
    r"""An Environment= value setting `key` to exactly `value` (no `$` expansion there).

    >>> print(environment_line("TMUX_TMPDIR", "/run/my dir/$x%"))
    "TMUX_TMPDIR=/run/my dir/$x%%"
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ValueError(f"environment variable name {key!r} is invalid")
    return _quoted(f"{key}={value}", dollar=False)


def specifier_escape(text: str) -> str:
    """Text for a line where systemd expands `%` specifiers (Description=).

    >>> specifier_escape("100% sure")
    '100%% sure'
    """
    return text.replace("%", "%%")


# --- pure: names ----------------------------------------------------------------------


def is_valid_unit_name(name: str) -> bool:
    """systemd's rule for a service name (unit_name_is_valid): allowed characters, at
    most one `@` with a non-empty instance, at most 255 bytes.

    >>> is_valid_unit_name("fleet-tmux@a.b-c_d.service"), is_valid_unit_name("a b.service")
    (True, False)
    >>> is_valid_unit_name("x@.service"), is_valid_unit_name("a" * 248 + ".service")
    (False, False)
    """
    return len(name.encode()) <= _UNIT_NAME_MAX and _UNIT_NAME.fullmatch(name) is not None


def server_unit_name(key: SocketKey) -> str:
    """The unit that owns `key`'s tmux server: `fleet-tmux@SOCKET.service`.

    A safe mapping, not systemd-escape: every character SOCKET_PATTERN allows is already
    valid in a unit name, and escaping `-` as `\\x2d` would push a 64-character name past
    systemd's 255-byte limit. Distinct sockets give distinct names; tmux's default socket
    is `-L default`, so it shares that unit.

    >>> server_unit_name(SocketKey(None, "mosaic-fleet")), server_unit_name(SocketKey(None, None))
    ('fleet-tmux@mosaic-fleet.service', 'fleet-tmux@default.service')
    >>> server_unit_name(SocketKey(None, "bad/name"))
    Traceback (most recent call last):
    ValueError: socket name 'bad/name' does not match ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$
    """
    if key.user is not None:
        raise ValueError(f"socket {key.label()}: another user's manager is not driven yet")
    name = key.name or "default"
    if not re.fullmatch(SOCKET_PATTERN, name):
        raise ValueError(f"socket name {name!r} does not match {SOCKET_PATTERN}")
    unit = f"{SERVER_PREFIX}{name}.service"
    if not is_valid_unit_name(unit):  # pragma: no cover - SOCKET_PATTERN guarantees it
        raise ValueError(f"{unit!r} is not a valid unit name")
    return unit


def agent_unit_name(tenant: str, agent: str) -> str:
    """`fleet-<tenant>.<agent>.service`, the name `fleet ps` joins on.

    >>> agent_unit_name("jarvis", "orchestrator")
    'fleet-jarvis.orchestrator.service'
    """
    unit = f"fleet-{tenant}.{agent}.service"
    if "@" in unit or not is_valid_unit_name(unit):
        raise ValueError(f"tenant {tenant!r} and agent {agent!r} do not make a unit name")
    return unit


def user_unit_dir(env: Mapping[str, str], home: str) -> Path:
    """Where the user manager reads our unit files: `$XDG_CONFIG_HOME/systemd/user`.

    A relative XDG_CONFIG_HOME is ignored, as the XDG base directory spec says.

    >>> str(user_unit_dir({"XDG_CONFIG_HOME": "/c"}, "/root")), str(user_unit_dir({"XDG_CONFIG_HOME": "rel"}, "/root"))
    ('/c/systemd/user', '/root/.config/systemd/user')
    """
    config = env.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config.startswith("/") else Path(home) / ".config"
    return base / "systemd" / "user"


def is_ours(text: str | None) -> bool:
    """True for a unit file the fleet wrote (its header line), so only those are removed.

    >>> is_ours(HEADER + ": agent a/b."), is_ours("[Unit]\\n"), is_ours(None)
    (True, False, False)
    """
    return text is not None and text.startswith(HEADER)


# --- pure: rendering ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Host:
    """Facts of this machine a unit bakes in: tmux's path, `$TMUX_TMPDIR`, our home."""

    tmux_path: str
    tmux_tmpdir: str | None
    home: str


def render_template(name: str, **values: object) -> str:
    """The package's template `name` (reconciler/templates/) filled with `values`.

    Every value must already be quoted for its place in a unit file (the helpers above):
    nothing is escaped here, and a value the template does not name is an error.
    """
    return _templates().get_template(name).render(**values)


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler", "templates"),
        autoescape=False,  # unit files, not HTML; every value is quoted in Python first
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _tmux_argv(key: SocketKey, host: Host) -> list[str]:
    """`tmux -u -L NAME`, as run_tmux calls it (our own user: another user's is refused)."""
    server_unit_name(key)  # validates the socket and the user
    return [host.tmux_path, "-u", *tmux.socket_args(key, current_user="")]


def _common(key: SocketKey, host: Host) -> dict[str, object]:
    tmpdir = environment_line("TMUX_TMPDIR", host.tmux_tmpdir) if host.tmux_tmpdir else ""
    return {
        "socket": specifier_escape(key.name or "default"),
        "server_unit": server_unit_name(key),
        "tmux_tmpdir_env": tmpdir,
        "timeout_s": START_TIMEOUT_S,
    }


def server_unit_text(key: SocketKey, host: Host) -> str:
    """The server unit: `tmux -L SOCKET -D` in the foreground, ready once the socket answers."""
    socket_flags = tmux.socket_args(key, current_user="")
    start = [host.tmux_path, *socket_flags, "-D"]
    wait = ["/bin/sh", "-c", _WAIT_SCRIPT, host.tmux_path, *socket_flags]
    return render_template(
        "fleet-tmux-server.service.j2",
        **_common(key, host), exec_start=exec_line(start), exec_wait=exec_line(wait)
    )


def agent_unit_text(launch: LaunchSpec, host: Host) -> str:
    """A core agent's unit: ExecStart runs exactly the direct path's create-and-mark chain.

    `launch` must already be prepared (absolute program, usable workdir): the unit runs
    under the user manager, whose PATH may not be the reconciler's.
    """
    tmux_argv = _tmux_argv(launch.socket, host)
    chain = tmux.chain_args([tmux.Chain(launch.agent, tmux.spawn_args(launch, host.home))])
    stop = [*tmux_argv, "kill-session", "-t", f"={tmux.check_name(launch.agent)}"]
    return render_template(
        "fleet-agent.service.j2",
        **_common(launch.socket, host),
        tenant=specifier_escape(launch.tenant),
        agent=specifier_escape(launch.agent),
        spec_hash=specifier_escape(launch.spec_hash),
        exec_start=exec_line([*tmux_argv, *chain]),
        exec_stop=exec_line(stop, ignore_failure=True),
    )


# --- effectful: files and systemctl ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ran:
    """What one systemctl call did: whether it succeeded, and what it said (one line)."""

    ok: bool
    said: str = ""


def systemctl(*args: str, timeout: float = JOB_TIMEOUT_S) -> Ran:
    """`systemctl --user ARGS`; never raises (a missing binary or a timeout is a failed Ran)."""
    try:
        done = systemctl_user(*args, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return Ran(False, f"systemctl --user {args[0] if args else ''}: {exc}")
    said = " ".join(line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip())
    return Ran(done.returncode == 0, said)


def read_unit(directory: Path, name: str) -> str | None:
    """A unit file's text, or None when it is absent or unreadable."""
    try:
        return (directory / name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def write_unit(directory: Path, name: str, text: str) -> bool:
    """Write a unit file only if its bytes change (atomically); True when it changed."""
    if read_unit(directory, name) == text:
        return False
    write_atomic(directory / name, text, mode=0o644)
    return True


def remove_unit(directory: Path, name: str) -> bool:
    """Delete a unit file the fleet wrote; a foreign or missing file is left. True if removed."""
    if not is_ours(read_unit(directory, name)):
        return False
    (directory / name).unlink(missing_ok=True)
    return True


def need_reload(names: Sequence[str]) -> bool:
    """True when the manager holds an older copy of any of `names` than the disk has
    (a write whose daemon-reload never ran, e.g. after a crash): one `show` call."""
    if not names:
        return False
    done = systemctl("show", "--property=NeedDaemonReload", "--value", *names, timeout=10.0)
    return not done.ok or "yes" in done.said.split()


def enable_linger(user: str) -> str:
    """`loginctl enable-linger USER` so the user manager (and boot-enabled units) starts
    at boot without a login. Returns "" on success, else a note; never raises."""
    try:
        done = subprocess.run(
            ["loginctl", "enable-linger", user],
            capture_output=True,
            text=True,
            timeout=10.0,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"loginctl enable-linger {user}: {exc}"
    if done.returncode == 0:
        return ""
    said = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[0]
    return f"loginctl enable-linger {user}: {said}"
