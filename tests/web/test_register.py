"""`fleet serve` with a register: the All hosts page follows another host's write.

A real Postgres (tests/plugins/postgres.py) and a real uvicorn on 127.0.0.1; the
observation is the hand-made one of test_http.py with fleet.yaml's `register:` set, and
the observer's interval and the register's fallback are an hour, so an event after the
first can only come from a notification. Another host's write is a real batch through
drivers/register.py's `write_batch`, as that host's run makes it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.drivers import register as pg
from reconciler.register.rows import Batch, Row
from reconciler.spec.models import Register, UrlFrom
from reconciler.web.app import make_app
from tests.e2e.repos import example_repo
from tests.plugins.tmux_server import retry_until
from tests.register.support import URL_ENV, query
from tests.web.serving import iter_events, uvicorn_thread
from tests.web.test_http import Source, capture, observation

REGISTER = Register(url_from=UrlFrom(env=URL_ENV))
HOUR = 3600.0


def agent_row(tenant: str, name: str, health: str = "healthy") -> Row:
    return Row("agents", tenant, name, {
        "role": "coder", "alias": None, "lifecycle": "ephemeral", "desired_model": "stub-large",
        "running_model": "stub-large", "health": health, "tokens": 0, "conditions": []})


def write_as(url: str, host: str, seq: int, *rows: Row) -> None:
    """One batch of `host`'s run, committed (and notified) as that host's reconcile does."""
    with pg.connect(url) as conn:
        assert pg.write_batch(conn, Batch(seq, host, f"run-{host}-{seq}", datetime.now(UTC).isoformat(),
                                          tuple(sorted({r.tenant for r in rows})), upserts=rows))


@pytest.fixture
def register_url(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    with pg.connect(pg_url) as conn:
        pg.migrate(conn, pg.migrations())
    monkeypatch.setenv(URL_ENV, pg_url)
    return pg_url


def listeners(url: str) -> int:
    return len(query(url, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'fleet-serve' "
                          "AND datname = current_database()"))


def keys(board: str) -> list[str]:
    return re.findall(r'<tr data-key="([^"]+)"', board)


@pytest.fixture
def served(register_url: str) -> Iterator[tuple[str, Any, Source]]:
    source = Source(replace(observation(), register=REGISTER))
    app, web = make_app(source, capture, interval=HOUR, register_fallback=HOUR, register_retry=0.2)
    with uvicorn_thread(app) as url:
        yield url, web, source


def test_another_hosts_write_reaches_the_open_stream_without_a_new_observation(
        served: tuple[str, Any, Source], register_url: str) -> None:
    url, web, source = served
    write_as(register_url, "w1", 1, agent_row("demo", "coder0"))
    with httpx.Client(base_url=url, timeout=30) as client, client.stream("GET", "/hosts/events") as response:
        events = iter_events(response)
        name, first = next(events)
        assert name == "hosts"
        if "w1/demo/coder0" not in first["board"]:  # the first read may still be under way
            _, first = next(events)
        assert keys(first["board"]) == ["w1/demo/coder0"]
        assert retry_until(lambda: listeners(register_url) == 1, 30)
        reads = web.feed.reads

        write_as(register_url, "w2", 1, agent_row("demo", "coder1", "dead"))
        name, data = next(events)
        assert name == "hosts"
        assert keys(data["board"]) == ["w1/demo/coder0", "w2/demo/coder1"]
        assert 'data-key="w2/demo/coder1" data-health="dead"' in data["board"]
        assert "after register change (w2)" in data["board"]
    assert source.calls == 1, "the fleet was observed once: the event came from the register's notification"
    assert web.feed.reads == reads + 1, "one notification, one read"
    page = httpx.get(url + "/hosts", params={"host": "w2"}, timeout=30)
    assert page.status_code == 200 and '<a href="/hosts">All hosts</a>' in page.text
    assert keys(page.text) == ["w2/demo/coder1"]
    doc = httpx.get(url + "/api/hosts", timeout=30).json()
    assert [(h["host"], h["agents"]) for h in doc["hosts"]] == [("w1", 1), ("w2", 1)]
    assert doc["error"] == "" and doc["listening"] is True
    assert "all hosts: 2 host(s), 2 agent(s) in the register" in httpx.get(url + "/", timeout=30).text


def test_the_register_away_is_said_once_and_retried(register_url: str, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    write_as(register_url, "w1", 1, agent_row("demo", "coder0"))
    monkeypatch.setenv(URL_ENV, f"postgresql:///fleet?host={tmp_path / 'nowhere'}")
    source = Source(replace(observation(), register=REGISTER))
    app, web = make_app(source, capture, interval=HOUR, register_fallback=HOUR, register_retry=0.1)
    with uvicorn_thread(app) as url:
        assert retry_until(lambda: web.feed.reads >= 5, 60), "retried"
        page = httpx.get(url + "/hosts", timeout=30).text
        assert page.count('id="register-error"') == 1 and "the register is away" in page
        assert "postgresql://" not in page and "?host=" not in page, "no connection string on the page"
        versions = web.observer.latest.version
        assert versions == 2, "one observation, then the register's failure said once (not at every retry)"
        assert httpx.get(url + "/", timeout=30).status_code == 200, "the rest of the view goes on"

        monkeypatch.setenv(URL_ENV, register_url)  # back: the next retry reads it
        assert retry_until(lambda: httpx.get(url + "/api/hosts", timeout=30).json().get("error") == "", 60)
        doc = httpx.get(url + "/api/hosts", timeout=30).json()
        assert [a["agent"] for a in doc["agents"]] == ["coder0"]
        assert 'id="register-error"' not in httpx.get(url + "/hosts", timeout=30).text


def test_a_register_removed_from_fleet_yaml_is_dropped(register_url: str) -> None:
    source = Source(replace(observation(), register=REGISTER), observation())
    app, web = make_app(source, capture, interval=0.05, register_fallback=HOUR)
    with uvicorn_thread(app) as url:
        assert retry_until(lambda: source.calls > 3 and web.observer.register is None, 30)
        assert retry_until(lambda: listeners(register_url) == 0, 30), "the LISTEN connection is closed"
        page = httpx.get(url + "/hosts", timeout=30)
        assert page.status_code == 404 and "No register" in page.text
        assert "All hosts" not in httpx.get(url + "/", timeout=30).text
        assert httpx.get(url + "/api/hosts", timeout=30).status_code == 404


def test_a_server_without_register_never_imports_psycopg(tmp_path: Path) -> None:
    """The real observer (an engine run on the minimal example) in a fresh interpreter,
    every page asked for: psycopg stays out of sys.modules."""
    root = example_repo(tmp_path, "minimal", f"fleet-web-{tmp_path.name[-8:]}")
    code = f"""
import sys, time
from pathlib import Path
from starlette.testclient import TestClient
from reconciler.engine.fleetview import capture_screen
from reconciler.engine.run import request_for
from reconciler.web.app import make_app
from reconciler.web.server import observer_for
request = request_for(Path({str(root)!r}), "demo", None, Path({str(tmp_path / "state")!r}), user_verb=("ps",))
app, web = make_app(lambda: observer_for(request), capture_screen, interval=0.05)
with TestClient(app) as client:
    codes = [client.get(p).status_code for p in ("/", "/hosts", "/api/hosts", "/api/fleet")]
    deadline = time.monotonic() + 60
    while web.observer.observations < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
print(*codes, web.observer.observations >= 3, "psycopg" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert done.stdout.split() == ["200", "404", "404", "200", "True", "False"], done.stdout + done.stderr


def test_another_hosts_lane_tasks_show_with_their_holders(served: tuple[str, Any, Source], register_url: str) -> None:
    """A lane task another host writes, and its assignment, reach the page and /api/hosts."""
    url, _, _ = served
    write_as(register_url, "w1", 1, agent_row("demo", "coder0-0"),
             Row("tasks", "demo", "T1", {"mission": "M1", "title": "Paginate <b>", "lane": "api", "state": "working",
                                         "note": ""}),
             Row("assignments", "demo", "T1", {"agent": "coder0-0", "lane": "api", "state": "working",
                                               "since": "2026-12-01T00:00:00+00:00"}),
             Row("tasks", "demo", "T2", {"mission": "M1", "title": "Document", "lane": "api", "state": "queued",
                                         "note": ""}))
    assert retry_until(lambda: len(httpx.get(url + "/api/hosts", timeout=30).json().get("tasks", [])) == 2, 30)
    doc = httpx.get(url + "/api/hosts", timeout=30).json()
    assert [(t["host"], t["task"], t["state"], t["agent"]) for t in doc["tasks"]] == [
        ("w1", "T1", "working", "coder0-0"), ("w1", "T2", "queued", None)]
    page = httpx.get(url + "/hosts", timeout=30).text
    assert re.findall(r'<tr data-task="([^"]+)" data-state="([^"]+)"', page) == [("w1/demo/T1", "working"),
                                                                                ("w1/demo/T2", "queued")]
    assert "Paginate &lt;b&gt;" in page and "<td>coder0-0</td>" in page
    assert 'data-task="' not in httpx.get(url + "/hosts", params={"tenant": "other"}, timeout=30).text
