"""A tenant user's agents on the REAL Claude Code and Codex, reconciled by root.

Root's run hands the tenant to a `fleet` running under the tenant's uid (engine/delegate.py),
so the adapters prepare that user's own files: `~/.claude.json` and `~/.codex/config.toml`
in the user's home, owned by the user, every key it had kept; the settings and persona
under the user's state directory. The runtimes then answer the heartbeat through
`fleet-hook` under that uid, and root's second run plans nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.drivers import users
from tests.e2e.repos import write
from tests.plugins.linux_users import as_user
from tests.plugins.tmux_server import retry_until
from tests.runtimes.fakes import FakeProvider, end_leftovers, serve
from tests.runtimes.test_fleet_reconcile_real import CODEX_CONFIG as REAL_CODEX_CONFIG

BIN = Path(__file__).resolve().parents[2] / ".runtimes" / "node_modules" / ".bin"
HOST = "w-users"
SOCKET = "fleet-rt"
KEY = "sk-fake-0123456789abcdefghijklmnop"
UP_S = 90.0

pytestmark = [
    pytest.mark.tmux,
    pytest.mark.skipif(not ((BIN / "claude").exists() and (BIN / "codex").exists()),
                       reason=f"claude and codex are not installed in {BIN.parent.parent}: run ./dev setup (needs npm)"),
]

FLEET = f"""\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: users-real
defaults:
  socket_name: {SOCKET}
  startup_grace: 90s
  runtime: claude
  model: opus
runtimes:
  claude:
    adapter: claude
    command: {BIN / "claude"}
    ladder: [opus]
  codex:
    adapter: codex
    command: {BIN / "codex"}
    ladder: [gpt-5.5]
"""

ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: ada
host: {host}
user: {user}
agents:
  - name: orchestrator
    role: orchestrator
    runtime: claude
    model: opus
    env:
      ANTHROPIC_BASE_URL: {anthropic}
      ANTHROPIC_API_KEY: {key}
  - name: enhancer
    role: enhancer
    runtime: codex
    model: gpt-5.5
    env:
      FAKE_KEY: {key}
"""

#: The real-runtime test's provider settings, plus a profile the fleet must keep.
CODEX_CONFIG = REAL_CODEX_CONFIG + '\n[profiles.mine]\nmodel = "gpt-5.5"\n'


def _fleet(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleet ...` as root, the way a host's timer runs it."""
    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_AGENT_COMMAND"}
    return subprocess.run([python, "-m", "reconciler", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False, stdin=subprocess.DEVNULL)


@pytest.fixture
def providers() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    with serve("anthropic") as anthropic, serve("openai") as openai:
        yield anthropic, openai


def _as_owner(user: str, path: Path, text: str) -> None:
    """Write `text` at `path` as `user` would have: owned by the user, private."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    account = users.lookup(user)
    assert account is not None
    for made in (path, path.parent):
        os.chown(made, account.uid, account.gid)
    path.chmod(0o600)


def test_root_starts_a_tenant_users_real_runtimes_with_that_users_own_config(
        make_user: Callable[..., str], fleet_python: str, tmp_path: Path,
        providers: tuple[FakeProvider, FakeProvider]) -> None:
    anthropic, openai = providers
    user = make_user()
    account = users.lookup(user)
    assert account is not None
    home = Path(account.home)
    _as_owner(user, home / ".claude.json", json.dumps({"numStartups": 7, "projects": {"/srv/other": {"x": 1}}}))
    _as_owner(user, home / ".codex" / "config.toml", CODEX_CONFIG.format(openai=openai.base_url))
    repo = tmp_path / "repo"
    write(repo, "fleet.yaml", FLEET)
    write(repo, "tenants/ada/roster.yaml", ROSTER.format(host=HOST, user=user, anthropic=anthropic.base_url, key=KEY))
    state = home / ".local/state/mosaic-fleet/ada"
    try:
        done = _fleet(fleet_python, "reconcile", str(repo), "--host", HOST, "--no-git", "--output", "json")
        assert done.returncode == 0, done.stdout + done.stderr
        spawned = sorted(a["agent"] for a in json.loads(done.stdout)["actions"] if a["action"] == "spawn")
        assert spawned == ["enhancer", "orchestrator"], done.stdout

        # Both runtimes answer the heartbeat under the user's uid, from their own events.
        def beat(agent: str) -> dict[str, object] | None:
            shown = as_user(user, ["cat", str(state / "heartbeats" / f"{agent}.json")])
            return json.loads(shown.stdout) if shown.returncode == 0 else None

        assert retry_until(lambda: all(beat(a) for a in ("orchestrator", "enhancer")), UP_S, 0.2), \
            as_user(user, ["tmux", "-L", SOCKET, "capture-pane", "-p", "-t", "=orchestrator:"]).stdout
        assert (beat("orchestrator") or {}).get("event") in ("SessionStart", "statusline")
        assert (beat("enhancer") or {}).get("event") == "launch"

        # The user's own files, merged as the user: owned by it, every key it had kept.
        claude_json = home / ".claude.json"
        doc = json.loads(claude_json.read_text())
        assert doc["numStartups"] >= 7 and doc["projects"]["/srv/other"] == {"x": 1}
        assert doc["hasCompletedOnboarding"] is True
        assert doc["projects"][account.home]["hasTrustDialogAccepted"] is True
        codex_toml = (home / ".codex" / "config.toml").read_text()
        assert "[profiles.mine]" in codex_toml and "# the user's own settings" in codex_toml
        assert "codex-notify" in codex_toml
        for mine in (claude_json, home / ".codex" / "config.toml",
                     state / "runtimes" / "orchestrator" / "claude-settings.json"):
            assert mine.stat().st_uid == account.uid, mine
        # The runtimes run as the user, in its own tmux server.
        panes = as_user(user, ["tmux", "-L", SOCKET, "list-panes", "-a", "-F", "#{session_name} #{pane_pid}"])
        pids = dict(line.split() for line in panes.stdout.splitlines())
        assert {Path(f"/proc/{pid}").stat().st_uid for pid in pids.values()} == {account.uid}

        # Root's second run: both healthy, nothing to do.
        again = _fleet(fleet_python, "reconcile", str(repo), "--host", HOST, "--no-git", "--output", "json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["actions"] == [], again.stdout
        status = (repo / "status" / HOST / "ada.yaml").read_text()
        agents = json.loads(status[status.index("{"):])["agents"]
        assert {a["name"]: a["health"] for a in agents} == {"orchestrator": "healthy", "enhancer": "healthy"}
    finally:
        as_user(user, ["tmux", "-L", SOCKET, "kill-server"])
        left = end_leftovers(home)
        assert not left, f"the runtimes left processes behind: {left}"
