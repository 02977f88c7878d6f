"""The web view's routes over plain HTTP against a real uvicorn on 127.0.0.1.

The observation is built by the real planner from hand-made snapshots
(tests/core/factories.py), so these tests need no tmux; the screen capture is a stand-in
that returns fixed lines, because here only the route is under test; tests/web/
test_browser.py shows a real agent's real screen.
"""

from __future__ import annotations

import html
import re
import socket
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app as fleet_app
from reconciler.core.fleetview import build_view
from reconciler.core.lanes import Assignment, LaneMemory, scale_lanes, with_workers
from reconciler.core.planner import PlanOptions, plan
from reconciler.errors import UserError
from reconciler.model.observed import SocketKey
from reconciler.model.task_report import TaskReport
from reconciler.spec.load import load_repo
from reconciler.web.app import make_app
from reconciler.web.auth import check_bind, read_token
from reconciler.web.observer import Observation
from tests.core.factories import EXAMPLES, NOW, desired, healthy, nothing_running, running
from tests.web.serving import read_events, uvicorn_thread

FLEET = desired("minimal", "demo")
SCREEN = ["fleet-stub-agent  demo/orchestrator on demo", "model stub-large  state idle"]
TOKEN = "s3cret-token-0123456789"


def observation(dead: bool = False) -> Observation:
    obs = healthy(FLEET)
    if dead:
        key = next(iter(FLEET.tenants.values())).socket
        agent = FLEET.tenants["demo"].on_host("demo")["enhancer"]
        obs = replace(obs, sockets={key: replace(obs.sockets[key], sessions={
            **obs.sockets[key].sessions, "enhancer": running(agent, dead=True)})})
    view = build_view(FLEET, obs, plan(FLEET, obs, NOW), NOW)
    return Observation(view, {k.label(): k for k in obs.sockets})


def lane_observation() -> Observation:
    """The lanes example (shop: lane api, max 2) planned by the real core: T1 held by
    coder0-0, T3 reported done by coder0-1, T5 queued, T2 waiting on T1, T4 cancelled."""
    repo = load_repo(EXAMPLES / "lanes")
    fleet = desired("lanes", "shop-1")
    obs = nothing_running(fleet)
    memory = {"shop": LaneMemory(assignments={"T1": Assignment("coder0-0", NOW - timedelta(minutes=3))})}
    reports = {"shop": [TaskReport("coder0-1", "T3", "done", "merged as PR 9", NOW - timedelta(minutes=1))]}
    lanes = scale_lanes(repo, fleet, obs, memory, reports, NOW)
    fleet = with_workers(fleet, lanes)
    planned = plan(fleet, obs, NOW, PlanOptions(lanes=lanes))
    planned = replace(planned, lanes=tuple(v for t in sorted(lanes.tenants) for v in lanes.tenants[t].lanes))
    view = build_view(fleet, obs, planned, NOW, repo=repo, lanes=lanes)
    return Observation(view, {k.label(): k for k in obs.sockets})


class Source:
    """Observations in order (the last one repeats), counting how often the loop asked."""

    def __init__(self, *observations: Observation) -> None:
        self.queue = list(observations)
        self.calls = 0

    def __call__(self) -> Observation:
        self.calls += 1
        return self.queue.pop(0) if len(self.queue) > 1 else self.queue[0]


def capture(_socket: SocketKey, _session: str) -> list[str] | None:
    return SCREEN


def serve(source: Source, *, token: str | None = None, interval: float = 3600.0):  # type: ignore[no-untyped-def]
    app, web = make_app(source, capture, token=token, interval=interval, screen_interval=0.05)
    return uvicorn_thread(app), web


def test_pages_show_the_view() -> None:
    server, _web = serve(Source(observation(dead=True)))
    with server as url:
        page = httpx.get(url + "/")
        assert page.status_code == 200
        assert 'data-key="demo/enhancer" data-health="dead"' in page.text
        assert 'data-key="demo/orchestrator" data-health="healthy"' in page.text
        assert "1 dead" in page.text and "1 healthy" in page.text
        filtered = httpx.get(url + "/", params={"health": "dead"}).text
        assert "demo/enhancer" in filtered and 'data-key="demo/orchestrator"' not in filtered
        agent = httpx.get(url + "/agents/demo/enhancer")
        assert agent.status_code == 200 and "<td>Healthy</td><td>False</td><td>dead</td>" in agent.text
        assert httpx.get(url + "/agents/demo/nobody").status_code == 404
        assert "No tenant in view has a budget.yaml" in httpx.get(url + "/budget").text
        doc = httpx.get(url + "/api/fleet").json()
        assert [r["health"] for r in doc["rows"]] == ["dead", "healthy"]
        assert doc["agents"]["demo/enhancer"]["conditions"][0]["reason"] == "dead"
        static = httpx.get(url + "/static/fleet.js")
        assert static.status_code == 200 and "EventSource" in static.text
        assert httpx.head(url + "/").status_code == 200


def test_the_tasks_page_shows_lanes_and_each_task_with_filters() -> None:
    server, _web = serve(Source(lane_observation()))
    with server as url:
        page = httpx.get(url + "/tasks")
        assert page.status_code == 200 and '<a href="/tasks">Tasks</a>' in page.text
        states = dict(re.findall(r'data-task="shop/(T\d)" data-state="(\w+)"', page.text))
        assert states == {"T1": "assigned", "T2": "waiting", "T3": "done", "T4": "cancelled", "T5": "queued"}
        lane = re.search(r'<tr data-lane="shop/api".*?</tr>', page.text, flags=re.DOTALL)
        assert lane is not None
        assert [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", lane.group(0))] == [
            "api", "shop", "shop-1", "0", "2", "2", "1", "coder0-0, coder0-1", "2 open tasks"]
        assert "merged as PR 9" in page.text and "Rate-limit the list endpoint" in page.text
        done = httpx.get(url + "/tasks", params={"state": "done"}).text
        assert re.findall(r'data-task="shop/(T\d)"', done) == ["T3"]
        assert "data-lane=\"shop/api\"" in done, "the lane stays: the state filter is on tasks"
        assert "No lane task matches" in httpx.get(url + "/tasks", params={"lane": "web"}).text
        assert "No lane on host shop-1 matches" in httpx.get(url + "/tasks", params={"tenant": "other"}).text
        agent = httpx.get(url + "/agents/shop/coder0-0").text
        assert 'data-task="shop/T1" data-state="assigned"' in agent and "Paginate the list endpoint" in agent
        assert '<dd id="task">none</dd>' in httpx.get(url + "/agents/shop/orchestrator").text
        doc = httpx.get(url + "/api/fleet").json()
        assert doc["lanes"][0]["summary"] == "lane shop/api: 0 running, 2 desired, 1 task queued (2 open tasks)"
        assert doc["agents"]["shop/coder0-0"]["task"]["task"] == "T1"
        assert not any(n.startswith("lane ") for n in doc["notes"]), "lane lines have their own key"
        assert "lane shop/api: 0 running" in httpx.get(url + "/").text, "and the fleet page's banner shows them"
        with httpx.Client(base_url=url, timeout=20) as client, \
                client.stream("GET", "/tasks/events", params={"state": "queued"}) as response:
            [(name, data)] = read_events(response, 1)
            assert name == "tasks" and re.findall(r'data-task="shop/(T\d)"', data["lanes"]) == ["T5"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_route_accepts_a_write(method: str) -> None:
    server, _web = serve(Source(observation()))
    with server as url:
        for path in ("/", "/api/fleet", "/agents/demo/enhancer", "/events", "/tasks", "/tasks/events",
                     "/static/fleet.js"):
            answer = httpx.request(method, url + path)
            assert answer.status_code == 405, path
            assert answer.headers["allow"] == "GET, HEAD"


def test_a_token_guards_every_route() -> None:
    server, _web = serve(Source(observation()), token=TOKEN)
    with server as url:
        assert httpx.get(url + "/").status_code == 401
        assert httpx.get(url + "/api/fleet", headers={"Authorization": "Bearer wrong-token-0123456"}).status_code == 401
        assert httpx.get(url + "/", params={"token": "wrong"}).status_code == 401
        assert httpx.get(url + "/static/fleet.css").status_code == 401
        assert httpx.get(url + "/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        with httpx.Client(base_url=url) as browser:
            first = browser.get("/", params={"token": TOKEN, "health": "healthy"})
            assert first.status_code == 303 and first.headers["location"] == "/?health=healthy"
            assert "HttpOnly" in first.headers["set-cookie"]
            assert browser.get("/").status_code == 200  # the cookie from now on
        assert httpx.post(url + "/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_events_push_each_observation_to_every_stream() -> None:
    source = Source(observation(), observation(dead=True))
    server, web = serve(source, interval=0.2)
    with server as url, httpx.Client(base_url=url, timeout=20) as client:
        streams = [client.stream("GET", "/events", params={"health": "dead"}) for _ in range(5)]
        responses = [s.__enter__() for s in streams]
        try:
            for response in responses:
                assert response.headers["content-type"].startswith("text/event-stream")
                events = read_events(response, 2)
                assert [name for name, _ in events] == ["fleet", "fleet"]
                assert events[1][1]["version"] > events[0][1]["version"]
                assert "demo/orchestrator" not in events[1][1]["rows"]  # the stream's own filter
        finally:
            for s in streams:
                s.__exit__(None, None, None)
    assert web.events_sent >= 10


def test_many_pages_one_observation() -> None:
    source = Source(observation())
    server, _web = serve(source)  # an hour between observations: only the first one happens
    with server as url:
        for _ in range(10):
            assert httpx.get(url + "/").status_code == 200
            assert httpx.get(url + "/api/fleet").status_code == 200
    assert source.calls == 1


def test_agent_events_send_the_detail_and_the_screen() -> None:
    server, _web = serve(Source(observation()))
    with server as url, httpx.Client(base_url=url, timeout=20) as client, \
            client.stream("GET", "/agents/demo/orchestrator/events") as response:
        events = dict(read_events(response, 2))
        assert events["screen"]["lines"] == SCREEN
        assert "Healthy" in events["detail"]["detail"]


def test_a_unix_socket_is_only_for_its_owner(tmp_path: Path) -> None:
    from reconciler.cli.serve import _listen  # noqa: PLC0415

    path = tmp_path / "fleet.sock"
    sock = _listen("127.0.0.1", 0, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    app, _web = make_app(Source(observation()), capture)
    with uvicorn_thread(app, sock), httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        assert client.get("http://fleet/api/fleet").json()["host"] == "demo"


# --- refusing to start --------------------------------------------------------------------


def test_non_loopback_without_a_token_refuses() -> None:
    check_bind("127.0.0.1", None, None)
    check_bind("0.0.0.0", Path("token"), None)
    with pytest.raises(UserError, match=r"refusing to serve on 0\.0\.0\.0"):
        check_bind("0.0.0.0", None, None)


def test_fleet_serve_refuses_with_one_error_line(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2] / "examples" / "fleets" / "minimal"
    runner = CliRunner()
    done = runner.invoke(fleet_app, ["serve", str(repo), "--bind", "0.0.0.0", "--host", "demo"])
    assert done.exit_code == 1
    assert "error: refusing to serve on 0.0.0.0" in done.output and "--token-file" in done.output
    loose = tmp_path / "token"
    loose.write_text(TOKEN)
    loose.chmod(0o644)
    done = runner.invoke(fleet_app, ["serve", str(repo), "--bind", "0.0.0.0", "--token-file", str(loose)])
    assert done.exit_code == 1 and "chmod 600" in done.output
    loose.chmod(0o600)
    assert read_token(loose) == TOKEN
    short = tmp_path / "short"
    short.write_text("abc")
    short.chmod(0o600)
    with pytest.raises(UserError, match="at least 16"):
        read_token(short)


def test_a_taken_port_is_a_user_error() -> None:
    from reconciler.cli.serve import _listen  # noqa: PLC0415

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(UserError, match=r"cannot listen on 127\.0\.0\.1"):
            _listen("127.0.0.1", taken.getsockname()[1], None)
    finally:
        taken.close()
