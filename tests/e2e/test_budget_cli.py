"""`fleet budget set-usage`, `fleet budget ingest` and `fleet-claude-statusline` as users
run them: real subprocesses, a real repository, the runtimes' files in a temporary folder.

The budget commands run as `python -m reconciler.cli budget ...`, as the `fleet` console
script runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.drivers.ledger import ledger_path, read_ledger
from reconciler.drivers.usage import parse_usage, usage_path
from tests.engine import usage_samples as samples
from tests.engine.usage_samples import TENANT


class Run(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: state, Codex and Claude homes all under tmp_path (never the
    real ~/.codex or ~/.claude of the machine running the tests)."""
    return {**os.environ, "FLEET_STATE_DIR": str(tmp_path / "state"),
            "CODEX_HOME": str(tmp_path / "no-codex"), "CLAUDE_CONFIG_DIR": str(tmp_path / "no-claude")}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return samples.write_repo(tmp_path / "repo")


def budget(env: dict[str, str], *args: str) -> Run:
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "budget", *args], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def statusline(env: dict[str, str], stdin: str, *args: str) -> Run:
    done = subprocess.run([sys.executable, "-m", "reconciler.hooks.claude_statusline", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    return Run(done.returncode, done.stdout, done.stderr)


def state(env: dict[str, str]) -> Path:
    return Path(env["FLEET_STATE_DIR"])


# --- set-usage -----------------------------------------------------------------------------


def test_set_usage_subscription(env: dict[str, str], repo: Path) -> None:
    run = budget(env, "set-usage", str(repo), TENANT, "claude-max-1", "--used", "0.42",
                 "--reset-at", "2026-11-30T00:00:00Z")
    assert run.code == 0, run.err
    path = usage_path(state(env), TENANT, "claude-max-1")
    assert run.out.startswith("jarvis/claude-max-1: used 42% of its 7d window, resets 2026-11-30T00:00:00Z (user, from user")
    assert run.out.rstrip().endswith(f"written to {path}")
    record = json.loads(path.read_text())
    assert list(record) == ["tenant", "account", "used_fraction", "spent_usd", "reset_at", "window",
                            "confidence", "source", "observed_at"], "docs/reference.md's fields, in order"
    assert (record["used_fraction"], record["spent_usd"], record["reset_at"], record["window"],
            record["confidence"], record["source"]) == (0.42, None, "2026-11-30T00:00:00Z", "7d", "user", "user")
    assert record["observed_at"].endswith("Z")


def test_set_usage_api_account_as_json(env: dict[str, str], repo: Path) -> None:
    run = budget(env, "set-usage", str(repo), TENANT, "stub-api", "--spent-usd", "61.5",
                 "--confidence", "estimated", "--output", "json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["record"]["spent_usd"] == 61.5 and doc["record"]["used_fraction"] is None
    assert doc["record"]["window"] == "30d", "an api account's period"
    assert parse_usage(Path(doc["path"]).read_text()).confidence == "estimated"


class Refusal(NamedTuple):
    test_id: str
    args: list[str]
    message: str


REFUSALS = [
    Refusal("unknown-tenant", ["nobody", "claude-max-1", "--used", "0.4"], "no tenant 'nobody' in"),
    Refusal("unknown-account", [TENANT, "claude-max-9", "--used", "0.4"],
            "no account 'claude-max-9' in {repo}/tenants/jarvis/budget.yaml (accounts: claude-max-1, codex-pro, stub-api)"),
    Refusal("used-on-api", [TENANT, "stub-api", "--used", "0.4"], "is an api account (a dollar cap); report what it spent with --spent-usd"),
    Refusal("dollars-on-subscription", [TENANT, "claude-max-1", "--spent-usd", "10"], "is a subscription account"),
    Refusal("percent-not-fraction", [TENANT, "claude-max-1", "--used", "42"],
            "--used must be a number from 0 to 1, not 42 (a fraction: 42% is 0.42)"),
    Refusal("negative", [TENANT, "claude-max-1", "--used", "-0.1"], "--used must be a number from 0 to 1"),
    Refusal("not-a-number", [TENANT, "claude-max-1", "--used", "lots"], "--used must be a number, not 'lots'"),
    Refusal("nan", [TENANT, "stub-api", "--spent-usd", "nan"], "--spent-usd must be a number of at least 0"),
    Refusal("neither", [TENANT, "claude-max-1"], "give exactly one of --used"),
    Refusal("both", [TENANT, "claude-max-1", "--used", "0.1", "--spent-usd", "1"], "give exactly one of --used"),
    Refusal("naive-reset", [TENANT, "claude-max-1", "--used", "0.1", "--reset-at", "2026-11-30T00:00"],
            "--reset-at has no time zone"),
    Refusal("bad-confidence", [TENANT, "claude-max-1", "--used", "0.1", "--confidence", "sure"],
            "--confidence must be one of user, provider, estimated, unknown"),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.test_id)
def test_set_usage_refuses_with_one_error_line(env: dict[str, str], repo: Path, case: Refusal) -> None:
    run = budget(env, "set-usage", str(repo), *case.args)
    assert run.code == 1
    assert run.err.startswith("error: "), run.err
    assert case.message.format(repo=repo) in run.err
    assert "Traceback" not in run.err and run.out == ""
    assert not (state(env) / TENANT / "usage").exists(), "nothing written"


def test_set_usage_on_a_tenant_with_spec_errors(env: dict[str, str], repo: Path) -> None:
    budget_file = repo / "tenants" / TENANT / "budget.yaml"
    budget_file.write_text(budget_file.read_text().replace("window: 7d", "windw: 7d", 1))
    run = budget(env, "set-usage", str(repo), TENANT, "claude-max-1", "--used", "0.4")
    assert run.code == 1
    assert "budget.yaml:" in run.err and "error: tenant 'jarvis' has errors in its specs" in run.err


# --- ingest --------------------------------------------------------------------------------


def test_ingest_twice(env: dict[str, str], repo: Path, tmp_path: Path) -> None:
    samples.write_codex_home(tmp_path / "codex")
    samples.write_claude_home(tmp_path / "claude")
    samples.write_heartbeat(state(env), "coder0-0", (40000, 10000))
    args = ("ingest", str(repo), "--codex-home", str(tmp_path / "codex"), "--claude-home", str(tmp_path / "claude"),
            "--host", "w-jarvis")
    first = budget(env, *args)
    assert first.code == 0, first.err
    assert "jarvis/codex-pro: used 38% of its 7d window, resets 2026-11-30T00:00:00Z (provider, from codex-rollout" in first.out
    assert "[written]" in first.out and "jarvis: ledger +5 entries" in first.out
    assert first.err.count("warning: ") == 2, "one per file with a corrupt line"
    second = budget(env, *args, "--output", "json")
    assert second.code == 0, second.err
    doc = json.loads(second.out)
    (tenant,) = doc["tenants"]
    assert tenant["ledger_entries"] == 0 and [s["status"] for s in tenant["signals"]] == ["unchanged"]
    entries, problems = read_ledger(ledger_path(state(env), TENANT))
    assert len(entries) == 5 and problems == []


def test_ingest_uses_the_default_homes_of_the_only_tenant(env: dict[str, str], repo: Path, tmp_path: Path) -> None:
    samples.write_codex_home(tmp_path / "codex-default")
    run = budget({**env, "CODEX_HOME": str(tmp_path / "codex-default")}, "ingest", str(repo))
    assert run.code == 0, run.err
    assert "jarvis/codex-pro: used 38%" in run.out


def test_ingest_refuses_a_home_for_several_tenants(env: dict[str, str], repo: Path, tmp_path: Path) -> None:
    roster = (repo / "tenants" / TENANT / "roster.yaml").read_text()
    (repo / "tenants" / "friday").mkdir()
    (repo / "tenants" / "friday" / "roster.yaml").write_text(
        roster.replace("tenant: jarvis", "tenant: friday") + "socket_name: friday\n")
    run = budget(env, "ingest", str(repo), "--codex-home", str(tmp_path))
    assert run.code == 1, run.err
    assert "error: --codex-home/--claude-home hold one login's files" in run.err and "pass --tenant NAME" in run.err
    scoped = budget(env, "ingest", str(repo), "--codex-home", str(tmp_path), "--tenant", "friday")
    assert scoped.code == 0, scoped.err
    assert scoped.out.startswith("friday: ledger +0 entries")


def test_ingest_unknown_tenant(env: dict[str, str], repo: Path) -> None:
    run = budget(env, "ingest", str(repo), "--tenant", "nobody")
    assert run.code == 1 and "error: --tenant nobody: no such tenant" in run.err


# --- the status-line hook ------------------------------------------------------------------


def test_statusline_hook_saves_and_ingest_records_it(env: dict[str, str], repo: Path) -> None:
    hook_env = {**env, "FLEET_TENANT": TENANT, "FLEET_AGENT": "orchestrator"}
    run = statusline(hook_env, json.dumps(samples.statusline_input()))
    assert run.code == 0, run.err
    assert run.out == "Opus | 5h 24% | 7d 41% (resets 2026-11-30 00:00 UTC)\n"
    saved = json.loads((state(env) / TENANT / "statusline" / "orchestrator.json").read_text())
    assert saved["rate_limits"]["seven_day"] == {"used_percentage": 41.2, "resets_at": samples.WEEK_RESET}
    ingested = budget(env, "ingest", str(repo), "--tenant", TENANT)
    assert ingested.code == 0, ingested.err
    assert "jarvis/claude-max-1: used 41% of its 7d window" in ingested.out
    assert "from claude-statusline" in ingested.out
    record = parse_usage(usage_path(state(env), TENANT, "claude-max-1").read_text())
    assert (record.used_fraction, record.confidence) == (0.412, "provider")


class HookCase(NamedTuple):
    test_id: str
    stdin: str
    env: dict[str, str]
    out: str
    saved: bool


HOOK = [
    HookCase("garbage-input", "not json{", {"FLEET_TENANT": TENANT}, "Claude\n", False),
    HookCase("no-rate-limits", json.dumps({"model": {"display_name": "Sonnet"}}), {"FLEET_TENANT": TENANT},
             "Sonnet\n", False),
    HookCase("outside-the-fleet", json.dumps(samples.statusline_input()), {},
             "Opus | 5h 24% | 7d 41% (resets 2026-11-30 00:00 UTC)\n", False),
    HookCase("unsafe-agent-name", json.dumps(samples.statusline_input()),
             {"FLEET_TENANT": TENANT, "FLEET_AGENT": "../../x"}, "Opus | 5h 24% | 7d 41% (resets 2026-11-30 00:00 UTC)\n",
             False),
    HookCase("default-agent-name", json.dumps(samples.statusline_input(five=90)), {"FLEET_TENANT": TENANT},
             "Opus | 5h 90% | 7d 41% (resets 2026-11-30 00:00 UTC)\n", True),
]


@pytest.mark.parametrize("case", HOOK, ids=lambda c: c.test_id)
def test_statusline_hook_always_prints_a_line_and_exits_0(env: dict[str, str], case: HookCase) -> None:
    clean = {k: v for k, v in env.items() if k not in ("FLEET_TENANT", "FLEET_AGENT")}
    run = statusline({**clean, **case.env}, case.stdin)
    assert run.code == 0 and run.out == case.out
    folder = state(env) / TENANT / "statusline"
    assert (folder.exists() and any(folder.iterdir())) is case.saved
    if case.saved:
        assert (folder / "claude.json").exists()


# --- the mount -----------------------------------------------------------------------------


def test_mounted_under_fleet(env: dict[str, str], repo: Path) -> None:
    run = budget(env, "set-usage", str(repo), TENANT, "claude-max-1", "--used", "0.1")
    assert run.code == 0, run.err
    bad = budget(env, "set-usage", str(repo), TENANT, "claude-max-1", "--used", "7")
    assert bad.code == 1 and bad.err.startswith("error: --used must be a number from 0 to 1")
