"""Realistic usage files for tests: a fleet repository with budget accounts, a Codex home,
a Claude Code home, heartbeats and status-line input, in the formats the runtimes write.

Shared by tests/engine/test_ingest.py and tests/e2e/test_budget_cli.py. Every writer
takes the folder to write into, so tests never read this machine's real ~/.codex or
~/.claude.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TENANT = "jarvis"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ORCH_DIR = "/srv/fleet/orchestrator"
ENH_DIR = "/srv/fleet/enhancer"
CODEX_SESSION = "0199b2c4-7e1a-7c30-9d0e-5b2f6a8c1d01"
CLAUDE_SESSION = "3f1c9a2e-5b7d-4e8f-a1c2-d3e4f5a6b7c8"
#: 2026-11-30T00:00:00Z and 2026-11-25T15:00:00Z as Unix seconds (what Codex writes).
WEEK_RESET = 1795996800
FIVE_H_RESET = 1795618800

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: mosaic
defaults:
  runtime: stub
  model: stub-large
runtimes:
  claude:
    command: "claude --model {model}"
    ladder: [opus, sonnet, haiku]
  openai:
    command: "codex --model {model}"
    ladder: [gpt-5.5, gpt-5.5-mini]
  stub:
    command: "fleet-stub-agent --model {model}"
    ladder: [stub-large, stub-small]
downgrade: [claude, openai]
"""

ROSTER = f"""\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: jarvis
host: w-jarvis
agents:
  - name: orchestrator
    role: orchestrator
    runtime: claude
    model: opus
    workdir: {ORCH_DIR}
  - name: enhancer
    role: enhancer
    runtime: openai
    model: gpt-5.5
    workdir: {ENH_DIR}
  - name: coder0-0
    role: coder
    lane: fleet-observability
"""

BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: jarvis
accounts:
  - name: claude-max-1
    provider: anthropic
    runtime: claude
    regime: subscription
    window: 7d
    reset_at: 2026-11-30T00:00:00Z
    reset_confidence: provider
  - name: codex-pro
    provider: openai
    runtime: openai
    regime: subscription
    window: 7d
  - name: stub-api
    provider: mosaic
    runtime: stub
    regime: api
    hard_cap_usd: 200
    period: 30d
concurrency: 4
"""

TASKS = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Tasks
tenant: jarvis
missions:
  - id: M1
    title: Fleet observability
    tasks:
      - id: T1
        title: fleet ps joins tmux, systemd and heartbeats
        agent: coder0-0
        projected_tokens: 400000
"""


def write_repo(root: Path, budget: str = BUDGET) -> Path:
    """A one-tenant fleet repository whose runtimes are Claude Code, Codex and the stub."""
    files = {"fleet.yaml": FLEET, "tenants/jarvis/roster.yaml": ROSTER,
             "tenants/jarvis/budget.yaml": budget, "tenants/jarvis/tasks.yaml": TASKS}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def jsonl(records: list[dict[str, Any] | str]) -> str:
    """JSON lines; a str record is written as is (a corrupt or cut-off line)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# --- Codex -----------------------------------------------------------------------------------


def token_count(ts: str, info: dict[str, Any] | None, limits: dict[str, Any] | None) -> dict[str, Any]:
    return {"timestamp": ts, "type": "event_msg",
            "payload": {"type": "token_count", "info": info, "rate_limits": limits}}


def total_usage(input_tokens: int, cached: int, output: int, reasoning: int) -> dict[str, Any]:
    usage = {"input_tokens": input_tokens, "cached_input_tokens": cached, "output_tokens": output,
             "reasoning_output_tokens": reasoning, "total_tokens": input_tokens + output}
    return {"total_token_usage": usage, "last_token_usage": usage, "model_context_window": 272000}


def current_rollout(total: tuple[int, int, int, int] = (48000, 30000, 2100, 900)) -> str:
    """Today's session on a current build: `resets_at` in Unix seconds, a null `info`
    first (Codex emits one before the first reply), a cut-off line from a live writer."""
    limits: dict[str, Any] = {"primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": FIVE_H_RESET},
              "secondary": {"used_percent": 38.5, "window_minutes": 10080, "resets_at": WEEK_RESET},
              "plan_type": "pro"}
    return jsonl([
        {"timestamp": "2026-11-25T11:00:00.000Z", "type": "session_meta",
         "payload": {"id": CODEX_SESSION, "timestamp": "2026-11-25T11:00:00.000Z", "cwd": ENH_DIR,
                     "originator": "codex_cli_rs", "cli_version": "0.58.0", "instructions": None}},
        {"timestamp": "2026-11-25T11:00:01.000Z", "type": "turn_context",
         "payload": {"cwd": ENH_DIR, "approval_policy": "on-request", "sandbox_policy": {"mode": "workspace-write"},
                     "model": "gpt-5.5", "effort": "medium", "summary": "auto"}},
        {"timestamp": "2026-11-25T11:00:01.500Z", "type": "response_item",
         "payload": {"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": "count the token_count events"}]}},
        token_count("2026-11-25T11:00:02.000Z", None, limits | {"secondary": {**limits["secondary"], "used_percent": 38.0}}),
        token_count("2026-11-25T11:30:00.000Z", total_usage(*total), limits),
        '{"timestamp":"2026-11-25T11:31:00.000Z","type":"event_msg","payload":{"type":"token_count","info":{"tot',
    ])


def old_rollout() -> str:
    """Yesterday's session on an older build: `resets_in_seconds`, 299/10079-minute windows."""
    return jsonl([
        {"timestamp": "2026-11-24T09:00:00.000Z", "type": "session_meta",
         "payload": {"id": "0199aa00-0000-7000-8000-000000000001", "cwd": "/somewhere/else",
                     "originator": "codex_cli_rs", "cli_version": "0.39.0"}},
        {"timestamp": "2026-11-24T09:00:01.000Z", "type": "turn_context", "payload": {"model": "gpt-5.5-mini"}},
        token_count("2026-11-24T10:00:00.000Z", total_usage(9000, 2000, 700, 100),
                    {"primary": {"used_percent": 55.0, "window_minutes": 299, "resets_in_seconds": 3600},
                     "secondary": {"used_percent": 20.0, "window_minutes": 10079, "resets_in_seconds": 482400}}),
    ])


def write_codex_home(home: Path, total: tuple[int, int, int, int] = (48000, 30000, 2100, 900)) -> Path:
    day = home / "sessions" / "2026" / "11"
    (day / "24").mkdir(parents=True, exist_ok=True)
    (day / "25").mkdir(parents=True, exist_ok=True)
    (day / "24" / "rollout-2026-11-24T09-00-00-0199aa00-0000-7000-8000-000000000001.jsonl").write_text(old_rollout())
    (day / "25" / f"rollout-2026-11-25T11-00-00-{CODEX_SESSION}.jsonl").write_text(current_rollout(total))
    return home


# --- Claude Code -----------------------------------------------------------------------------


def assistant(msg_id: str, request_id: str, ts: str, output: int, *, model: str = "claude-opus-4-1-20250805",
              sidechain: bool = False, session: str = CLAUDE_SESSION, cwd: str = ORCH_DIR) -> dict[str, Any]:
    usage = {"input_tokens": 4, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 15000,
             "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0},
             "output_tokens": output, "service_tier": "standard"}
    return {"parentUuid": "u-1", "isSidechain": sidechain, "userType": "external", "cwd": cwd,
            "sessionId": session, "version": "2.0.30", "gitBranch": "main",
            "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": "text", "text": "done"}], "stop_reason": None, "usage": usage},
            "requestId": request_id, "type": "assistant", "uuid": f"a-{msg_id}-{output}", "timestamp": ts}


def user_line(ts: str) -> dict[str, Any]:
    return {"parentUuid": None, "isSidechain": False, "userType": "external", "cwd": ORCH_DIR,
            "sessionId": CLAUDE_SESSION, "version": "2.0.30", "type": "user",
            "message": {"role": "user", "content": "make fleet ps faster"}, "uuid": "u-1", "timestamp": ts}


def write_claude_home(home: Path, extra: list[dict[str, Any]] | None = None) -> Path:
    """A session whose first message is streamed as two lines (same id, same request; the
    first with a partial output count), a synthetic message, a corrupt line, and a
    subagent transcript under `<session>/subagents/`."""
    project = home / "projects" / "-srv-fleet-orchestrator"
    (project / CLAUDE_SESSION / "subagents").mkdir(parents=True, exist_ok=True)
    synthetic = assistant("msg_synth", "", "2026-11-25T11:05:00.000Z", 0, model="<synthetic>")
    (project / f"{CLAUDE_SESSION}.jsonl").write_text(jsonl([
        user_line("2026-11-25T11:00:00.000Z"),
        assistant("msg_01A", "req_011A", "2026-11-25T11:00:03.000Z", 1),
        assistant("msg_01A", "req_011A", "2026-11-25T11:00:05.000Z", 250),
        assistant("msg_01B", "req_011B", "2026-11-25T11:01:00.000Z", 100),
        synthetic,
        "{\"parentUuid\": \"a-1\", \"message\": {\"id\": \"msg_cut\", \"usage\": {\"input_tok",
        *(extra or []),
    ]))
    (project / CLAUDE_SESSION / "subagents" / "agent-7a1b.jsonl").write_text(jsonl([
        assistant("msg_02A", "req_022A", "2026-11-25T11:02:00.000Z", 40, model="claude-sonnet-4-5-20250929",
                  sidechain=True),
    ]))
    return home


#: Tokens of the fixture session: msg_01A (4+2000+15000+250) + msg_01B (..+100) on opus,
#: msg_02A (..+40) on sonnet in the subagent file.
CLAUDE_OPUS_TOKENS = 2 * (4 + 2000 + 15000) + 250 + 100
CLAUDE_SONNET_TOKENS = 4 + 2000 + 15000 + 40


# --- status line and heartbeats ---------------------------------------------------------------


def statusline_input(five: float = 23.5, seven: float = 41.2) -> dict[str, Any]:
    """What Claude Code pipes into a status-line command (a subscriber, mid-session)."""
    return {
        "hook_event_name": "Status", "session_id": CLAUDE_SESSION,
        "transcript_path": f"/home/jarvis/.claude/projects/-srv-fleet-orchestrator/{CLAUDE_SESSION}.jsonl",
        "cwd": ORCH_DIR, "model": {"id": "claude-opus-4-1-20250805", "display_name": "Opus"},
        "workspace": {"current_dir": ORCH_DIR, "project_dir": ORCH_DIR}, "version": "2.0.30",
        "output_style": {"name": "default"},
        "cost": {"total_cost_usd": 1.37, "total_duration_ms": 600000, "total_lines_added": 12},
        "rate_limits": {"five_hour": {"used_percentage": five, "resets_at": FIVE_H_RESET},
                        "seven_day": {"used_percentage": seven, "resets_at": WEEK_RESET}},
    }


def write_heartbeat(state: Path, agent: str, tokens: tuple[int, int], *, pid: int = 4242, seq: int = 7,
                    model: str = "stub-large", ts: str = "2026-11-25T11:59:50Z") -> None:
    beat = {"tenant": TENANT, "host": "w-jarvis", "agent": agent, "seq": seq, "ts": ts, "pid": pid,
            "state": "working", "model": model, "ack": None,
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}
    folder = state / TENANT / "heartbeats"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{agent}.json").write_text(json.dumps(beat))
