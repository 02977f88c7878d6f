"""`fleet budget show`: the pure view (bar, projected exhaustion, next steps) and the command."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.core import budget_view
from tests.e2e.repos import example_repo


def test_doctests() -> None:
    result = doctest.testmod(budget_view)
    assert result.attempted >= 2 and result.failed == 0


def fleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ}, check=False)


def test_show_over_pace_names_the_next_rung(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "spec-reference", "fleet-test-budget-show")
    roster = repo / "tenants" / "jarvis" / "roster.yaml"  # as the test's own user, not a user `jarvis`
    roster.write_text("".join(line for line in roster.read_text().splitlines(keepends=True) if not line.startswith("user:")))
    state = tmp_path / "state"
    # half-way through the 7 d window, 90% used: over pace
    reset = (datetime.now(UTC) + timedelta(days=3, hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    set_usage = fleet("budget", "set-usage", str(repo), "jarvis", "claude-max-1", "--used", "0.9",
                      "--reset-at", reset, "--state-dir", str(state))
    assert set_usage.returncode == 0, set_usage.stderr
    shown = fleet("budget", "show", str(repo), "--host", "w-jarvis", "--state-dir", str(state), "--output", "json")
    assert shown.returncode == 0, shown.stderr
    accounts = {a["account"]: a for a in json.loads(shown.stdout)}
    claude = accounts["claude-max-1"]
    assert claude["state"] == "over" and claude["used"] == 0.9
    assert any(step.startswith("orchestrator: down to sonnet") for step in claude["next"])
    assert accounts["openai-api"]["state"] == "no-signal" and accounts["openai-api"]["next"] == []
    text = fleet("budget", "show", str(repo), "--host", "w-jarvis", "--state-dir", str(state))
    assert "jarvis/claude-max-1 (claude, subscription): used 90%" in text.stdout
    assert "next: orchestrator: down to sonnet" in text.stdout
