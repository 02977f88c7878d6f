"""The fleet's view from one read-only run: `observe_run` (engine/run.py), then
core/fleetview.py's `build_view` over its tick. Every surface that shows the fleet
(`fleet ps`, `fleet serve`) calls this, so they see the same rows and verdicts.
"""

from __future__ import annotations

from reconciler.core.fleetview import FleetView, build_view
from reconciler.drivers import tmux
from reconciler.engine.run import RunRequest, RunResult, observe_run
from reconciler.model.observed import SocketKey


def view_of(result: RunResult) -> FleetView:
    """The view of a run's tick (no new observation)."""
    tick = result.tick
    return build_view(tick.desired, tick.observed, tick.plan, tick.now, repo=result.repo, budget=tick.budget,
                      history=tick.history, problems=(*tick.problems, *result.warnings), lanes=tick.lanes)


def observe_view(request: RunRequest) -> tuple[RunResult, FleetView]:
    """One read-only run and its view."""
    result = observe_run(request)
    return result, view_of(result)


def capture_screen(socket: SocketKey, session: str) -> list[str] | None:
    """The visible text of the agent's own pane (`capture-pane -p`: text only, never
    keys): the session's `@fleet-pane`, else its active pane (a session started before
    the mark); None when tmux could not capture it (the session is gone)."""
    target = f"={tmux.check_name(session)}:"
    marked = tmux.run_tmux(socket, ["display-message", "-p", "-t", target, "#{@fleet-pane}"])
    pane = marked.stdout.strip() if marked.returncode == 0 else ""
    done = tmux.run_tmux(socket, ["capture-pane", "-p", "-t", pane if pane.startswith("%") else target])
    if done.returncode != 0:
        return None
    return done.stdout.rstrip("\n").split("\n")


def sockets_of(result: RunResult) -> dict[str, SocketKey]:
    """Each socket label of the run's rows, with the key to reach it (for a screen capture)."""
    tick = result.tick
    found = {tenant.socket.label(): tenant.socket for tenant in tick.desired.tenants.values()}
    found.update({key.label(): key for key in tick.observed.sockets})
    return found
