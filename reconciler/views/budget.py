"""Budget reports as people and scripts read them: usage records, ingests, and each
account's pace (`fleet budget set-usage|ingest|show`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from reconciler.drivers.usage import iso_z, render_usage
from reconciler.model.usage import UsageSignal
from reconciler.spec.models import format_duration

if TYPE_CHECKING:
    from reconciler.core.budget_view import AccountView
    from reconciler.engine.ingest import IngestReport


def describe(signal: UsageSignal) -> str:
    if signal.used_fraction is not None:
        what = f"used {signal.used_fraction:.0%}"
        if signal.window is not None:
            what += f" of its {format_duration(signal.window)} window"
    else:
        what = f"spent ${signal.spent_usd:,.2f}"
    if signal.reset_at is not None:
        what += f", resets {iso_z(signal.reset_at)}"
    return f"{what} ({signal.confidence}, from {signal.source}, observed {iso_z(signal.observed_at)})"



def report_lines(report: IngestReport) -> list[str]:
    """What an ingest did, per tenant: the records it wrote or kept, the spend it booked."""
    lines = []
    for result in report.tenants:
        for outcome in result.signals:
            s = outcome.signal
            lines.append(f"{result.tenant}/{s.account}: {describe(s)} [{outcome.status}]")
        tokens = sum(e.tokens for e in result.ledger)
        lines.append(f"{result.tenant}: ledger +{len(result.ledger)} entr{'y' if len(result.ledger) == 1 else 'ies'}"
                     f" ({tokens:,} tokens)")
        lines += [f"  note: {note}" for note in result.notes]
    return lines or ["no tenant to ingest"]


def report_json(report: IngestReport) -> dict[str, object]:
    return {"tenants": [
        {"tenant": r.tenant,
         "signals": [{"status": o.status, "record": json.loads(render_usage(o.signal))} for o in r.signals],
         "ledger_entries": len(r.ledger), "ledger_tokens": sum(e.tokens for e in r.ledger),
         "problems": list(r.problems), "notes": list(r.notes)}
        for r in report.tenants
    ]}




def account_rows(views: list[AccountView]) -> list[Any]:
    """`fleet budget show --output json`: one object per account."""
    return [
        {"tenant": v.tenant, "account": v.pace.account, "state": v.pace.state.value, "used": v.pace.used,
         "allowed": v.pace.allowed, "elapsed": v.pace.elapsed,
         "reset": v.pace.reset.isoformat() if v.pace.reset else None,
         "exhaustion": v.exhaustion.isoformat() if v.exhaustion else None, "next": list(v.next_steps)}
        for v in views
    ]
