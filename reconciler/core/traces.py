"""What the traces say, pure: span attributes, and a started agent's pane variables.

The engine hands these to the telemetry driver (reconciler/drivers/telemetry/) and to
the apply step. Nothing here imports OpenTelemetry: the attributes are plain dicts, the
pane variables plain pairs. Attribute names follow OpenTelemetry's GenAI semantic conventions where one fits
(`gen_ai.agent.name`, `gen_ai.request.model`, `gen_ai.usage.*_tokens`) and say
`fleet.*` for what is the fleet's own (tenant, host, rule, reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from reconciler.core.plan import Action

#: A span attribute's value, as OpenTelemetry takes it.
AttrValue = str | bool | int | float | Sequence[str]
Attrs = dict[str, AttrValue]

#: The run's trace context for the fleet's own hook: Claude Code overwrites TRACEPARENT
#: for its children, so `fleet-hook` reads this one (docs/surfaces.md, "Traces").
FLEET_TRACEPARENT = "FLEET_TRACEPARENT"
#: What the hook in an agent's pane needs to send its heartbeat spans where the run's went.
PASSED_ON = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
             "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")
class _RunLike(Protocol):
    @property
    def down(self) -> bool: ...

    @property
    def dry_run(self) -> bool: ...


def scope_attrs(host: str, tenants: Iterable[str]) -> Attrs:
    """A run's or a phase's attributes: the host and the tenants in scope (one: `fleet.tenant`).

    >>> scope_attrs("w1", ["b", "a"])
    {'fleet.host': 'w1', 'fleet.tenants': ['a', 'b']}
    >>> scope_attrs("w1", ["a"])
    {'fleet.host': 'w1', 'fleet.tenants': ['a'], 'fleet.tenant': 'a'}
    """
    names = sorted(tenants)
    out: Attrs = {"fleet.host": host, "fleet.tenants": names}
    if len(names) == 1:
        out["fleet.tenant"] = names[0]
    return out


def run_name(request: _RunLike) -> str:
    """The run span's name: the verb it runs (a low-cardinality name, as OpenTelemetry asks)."""
    if request.down:
        return "fleet down"
    return "fleet reconcile --dry-run" if request.dry_run else "fleet reconcile"


def run_attrs(tenants: Iterable[str], host: str, counts: Mapping[str, int], exit_code: int) -> Attrs:
    """What the run span says once it is over: scope, actions by kind, exit code.

    >>> run_attrs(["a"], "w1", {"spawn": 2, "stop": 0}, 0)["fleet.actions.spawn"]
    2
    """
    out = scope_attrs(host, tenants)
    out.update({f"fleet.actions.{kind}": n for kind, n in counts.items()})
    out["fleet.exit_code"] = exit_code
    return out


def agent_attrs(tenant: str, host: str, agent: str, model: str | None = None) -> Attrs:
    """One agent's attributes, with the GenAI names for the agent and its model.

    >>> agent_attrs("jarvis", "w1", "coder0", "opus")["gen_ai.request.model"]
    'opus'
    """
    out: Attrs = {"fleet.tenant": tenant, "fleet.host": host, "fleet.agent": agent, "gen_ai.agent.name": agent}
    if model:
        out["gen_ai.request.model"] = model
    return out


def action_attrs(action: Action) -> Attrs:
    """An action span's attributes: who, on which model, which rule fired and why."""
    out = agent_attrs(action.tenant, action.host, action.agent, action.model)
    out.update({"fleet.action": action.kind.value, "fleet.rule": action.reason.rule,
                "fleet.reason": action.reason.message, "fleet.socket": action.socket.label()})
    if action.reason.source:
        out["fleet.source"] = action.reason.source
    if action.launch is not None:
        out["fleet.spec_hash"] = action.launch.spec_hash
        if action.launch.adapter:
            out["fleet.runtime"] = action.launch.adapter
    return out


def usage_attrs(usage: Mapping[str, int]) -> Attrs:
    """Token totals as the GenAI usage attributes (the heartbeat's `usage` keys).

    >>> usage_attrs({"input_tokens": 1200, "output_tokens": 300, "other": 1})
    {'gen_ai.usage.input_tokens': 1200, 'gen_ai.usage.output_tokens': 300}
    """
    return {f"gen_ai.usage.{k}": v for k, v in usage.items() if k in ("input_tokens", "output_tokens")}


def resource_attributes(tenant: str, host: str, agent: str) -> str:
    """OTEL_RESOURCE_ATTRIBUTES for an agent's own telemetry (fleet names are [a-z0-9-],
    so nothing needs escaping).

    >>> resource_attributes("jarvis", "w1", "coder0")
    'fleet.tenant=jarvis,fleet.host=w1,fleet.agent=coder0,gen_ai.agent.name=coder0'
    """
    return f"fleet.tenant={tenant},fleet.host={host},fleet.agent={agent},gen_ai.agent.name={agent}"


def pane_env(environ: Mapping[str, str], traceparent: str, *, tenant: str, host: str, agent: str,
             adapter: str | None) -> tuple[tuple[str, str], ...]:
    """The variables a started agent gets while traces are on, added to its launch at apply
    time (never to the spec hash: switching traces on restarts nobody).

    The run's context as TRACEPARENT and, for `fleet-hook`, as FLEET_TRACEPARENT; where
    to send spans (the exporter's variables, never OTEL_EXPORTER_OTLP_HEADERS: credentials
    stay with the reconciler); and for Claude Code, its own telemetry to the same collector
    with tenant and agent as resource attributes.

    >>> env = dict(pane_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_HEADERS": "k=v"},
    ...                     "00-ab-cd-01", tenant="t", host="h", agent="a", adapter="claude"))
    >>> env["TRACEPARENT"] == env["FLEET_TRACEPARENT"] == "00-ab-cd-01", env["CLAUDE_CODE_ENABLE_TELEMETRY"]
    (True, '1')
    >>> "OTEL_EXPORTER_OTLP_HEADERS" in env, env["OTEL_EXPORTER_OTLP_PROTOCOL"]
    (False, 'http/protobuf')
    >>> "OTEL_TRACES_EXPORTER" in dict(pane_env({"OTEL_TRACES_EXPORTER": "console"}, "", tenant="t", host="h",
    ...                                         agent="a", adapter=None))
    False
    """
    env: dict[str, str] = {}
    if traceparent:
        env["TRACEPARENT"] = env[FLEET_TRACEPARENT] = traceparent
    env.update({k: environ[k] for k in PASSED_ON if environ.get(k)})
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        del env["OTEL_TRACES_EXPORTER"]  # a hook's standard output is its runtime's to read (the status line)
    env["OTEL_RESOURCE_ATTRIBUTES"] = resource_attributes(tenant, host, agent)
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if adapter == "claude" and endpoint:
        env.update({"CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_METRICS_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"})
        env.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    return tuple(sorted(env.items()))
