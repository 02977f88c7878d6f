"""Run the web view on uvicorn over an already-bound socket (cli/serve.py binds it)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import uvicorn

from reconciler.engine.fleetview import capture_screen, observe_view, sockets_of
from reconciler.engine.run import RunRequest
from reconciler.web.app import make_app
from reconciler.web.observer import Observation


def observer_for(request: RunRequest) -> Observation:
    """One read-only engine run as the web view's observation; as root, a note for each
    tenant that runs as its own user, whose agents this view does not show."""
    result, view = observe_view(request)
    away = tuple(f"tenant {', '.join(run.tenants)} runs as user {run.user}: not in this view (a server run by "
                 f"root shows the tenants without user:); run fleet serve as {run.user} to see it"
                 for run in result.users)
    fleet = result.tick.repo.fleet
    return Observation(replace(view, notes=(*view.notes, *away)) if away else view, sockets_of(result),
                       fleet.register if fleet is not None else None)


def server(request: RunRequest, *, token: str | None, interval: float, screen_interval: float = 1.0,
           log_level: str = "warning") -> uvicorn.Server:
    app, _web = make_app(lambda: observer_for(request), capture_screen, token=token, interval=interval,
                         screen_interval=screen_interval)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", timeout_graceful_shutdown=1)
    return uvicorn.Server(config)


def serve(request: RunRequest, listener: socket.socket, *, token: str | None, interval: float) -> None:
    asyncio.run(server(request, token=token, interval=interval).serve(sockets=[listener]))
