"""Building tmux's argument lists, pure: socket flags, quoting, and the apply step's chains.

Nothing here runs tmux (client.py does); every value may be hostile, so each function
says how it keeps a value one literal argument (see the package's docstring). Doctested.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.model.launch import LaunchSpec
from reconciler.model.layout import STATE_DIR_ENV
from reconciler.model.observed import FLEET_OPTIONS, OPT_PANE, SocketKey

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


#: One tmux command as its argument list (no `;` separators).
Command = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Chain:
    """One session's share of a chained invocation: its name and the tmux commands run
    for it, followed by a progress line (`chain_args`)."""

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
    before tmux reads anything else. The last mark, `@fleet-pane`, is the id of the pane
    just created (`-F` expands `#{pane_id}` there, the only value expanded: the session
    has one pane at that point), so a person's split never stands in for the agent.

    >>> spawn_args(LaunchSpec("t", "a", "h", SocketKey(None, "s"), ("x",), (), None, "m", "h1"), "/root")[-1]
    ('set-option', '-F', '-t', '=a:', '@fleet-pane', '#{pane_id}')
    """
    name = check_name(launch.agent)
    target = f"={name}:"
    # No workdir: the user's home, never the folder `fleet` happened to run in (for a
    # tenant user that is a private copy of the specs, gone once the run ends; the
    # adapters pre-trust `~` for such an agent, so its runtime must start there).
    workdir = expand_workdir(launch.workdir or "~", home)
    new = ["new-session", "-d", "-s", name, "-c", workdir.replace("#", "##")]
    for env_key, value in launch.env:
        if not _ENV_KEY.fullmatch(env_key):
            raise ValueError(f"{name}: environment variable name {env_key!r} is invalid")
        new += ["-e", f"{env_key}={value}"]
    new += ["--", *command_args(launch.argv)]
    values = (launch.tenant, launch.agent, launch.host, launch.spec_hash, launch.model,
              dict(launch.env).get(STATE_DIR_ENV, ""))
    return (
        tuple(new),
        ("set-option", "-w", "-t", target, "remain-on-exit", "on"),
        *(
            ("set-option", "-t", target, option, value)
            for option, value in zip(FLEET_OPTIONS[:-1], values, strict=True)
        ),
        ("set-option", "-F", "-t", target, OPT_PANE, "#{pane_id}"),
    )


def chain_args(chains: Sequence[Chain]) -> list[str]:
    """One tmux argument list running every chain, each followed by a progress line.

    Every argument is escaped with `tmux_arg`, and `;` is inserted only between commands.
    `display-message -p NAME` prints NAME once the chain's commands all succeeded, so
    stdout says how far a failed chain got.

    >>> chain_args([Chain("a", (("kill-session", "-t", "=a"),))])
    ['kill-session', '-t', '=a', ';', 'display-message', '-p', 'a']
    """
    args: list[str] = []
    for chain in chains:
        for command in (*chain.commands, ("display-message", "-p", chain.name)):
            if args:
                args.append(";")
            args += [tmux_arg(arg) for arg in command]
    return args


def fit_chains(chains: Sequence[Chain], budget: int = CHAIN_BYTES) -> int:
    """How many leading chains one invocation can carry (at least one, to report it).

    tmux packs a command's arguments, NUL-terminated, into one 16 KiB message and
    refuses longer ones ("command too long"), so a big batch is split.

    >>> chain = Chain("a", (("x" * 99,),))  # 125 bytes with its progress line and ";"
    >>> fit_chains([chain] * 500, budget=1000), fit_chains([chain], budget=10)
    (8, 1)
    """
    used = count = 0
    for chain in chains:
        used += sum(len(arg.encode()) + 1 for arg in chain_args([chain])) + 2
        if count and used > budget:
            break
        count += 1
    return count


def client_environment(environ: Mapping[str, str], sources: Iterable[str] = ()) -> dict[str, str]:
    """The environment a tmux client runs with: CLIENT_ENV of `environ`, and the
    variables `sources` names (what `env_from: [{env: VAR}]` reads in the pane).

    >>> sorted(client_environment({"PATH": "/bin", "AWS_SECRET": "x", "LC_ALL": "C", "GH": "t"}, ["GH"]))
    ['GH', 'LC_ALL', 'PATH']
    """
    wanted = set(sources)
    return {k: v for k, v in environ.items() if k in CLIENT_ENV or k in wanted or k.startswith(CLIENT_ENV_PREFIXES)}

