"""The web view's routes: pages from templates/, fragments pushed by server-sent events.

Pages: `/` the fleet table (filters tenant, host, health, drift as query parameters),
`/agents/{tenant}/{agent}` one agent's detail (with the task it holds) and live screen,
`/tasks` the lanes and each lane task's fleet view (filters tenant, lane, state),
`/budget` each account's pace with its chart; `/api/fleet` the whole view as JSON (core/fleetview.py's
`view_json`). With fleet.yaml's `register:`, `/hosts` every host's agents and accounts as the
register holds them (filters host, tenant, health; core/hostsview.py) and `/api/hosts` the same
as JSON, following another host's write as soon as it is notified (web/register_feed.py).
Each page has an event stream that sends a fragment whenever the observer publishes
(every fragment rendered once per observation, whoever watches). Nothing here writes:
auth.py's Guard answers 405 to every method but GET and HEAD.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from reconciler.core.budget_view import bar
from reconciler.core.fleetview import (
    LANE_HEADERS,
    TASK_HEADERS,
    AgentDetail,
    Filters,
    FleetView,
    TaskFilters,
    choices,
    lane_cells,
    task_cells,
    task_choices,
    view_json,
)
from reconciler.core.hostsview import HostFilters, board_choices, board_json
from reconciler.core.ps import HEADERS, NONE, human_age, table_cells
from reconciler.views.register import HEADERS as REGISTER_HEADERS
from reconciler.views.register import TASK_HEADERS as REGISTER_TASK_HEADERS
from reconciler.views.register import USAGE_HEADERS, cells, register_task_cells, usage_cells, when
from reconciler.web.auth import Guard
from reconciler.web.chart import pace_chart
from reconciler.web.observer import Capture, Observation, Observer, Published, ScreenHub
from reconciler.web.register_feed import RegisterFeed

HERE = Path(__file__).parent
#: A comment line keeps proxies and browsers from closing a quiet stream.
KEEPALIVE_S = 15.0
_NOT_SENT = object()


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(HEADERS=HEADERS, NONE=NONE, table_cells=table_cells, human_age=human_age, bar=bar,
                       pace_chart=pace_chart, LANE_HEADERS=LANE_HEADERS, TASK_HEADERS=TASK_HEADERS,
                       lane_cells=lane_cells, task_cells=task_cells, REGISTER_HEADERS=REGISTER_HEADERS,
                       USAGE_HEADERS=USAGE_HEADERS, register_cells=cells, usage_cells=usage_cells, when=when,
                       REGISTER_TASK_HEADERS=REGISTER_TASK_HEADERS, register_task_cells=register_task_cells)
    return env


def sse(event: str, data: Any) -> bytes:
    """One server-sent event whose data is a JSON document (one line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class WebView:
    """The routes over one observer; `make_app` wraps them in the Guard."""

    def __init__(self, observer: Observer, screens: ScreenHub) -> None:
        self.observer = observer
        self.screens = screens
        self.env = environment()
        self.events_sent = 0
        self.feed: RegisterFeed | None = None

    # --- rendering (once per observation, via Published.fragment) --------------------

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    def rows_html(self, published: Published, filters: Filters) -> str:
        view = published.observation.view if published.observation else None
        if view is None:
            return ""
        rendered: list[tuple[Any, str]] = published.fragment("rows", "", lambda: [
            (row, self.render("row.html.j2", row=row)) for row in view.rows])
        return "".join(html for row, html in rendered if filters.matches(row))

    def banner_html(self, published: Published) -> str:
        return str(published.fragment("banner", "", lambda: self.render("banner.html.j2", published=published)))

    def detail_html(self, published: Published, key: str) -> str:
        def render() -> str:
            view = published.observation.view if published.observation else None
            detail = view.agents.get(key) if view else None
            return self.render("detail.html.j2", detail=detail, key=key, published=published)

        return str(published.fragment("detail", key, render))

    def budget_html(self, published: Published) -> str:
        view = published.observation.view if published.observation else None
        return str(published.fragment("budget", "", lambda: self.render("accounts.html.j2", view=view)))

    def lanes_html(self, published: Published, filters: TaskFilters) -> str:
        def render() -> str:
            view = published.observation.view if published.observation else None
            return self.render("lanes.html.j2", view=view, filtered=filters != TaskFilters(),
                               lanes=[v for v in view.lanes if filters.matches_lane(v)] if view else [],
                               tasks=[t for t in view.tasks if filters.matches(t)] if view else [])

        return str(published.fragment("lanes", repr(filters), render))

    def board_html(self, published: Published, filters: HostFilters) -> str:
        return str(published.fragment("board", repr(filters), lambda: self.render(
            "board.html.j2", state=published.register, filters=filters, here=_host(published))))

    # --- pages -------------------------------------------------------------------------

    async def _current(self) -> Published:
        """The latest observation; the very first request waits for the first one."""
        _version, published = await self.observer.latest.newer(0)
        return published

    async def fleet_page(self, request: Request) -> Response:
        published = await self._current()
        filters = Filters.of(request.query_params)
        rows = published.observation.view.rows if published.observation else ()
        return HTMLResponse(self.render(
            "fleet.html.j2", title="Fleet", published=published, filters=filters, choices=choices(rows),
            rows=self.rows_html(published, filters), banner=self.banner_html(published),
            events="/events?" + str(request.query_params)))

    async def agent_page(self, request: Request) -> Response:
        published = await self._current()
        key = f"{request.path_params['tenant']}/{request.path_params['agent']}"
        view = published.observation.view if published.observation else None
        if view is None or key not in view.agents:
            return HTMLResponse(self.render("missing.html.j2", title=key, key=key), status_code=404)
        return HTMLResponse(self.render("agent.html.j2", title=key, key=key, published=published,
                                        detail=self.detail_html(published, key), events=f"/agents/{key}/events"))

    async def budget_page(self, request: Request) -> Response:
        published = await self._current()
        return HTMLResponse(self.render("budget.html.j2", title="Budgets", published=published,
                                        accounts=self.budget_html(published), events="/budget/events"))

    async def tasks_page(self, request: Request) -> Response:
        published = await self._current()
        filters = TaskFilters.of(request.query_params)
        view = published.observation.view if published.observation else None
        options = task_choices(view) if view else {"tenant": [], "lane": [], "state": []}
        return HTMLResponse(self.render(
            "tasks.html.j2", title="Tasks", published=published, filters=filters, choices=options,
            lanes=self.lanes_html(published, filters), events="/tasks/events?" + str(request.query_params)))

    async def hosts_page(self, request: Request) -> Response:
        published = await self._current()
        filters = HostFilters.of(request.query_params)
        state = published.register
        return HTMLResponse(self.render(
            "hosts.html.j2", title="All hosts", published=published, filters=filters,
            choices=board_choices(state.board if state else None), board=self.board_html(published, filters),
            events="/hosts/events?" + str(request.query_params)), status_code=200 if state else 404)

    async def api_hosts(self, request: Request) -> Response:
        published = await self._current()
        state = published.register
        if state is None:
            return JSONResponse({"error": "no register: fleet.yaml has no `register:` (docs/register.md)"},
                                status_code=404)
        doc = published.fragment("json-hosts", "", lambda: board_json(state.board) if state.board else {})
        return JSONResponse({**doc, "version": published.version, "error": state.error, "listening": state.listening,
                             "reason": state.reason})

    async def api_fleet(self, request: Request) -> Response:
        published = await self._current()
        if published.observation is None:
            return JSONResponse({"error": published.error}, status_code=503)
        doc = published.fragment("json", "", lambda: view_json(published.observation.view)
                                 if published.observation else {})
        return JSONResponse({**doc, "version": published.version, "error": published.error})

    # --- event streams -----------------------------------------------------------------

    def _stream(self, events: Callable[[], AsyncIterator[bytes]]) -> Response:
        async def counted() -> AsyncIterator[bytes]:
            async for chunk in events():
                self.events_sent += 1
                yield chunk

        return StreamingResponse(counted(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def _published(self) -> AsyncIterator[Published]:
        version = 0
        while True:
            try:
                version, published = await asyncio.wait_for(self.observer.latest.newer(version), KEEPALIVE_S)
            except TimeoutError:
                continue
            yield published

    def _fleet_event(self, published: Published, filters: Filters) -> bytes:
        return sse("fleet", {"version": published.version, "rows": self.rows_html(published, filters),
                             "banner": self.banner_html(published)})

    def _budget_event(self, published: Published) -> bytes:
        return sse("budget", {"version": published.version, "accounts": self.budget_html(published)})

    def _tasks_event(self, published: Published, filters: TaskFilters) -> bytes:
        return sse("tasks", {"version": published.version, "lanes": self.lanes_html(published, filters)})

    async def hosts_events(self, request: Request) -> Response:
        filters = HostFilters.of(request.query_params)

        async def events() -> AsyncIterator[bytes]:
            sent: object = _NOT_SENT
            async for published in self._published():
                if published.register is sent:
                    continue  # a new observation of this host only: the register's rows did not change
                sent = published.register
                yield published.fragment("sse-hosts", repr(filters), partial(self._hosts_event, published, filters))

        return self._stream(events)

    def _hosts_event(self, published: Published, filters: HostFilters) -> bytes:
        return sse("hosts", {"version": published.version, "board": self.board_html(published, filters)})

    async def tasks_events(self, request: Request) -> Response:
        filters = TaskFilters.of(request.query_params)

        async def events() -> AsyncIterator[bytes]:
            async for published in self._published():
                yield published.fragment("sse-tasks", repr(filters), partial(self._tasks_event, published, filters))

        return self._stream(events)

    async def fleet_events(self, request: Request) -> Response:
        filters = Filters.of(request.query_params)

        async def events() -> AsyncIterator[bytes]:
            async for published in self._published():
                # Encoded once per observation and filter: twenty viewers cost one rendering.
                yield published.fragment("sse-fleet", repr(filters), partial(self._fleet_event, published, filters))

        return self._stream(events)

    async def budget_events(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            async for published in self._published():
                yield published.fragment("sse-budget", "", partial(self._budget_event, published))

        return self._stream(events)

    async def agent_events(self, request: Request) -> Response:
        key = f"{request.path_params['tenant']}/{request.path_params['agent']}"

        async def events() -> AsyncIterator[bytes]:
            fleet_v, screen_v = 0, 0
            published = await self._current()
            async with contextlib.AsyncExitStack() as stack:
                screen = await self._watch(stack, published, key)
                while True:
                    waits: dict[asyncio.Task[Any], str] = {
                        asyncio.ensure_future(self.observer.latest.newer(fleet_v)): "fleet"}
                    if screen is not None:
                        waits[asyncio.ensure_future(screen.newer(screen_v))] = "screen"
                    done, pending = await asyncio.wait(waits, timeout=KEEPALIVE_S,
                                                       return_when=asyncio.FIRST_COMPLETED)
                    for task in pending:
                        task.cancel()
                    if not done:
                        yield b": keepalive\n\n"
                    for task in done:
                        version, value = task.result()
                        if waits[task] == "fleet":
                            fleet_v = version
                            yield sse("detail", {"version": version, "detail": self.detail_html(value, key)})
                        else:
                            screen_v = version
                            yield sse("screen", {"version": version, "lines": value})

        return self._stream(events)

    async def _watch(self, stack: contextlib.AsyncExitStack, published: Published, key: str) -> Any:
        """The agent's shared screen, if the fleet created its session (never a foreign one)."""
        observation = published.observation
        detail: AgentDetail | None = observation.view.agents.get(key) if observation else None
        if observation is None or detail is None or detail.row.tmux.value not in {"running", "dead"}:
            return None
        socket = observation.sockets.get(detail.row.socket)
        if socket is None:
            return None
        return await stack.enter_async_context(self.screens.watching(socket, detail.row.agent))

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.fleet_page), Route("/events", self.fleet_events),
            Route("/agents/{tenant}/{agent}", self.agent_page),
            Route("/agents/{tenant}/{agent}/events", self.agent_events),
            Route("/tasks", self.tasks_page), Route("/tasks/events", self.tasks_events),
            Route("/budget", self.budget_page), Route("/budget/events", self.budget_events),
            Route("/hosts", self.hosts_page), Route("/hosts/events", self.hosts_events),
            Route("/api/fleet", self.api_fleet), Route("/api/hosts", self.api_hosts),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]


def _host(published: Published) -> str:
    return published.observation.view.host if published.observation else ""


def make_app(observe: Callable[[], Observation], capture: Capture, *, token: str | None = None,
             interval: float = 2.0, screen_interval: float = 1.0, register_fallback: float = 60.0,
             register_retry: float = 5.0) -> tuple[Guard, WebView]:
    """The guarded ASGI app and its WebView; the observer loop (and, with a register, the
    register feed) runs for the app's lifetime."""
    observer = Observer(observe, interval)
    feed = RegisterFeed(observer.publish_register, fallback=register_fallback, retry=register_retry)
    observer.after = lambda observation: feed.follow(observation.register)
    web = WebView(observer, ScreenHub(capture, screen_interval))
    web.feed = feed

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        loops = [asyncio.create_task(observer.run()), asyncio.create_task(feed.run())]
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop
            await feed.close()

    app = Starlette(routes=web.routes(), lifespan=lifespan)
    return Guard(app, token), web


Run = Callable[[], Awaitable[None]]
__all__ = ["FleetView", "WebView", "make_app", "sse"]
