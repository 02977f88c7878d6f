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

from reconciler.model.status import AgentStatus, Condition, RunRecord, TenantStatus
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
    return {
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


def render_status(status: TenantStatus) -> str:
    """YAML in its JSON form (JSON is YAML 1.2), one key per line.

    Block-style YAML of a 100-agent status took ~55 ms to write and ~50 ms to read back
    with ruamel's C emitter and parser; this takes ~4 ms and ~0.5 ms, on every tick of
    every host. Any YAML reader still reads the file.
    """
    return STATUS_HEADER + json.dumps(status_document(status), indent=2, ensure_ascii=False) + "\n"


def _load_status_text(text: str) -> Any:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    try:
        return json.loads(body)
    except ValueError:
        return _yaml().load(text)  # written by an older version, or edited by hand


def parse_status(text: str) -> TenantStatus:
    """A status file back into data; raises ValueError (or KeyError/TypeError) when malformed."""
    doc = _load_status_text(text)
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
    return TenantStatus(str(doc["tenant"]), str(doc["host"]), str(doc["revision"]), str(doc.get("systemd", "")),
                        agents, runs, tuple(doc.get("notes") or ()))


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
    for status in sorted(statuses, key=lambda s: (s.tenant, s.host)):
        for reported in status.agents:
            by_agent[(status.tenant, reported.name)] = (status.host, reported)
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
        tokens = {r.name: r.tokens for r in rows}
        missions = [
            {
                "id": m.id, "title": m.title,
                "tasks": [
                    {"id": t.id, "title": t.title, "agent": t.agent, "urgency": t.urgency,
                     "projected": _n(t.projected_tokens), "actual": _n(tokens.get(t.agent or "")) if t.agent else ""}
                    for t in m.tasks
                ],
            }
            for m in (spec.tasks.missions if spec.tasks else [])
        ]
        tenants.append({"name": name, "agents": rows, "missions": missions})
    return _env().get_template("TASKS.md.j2").render(tenants=tenants, revision=revision)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("reconciler", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )

