"""Text the reconciler writes back: status YAML per host and tenant, and TASKS.md.

Text in, text out, deterministic: the same state renders the same bytes, so a run that
changed nothing commits nothing. TASKS.md is a projection of the specs and every
host's status files, so after a Git merge it is simply rendered again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

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
from reconciler.spec.repo import FleetRepo

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


def render_tasks(repo: FleetRepo, statuses: Iterable[TenantStatus], revision: str) -> str:
    """TASKS.md for every valid tenant, joining tasks.yaml with every host's status."""
    by_agent: dict[tuple[str, str], tuple[str, AgentStatus]] = {}
    accounts: dict[str, dict[str, AccountStatus]] = {}
    queues: dict[str, dict[str, QueuedAgent]] = {}
    task_tokens: dict[tuple[str, str], int] = {}
    learned: dict[tuple[str, str, str], LearnedHint] = {}
    lanes: dict[str, list[tuple[str, LaneStatus]]] = {}
    views: dict[tuple[str, str], TaskStatus] = {}
    for status in sorted(statuses, key=lambda s: (s.tenant, s.host)):
        for reported in status.agents:
            by_agent[(status.tenant, reported.name)] = (status.host, reported)
        for account in status.accounts:  # every host sees the same signals: the first one says it
            accounts.setdefault(status.tenant, {}).setdefault(account.account, account)
        for queued in status.queue:
            queues.setdefault(status.tenant, {})[queued.agent] = queued
        for spent in status.spend:  # each host's ledger holds its own spend: the hosts add up
            key = (status.tenant, spent.task)
            task_tokens[key] = task_tokens.get(key, 0) + spent.tokens
        for hint in status.learned:  # medians do not add up: the first host (by name) says it
            learned.setdefault((status.tenant, hint.role, hint.model), hint)
        lanes.setdefault(status.tenant, []).extend((status.host, lane) for lane in status.lanes)
        for view in status.tasks:  # a lane runs on one host: its status says it
            views.setdefault((status.tenant, view.task), view)
    tenants = []
    for name, spec in sorted(repo.tenants.items()):
        rows = []
        for agent in spec.roster.agents:
            found = by_agent.get((name, agent.name))
            host, st = found if found else (agent.host or spec.roster.host, None)
            rows.append(_AgentRow(
                agent.name, agent.role, agent.alias, host,
                st.health if st else "unreported", (st.running_model or st.desired_model) if st else "",
                st.tokens if st else 0,
            ))
        for worker in (w for names in spec.roster.lane_workers().values() for w in names):
            if (found := by_agent.get((name, worker))) is not None:  # a lane's worker that runs now
                host, st = found
                rows.append(_AgentRow(worker, st.role, st.alias, host, st.health, st.running_model or st.desired_model,
                                      st.tokens))
        tokens = {r.name: r.tokens for r in rows}
        hint_of = {r.name: learned.get((name, r.role, r.model)) for r in rows}
        missions = [
            {
                "id": m.id, "title": m.title,
                "tasks": [
                    {"id": t.id, "title": t.title, "agent": _task_agent(t.agent, views.get((name, t.id))),
                     "lane": t.lane or "", "state": _task_state(t.state, views.get((name, t.id))),
                     "note": views[(name, t.id)].note if (name, t.id) in views else "", "urgency": t.urgency,
                     "projected": _n(t.projected_tokens), "spent": _n(task_tokens.get((name, t.id))),
                     "learned": _hint(hint_of.get(t.agent or "")),
                     "actual": _n(tokens.get(t.agent or "")) if t.agent else ""}
                    for t in m.tasks
                ],
            }
            for m in (spec.tasks.missions if spec.tasks else [])
        ]
        tenants.append({
            "name": name, "agents": rows, "missions": missions,
            "accounts": [_account_row(a) for _, a in sorted(accounts.get(name, {}).items())],
            "queue": [_queue_row(q) for _, q in sorted(queues.get(name, {}).items())],
            "lanes": [{"lane": v.lane, "host": host, "workers": ", ".join(v.workers) or "none",
                       "counts": f"{v.running} / {v.desired}", "open": v.open, "queued": v.queued, "why": v.reason}
                      for host, v in sorted(lanes.get(name, []), key=lambda hv: (hv[1].lane, hv[0]))],
        })
    return _env().get_template("TASKS.md.j2").render(tenants=tenants, revision=revision)


def _task_agent(named: str | None, view: TaskStatus | None) -> str:
    return named or (view.agent if view is not None and view.agent else "")


def _task_state(state: str, view: TaskStatus | None) -> str:
    """The fleet's view of a lane task (with since when), else the state people set."""
    if view is None:
        return state
    return f"{view.state} since {view.since}" if view.since else view.state


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


def _hint(hint: LearnedHint | None) -> str:
    return "" if hint is None else f"{hint.median:,} / {hint.p90:,} ({hint.model})"


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("reconciler", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=markdown_cell,
    )


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
