"""The tmux driver: the only code that talks to tmux, for the observe and apply steps.

Observe reads a whole server with one `tmux list-panes -a -F LIST_FORMAT`, whatever the
number of sessions; apply creates and marks many sessions, or kills many, with one chained
tmux invocation per socket (split only where tmux's 16 KiB command limit forces it, about
every 30 to 60 agents). It persists nothing itself: the fleet's ownership lives in
the sessions' `@fleet-*` user options. argv.py builds tmux's argument lists and parse.py
reads its answers (both pure, doctested); client.py is the one place a tmux client runs.
Callers use this package's names: `from reconciler.drivers import tmux; tmux.observe_socket(...)`.

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

from reconciler.drivers.tmux.argv import (
    CHAIN_BYTES,
    CLIENT_ENV,
    CLIENT_ENV_PREFIXES,
    Chain,
    Command,
    chain_args,
    check_name,
    client_environment,
    command_args,
    expand_workdir,
    fit_chains,
    socket_args,
    spawn_args,
    tmux_arg,
)
from reconciler.drivers.tmux.client import (
    TIMEOUT_S,
    TMUX_FAILURES,
    Completed,
    TmuxError,
    TmuxTimeout,
    capture_pane,
    client_argv,
    end_stuck,
    kill_sessions,
    observe_socket,
    observe_sockets,
    resolve,
    run_interactive,
    run_tmux,
    run_with_input,
    socket_path,
    spawn_sessions,
)
from reconciler.drivers.tmux.parse import (
    LIST_FORMAT,
    SEP,
    not_running,
    parse_list_panes,
    parse_pane_line,
    parse_snapshot,
)

__all__ = [
    "CHAIN_BYTES",
    "CLIENT_ENV",
    "CLIENT_ENV_PREFIXES",
    "LIST_FORMAT",
    "SEP",
    "TIMEOUT_S",
    "TMUX_FAILURES",
    "Chain",
    "Command",
    "Completed",
    "TmuxError",
    "TmuxTimeout",
    "capture_pane",
    "chain_args",
    "check_name",
    "client_argv",
    "client_environment",
    "command_args",
    "end_stuck",
    "expand_workdir",
    "fit_chains",
    "kill_sessions",
    "not_running",
    "observe_socket",
    "observe_sockets",
    "parse_list_panes",
    "parse_pane_line",
    "parse_snapshot",
    "resolve",
    "run_interactive",
    "run_tmux",
    "run_with_input",
    "socket_args",
    "socket_path",
    "spawn_args",
    "spawn_sessions",
    "tmux_arg",
]
