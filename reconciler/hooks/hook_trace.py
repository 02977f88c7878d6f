"""`fleet-hook`'s heartbeat spans: a state change of an agent, in the trace of the run that started it.

Imported by reconciler/hooks/fleet_hook.py only when a call changed the heartbeat's
`state` (idle, working, waiting) and the pane holds FLEET_TRACEPARENT, the context the
apply step handed the agent (Claude Code overwrites TRACEPARENT for its children, so the
fleet's own name carries it). Each change is one short `heartbeat` span, a child of the
agent's spawn or restart span, with a `heartbeat.state` event; with traces off in the
pane (no OTEL_* variables) nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.drivers import telemetry


def trace_state(record: Mapping[str, object], previous: object, env: Mapping[str, str]) -> None:
    """One `heartbeat` span for the change from `previous` to `record["state"]`."""
    if not telemetry.on():
        return
    from reconciler.core.traces import agent_attrs, usage_attrs  # noqa: PLC0415  (only when traces are on)

    usage = record.get("usage")
    attrs: dict[str, telemetry.AttrValue] = {
        **agent_attrs(str(record["tenant"]), str(record["host"]), str(record["agent"]), str(record.get("model") or "")),
        **usage_attrs({k: v for k, v in usage.items() if isinstance(v, int)} if isinstance(usage, dict) else {}),
        "fleet.heartbeat.state": str(record["state"]),
    }
    event: dict[str, telemetry.AttrValue] = {
        "fleet.heartbeat.state": str(record["state"]), "fleet.heartbeat.previous": str(previous or ""),
        "fleet.heartbeat.event": str(record.get("event") or ""), "fleet.heartbeat.seq": int(str(record.get("seq") or 0)),
    }
    with telemetry.span("heartbeat", attrs, parent=env.get("FLEET_TRACEPARENT")) as span:
        span.event("heartbeat.state", event)
