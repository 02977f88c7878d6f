"""Typing the resume messages the tick planned (core/resume.py), after apply.

The records go to `$state/<tenant>/resumes.json` first, each resume's message id in
them, then each message is typed through `fleet agent send`'s path (one look: a run never
waits on an agent's turn; a held agent waits at its prompt, so it is ready), then its
record says when. A crash between the two types the same id again on the next run; a
failed or refused send is a problem line, never a failed run, and is typed again then.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from reconciler.core.resume import RESUME_TEXT, ResumeRecord, typed
from reconciler.engine import agent_verbs
from reconciler.engine.state import write_resumes
from reconciler.engine.tick import Tick
from reconciler.errors import UserError


def _by_tenant(tick: Tick) -> dict[str, dict[str, ResumeRecord]]:
    records: Mapping[tuple[str, str], ResumeRecord] = tick.resumes or {}
    out: dict[str, dict[str, ResumeRecord]] = {t: {} for t in tick.desired.tenants}
    for (tenant, agent), record in records.items():
        out.setdefault(tenant, {})[agent] = record
    return out


def deliver(tick: Tick) -> list[str]:
    """Record, type, record again; returns problem lines (the next run types those again)."""
    if tick.resumes is None:
        return []
    state = tick.inputs.state_dir
    tenants = _by_tenant(tick)
    problems: list[str] = []
    for tenant, records in sorted(tenants.items()):
        try:
            write_resumes(state, tenant, records)
        except OSError as exc:
            problems.append(f"could not record the resume messages of tenant {tenant} ({exc}); none is typed, "
                            "the next run tries again")
            tenants[tenant] = {}
    for r in tick.plan.resumes:
        records = tenants.get(r.tenant, {})
        if r.agent not in records:
            continue  # its record could not be written: typing it could type it twice
        tenant_spec = tick.desired.tenants.get(r.tenant)
        agent = tenant_spec.on_host(tick.desired.host).get(r.agent) if tenant_spec else None
        if agent is None:
            continue
        try:
            sent = agent_verbs.send(agent, RESUME_TEXT, agent_verbs.SendOptions(state_dir=state), msg_id=r.message)
        except UserError as exc:
            problems.append(f"{r.tenant}/{r.agent}: resume {r.message} not typed ({exc}); the next run types it again")
            continue
        if sent.status == agent_verbs.SendStatus.BUSY:
            problems.append(f"{r.tenant}/{r.agent}: resume {r.message} not typed ({sent.detail}); "
                            "the next run types it again")
            continue
        tenants[r.tenant] = typed(records, r.message, datetime.now(UTC))
        try:
            write_resumes(state, r.tenant, tenants[r.tenant])
        except OSError as exc:
            problems.append(f"could not record that resume {r.message} was typed ({exc}); the next run types it again")
    return problems
