"""`fleet top` on a real fleet of stub agents (a private tmux socket), screenshotted.

The app is the one `fleet top` runs (cli/top.py `top_app`: the engine's read-only run,
the real screen capture), driven by Textual's headless pilot in this process, with the
fleet's environment. Its SVG export is checked for the agents, their health and the
selected agent's live screen. UPDATE_SCREENSHOTS=1 also renders that SVG to
docs/surfaces-tui.png with Debian's Chromium through Playwright (as tests/web does for the
web view's screenshots); without the switch no browser starts, so this stays cheap.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from pathlib import Path

import pytest

from reconciler.cli.top import top_app
from tests.e2e.test_ps_and_agent_verbs import AGENTS, HOST, Fleet
from tests.e2e.test_ps_and_agent_verbs import fleet as fleet  # noqa: PLC0414  (the fixture)
from tests.e2e.test_ps_and_agent_verbs import running as running  # noqa: PLC0414

pytestmark = pytest.mark.tmux

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
SIZE = (130, 26)


def svg_lines(svg: str) -> list[str]:
    """The terminal lines the SVG draws: each text element put back at its cell (Textual
    writes one element per style run, spaces as &#160;, a cell 12.2 units wide)."""
    lines: dict[float, list[str]] = {}
    for x, y, text in re.findall(r'<text[^>]* x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg, flags=re.DOTALL):
        line, col = lines.setdefault(float(y), []), round(float(x) / 12.2)
        line.extend(" " * (col - len(line)))
        chars = html.unescape(text).replace("\xa0", " ")
        line[col:col + len(chars)] = chars
    return ["".join(lines[y]).rstrip() for y in sorted(lines)]


async def screenshot(fleet: Fleet) -> str:
    """`fleet top` until both agents show healthy and the selected one's screen is captured."""
    from textual.widgets import Static  # noqa: PLC0415

    top = top_app(fleet.repo, HOST, None, fleet.state_dir, 0.5)
    async with top.run_test(size=SIZE) as pilot:
        for _ in range(400):
            await pilot.pause(0.05)
            view = top.view
            if view is None or sorted(r.agent for r in view.rows if r.health == "healthy") != sorted(AGENTS):
                continue
            if top.selected is None:
                await pilot.press("down")
            if "fleet-stub-agent" in str(top.query_one("#screen", Static).content):
                await pilot.pause()
                return top.export_screenshot(title="fleet top")
        raise AssertionError(f"fleet top never showed both agents healthy with a screen: {top.view}")


def png(svg: str, target: Path) -> None:
    """Render the SVG in Debian's Chromium at its own size."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    width, height = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())  # type: ignore[union-attr]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": int(width) + 1, "height": int(height) + 1})
            page.set_content(f'<body style="margin:0;background:#fff">{svg}</body>')
            page.locator("svg").screenshot(path=str(target))
        finally:
            browser.close()


def test_fleet_top_on_a_real_fleet(running: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MOSAIC_AGENT_COMMAND", "FLEET_STATE_DIR", "TMUX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in running.env.items():
        monkeypatch.setenv(name, value)
    svg = asyncio.run(screenshot(running))
    (tmp_path / "surfaces-tui.svg").write_text(svg)
    lines = svg_lines(svg)
    text = "\n".join(lines)
    for agent in AGENTS:  # the table's row: tmux running, a pid, the stub's model, healthy, no drift
        assert any(re.match(rf" {agent}\s+demo\s+demo\s+running\s+tmux-only\s+\d+ .*\bhealthy\s+—$", line)
                   for line in lines), text
    assert "fleet top — 2 healthy" in text, text
    assert re.search(r"fleet-stub-agent\s+demo/\w+ on demo\s+pid \d+", text), "the selected agent's live screen"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        png(svg, DOCS / "surfaces-tui.png")
