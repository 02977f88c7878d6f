"""The apply step's action spans, and the trace context every started agent is handed.

engine/apply.py opens one span per action of a (tenant, socket) group before the group
runs and ends each with its outcome once tmux was read back: a group's kills and spawns
are batched into a few tmux invocations, so a span covers its group's work, not its own
slice of it. A start is dressed here with the pane variables of core/traces.py (its
spawn span's TRACEPARENT and FLEET_TRACEPARENT, where to send spans, Claude Code's own
telemetry); the launch's spec hash is left as it was, so switching traces on or off
restarts no agent. While traces are off this is a few no-op calls per group.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from reconciler.core.plan import Action
from reconciler.core.traces import FLEET_TRACEPARENT, action_attrs, pane_env, usage_attrs
from reconciler.drivers import telemetry
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import Heartbeat


class Done(Protocol):
    """An apply outcome as this module reads it (engine/apply.py's Outcome)."""

    @property
    def action(self) -> Action: ...

    @property
    def result(self) -> str: ...

    @property
    def detail(self) -> str: ...


class ActionSpans:
    """One open span per action of a group; `finish` ends them with the outcomes."""

    def __init__(self, actions: Sequence[Action], heartbeats: Mapping[tuple[str, str], Heartbeat]) -> None:
        self._spans: dict[tuple[str, str], telemetry.Span] = {}
        if not telemetry.on():
            return
        for action in actions:
            attrs = action_attrs(action)
            beat = heartbeats.get((action.tenant, action.agent))
            if beat is not None and action.kind.value != "spawn":  # what the session that ends had used
                attrs.update(usage_attrs(beat.usage))
                attrs["fleet.heartbeat.state"] = beat.state
            self._spans[(action.tenant, action.agent)] = telemetry.start(action.kind.value, attrs)

    def dress(self, launch: LaunchSpec) -> LaunchSpec:
        """`launch` with the pane variables of its action's span (as it is while off)."""
        span = self._spans.get((launch.tenant, launch.agent))
        if span is None:
            return launch
        extra = pane_env(os.environ, span.traceparent, tenant=launch.tenant, host=launch.host, agent=launch.agent,
                         adapter=launch.adapter)
        own = {k for k, _ in launch.env} - {"TRACEPARENT", FLEET_TRACEPARENT}  # the spec's `env:` wins
        extra = tuple((k, v) for k, v in extra if k not in own)
        names = {k for k, _ in extra}
        return replace(launch, env=(*((k, v) for k, v in launch.env if k not in names), *extra))

    def finish(self, outcomes: Iterable[Done]) -> None:
        """End each action's span with its result; a failure is the span's error."""
        for outcome in outcomes:
            span = self._spans.pop((outcome.action.tenant, outcome.action.agent), None)
            if span is None:
                continue
            span.set({"fleet.result": outcome.result, **({"fleet.detail": outcome.detail} if outcome.detail else {})})
            if outcome.result == "failed":
                span.fail(outcome.detail or "failed")
            span.end()

    def abandon(self, why: str) -> None:
        """End what is still open (the group raised): each span says it did not finish."""
        for span in self._spans.values():
            span.fail(why)
            span.end()
        self._spans.clear()
