"""`fleet top` with Textual's headless pilot, and the three surfaces on one view.

The observation is the real planner's over hand-made snapshots (tests/web/test_http.py).
`Verbs` records which verb the TUI handed over to instead of running `fleet agent ...`:
what is under test is that keys reach the verbs only through them (attach only after
a yes); the verbs themselves are tested in tests/e2e/test_ps_and_agent_verbs.py.
"""

from __future__ import annotations

import asyncio
import html
import re

import httpx

from reconciler.core.fleetview import lane_cells, task_cells
from reconciler.core.ps import render_table, table_cells
from reconciler.tui.app import Confirm, FleetTop, Prompt, Verbs, detail_text
from reconciler.web.app import make_app
from tests.web.serving import uvicorn_thread
from tests.web.test_http import SCREEN, Source, capture, lane_observation, observation


class Calls:
    def __init__(self) -> None:
        self.made: list[tuple[str, ...]] = []

    def verbs(self) -> Verbs:
        return Verbs(watch=lambda key: self._made("watch", key), attach=lambda key: self._made("attach", key),
                     send=self._send)

    def _made(self, *call: str) -> int:
        self.made.append(call)
        return 0

    def _send(self, key: str, text: str) -> tuple[int, str]:
        return self._made("send", key, text), "verified"


def table_rows(app: FleetTop, table_id: str = "fleet") -> list[tuple[str, ...]]:
    from textual.widgets import DataTable  # noqa: PLC0415

    table = app.query_one(f"#{table_id}", DataTable)
    return [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]


def test_the_three_surfaces_show_the_same_rows() -> None:
    """CLI text table, web page and TUI table: the same cells from the same view."""
    observed = observation(dead=True)
    rows = observed.view.rows
    cli = [line.split("  ") for line in render_table(rows).splitlines()[1:]]
    cli_cells = [tuple(c.strip() for c in line if c.strip()) for line in cli]
    assert cli_cells == [table_cells(r) for r in rows]

    app, _web = make_app(Source(observed), capture)
    with uvicorn_thread(app) as url:
        page = httpx.get(url + "/").text
    web_cells = [tuple(html.unescape(re.sub(r"<[^>]+>", "", td)) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr))
                 for tr in re.findall(r"<tr data-key.*?</tr>", page, flags=re.DOTALL)]
    assert web_cells == cli_cells

    async def tui() -> list[tuple[str, ...]]:
        top = FleetTop(Source(observed), capture, Calls().verbs(), interval=3600)
        async with top.run_test() as pilot:
            await pilot.pause()
            await _settled(pilot, top)
            return table_rows(top)

    assert asyncio.run(tui()) == cli_cells


def _cells(page: str, attribute: str) -> list[tuple[str, ...]]:
    return [tuple(html.unescape(re.sub(r"<[^>]+>", "", td)) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr))
            for tr in re.findall(rf"<tr {attribute}=.*?</tr>", page, flags=re.DOTALL)]


def test_the_three_surfaces_show_the_same_lanes_and_tasks() -> None:
    """`fleet ps`'s lane lines, the web view's /tasks and `fleet top`'s tasks view: one view."""
    observed = lane_observation()
    view = observed.view
    assert view.lanes and view.tasks
    cli = render_table(view.rows, [*view.notes, *view.lane_lines()]).splitlines()
    assert [line for line in cli if line.startswith("lane ")] == [
        "lane shop/api: 0 running, 2 desired, 1 task queued (2 open tasks)"]
    lanes = [lane_cells(v) for v in view.lanes]
    tasks = [task_cells(t, view.taken_at) for t in view.tasks]

    app, _web = make_app(Source(observed), capture)
    with uvicorn_thread(app) as url:
        page = httpx.get(url + "/tasks").text
    assert _cells(page, "data-lane") == lanes
    assert _cells(page, "data-task") == tasks
    titles = [html.unescape(t) for t in re.findall(r'<tr data-lane="[^"]*" title="([^"]*)"', page)]
    assert titles == [line for line in cli if line.startswith("lane ")], "the web's lane line is ps's"

    async def tui() -> tuple[list[tuple[str, ...]], list[tuple[str, ...]], str]:
        top = FleetTop(Source(observed), capture, Calls().verbs(), interval=3600)
        async with top.run_test(size=(200, 50)) as pilot:
            await _settled(pilot, top)
            await pilot.press("t")
            await pilot.pause()
            from textual.widgets import ContentSwitcher  # noqa: PLC0415

            shown = str(top.query_one(ContentSwitcher).current)
            return table_rows(top, "lanes"), table_rows(top, "tasks"), shown

    tui_lanes, tui_tasks, shown = asyncio.run(tui())
    assert (tui_lanes, tui_tasks, shown) == (lanes, tasks, "tasks-view")
    assert "task: T1 assigned (lane api): Paginate the list endpoint" in detail_text(view.agents["shop/coder0-0"])
    assert ("T3", "shop", "api", "done", "coder0-1", "60s", "merged as PR 9", "Rate-limit the list endpoint") in tasks


async def _settled(pilot, top: FleetTop) -> None:  # type: ignore[no-untyped-def]
    for _ in range(100):
        if top.observation is not None:
            await pilot.pause()
            return
        await pilot.pause(0.05)
    raise AssertionError("no observation reached the TUI")


def test_selection_shows_detail_and_screen_and_attach_asks_first() -> None:
    calls = Calls()

    async def run() -> None:
        top = FleetTop(Source(observation(dead=True)), capture, calls.verbs(), interval=3600, screen_interval=0.05)
        async with top.run_test(size=(160, 50)) as pilot:
            await _settled(pilot, top)
            await pilot.press("down")  # enhancer -> orchestrator
            await pilot.pause(0.2)
            assert top.selected == "demo/orchestrator"
            assert "Healthy" in str(top.query_one("#detail").render())
            for _ in range(40):
                if SCREEN[0] in str(top.query_one("#screen").render()):
                    break
                await pilot.pause(0.05)
            assert SCREEN[0] in str(top.query_one("#screen").render())

            await pilot.press("a")
            await pilot.pause()
            assert isinstance(top.screen, Confirm)
            top.action_observe()  # the live refreshes go on under the modal, into the app's own screen
            await pilot.pause(0.3)
            assert isinstance(top.screen, Confirm)
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(top.screen, Confirm)
            assert calls.made == []  # no takeover without a yes

            await pilot.press("s")
            await pilot.pause()
            assert isinstance(top.screen, Prompt)
            await pilot.press("escape")  # nothing typed: nothing sent
            await pilot.pause()
            assert calls.made == []
            await pilot.press("s")
            await pilot.pause()
            for key in "hi":
                await pilot.press(key)
            await pilot.press("enter")
            for _ in range(40):
                if calls.made:
                    break
                await pilot.pause(0.05)
            assert calls.made == [("send", "demo/orchestrator", "hi")]

    asyncio.run(run())
