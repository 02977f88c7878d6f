"""The tasks page of `fleet serve` on a real fleet with a lane: real tmux, real stub
workers, the installed CLI reconciling (tests/e2e/test_lanes.py's shop), seen over plain
HTTP, by `fleet ps`, and in Debian's Chromium, where a task the worker reports done
changes state on the open page without a reload.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.model.layout import StateLayout
from reconciler.model.observed import SocketKey
from tests.e2e.test_lanes import DONE_T1, HOST, OPEN_T2, Shop
from tests.plugins.tmux_server import retry_until
from tests.web.serving import fleet_serve
from tests.web.test_browser import _shot
from tests.web.test_browser import page as page  # noqa: PLC0414  (the fixture)

pytestmark = pytest.mark.tmux

#: T3 waits on T2: it is queued once the worker reports T2 done.
WAITING_T3 = "      - id: T3\n        title: Announce pagination\n        lane: api\n        depends_on: [T2]\n"


@pytest.fixture
def shop(tmp_path: Path, tmux_socket: SocketKey) -> Shop:
    """The shop with T2 handed to its one worker (the brief typed and recorded)."""
    assert tmux_socket.name is not None
    shop = Shop(tmp_path, tmux_socket.name)
    shop.tasks(DONE_T1, OPEN_T2, WAITING_T3)
    assert "spawn    shop/coder0-0" in shop.reconcile().stdout
    assert retry_until(StateLayout(shop.state).heartbeat("shop", "coder0-0").exists, 10), "the worker heartbeats"
    runs: list[str] = []

    def briefed() -> bool:
        runs.append(shop.reconcile().stdout)
        return "> brief    shop/coder0-0: task T2" in runs[-1]

    assert retry_until(briefed, 20), runs[-1]
    return shop


@pytest.fixture
def served(shop: Shop) -> Iterator[tuple[Shop, str]]:
    with fleet_serve(shop.repo, shop.state, shop.env, "--interval", "0.3", host=HOST) as url:
        yield shop, url


def _states(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-task="shop/(T\d)" data-state="(\w+)"', page))


def _ps(shop: Shop) -> str:
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "ps", str(shop.repo), "--host", HOST, "--state-dir",
                           str(shop.state)], capture_output=True, text=True, timeout=60, env=shop.env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _report_done(shop: Shop, task: str, note: str) -> None:
    shop.report("coder0-0", "done", task, "--note", note)


def test_the_tasks_page_shows_the_lane_and_its_tasks(served: tuple[Shop, str]) -> None:
    shop, url = served
    page = httpx.get(url + "/tasks", timeout=30)
    assert page.status_code == 200
    states = _states(page.text)
    assert states["T1"] == "done" and states["T3"] == "waiting" and states["T2"] in {"assigned", "working"}, states
    assert "set done in tasks.yaml" in page.text and "waits on T2" in page.text
    assert '<a href="/agents/shop/coder0-0">coder0-0</a>' in page.text

    doc = httpx.get(url + "/api/fleet", timeout=30).json()
    [lane] = doc["lanes"]
    assert (lane["lane"], lane["running"], lane["desired"], lane["queued"], lane["workers"]) == (
        "api", 1, 1, 0, ["coder0-0"])
    assert lane["summary"] in _ps(shop).splitlines(), "fleet ps prints the same lane line"
    assert doc["agents"]["shop/coder0-0"]["task"]["task"] == "T2"
    agent = httpx.get(url + "/agents/shop/coder0-0", timeout=30).text
    assert 'data-task="shop/T2"' in agent and "Document pagination" in agent

    only = httpx.get(url + "/tasks", params={"state": "done"}, timeout=30).text
    assert set(_states(only)) == {"T1"}
    assert set(_states(httpx.get(url + "/tasks", params={"lane": "api", "tenant": "shop"}, timeout=30).text)) == {
        "T1", "T2", "T3"}


@pytest.mark.browser
def test_a_task_reported_done_changes_state_on_the_open_page(served: tuple[Shop, str], page: Any,
                                                              tmp_path: Path) -> None:
    shop, url = served
    page.goto(url + "/tasks")
    page.wait_for_selector("#live.on")
    assert page.get_attribute('tr[data-task="shop/T2"]', "data-state") in {"assigned", "working"}
    assert page.get_attribute('tr[data-task="shop/T3"]', "data-state") == "waiting"
    _shot(page, tmp_path, "web-tasks")
    page.evaluate("window.__same_page = true")

    _report_done(shop, "T2", "documented in README")
    page.wait_for_function("document.querySelector('tr[data-task=\"shop/T2\"]').dataset.state === 'done'")
    assert "documented in README" in page.inner_text('tr[data-task="shop/T2"]')
    # T3 no longer waits on T2: the read-only view shows it queued (no reconcile has run).
    page.wait_for_function("document.querySelector('tr[data-task=\"shop/T3\"]').dataset.state !== 'waiting'")
    assert page.evaluate("window.__same_page") is True
