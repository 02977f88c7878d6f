"""Tick cost with 1 GB of transcript history present versus none (issue 11: the ingest's
per-file cursors must keep a tick's cost from growing with the runtimes' history).

Two fleets side by side, each one tenant with a budget.yaml and a Claude Code and a
Codex agent whose CLAUDE_CONFIG_DIR / CODEX_HOME point at a temporary home: one with
empty homes, one with SIZE MB of synthetic history (realistic Claude Code transcript
and Codex rollout lines: user turns, tool output, streamed assistant messages with
usage, token_count events with rate limits). What is timed is the engine's tick up to
the plan (`plan_tick`: ingest from the cursors, observe, budget policy, plan; applying,
so cursors, usage records and the ledger are written), as `fleet reconcile` runs it.
Reported: the first tick (it reads everything once), the median of RUNS ticks after it
(nothing new written), and the median of RUNS ticks each after the agents appended a
turn to ten files. No tmux server runs: the listing of the socket fails fast, the same
for both fleets.

    python benchmarks/bench_ingest.py [--size-mb 1024] [--runs 7] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleetgen import median_seconds
from reconciler.engine.tick import TickInputs, plan_tick

FILE_MB = 8
TOOL_OUTPUT = "".join(f"{i:05d} src/reconciler/module_{i % 97}.py: def handler_{i}(event): return event\n"
                      for i in range(24))  # ~1.6 KB of what a tool printed

FLEET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Fleet
name: bench
defaults: {socket_name: fleet-bench-ingest, runtime: claude, model: opus}
runtimes:
  claude: {adapter: claude, ladder: [opus, sonnet]}
  codex: {adapter: codex, ladder: [gpt-5.5, gpt-5.4-mini]}
"""
ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: bench
host: bench-host
agents:
  - {{name: orchestrator, role: orchestrator, workdir: /srv/orch, env: {{CLAUDE_CONFIG_DIR: "{claude}"}}}}
  - {{name: enhancer, role: enhancer, runtime: codex, workdir: /srv/enh, env: {{CODEX_HOME: "{codex}"}}}}
"""
BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: bench
accounts:
  - {name: claude-max, provider: anthropic, runtime: claude, regime: subscription, window: 7d}
  - {name: codex-pro, provider: openai, runtime: codex, regime: subscription, window: 7d}
"""


def claude_turn(session: str, n: int) -> str:
    """A user turn with tool output, then an assistant message streamed as two lines."""
    user = {"parentUuid": f"a-{n - 1}", "isSidechain": False, "userType": "external", "cwd": "/srv/orch",
            "sessionId": session, "version": "2.1.328", "type": "user", "uuid": f"u-{n}",
            "timestamp": "2026-11-25T11:00:00.000Z",
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t-{n}",
                                                     "content": TOOL_OUTPUT}]}}
    usage = {"input_tokens": 4, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 15000 + n,
             "output_tokens": 250, "service_tier": "standard"}
    lines = [json.dumps(user)]
    for block in ("thinking", "text"):
        lines.append(json.dumps({
            "parentUuid": f"u-{n}", "isSidechain": False, "userType": "external", "cwd": "/srv/orch",
            "sessionId": session, "version": "2.1.328", "type": "assistant", "uuid": f"a-{n}-{block}",
            "requestId": f"req_{session[:8]}_{n}", "timestamp": "2026-11-25T11:00:03.000Z",
            "message": {"id": f"msg_{session[:8]}_{n}", "type": "message", "role": "assistant", "model": "claude-opus-4-1",
                        "content": [{"type": block, block: "Reading the handlers to find the slow path. " * 6}],
                        "stop_reason": None, "usage": usage}}))
    return "\n".join(lines) + "\n"


def codex_turn(n: int) -> str:
    """A function call, its output, the reply, and the token_count with rate limits."""
    items = [
        {"type": "response_item", "payload": {"type": "function_call", "name": "shell", "call_id": f"c-{n}",
                                              "arguments": json.dumps({"command": ["rg", "handler", "src"]})}},
        {"type": "response_item", "payload": {"type": "function_call_output", "call_id": f"c-{n}",
                                              "output": TOOL_OUTPUT}},
        {"type": "response_item", "payload": {"type": "message", "role": "assistant",
                                              "content": [{"type": "output_text", "text": "Found it. " * 40}]}},
        {"type": "event_msg", "payload": {
            "type": "token_count",
            "info": {"total_token_usage": {"input_tokens": 9000 * n, "cached_input_tokens": 8000 * n,
                                           "output_tokens": 300 * n, "total_tokens": 9300 * n}},
            "rate_limits": {"primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": 1795611600},
                            "secondary": {"used_percent": 38.5, "window_minutes": 10080, "resets_at": 1795996800}}}},
    ]
    return "".join(json.dumps({"timestamp": "2026-11-25T11:00:02.000Z", **item}) + "\n" for item in items)


def fill(path: Path, size: int, turn: Callable[[int], str], head: str = "") -> None:
    with path.open("w") as handle:
        handle.write(head)
        written, n = len(head), 1
        while written < size:
            text = turn(n)
            handle.write(text)
            written += len(text)
            n += 1


def generate(claude: Path, codex: Path, total_mb: int) -> int:
    """Half the history as Claude Code transcripts, half as Codex rollouts, FILE_MB each."""
    files = max(1, total_mb // FILE_MB // 2)
    for i in range(files):
        session = f"{i:08d}-0000-4000-8000-000000000000"
        project = claude / "projects" / "-srv-orch"
        project.mkdir(parents=True, exist_ok=True)
        fill(project / f"{session}.jsonl", FILE_MB << 20, lambda n, s=session: claude_turn(s, n))
        day = codex / "sessions" / "2026" / "11" / f"{1 + i % 28:02d}"
        day.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"timestamp": "2026-11-25T11:00:00Z", "type": "session_meta",
                           "payload": {"id": f"codex-{i}", "cwd": "/srv/enh"}}) + "\n"
        meta += json.dumps({"timestamp": "2026-11-25T11:00:01Z", "type": "turn_context",
                            "payload": {"model": "gpt-5.5", "cwd": "/srv/enh"}}) + "\n"
        fill(day / f"rollout-2026-11-25T11-00-00-codex-{i}.jsonl", FILE_MB << 20, codex_turn, meta)
    return sum(p.stat().st_size for p in (*claude.rglob("*.jsonl"), *codex.rglob("*.jsonl")))


def fleet_at(root: Path, history_mb: int) -> tuple[TickInputs, int, Path, Path]:
    claude, codex, repo = root / "claude", root / "codex", root / "repo"
    for folder in (claude / "projects", codex / "sessions", repo / "tenants" / "bench"):
        folder.mkdir(parents=True)
    (repo / "fleet.yaml").write_text(FLEET)
    (repo / "tenants" / "bench" / "roster.yaml").write_text(ROSTER.format(claude=claude, codex=codex))
    (repo / "tenants" / "bench" / "budget.yaml").write_text(BUDGET)
    size = generate(claude, codex, history_mb) if history_mb else 0
    return TickInputs(repo=repo, host="bench-host", state_dir=root / "state"), size, claude, codex


def append_turns(claude: Path, codex: Path, n: int) -> None:
    """What agents write between two ticks: a turn appended to five files of each runtime."""
    for path in sorted(claude.rglob("*.jsonl"))[:5]:
        with path.open("a") as handle:
            handle.write(claude_turn(path.stem, 100000 + n))
    for path in sorted(codex.rglob("*.jsonl"))[:5]:
        with path.open("a") as handle:
            handle.write(codex_turn(100000 + n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="where the history is generated (a temp dir in it)")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-ingest-", dir=options.dir))
    try:
        started = time.perf_counter()
        empty, _, _, _ = fleet_at(root / "none", 0)
        full, size, claude, codex = fleet_at(root / "full", options.size_mb)
        print(f"generated {size / 2**20:.0f} MB of history in {time.perf_counter() - started:.1f} s; "
              f"median of {options.runs} ticks")
        print(f"{'tick (plan_tick, applying ingest)':<44} {'no history':>12} {f'{size / 2**30:.2f} GB':>12}")

        def tick(inputs: TickInputs) -> Callable[[], object]:
            def run() -> None:
                result = plan_tick(inputs)
                assert not [p for p in result.problems if "ingest" in p or "cannot read" in p], result.problems
            return run

        first = [median_seconds(tick(x), 1)[0] for x in (empty, full)]
        print(f"{'first tick (reads everything once)':<44} {first[0] * 1000:>10.1f}ms {first[1] * 1000:>10.1f}ms")
        steady = [median_seconds(tick(x), options.runs)[0] for x in (empty, full)]
        print(f"{'next ticks, nothing new':<44} {steady[0] * 1000:>10.1f}ms {steady[1] * 1000:>10.1f}ms")
        grown = []
        for inputs, homes in ((empty, None), (full, (claude, codex))):
            samples = []
            for n in range(options.runs):
                if homes:
                    append_turns(*homes, n)
                start = time.perf_counter()
                tick(inputs)()
                samples.append(time.perf_counter() - start)
            grown.append(statistics.median(samples))
        print(f"{'next ticks, a turn appended to 10 files':<44} {grown[0] * 1000:>10.1f}ms {grown[1] * 1000:>10.1f}ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
