"""The state directory's layout: the one place that spells where each state file lives.

Every reader and writer of the state directory (the observe step, apply, the ingesters,
the locks, the status-line hook, the stub agent) asks a `StateLayout` for its path, so
the layout can change in one place and `ENTRIES` can be checked against docs/guide.md.
It imports only the standard library: the stdlib-only hook and stub agent use it too.
It does no I/O; it only builds paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

#: The variable naming the state directory, in the reconciler's environment and in every agent's pane.
STATE_DIR_ENV = "FLEET_STATE_DIR"


@dataclass(frozen=True, slots=True)
class Entry:
    """One kind of file in the state directory: its `StateLayout` method, its path
    pattern relative to the root (placeholders in <angle brackets>) and what it is for."""

    method: str
    pattern: str
    what: str


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Paths under one state directory (`--state-dir`, `$FLEET_STATE_DIR`, or the XDG default).

    >>> layout = StateLayout(Path("/s"))
    >>> str(layout.heartbeat("jarvis", "coder0-0")), str(layout.run_lock())
    ('/s/jarvis/heartbeats/coder0-0.json', '/s/reconcile.lock')
    """

    root: Path

    #: Every file the fleet keeps, in the order docs/guide.md lists them.
    ENTRIES: ClassVar[tuple[Entry, ...]] = (
        Entry("heartbeat", "<tenant>/heartbeats/<agent>.json", "written by agents (docs/heartbeat-protocol.md)"),
        Entry("restarts", "<tenant>/restarts.json", "restart history behind backoff and Stalled"),
        Entry("resumes", "<tenant>/resumes.json", "resume messages typed to agents held by a usage limit (ids, times)"),
        Entry("budget_memory", "<tenant>/budget.json", "the budget policy's memory: rungs, model changes, queues"),
        Entry("usage_record", "<tenant>/usage/<account>.json", "an account's usage (set-usage, ingest)"),
        Entry("statusline_record", "<tenant>/statusline/<agent>.json", "rate limits saved by the Claude status-line hook"),
        Entry("ledger", "<tenant>/ledger.jsonl", "the spend ledger, append-only"),
        Entry("ledger_fold", "<tenant>/ledger.fold.json", "how far the ledger was read, and its sums (a cache)"),
        Entry("ingest_cursors", "<tenant>/ingest/cursors.json", "how far each runtime usage file was read, and its sums"),
        Entry("ingest_keys", "<tenant>/ingest/claude-keys", "Claude messages already counted, append-only"),
        Entry("audit", "<tenant>/audit.jsonl", "the audit log: one line per act on an agent"),
        Entry("conversation", "<tenant>/conversations/<agent>", "a Claude agent's conversation id, resumed on a restart"),
        Entry("outbox", "<tenant>/outbox/<agent>.json", "ids and times of the messages `fleet agent send` typed (no text)"),
        Entry("outbox_lock", "<tenant>/outbox/<agent>.lock", "held by `fleet agent send` while it checks and types"),
        Entry("lanes", "<tenant>/lanes.json", "lane memory: each worker's last activity, which worker holds which task"),
        Entry("task_report", "<tenant>/reports/<agent>.json", "an agent's reports on its tasks (`fleet task done|blocked`)"),
        Entry("task_reopens", "<tenant>/reports/_reopened.json", "people's reopens of reported tasks (`fleet task reopen`)"),
        Entry("brief", "<tenant>/briefs/<task>.md", "the brief of a lane task, as its worker was told to read it"),
        Entry("worktree", "<tenant>/worktrees/<agent>", "a lane worker's own git worktree (`worktree:`), removed when it retires"),
        Entry("lock", "<tenant>/lock", "the tenant lock (holder pid, host, since)"),
        Entry("run_lock", "reconcile.lock", "held by an applying reconcile or down, observation to write-back"),
        Entry("register_digest", "_register/digest.json", "what this host last wrote to the register (docs/register.md)"),
        Entry("register_spool", "_register/spool.jsonl", "batches the register could not take yet, replayed in order"),
    )

    def tenant(self, tenant: str) -> Path:
        """One tenant's folder: everything but the run lock lives in one."""
        return self.root / tenant

    def heartbeats(self, tenant: str) -> Path:
        return self.tenant(tenant) / "heartbeats"

    def heartbeat(self, tenant: str, agent: str) -> Path:
        return self.heartbeats(tenant) / f"{agent}.json"

    def usage(self, tenant: str) -> Path:
        return self.tenant(tenant) / "usage"

    def usage_record(self, tenant: str, account: str) -> Path:
        return self.usage(tenant) / f"{account}.json"

    def statusline(self, tenant: str) -> Path:
        return self.tenant(tenant) / "statusline"

    def statusline_record(self, tenant: str, agent: str) -> Path:
        return self.statusline(tenant) / f"{agent}.json"

    def restarts(self, tenant: str) -> Path:
        return self.tenant(tenant) / "restarts.json"

    def budget_memory(self, tenant: str) -> Path:
        return self.tenant(tenant) / "budget.json"

    def ledger(self, tenant: str) -> Path:
        return self.tenant(tenant) / "ledger.jsonl"

    def ledger_fold(self, tenant: str) -> Path:
        return self.tenant(tenant) / "ledger.fold.json"

    def ingest_cursors(self, tenant: str) -> Path:
        return self.tenant(tenant) / "ingest" / "cursors.json"

    def ingest_keys(self, tenant: str) -> Path:
        return self.tenant(tenant) / "ingest" / "claude-keys"

    def audit(self, tenant: str) -> Path:
        return self.tenant(tenant) / "audit.jsonl"

    def conversation(self, tenant: str, agent: str) -> Path:
        """The agent's conversation (session) id, one UUID: `--session-id`, then `--resume`."""
        return self.tenant(tenant) / "conversations" / agent

    def outbox(self, tenant: str, agent: str) -> Path:
        """The last messages `send` typed to the agent (core/messages.py): held until acked."""
        return self.tenant(tenant) / "outbox" / f"{agent}.json"

    def outbox_lock(self, tenant: str, agent: str) -> Path:
        """Held while one `send` checks the agent is idle and types: two sends never both type."""
        return self.tenant(tenant) / "outbox" / f"{agent}.lock"

    def resumes(self, tenant: str) -> Path:
        """Resume messages typed to agents held by a usage limit (core/resume.py)."""
        return self.tenant(tenant) / "resumes.json"

    def lanes(self, tenant: str) -> Path:
        return self.tenant(tenant) / "lanes.json"

    def task_reports(self, tenant: str) -> Path:
        return self.tenant(tenant) / "reports"

    def task_report(self, tenant: str, agent: str) -> Path:
        return self.task_reports(tenant) / f"{agent}.json"

    def task_reopens(self, tenant: str) -> Path:
        """Beside the agents' reports; `_` starts no fleet name, so it is no agent's file."""
        return self.task_report(tenant, "_reopened")

    def brief(self, tenant: str, task: str) -> Path:
        return self.tenant(tenant) / "briefs" / f"{task}.md"

    def worktree(self, tenant: str, agent: str) -> Path:
        """A lane worker's own git worktree (`worktree:` of its lane), its workdir for life."""
        return self.tenant(tenant) / "worktrees" / agent

    def lock(self, tenant: str) -> Path:
        return self.tenant(tenant) / "lock"

    def run_lock(self) -> Path:
        return self.root / "reconcile.lock"

    def register_digest(self) -> Path:
        return self.root / "_register" / "digest.json"

    def register_spool(self) -> Path:
        return self.root / "_register" / "spool.jsonl"
