"""`fleet serve` on a real fleet of stub agents (a private tmux socket), seen by `fleet ps`,
by plain HTTP, and by Debian's Chromium driven headless through Playwright.

The fleet is tests/e2e's minimal example (two stub agents heartbeating every 0.2 s) with
a budget account whose usage is set by `fleet budget set-usage`; `fleet serve` runs as a
subprocess on a free loopback port, observing every 0.3 s. Screenshots are kept under the
test's tmp_path; UPDATE_SCREENSHOTS=1 also writes docs/surfaces-web.png. Without
/usr/bin/chromium the browser tests skip, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_ps_and_agent_verbs import AGENTS, Fleet, wait_healthy
from tests.e2e.test_ps_and_agent_verbs import fleet as fleet  # noqa: PLC0414  (the fixture)
from tests.e2e.test_ps_and_agent_verbs import running as running  # noqa: PLC0414
from tests.plugins.tmux_server import retry_until
from tests.web.serving import fleet_serve

pytestmark = pytest.mark.tmux

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: demo
accounts:
  - name: stub-max
    provider: anthropic
    runtime: stub
    regime: subscription
    window: 7d
    reset_confidence: provider
"""
#: Generous for a loaded two-core CI machine; every wait polls, so a fast run stays fast.
UPDATE_MS = 30_000


@pytest.fixture
def served(running: Fleet) -> Iterator[tuple[Fleet, str]]:
    (running.repo / "tenants" / "demo" / "budget.yaml").write_text(BUDGET)
    reset = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:00:00Z")
    argv = [sys.executable, "-m", "reconciler.cli", "budget", "set-usage", str(running.repo), "demo", "stub-max",
            "--used", "0.4", "--reset-at", reset, "--state-dir", str(running.state_dir)]
    done = subprocess.run(argv, env=running.env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with fleet_serve(running.repo, running.state_dir, running.env, "--interval", "0.3") as url:
        yield running, url


def _web_rows(url: str) -> dict[str, dict[str, Any]]:
    doc = httpx.get(url + "/api/fleet", timeout=30).json()
    return {f"{r['tenant']}/{r['agent']}": r for r in doc["rows"]}


STABLE = ("agent", "tenant", "host", "lifecycle", "socket", "tmux", "systemd", "pid", "model", "model_source",
          "desired_model", "health", "planned", "drift")


def test_cli_and_web_agree_on_the_same_fleet(served: tuple[Fleet, str]) -> None:
    """The same rows, both from the one view (only the ages differ between two observations)."""
    fleet, url = served
    cli = fleet.ps()
    web = _web_rows(url)
    assert sorted(cli) == sorted(web) == [f"demo/{a}" for a in AGENTS]
    for key, row in cli.items():
        assert {k: row[k] for k in STABLE} == {k: web[key][k] for k in STABLE}, key
    page = httpx.get(url + "/", timeout=30).text
    for key, row in cli.items():
        assert f'data-key="{key}" data-health="{row["health"]}"' in page


# --- in Chromium ------------------------------------------------------------------------------


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed: run ./dev setup (it installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(UPDATE_MS)
            yield page
        finally:
            browser.close()


def _shot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" and name != "web-unhealthy":
        page.screenshot(path=str(DOCS / f"surfaces-{name}.png"), full_page=True)


def _health_in_page(page: Any, key: str) -> str:
    return str(page.get_attribute(f'tr[data-key="{key}"]', "data-health"))


@pytest.mark.browser
def test_the_table_follows_the_fleet_live(served: tuple[Fleet, str], page: Any, tmp_path: Path) -> None:
    fleet, url = served
    page.goto(url + "/")
    cli = fleet.ps()
    assert page.locator("#rows tr").count() == len(cli) == len(AGENTS)
    for key, row in cli.items():
        assert _health_in_page(page, key) == row["health"] == "healthy"
        assert page.inner_text(f'tr[data-key="{key}"] td.health') == "healthy"
    page.wait_for_selector("#live.on")
    _shot(page, tmp_path, "web")

    # Kill the enhancer's process: the row turns unhealthy with no reload of the page.
    page.evaluate("window.__same_page = true")
    pid = int(fleet.pane("enhancer", "#{pane_pid}"))
    os.kill(pid, signal.SIGKILL)
    page.wait_for_function("document.querySelector('tr[data-key=\"demo/enhancer\"]').dataset.health !== 'healthy'")
    down = _health_in_page(page, "demo/enhancer")
    assert retry_until(lambda: fleet.ps()["demo/enhancer"]["health"] == down, 20, 0.2)  # what fleet ps says too
    _shot(page, tmp_path, "web-unhealthy")

    # The reconciler brings it back, and the row follows, still on the same page.
    done = fleet.reconcile()
    assert done.returncode == 0, done.stdout + done.stderr
    wait_healthy(fleet, "enhancer")
    page.wait_for_function("document.querySelector('tr[data-key=\"demo/enhancer\"]').dataset.health === 'healthy'")
    assert page.evaluate("window.__same_page") is True


@pytest.mark.browser
def test_the_agent_page_shows_its_screen(served: tuple[Fleet, str], page: Any, tmp_path: Path) -> None:
    fleet, url = served
    page.goto(url + "/")
    page.click('a[href="/agents/demo/orchestrator"]')
    page.wait_for_function("document.getElementById('screen').textContent.includes('demo/orchestrator on demo')")
    screen = page.inner_text("#screen")
    assert any("fleet-stub-agent" in line for line in fleet.screen("orchestrator"))
    assert "fleet-stub-agent  demo/orchestrator on demo" in screen
    assert page.inner_text("#health") == "healthy"
    first = page.inner_text("#screen")
    # The stub redraws its seq on every heartbeat: the capture follows (about once a second).
    page.wait_for_function("(before) => document.getElementById('screen').textContent !== before", arg=first)
    _shot(page, tmp_path, "web-agent")


@pytest.mark.browser
def test_the_budget_page_draws_the_pace_chart(served: tuple[Fleet, str], page: Any, tmp_path: Path) -> None:
    _fleet, url = served
    page.goto(url + "/budget")
    chart = page.locator('article[data-account="demo/stub-max"] svg.pace')
    assert chart.count() == 1
    assert chart.locator("line.even").count() == 1 and chart.locator("line.used").count() == 1
    assert chart.locator("polyline.allowed").count() == 1
    assert "used 40%" in (chart.text_content() or "")
    assert "stub-max: used 40.0%" in page.inner_text('article[data-account="demo/stub-max"] .evidence')
    _shot(page, tmp_path, "web-budget")
