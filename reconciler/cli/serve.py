"""`fleet serve REPO`: the live, read-only web view (reconciler/web, docs/surfaces.md).

This module only reads options and starts uvicorn; the web package owns the routes and
the observer loop, and the engine's read-only run (engine/fleetview.py) observes. It
binds 127.0.0.1 by default; any other address needs --token-file, and --unix-socket
serves on a socket file that only this user can open. Starlette and uvicorn load only
when this command runs, so other commands start no slower.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import HostOpt, RepoArg, StateDirOpt, TenantOpt, command, group, note
from reconciler.engine.run import request_for
from reconciler.errors import UserError

app = group()


@command(app, "serve")
def serve_command(
    repo: RepoArg,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    bind: Annotated[str, typer.Option("--bind", metavar="ADDRESS", help="Listen on this address. Anything but "
                                      "loopback needs --token-file.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port (0: any free port).")] = 8470,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="FILE", help="A 0600 file holding the token a browser must present once "
        "(?token=...) or send as Authorization: Bearer.", show_default=False)] = None,
    unix_socket: Annotated[Path | None, typer.Option(
        "--unix-socket", metavar="PATH", help="Serve on this Unix socket (mode 0600) instead of TCP.",
        show_default=False)] = None,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS",
                                            help="How often the fleet is observed for every open page.")] = 2.0,
) -> None:
    """A live, read-only web view: the fleet table, each agent's detail and screen, lanes and tasks, budgets and pace.

    One observer loop feeds every open page; no route changes the fleet (only GET and HEAD).
    With fleet.yaml `register:`, /hosts shows every host from the register, live.

    Example: fleet serve examples/fleets/minimal --host demo --port 8470
    """
    from reconciler.web.auth import check_bind, read_token  # noqa: PLC0415

    check_bind(bind, token_file, unix_socket)
    if interval <= 0:
        raise UserError(f"--interval must be more than 0 seconds, not {interval:g}")
    token = read_token(token_file) if token_file is not None else None
    request = request_for(repo, host, tenant, state_dir, user_verb=("ps",))
    from reconciler.web.server import serve  # noqa: PLC0415

    listener = _listen(bind, port, unix_socket)
    where = f"unix:{unix_socket}" if unix_socket else "http://{}:{}/".format(*listener.getsockname()[:2])
    note(f"fleet serve: {where} (read-only; host {request.host}; Ctrl-C stops)")
    serve(request, listener, token=token, interval=interval)


def _listen(bind: str, port: int, unix_socket: Path | None) -> socket.socket:
    """The listening socket, made here so a Unix socket is 0600 before anyone can connect."""
    try:
        if unix_socket is not None:
            if unix_socket.is_socket():
                unix_socket.unlink()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(str(unix_socket))
            finally:
                os.umask(old)
        else:
            family = socket.AF_INET6 if ":" in bind else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind, port))
    except OSError as exc:
        where = unix_socket or f"{bind}:{port}"
        raise UserError(f"cannot listen on {where}: {exc.strerror or exc}; pick another --port or address") from None
    sock.listen(128)
    return sock
