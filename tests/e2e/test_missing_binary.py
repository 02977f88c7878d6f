"""A runtime binary found nowhere is the agent's own condition, through the CLI.

`fleet reconcile` on a real repository whose Claude Code and Codex programs are absent
from PATH (the stub is there): twice in a row, neither is started nor restarted; `fleet
ps` shows them `missing (missing-binary)` with which program, for which user and how to
install it; the status file gives them `Ready` False, reason `MissingBinary`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler.model.observed import SocketKey
from tests.runtimes.test_wiring import repo

pytestmark = pytest.mark.tmux


def fleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


def test_a_missing_binary_shows_in_ps_and_status(tmp_path: Path, tmux_socket: SocketKey) -> None:
    root = repo(tmp_path)
    (root / "fleet.yaml").write_text((root / "fleet.yaml").read_text().replace("mosaic-demo", str(tmux_socket.name)))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("MOSAIC_AGENT_COMMAND", None)
    where = ("--host", "demo", "--state-dir", str(tmp_path / "state"))
    for _ in range(2):
        done = fleet(env, "reconcile", str(root), *where)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 to restart" in done.stdout and "backing off" not in done.stdout, done.stdout

    ps = fleet(env, "ps", str(root), *where, "--output", "json")
    assert ps.returncode == 0, ps.stderr
    rows: dict[str, dict[str, Any]] = {row["agent"]: row for row in json.loads(ps.stdout)}
    for agent, program in (("orchestrator", "claude"), ("enhancer", "/opt/codex/bin/codex")):
        row = rows[agent]
        assert (row["health"], row["reason"], row["tmux"]) == ("missing", "missing-binary", "absent"), row
        assert f"{program} is not found for the user running fleet" in row["health_message"], row
        assert "npm install" in row["health_message"], row
    assert rows["coder"]["reason"] is None
    table = fleet(env, "ps", str(root), *where)
    assert table.returncode == 0 and "missing (missing-binary)" in table.stdout, table.stdout

    text = (root / "status" / "demo" / "demo.yaml").read_text()
    doc = json.loads(text[text.index("{"):])
    agent = next(a for a in doc["agents"] if a["name"] == "orchestrator")
    ready = next(c for c in agent["conditions"] if c["type"] == "Ready")
    assert agent["health"] == "missing" and (ready["status"], ready["reason"]) == ("False", "MissingBinary"), agent
    assert "claude is not found" in ready["message"] and "never looped" in ready["message"]
