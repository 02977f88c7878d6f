"""Traces, the driver: spans that cost nothing while off, and OpenTelemetry behind them when on.

The engine opens spans through `span` and `start` here; whether they go anywhere is
decided once per process by the standard `OTEL_*` variables (`traces_on`). While off,
every span is a shared no-op object and nothing of OpenTelemetry is imported (a test
holds that); when on, `otel.py` (the only module that imports it) builds a tracer
provider with a batching OTLP/HTTP (or console) exporter whose timeout is bounded, and
shuts it down at exit, so a one-shot run never hangs on an unreachable collector.
What the spans say is pure and lives in reconciler/core/traces.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

#: A span attribute's value, as OpenTelemetry takes it.
AttrValue = str | bool | int | float | Sequence[str]
#: Without OTEL_EXPORTER_OTLP_TIMEOUT, an export gives up after this many seconds: a
#: one-shot `fleet` run waits at most about this long at exit on an unreachable collector.
DEFAULT_TIMEOUT_S = 1.0


def traces_on(environ: Mapping[str, str]) -> bool:
    """Are traces asked for? Only by the standard variables; off when none is set.

    >>> traces_on({}), traces_on({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    (False, True)
    >>> traces_on({"OTEL_TRACES_EXPORTER": "console"}), traces_on({"OTEL_TRACES_EXPORTER": "none",
    ...     "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    (True, False)
    >>> traces_on({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    False
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def export_timeout(environ: Mapping[str, str]) -> float | None:
    """The exporter's timeout in seconds: None when a standard variable sets it (the
    exporter reads it), else DEFAULT_TIMEOUT_S instead of the SDK's 10 s.

    >>> export_timeout({}), export_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": "5000"})
    (1.0, None)
    """
    given = environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    return None if given else DEFAULT_TIMEOUT_S


class Span(Protocol):
    """One span as the engine sees it; the no-op one and OpenTelemetry's both fit."""

    @property
    def traceparent(self) -> str:
        """The W3C `traceparent` of this span ("" while traces are off)."""
        ...

    def set(self, attrs: Mapping[str, AttrValue]) -> None: ...

    def event(self, name: str, attrs: Mapping[str, AttrValue] | None = None) -> None: ...

    def fail(self, message: str) -> None: ...

    def end(self) -> None: ...


class Tracer(Protocol):
    def start(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> Span: ...

    def current(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> AbstractContextManager[Span]: ...


class _NoSpan:
    """The span of a process without traces: one shared object, every call does nothing."""

    __slots__ = ()
    traceparent = ""

    def set(self, attrs: Mapping[str, AttrValue]) -> None:
        return None

    def event(self, name: str, attrs: Mapping[str, AttrValue] | None = None) -> None:
        return None

    def fail(self, message: str) -> None:
        return None

    def end(self) -> None:
        return None


NO_SPAN = _NoSpan()


class _NoTracer:
    __slots__ = ()

    def start(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> Span:
        return NO_SPAN

    @contextmanager
    def current(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> Iterator[Span]:
        yield NO_SPAN


_NO_TRACER = _NoTracer()
_tracer: Tracer | None = None


def tracer() -> Tracer:
    """This process's tracer, decided on first use from the environment."""
    global _tracer  # noqa: PLW0603  (one provider per process, as OpenTelemetry has it)
    if _tracer is None:
        _tracer = _NO_TRACER
        if traces_on(os.environ):
            try:
                from reconciler.drivers.telemetry.otel import OtelTracer  # noqa: PLC0415  (only when on)
            except ImportError as exc:
                print(f"warning: OTEL_* asks for traces but OpenTelemetry is not installed ({exc}); "
                      "install mosaic-fleet[telemetry]. Running without traces", file=sys.stderr)
            else:
                _tracer = OtelTracer(os.environ, timeout=export_timeout(os.environ))
    return _tracer


def on() -> bool:
    """Are spans going anywhere in this process?"""
    return tracer() is not _NO_TRACER


def span(name: str, attrs: Mapping[str, AttrValue] | None = None, *,
         parent: str | None = None) -> AbstractContextManager[Span]:
    """A span around a block, made current so spans opened inside are its children; an
    exception ends it as an error. `parent`: a traceparent to continue (default: the
    current span, or else the TRACEPARENT this process was started with)."""
    return tracer().current(name, attrs or {}, parent)


def start(name: str, attrs: Mapping[str, AttrValue] | None = None) -> Span:
    """A child of the current span, not made current; the caller ends it. For work done
    in batches (apply's actions), where one block does not belong to one span."""
    return tracer().start(name, attrs or {}, None)
