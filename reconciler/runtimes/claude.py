"""The Claude Code adapter (measured with 2.1.328): settings with hooks, `~/.claude.json`.

Claude Code reports through hooks: a per-agent settings file (passed with `--settings`)
calls `fleet-hook claude` on every event and `fleet-hook statusline` every two seconds
as a liveness tick. `~/.claude.json` gets onboarding done, the workdir's trust dialog
accepted and, when the agent runs on an API key, that key approved (Claude Code asks
about a key in the environment otherwise), keeping every other key of the user's file.
"""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.model.layout import StateLayout
from reconciler.runtimes.base import (
    AdapterError,
    AgentRun,
    ConfigFile,
    Deliver,
    Launch,
    RuntimePaths,
    identity_env,
    replace_with,
)

#: Every hook event fleet-hook maps (hooks/fleet_hook.py, CLAUDE_STATES).
HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification",
               "Stop", "StopFailure", "SubagentStop", "SessionEnd")
#: Events whose hooks take a tool matcher.
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse"})
COMPACT_WINDOW = 200_000
#: Claude Code keeps this many trailing characters of an approved key.
KEY_SUFFIX = 20
LAUNCH_ENV = {
    "DISABLE_AUTOUPDATER": "1",  # the status bar showed "Auto-updating…" without it
    "CLAUDE_CODE_DISABLE_1M_CONTEXT": "1",
    "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(COMPACT_WINDOW),
}


def settings(paths: RuntimePaths) -> dict[str, object]:
    """The `--settings` document: hooks for every event, the status-line tick, compaction.

    >>> doc = settings(RuntimePaths(Path("/h"), Path("/s"), "/venv/bin/fleet-hook", "claude"))
    >>> doc["hooks"]["Stop"], doc["statusLine"]["command"]
    ([{'hooks': [{'type': 'command', 'command': '/venv/bin/fleet-hook claude'}]}], '/venv/bin/fleet-hook statusline')
    >>> doc["hooks"]["PreToolUse"][0]["matcher"]
    '*'
    """
    command = {"type": "command", "command": paths.hook_command("claude")}
    hooks = {event: [{"matcher": "*", "hooks": [command]} if event in TOOL_EVENTS else {"hooks": [command]}]
             for event in HOOK_EVENTS}
    return {
        "hooks": hooks,
        "statusLine": {"type": "command", "command": paths.hook_command("statusline"), "refreshInterval": 2},
        "autoCompactWindow": COMPACT_WINDOW,
        "autoCompactEnabled": True,
    }


def merge_claude_json(current: str | None, workdir: str, trust: bool, api_key: str | None) -> str:
    """`~/.claude.json` with onboarding done, `workdir` trusted, `api_key` approved.

    Every other key stays as it was; a file that is not a JSON object is refused.

    >>> out = json.loads(merge_claude_json('{"theme": "dark", "projects": {"/a": {"x": 1}}}', "/w", True, None))
    >>> out["theme"], out["hasCompletedOnboarding"], out["projects"]
    ('dark', True, {'/a': {'x': 1}, '/w': {'hasTrustDialogAccepted': True}})
    >>> json.loads(merge_claude_json(None, "/w", False, "sk-ant-0123456789abcdefghijXYZ"))["customApiKeyResponses"]
    {'approved': ['3456789abcdefghijXYZ'], 'rejected': []}
    """
    try:
        doc = json.loads(current) if current and current.strip() else {}
    except ValueError as exc:
        raise AdapterError(f"not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise AdapterError("not a JSON object")
    doc["hasCompletedOnboarding"] = True
    if trust:
        projects = doc.setdefault("projects", {})
        if not isinstance(projects, dict):
            raise AdapterError("'projects' is not an object")
        entry = projects.setdefault(workdir, {})
        if not isinstance(entry, dict):
            raise AdapterError(f"projects[{workdir!r}] is not an object")
        entry["hasTrustDialogAccepted"] = True
    if api_key:
        responses = doc.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
        approved = responses.setdefault("approved", []) if isinstance(responses, dict) else None
        if not isinstance(approved, list):
            raise AdapterError("'customApiKeyResponses' is not {approved: [...], rejected: [...]}")
        suffix = api_key[-KEY_SUFFIX:]
        if suffix not in approved:
            approved.append(suffix)
        responses.setdefault("rejected", [])
    return json.dumps(doc, indent=2) + "\n"


class ClaudeAdapter:
    """Claude Code: `claude --model M --session-id UUID --settings FILE [persona]`."""

    name = "claude"
    deliver = Deliver.PASTE_ACK_ON_SUBMIT
    fixes_session = True  # `--session-id UUID`, then `--resume UUID` (measured with 2.1.328)

    def settings_path(self, run: AgentRun, paths: RuntimePaths) -> Path:
        return paths.agent_dir(run) / "claude-settings.json"

    def persona_path(self, run: AgentRun, paths: RuntimePaths) -> Path:
        return paths.agent_dir(run) / "persona.md"

    def prepare(self, run: AgentRun, paths: RuntimePaths) -> list[ConfigFile]:
        key = run.env.get("ANTHROPIC_API_KEY") or None
        files = [
            ConfigFile(self.settings_path(run, paths), replace_with(json.dumps(settings(paths), indent=2) + "\n"),
                       owned=True),
            ConfigFile(paths.home / ".claude.json",
                       lambda current: merge_claude_json(current, str(run.workdir), run.trust_workdir, key)),
        ]
        if run.persona:
            files.append(ConfigFile(self.persona_path(run, paths), replace_with(run.persona), owned=True))
        if run.session_id:  # kept, so every later start resumes this conversation
            files.append(ConfigFile(StateLayout(paths.state_dir).conversation(run.tenant, run.agent),
                                    replace_with(run.session_id + "\n"), owned=True))
        return files

    def launch(self, run: AgentRun, paths: RuntimePaths) -> Launch:
        session: tuple[str, ...] = ()  # no id: Claude Code picks one
        if run.session_id:
            session = ("--resume", run.session_id) if run.resume else ("--session-id", run.session_id)
        persona = ("--append-system-prompt-file", str(self.persona_path(run, paths))) if run.persona else ()
        argv = (paths.binary, "--model", run.model, *session, "--settings", str(self.settings_path(run, paths)),
                *persona)
        return Launch(argv, {**identity_env(run, paths), **LAUNCH_ENV})
