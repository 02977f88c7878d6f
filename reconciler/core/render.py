"""Text the reconciler writes back: status YAML per host and tenant, and TASKS.md.

Text in, text out, deterministic: the same state renders the same bytes, so a run that
changed nothing commits nothing. TASKS.md is a projection of the specs and every
host's status files, so after a Git merge it is simply rendered again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from jinja2 import BytecodeCache, Environment, FileSystemBytecodeCache, PackageLoader, StrictUndefined
from jinja2.bccache import Bucket
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from reconciler.model.ledger import LearnedSpend, median_p90
from reconciler.model.status import (
    AccountStatus,
    AgentStatus,
    Condition,
    LaneStatus,
    LearnedHint,
    QueuedAgent,
    RunRecord,
    TaskSpend,
    TaskStatus,
    TenantStatus,
)
from reconciler.spec.models import Mission, Task
from reconciler.spec.repo import FleetRepo, TenantSpec

STATUS_HEADER = "# Written by `fleet reconcile`; do not edit: every run on this host rewrites it.\n"


def _yaml() -> YAML:
    # The C emitter and parser (ruamel.yaml.clib): a 100-agent status is ~40 KB of YAML,
    # which the pure-Python ones take about a second to write and read back.
    yaml = YAML(typ="safe", pure=False)
    yaml.default_flow_style = False
    yaml.width = 4096
    return yaml


def status_document(status: TenantStatus) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "fleet.mosaicstack.dev/v1",
        "kind": "Status",
        "tenant": status.tenant,
        "host": status.host,
        "revision": status.revision,
        "systemd": status.systemd,
        "agents": [
            {
                "name": a.name, "role": a.role, "alias": a.alias, "lifecycle": a.lifecycle,
                "model": {"desired": a.desired_model, "running": a.running_model},
                "health": a.health, "tokens": a.tokens,
                "conditions": [
                    {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message, "since": c.since}
                    for c in a.conditions
                ],
            }
            for a in status.agents
        ],
        "runs": [
            {"revision": r.revision, "at": r.at, "duration_ms": r.duration_ms, "actions": list(r.actions), "failed": r.failed}
            for r in status.runs
        ],
        "notes": list(status.notes),
    }
    if status.accounts or status.queue:  # only tenants with a budget.yaml
        doc["budget"] = {
            "accounts": [
                {"account": a.account, "runtime": a.runtime, "regime": a.regime, "state": a.state,
                 "used_pct": a.used_pct, "allowed_pct": a.allowed_pct, "reset": a.reset,
                 "projected_exhaustion": a.exhausts, "confidence": a.confidence, "source": a.source}
                for a in status.accounts
            ],
            "queue": [{"agent": q.agent, "account": q.account, "rule": q.rule, "until": q.until} for q in status.queue],
        }
    if status.lanes or status.tasks:  # only tenants with lanes on this host
        doc["lanes"] = [{"lane": v.lane, "desired": v.desired, "running": v.running, "open": v.open,
                         "queued": v.queued, "workers": list(v.workers), "reason": v.reason} for v in status.lanes]
        doc["tasks"] = [{"task": t.task, "lane": t.lane, "state": t.state, "agent": t.agent, "since": t.since,
                         "note": t.note} for t in status.tasks]
    if status.spend or status.learned:  # only hosts whose ledger names tasks
        doc["spend"] = {
            "tasks": [{"task": t.task, "agent": t.agent, "tokens": t.tokens} for t in status.spend],
            "learned": [{"role": h.role, "model": h.model, "median": h.median, "p90": h.p90} for h in status.learned],
        }
    return doc


def render_status(status: TenantStatus) -> str:
    """YAML in its JSON form (JSON is YAML 1.2), one key per line.

    Block-style YAML of a 100-agent status took ~55 ms to write and ~50 ms to read back
    with ruamel's C emitter and parser; this takes ~4 ms and ~0.5 ms, on every tick of
    every host. Any YAML reader still reads the file.
    """
    return STATUS_HEADER + json.dumps(status_document(status), indent=2, ensure_ascii=False) + "\n"


def status_json(text: str) -> Any:
    """A status file as fleet writes it (JSON under `#` comment lines) as plain data;
    ValueError when it is not that (no YAML here: see parse_status)."""
    # split("\n"), not splitlines(): U+0085 and U+2028 inside a JSON string are not line ends.
    return json.loads("\n".join(line for line in text.split("\n") if not line.startswith("#")))


def _load_status_text(text: str) -> Any:
    try:
        return status_json(text)
    except ValueError:
        pass
    try:
        return _yaml().load(text)  # written by an older version, or edited by hand
    except YAMLError as exc:  # the documented ValueError, whatever the parser raised
        raise ValueError(f"neither JSON nor YAML ({str(exc).splitlines()[0]})") from exc


def parse_status(text: str) -> TenantStatus:
    """A status file back into data, JSON or (written by hand, or by an older version) YAML;
    raises ValueError (or KeyError/TypeError) when malformed."""
    return status_from_document(_load_status_text(text))


def status_from_document(doc: Any) -> TenantStatus:
    """A status document already parsed into plain data; the errors of parse_status."""
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        raise ValueError("not a Status document")
    agents = tuple(
        AgentStatus(
            str(a["name"]), str(a["role"]), a.get("alias"), str(a["lifecycle"]),
            str(a["model"]["desired"]), a["model"].get("running"), str(a["health"]), int(a.get("tokens", 0)),
            tuple(Condition(str(c["type"]), str(c["status"]), str(c["reason"]), str(c["message"]), str(c.get("since", "")))
                  for c in a["conditions"]),
        )
        for a in doc.get("agents") or []
    )
    runs = tuple(
        RunRecord(str(r["revision"]), str(r["at"]), int(r["duration_ms"]), tuple(r["actions"]), int(r.get("failed", 0)))
        for r in doc.get("runs") or []
    )
    budget = doc.get("budget") or {}
    accounts = tuple(
        AccountStatus(str(a["account"]), str(a["runtime"]), str(a["regime"]), str(a["state"]), _opt_int(a.get("used_pct")),
                      _opt_int(a.get("allowed_pct")), _opt_str(a.get("reset")), _opt_str(a.get("projected_exhaustion")),
                      str(a.get("confidence") or ""), str(a.get("source") or ""))
        for a in budget.get("accounts") or []
    )
    queue = tuple(QueuedAgent(str(q["agent"]), _opt_str(q.get("account")), str(q["rule"]), _opt_str(q.get("until")))
                  for q in budget.get("queue") or [])
    spend_doc = doc.get("spend") or {}
    spend = tuple(TaskSpend(str(t["task"]), str(t["agent"]), int(t["tokens"])) for t in spend_doc.get("tasks") or [])
    learned = tuple(LearnedHint(str(h["role"]), str(h["model"]), int(h["median"]), int(h["p90"]))
                    for h in spend_doc.get("learned") or [])
    lanes = tuple(LaneStatus(str(v["lane"]), int(v["desired"]), int(v["running"]), int(v["open"]), int(v["queued"]),
                             tuple(str(w) for w in v.get("workers") or ()), str(v.get("reason", "")))
                  for v in doc.get("lanes") or [])
    tasks = tuple(TaskStatus(str(t["task"]), str(t.get("lane") or ""), str(t["state"]), _opt_str(t.get("agent")),
                             _opt_str(t.get("since")), str(t.get("note") or ""))
                  for t in doc.get("tasks") or [])
    return TenantStatus(str(doc["tenant"]), str(doc["host"]), str(doc["revision"]), str(doc.get("systemd", "")),
                        agents, runs, tuple(doc.get("notes") or ()), accounts, queue, spend, learned, lanes, tasks)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _AgentRow:
    name: str
    role: str
    alias: str | None
    host: str
    health: str
    model: str
    tokens: int


@dataclass(frozen=True, slots=True)
class _Joined:
    """What every host's status says, keyed by tenant: the data of TASKS.md and MISSION-MANIFEST.md."""

    by_agent: dict[tuple[str, str], tuple[str, AgentStatus]]
    accounts: dict[str, dict[str, AccountStatus]]
    queues: dict[str, dict[str, QueuedAgent]]
    task_tokens: dict[tuple[str, str], int]
    lanes: dict[str, list[tuple[str, LaneStatus]]]
    views: dict[tuple[str, str], TaskStatus]


def _join(statuses: Iterable[TenantStatus]) -> _Joined:
    joined = _Joined({}, {}, {}, {}, {}, {})
    for status in sorted(statuses, key=lambda s: (s.tenant, s.host)):
        for reported in status.agents:
            joined.by_agent[(status.tenant, reported.name)] = (status.host, reported)
        for account in status.accounts:  # every host sees the same signals: the first one says it
            joined.accounts.setdefault(status.tenant, {}).setdefault(account.account, account)
        for queued in status.queue:
            joined.queues.setdefault(status.tenant, {})[queued.agent] = queued
        for spent in status.spend:  # each host's ledger holds its own spend: the hosts and agents add up
            key = (status.tenant, spent.task)
            joined.task_tokens[key] = joined.task_tokens.get(key, 0) + spent.tokens
        joined.lanes.setdefault(status.tenant, []).extend((status.host, lane) for lane in status.lanes)
        for view in status.tasks:  # a lane runs on one host: its status says it
            joined.views.setdefault((status.tenant, view.task), view)
    return joined


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One task as TASKS.md and MISSION-MANIFEST.md show it."""

    id: str
    title: str
    lane: str
    state: str  # the fleet's view (queued, working, blocked, ...) or the state people set
    since: str | None
    agent: str
    urgency: str
    projected: int | None
    actual: int | None  # tokens spent on it, every agent and host
    learned: LearnedSpend | None  # finished tasks of its lane (or of the tenant, for a task without a lane)
    note: str

    @property
    def over(self) -> bool:
        """It has cost more than it was projected to."""
        return self.projected is not None and self.actual is not None and self.actual > self.projected

    def cells(self) -> dict[str, str]:
        actual = _n(self.actual)
        if self.over and self.projected:
            actual += f" (over by {(self.actual or 0) * 100 // self.projected - 100}%)"
        state = f"{self.state} since {self.since}" if self.since else self.state
        learned = "" if self.learned is None else f"{int(self.learned.median):,} / {int(self.learned.p90):,}"
        return {"id": self.id, "title": self.title, "lane": self.lane, "state": state, "agent": self.agent,
                "urgency": self.urgency, "projected": _n(self.projected), "actual": actual, "learned": learned,
                "note": self.note}


def task_rows(name: str, spec: TenantSpec, joined: _Joined) -> list[tuple[Mission, list[TaskRow]]]:
    """Each mission of the tenant with its tasks' rows, learned spend included."""
    rows = [(m, [_row(name, t, joined) for t in m.tasks]) for m in (spec.tasks.missions if spec.tasks else [])]
    finished: dict[str, list[int]] = {}
    for _, tasks in rows:
        for row in tasks:
            if row.state == "done" and row.actual:
                finished.setdefault(row.lane, []).append(row.actual)
    every = sorted(v for values in finished.values() for v in values)
    return [(m, [replace(r, learned=_learned(finished.get(r.lane) if r.lane else every)) for r in tasks])
            for m, tasks in rows]


def _learned(values: list[int] | None) -> LearnedSpend | None:
    return median_p90(values) if values else None


def _row(tenant: str, task: Task, joined: _Joined) -> TaskRow:
    view = joined.views.get((tenant, task.id))
    state, since = (view.state, view.since) if view is not None else (task.state, None)
    return TaskRow(task.id, task.title, task.lane or "", state, since, _task_agent(task.agent, view), task.urgency,
                   task.projected_tokens, joined.task_tokens.get((tenant, task.id)), None, view.note if view else "")


def render_tasks(repo: FleetRepo, statuses: Iterable[TenantStatus], revision: str) -> str:
    """TASKS.md for every valid tenant, joining tasks.yaml with every host's status."""
    joined = _join(statuses)
    tenants = []
    for name, spec in sorted(repo.tenants.items()):
        rows = []
        for agent in spec.roster.agents:
            found = joined.by_agent.get((name, agent.name))
            host, st = found if found else (agent.host or spec.roster.host, None)
            rows.append(_AgentRow(
                agent.name, agent.role, agent.alias, host,
                st.health if st else "unreported", (st.running_model or st.desired_model) if st else "",
                st.tokens if st else 0,
            ))
        for worker in (w for names in spec.roster.lane_workers().values() for w in names):
            if (found := joined.by_agent.get((name, worker))) is not None:  # a lane's worker that runs now
                host, st = found
                rows.append(_AgentRow(worker, st.role, st.alias, host, st.health, st.running_model or st.desired_model,
                                      st.tokens))
        missions = [{"id": m.id, "title": m.title, "tasks": [r.cells() for r in tasks]}
                    for m, tasks in task_rows(name, spec, joined)]
        tenants.append({
            "name": name, "agents": rows, "missions": missions,
            "accounts": [_account_row(a) for _, a in sorted(joined.accounts.get(name, {}).items())],
            "queue": [_queue_row(q) for _, q in sorted(joined.queues.get(name, {}).items())],
            "lanes": [{"lane": v.lane, "host": host, "workers": ", ".join(v.workers) or "none",
                       "counts": f"{v.running} / {v.desired}", "open": v.open, "queued": v.queued, "why": v.reason}
                      for host, v in sorted(joined.lanes.get(name, []), key=lambda hv: (hv[1].lane, hv[0]))],
        })
    return _env().get_template("TASKS.md.j2").render(tenants=tenants, revision=revision)


#: The fleet views of a task that is being worked on.
_AT_WORK = frozenset({"assigned", "working"})


def render_manifest(repo: FleetRepo, statuses: Iterable[TenantStatus], revision: str) -> str:
    """MISSION-MANIFEST.md: per mission its tasks done of all, projected against actual
    spend, the lanes and agents at work on it and its blocked tasks with their notes;
    from the same data as TASKS.md, so deterministic in the same way."""
    joined = _join(statuses)
    tenants = []
    for name, spec in sorted(repo.tenants.items()):
        missions = []
        for mission, rows in task_rows(name, spec, joined):
            counted = [r for r in rows if r.state != "cancelled"]
            working = [r for r in counted if r.state in _AT_WORK or (not r.lane and r.state == "open" and r.agent)]
            projected = [r.projected for r in counted if r.projected is not None]
            over = [r.id for r in rows if r.over]
            missions.append({
                "id": mission.id, "title": mission.title,
                "done": sum(1 for r in counted if r.state == "done"), "total": len(counted),
                "cancelled": len(rows) - len(counted),
                "projected": _n(sum(projected)) if projected else "not projected",
                "actual": _n(sum(r.actual or 0 for r in rows)),
                "over": ", ".join(over),
                "lanes": ", ".join(sorted({r.lane for r in working if r.lane})) or "none",
                "agents": ", ".join(sorted({r.agent for r in working if r.agent})) or "none",
                "blocked": [{"id": r.id, "title": r.title, "agent": r.agent, "note": r.note or "(no note)"}
                            for r in rows if r.state == "blocked"],
            })
        tenants.append({"name": name, "missions": missions})
    return _env().get_template("MISSION-MANIFEST.md.j2").render(tenants=tenants, revision=revision)


def _task_agent(named: str | None, view: TaskStatus | None) -> str:
    return named or (view.agent if view is not None and view.agent else "")


def _account_row(a: AccountStatus) -> dict[str, str]:
    def pct(v: int | None) -> str:
        return "" if v is None else f"{v}%"

    return {"account": a.account, "runtime": a.runtime, "state": a.state, "used": pct(a.used_pct),
            "allowed": pct(a.allowed_pct), "reset": a.reset or "unknown",
            "exhausts": a.exhausts or ("not before the reset" if a.used_pct is not None and a.reset else "unknown"),
            "signal": f"{a.confidence} ({a.source})" if a.source else "none"}


def _queue_row(q: QueuedAgent) -> dict[str, str]:
    if q.until:
        until = q.until
    else:
        until = "a concurrency slot frees" if q.rule == "concurrency" else f"account {q.account} is back under pace"
    return {"agent": q.agent, "account": q.account or "", "rule": q.rule, "until": until}


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


@cache
def _env() -> Environment:
    """One environment per process, which keeps each template it compiled (a resident loop
    compiles TASKS.md.j2 once); a one-shot run loads them compiled from _CompiledTemplates."""
    return Environment(
        loader=PackageLoader("reconciler", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=markdown_cell,
        bytecode_cache=_compiled_templates(),
    )


class _CompiledTemplates(FileSystemBytecodeCache):
    """jinja's own cache of compiled templates, in a directory of the temp directory that
    only this user may use (jinja checks its owner and mode), like __pycache__ for modules.

    Compiling TASKS.md.j2 and MISSION-MANIFEST.md.j2 takes ~10 ms, which every one-shot
    `fleet reconcile` paid; loading them compiled takes ~0.1 ms. An entry is used only
    when its template's source is the one it was compiled from; a cache that cannot be
    read or written is passed over (the template is compiled), never an error."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # whatever a damaged entry makes pickle or marshal raise: compile instead
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        with suppress(OSError):  # a full or read-only temp directory: compiled again next run
            super().dump_bytecode(bucket)


def _compiled_templates() -> BytecodeCache | None:
    try:
        return _CompiledTemplates()
    except (OSError, RuntimeError):  # no private temp directory to be had (jinja raises RuntimeError)
        return None


def markdown_cell(value: object) -> str:
    r"""Every value TASKS.md shows sits in a table cell: a `|` in a title must not add a column.

    >>> print(markdown_cell("x | y"), markdown_cell("a\\b"), repr(markdown_cell(None)), markdown_cell(3))
    x \| y a\\b '' 3
    """
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|")



def render_brief(tenant: str, agent: str, lane: str, mission: Mission, task: Task, *,
                 branch: str | None = None, worktree: str | None = None) -> str:
    """The brief a worker is given for `task` (templates/brief.md.j2): plain text, not a table.
    `branch`, `worktree`: the task's branch, checked out in the worker's own worktree."""
    projected = f"{task.projected_tokens:,} tokens" if task.projected_tokens is not None else "not projected"
    env = Environment(loader=PackageLoader("reconciler", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)
    return env.get_template("brief.md.j2").render(tenant=tenant, agent=agent, lane=lane, mission=mission, task=task,
                                                  projected=projected, branch=branch, worktree=worktree)
