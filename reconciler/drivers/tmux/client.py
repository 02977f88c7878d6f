"""Running tmux: the one place a tmux client starts, for observe, apply and the agent verbs.

Each call is an argument list (argv.py builds them, parse.py reads the answers), never a
shell line. Observe reads a server with one invocation; apply creates or kills many
sessions per invocation; the agent verbs (engine/agent_verbs.py) run a client on the
person's terminal or feed one a message on its standard input.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from reconciler.drivers import stuck_server, users
from reconciler.drivers.tmux.argv import (
    Chain,
    chain_args,
    check_name,
    client_environment,
    fit_chains,
    socket_args,
    spawn_args,
)
from reconciler.drivers.tmux.parse import LIST_FORMAT, not_running, parse_snapshot
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import ObservedSession, SocketKey, SocketSnapshot

#: How long one tmux invocation may take before we give up on that server.
TIMEOUT_S = 30.0
#: The most tmux servers `observe_sockets` lists at the same time.
MAX_LISTINGS = 16


class TmuxError(RuntimeError):
    """tmux refused an apply-step command; the message says which sessions and why."""


#: What one tmux client finished with: exit status, standard output and error.
Completed = subprocess.CompletedProcess[str]
#: tmux did not answer within TIMEOUT_S (a hung server): one of TMUX_FAILURES.
TmuxTimeout = subprocess.TimeoutExpired
#: What a tmux call can raise besides TmuxError: a bad value, no tmux binary or user, a hung server.
TMUX_FAILURES: tuple[type[Exception], ...] = (TmuxError, ValueError, OSError, LookupError, subprocess.SubprocessError)


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


def run_tmux(key: SocketKey, args: Sequence[str], sources: Iterable[str] = ()) -> Completed:
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


def client_argv(key: SocketKey) -> list[str]:
    """`tmux -u` plus the global flags that select `key`'s server, for the clients that
    run with the caller's environment: the same lookup as `run_tmux`, whose client has
    no terminal and no input."""
    return ["tmux", "-u", *resolve(key)]


def run_interactive(key: SocketKey, args: Sequence[str]) -> int:
    """Run a tmux client on this terminal (stdin, stdout, stderr and the environment
    inherited: `attach-session` needs them); its exit status."""
    return subprocess.run([*client_argv(key), *args], check=False).returncode


def run_with_input(key: SocketKey, args: Sequence[str], text: str) -> Completed:
    """Run one tmux client that reads `text` on its standard input (`load-buffer -`), so
    the text never sits in a process's argv for `ps` to show; never checks."""
    return subprocess.run(
        [*client_argv(key), *args], input=text, capture_output=True, text=True,
        encoding="utf-8", timeout=TIMEOUT_S, check=False,
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
    seen: dict[str, ObservedSession] = {}
    snapshot = parse_snapshot(key, result.returncode, result.stdout, result.stderr, _LINES.get(key), seen)
    if len(_LINES) >= 256 and key not in _LINES:
        _LINES.clear()
    _LINES[key] = seen
    return snapshot


#: Each server's last listing, line by line, as parsed: a line listed again (a pane that
#: did nothing since) is that same session, not parsed again.
_LINES: dict[SocketKey, dict[str, ObservedSession]] = {}


def observe_sockets(keys: Iterable[SocketKey]) -> dict[SocketKey, SocketSnapshot]:
    """`observe_socket` of each distinct key, in the caller's order: still one tmux
    invocation per server, but the servers are asked at the same time (threads), so a
    host of ten tenant servers waits for the slowest listing instead of the sum."""
    distinct = list(dict.fromkeys(keys))
    if len(distinct) <= 1:
        return {key: observe_socket(key) for key in distinct}
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415  (only with several servers)

    with ThreadPoolExecutor(max_workers=min(MAX_LISTINGS, len(distinct)), thread_name_prefix="fleet-observe") as pool:
        return dict(zip(distinct, pool.map(observe_socket, distinct), strict=True))


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


def _run_chains(key: SocketKey, chains: Sequence[Chain], tolerate: Callable[[str], bool],
               sources: Iterable[str] = ()) -> list[str]:
    """Run chains in as few chained invocations as tmux's size limit allows.

    After a failure, goes on past the failed chain. Returns one message per failed chain,
    leaving out those whose error `tolerate` accepts; stops if the server is gone.
    """
    failures: list[str] = []
    pending = list(chains)
    waited = False
    while pending:
        batch = pending[: fit_chains(pending)]
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
            failures, pending = [], list(chains)
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
        chains = [Chain(launch.agent, spawn_args(launch, home)) for launch in group]
        sources = sorted({name for launch in group for name in launch.env_sources()})
        for failure in _run_chains(key, chains, tolerate=lambda _message: False, sources=sources):
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
    chains = [Chain(check_name(name), (("kill-session", "-t", f"={name}"),)) for name in names]
    if not chains:
        return
    failures = _run_chains(key, chains, tolerate=_gone)
    if failures:
        raise TmuxError(f"could not stop on {key.label()}: " + "; ".join(failures))



def capture_pane(key: SocketKey, name: str, pane: str = "") -> str | None:
    """The visible text of the agent's pane (`capture-pane -p`): `pane`, its `%N` as
    observed (`@fleet-pane`), else session `name`'s active pane; None when tmux cannot
    give it. Only for agents already unhealthy (engine/observe.py): one call per such
    agent, none in a healthy fleet."""
    try:
        done = run_tmux(key, ["capture-pane", "-p", "-t", pane or f"={check_name(name)}:"])
    except TMUX_FAILURES:
        return None
    return done.stdout if done.returncode == 0 else None
