"""The adapters' pure output (files, merges, argv/env) and the driver that writes it."""

from __future__ import annotations

import doctest
import json
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.drivers.runtime_config import RuntimeConfigError, write_configs
from reconciler.runtimes import ADAPTERS, claude, codex
from reconciler.runtimes.base import AdapterError, AgentRun, RuntimePaths
from reconciler.runtimes.claude import ClaudeAdapter, merge_claude_json
from reconciler.runtimes.codex import CodexAdapter, merge_codex_config

SESSION = "0b7f9a52-5a0e-4c55-9a53-1d7c4e0f2a11"


@pytest.mark.parametrize("module", [claude, codex])
def test_doctests_pass(module: object) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0  # type: ignore[arg-type]


def make(tmp_path: Path, **changes: object) -> tuple[AgentRun, RuntimePaths]:
    fields: dict[str, object] = {"tenant": "jarvis", "host": "w", "agent": "orchestrator", "model": "opus",
                                 "workdir": tmp_path / "work", "session_id": SESSION, "persona": "You are Mos."}
    fields.update(changes)
    return AgentRun(**fields), RuntimePaths(tmp_path / "home", tmp_path / "state", "/v/bin/fleet-hook", "claude")  # type: ignore[arg-type]


def test_registry_names_the_adapters() -> None:
    assert sorted(ADAPTERS) == ["claude", "codex"]
    assert all(adapter.name == name for name, adapter in ADAPTERS.items())


def test_claude_launch_and_resume(tmp_path: Path) -> None:
    run, paths = make(tmp_path)
    launch = ClaudeAdapter().launch(run, paths)
    settings = str(tmp_path / "state/jarvis/runtimes/orchestrator/claude-settings.json")
    persona = str(tmp_path / "state/jarvis/runtimes/orchestrator/persona.md")
    assert launch.argv == ("claude", "--model", "opus", "--session-id", SESSION, "--settings", settings,
                           "--append-system-prompt-file", persona)
    assert launch.env["DISABLE_AUTOUPDATER"] == "1" and launch.env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "200000"
    assert launch.env["CLAUDE_CODE_DISABLE_1M_CONTEXT"] == "1"
    assert launch.env["FLEET_AGENT"] == "orchestrator" and launch.env["FLEET_STATE_DIR"] == str(tmp_path / "state")
    resumed = ClaudeAdapter().launch(make(tmp_path, resume=True, persona=None, model="haiku")[0], paths)
    assert resumed.argv == ("claude", "--model", "haiku", "--resume", SESSION, "--settings", settings)


def test_claude_settings_call_the_hook_on_every_event(tmp_path: Path) -> None:
    run, paths = make(tmp_path)
    files = {f.path.name: f for f in ClaudeAdapter().prepare(run, paths)}
    doc = json.loads(files["claude-settings.json"].merge(None))
    assert set(doc["hooks"]) == set(claude.HOOK_EVENTS)
    assert {h["command"] for groups in doc["hooks"].values() for g in groups for h in g["hooks"]} == {
        "/v/bin/fleet-hook claude"}
    assert doc["statusLine"] == {"type": "command", "command": "/v/bin/fleet-hook statusline", "refreshInterval": 2}
    assert (doc["autoCompactWindow"], doc["autoCompactEnabled"]) == (200000, True)
    assert files["persona.md"].merge("old") == "You are Mos."


def test_claude_json_merge_keeps_everything_and_is_idempotent() -> None:
    user = {"theme": "dark", "oauthAccount": {"x": 1}, "projects": {"/w": {"allowedTools": ["Bash"]}},
            "customApiKeyResponses": {"approved": ["abc"], "rejected": ["zzz"]}}
    once = merge_claude_json(json.dumps(user), "/w", True, "sk-fake")
    doc = json.loads(once)
    assert doc["theme"] == "dark" and doc["oauthAccount"] == {"x": 1}
    assert doc["projects"]["/w"] == {"allowedTools": ["Bash"], "hasTrustDialogAccepted": True}
    assert doc["customApiKeyResponses"] == {"approved": ["abc", "sk-fake"], "rejected": ["zzz"]}
    assert merge_claude_json(once, "/w", True, "sk-fake") == once


def test_claude_json_without_trust_leaves_projects_alone() -> None:
    assert "projects" not in json.loads(merge_claude_json("{}", "/w", False, None))


@pytest.mark.parametrize("text", ["{not json", "[1]", '{"projects": []}', '{"projects": {"/w": 3}}',
                                  '{"customApiKeyResponses": {"approved": "x"}}'])
def test_claude_json_merge_refuses_damage(text: str) -> None:
    with pytest.raises(AdapterError):
        merge_claude_json(text, "/w", True, "k")


def test_codex_launch(tmp_path: Path) -> None:
    run, paths = make(tmp_path, model="gpt-5.5", env={"CODEX_HOME": "/c"})
    launch = CodexAdapter().launch(run, paths)
    persona = tmp_path / "state/jarvis/runtimes/orchestrator/persona.md"
    assert launch.argv == ("/v/bin/fleet-hook", "launch", "--", "claude", "--model", "gpt-5.5",
                           "-c", "features.daemon_auto_start=false", "-c", f"model_instructions_file={persona}")
    assert "CODEX_HOME" not in launch.env and launch.env["FLEET_MODEL"] == "gpt-5.5"  # the agent's env has it
    run, paths = make(tmp_path, resume=True, persona=None)
    # the thread read back is resumed by its id, never `resume --last` (it may pick another
    # agent's session in a shared CODEX_HOME); without an id, a new session
    assert CodexAdapter().launch(run, paths).argv[3:] == ("claude", "resume", run.session_id, "--model", "opus",
                                                          "-c", "features.daemon_auto_start=false")
    assert CodexAdapter().launch(replace(run, session_id=""), paths).argv[3:] == (
        "claude", "--model", "opus", "-c", "features.daemon_auto_start=false")
    assert CodexAdapter().codex_home(run, paths) == tmp_path / "home/.codex"


def test_codex_config_merge_keeps_keys_comments_and_is_idempotent() -> None:
    user = ('# my settings\nmodel_provider = "fake"\nnotify = ["old"]\n\n[model_providers.fake]\n'
            'base_url = "http://127.0.0.1:1/v1"  # local\n\n[notice]\nhide_full_access_warning = true\n')
    once = merge_codex_config(user, "/w", True, "gpt-5.5", ["/h", "codex-notify"])
    doc = tomllib.loads(once)
    assert "# my settings" in once and "# local" in once
    assert doc["model_providers"]["fake"]["base_url"] == "http://127.0.0.1:1/v1"
    assert doc["notify"] == ["/h", "codex-notify"]
    assert doc["projects"]["/w"]["trust_level"] == "trusted"
    assert doc["notice"] == {"hide_full_access_warning": True, "model_migrations": {"gpt-5.5": "gpt-6-sol"}}
    assert merge_codex_config(once, "/w", True, "gpt-5.5", ["/h", "codex-notify"]) == once


def test_codex_config_without_trust_or_known_upgrade() -> None:
    doc = tomllib.loads(merge_codex_config(None, "/w", False, "gpt-4.1", ["/h", "codex-notify"]))
    assert doc == {"notify": ["/h", "codex-notify"]}


@pytest.mark.parametrize("text", ["model = ", 'projects = "x"', "[notice]\nmodel_migrations = 3\n"])
def test_codex_config_merge_refuses_damage(text: str) -> None:
    with pytest.raises(AdapterError):
        merge_codex_config(text, "/w", True, "gpt-5.5", ["/h"])


def test_driver_writes_merges_and_keeps_mode_and_symlinks(tmp_path: Path) -> None:
    run, paths = make(tmp_path)
    real = tmp_path / "dotfiles" / "claude.json"
    real.parent.mkdir()
    real.write_text('{"theme": "dark"}')
    real.chmod(0o640)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".claude.json").symlink_to(real)
    files = ClaudeAdapter().prepare(run, paths)
    changed = write_configs(files)
    assert len(changed) == 4
    assert (tmp_path / "state/jarvis/conversations/orchestrator").read_text() == SESSION + "\n"
    assert (tmp_path / "home" / ".claude.json").is_symlink()
    assert json.loads(real.read_text())["theme"] == "dark" and real.stat().st_mode & 0o777 == 0o640
    settings = tmp_path / "state/jarvis/runtimes/orchestrator/claude-settings.json"
    assert settings.stat().st_mode & 0o777 == 0o600
    assert write_configs(files) == []  # unchanged: nothing rewritten


def test_driver_refuses_a_damaged_user_file(tmp_path: Path) -> None:
    run, paths = make(tmp_path, model="gpt-5.5")
    config = tmp_path / "home" / ".codex" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("model = \n")
    with pytest.raises(RuntimeConfigError, match=r"config.toml: not TOML .*fix the file by hand"):
        write_configs(CodexAdapter().prepare(run, paths))
    assert config.read_text() == "model = \n"
