"""`fleet serve` with a register, in Debian's Chromium through Playwright: a batch that
another host's run writes to the register appears on the open All hosts page, with no
reload, long before any fallback re-read (an hour away here)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from reconciler.drivers import register as pg
from tests.e2e.repos import example_repo
from tests.plugins.tmux_server import retry_until
from tests.register.support import REGISTER_BLOCK, URL_ENV
from tests.web.serving import clean_env, fleet_serve
from tests.web.test_browser import _shot
from tests.web.test_browser import page as page  # noqa: PLC0414  (the fixture)
from tests.web.test_register import agent_row, listeners, write_as

pytestmark = pytest.mark.tmux


@pytest.mark.browser
def test_another_hosts_write_appears_on_the_open_page(page: Any, tmp_path: Path, pg_url: str) -> None:
    repo = example_repo(tmp_path, "minimal", f"fleet-webreg-{uuid.uuid4().hex[:8]}")
    (repo / "fleet.yaml").write_text((repo / "fleet.yaml").read_text() + REGISTER_BLOCK)
    with pg.connect(pg_url) as conn:
        pg.migrate(conn, pg.migrations())
    write_as(pg_url, "w1", 1, agent_row("demo", "coder0"))
    env = clean_env(tmp_path) | {URL_ENV: pg_url}
    with fleet_serve(repo, tmp_path / "state", env, "--interval", "0.5") as url:
        page.goto(url + "/hosts")
        page.wait_for_selector('tr[data-key="w1/demo/coder0"]')
        assert page.locator('header a[href="/hosts"]').count() == 1, "the nav names the page from the start"
        assert page.locator('#host-table tr[data-host="w1"]').count() == 1
        page.wait_for_selector("#live.on")
        assert retry_until(lambda: listeners(pg_url) == 1, 60), "fleet serve LISTENs on the register"
        page.evaluate("window.__same_page = true")

        write_as(pg_url, "w2", 1, agent_row("demo", "coder1", "dead"))
        page.wait_for_selector('tr[data-key="w2/demo/coder1"][data-health="dead"]')
        assert page.evaluate("window.__same_page") is True, "no reload"
        assert "after register change (w2)" in page.inner_text("#register-status")
        assert page.locator("#register-rows tr").count() == 2
        _shot(page, tmp_path, "web-hosts")

        page.goto(url + "/")  # the fleet page points at it
        assert "all hosts: 2 host(s), 2 agent(s) in the register" in page.inner_text("#banner")
