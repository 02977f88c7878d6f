"""The OpenTelemetry side of traces: the only module that imports it (when traces are on).

One tracer provider per process, with a batching span processor, so spans leave in the
background while a resident loop runs; the provider is shut down at exit, flushing what
is left with one bounded export (`timeout`, 1 s unless OTEL_EXPORTER_OTLP_TIMEOUT says
otherwise). The exporter is OTLP over HTTP/protobuf, or the console when
OTEL_TRACES_EXPORTER=console; the sampler, batch sizes and resource come from the
standard variables, which the SDK reads itself.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from reconciler.drivers.telemetry import AttrValue

_PROPAGATOR = TraceContextTextMapPropagator()


class OtelSpan:
    """An SDK span behind the driver's Span protocol."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def traceparent(self) -> str:
        ctx = self._span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}" if ctx.is_valid else ""

    def set(self, attrs: Mapping[str, AttrValue]) -> None:
        self._span.set_attributes(attrs)

    def event(self, name: str, attrs: Mapping[str, AttrValue] | None = None) -> None:
        self._span.add_event(name, attrs or {})

    def fail(self, message: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))

    def end(self) -> None:
        self._span.end()


class OtelTracer:
    """The process's provider and tracer; `environ` is read once, here."""

    def __init__(self, environ: Mapping[str, str], timeout: float | None, exporter: SpanExporter | None = None) -> None:
        attrs: dict[str, str] = {SERVICE_VERSION: _version()}
        if not environ.get("OTEL_SERVICE_NAME"):
            attrs[SERVICE_NAME] = "mosaic-fleet"
        self._provider = TracerProvider(resource=Resource.create(attrs))
        self._provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(environ, timeout)))
        self._tracer = self._provider.get_tracer("reconciler", _version())
        self._incoming = environ.get("TRACEPARENT", "")
        atexit.register(self._provider.shutdown)

    def flush(self) -> None:
        """Send what is batched now (tests read an in-memory exporter after it)."""
        self._provider.force_flush()

    def _context(self, parent: str | None) -> Context | None:
        """The parent: `parent` if given, else the current span, else the TRACEPARENT this
        process was started with (a CI job's, or the agent's whose pane runs `fleet`)."""
        if not parent and not trace.get_current_span().get_span_context().is_valid:
            parent = self._incoming
        return _PROPAGATOR.extract({"traceparent": parent}) if parent else None

    def start(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> OtelSpan:
        return OtelSpan(self._tracer.start_span(name, context=self._context(parent), attributes=attrs))

    @contextmanager
    def current(self, name: str, attrs: Mapping[str, AttrValue], parent: str | None) -> Iterator[OtelSpan]:
        with self._tracer.start_as_current_span(name, context=self._context(parent), attributes=attrs) as span:
            yield OtelSpan(span)


def _exporter(environ: Mapping[str, str], timeout: float | None) -> SpanExporter:
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter(timeout=timeout)


def _version() -> str:
    try:
        return version("mosaic-fleet")
    except PackageNotFoundError:
        return "unknown"
