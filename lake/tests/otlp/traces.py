#!/usr/bin/env python3
"""Sends traces and an exponential histogram to a running lake with the OpenTelemetry
Python SDK over OTLP/HTTP (protobuf), for the end-to-end test `lake/tests/otlp.rs`.

Usage: traces.py <lake url> <node token>

Two services make one trace: an agent (resource host.name web-1) whose root span has
three children (an event on one, a link on another), and an LLM gateway (no host.name)
whose server span is the child of the agent's client span, fails with an error status
and records the exception. A histogram with the SDK's exponential bucket aggregation
records known latencies.

Exits 0 once every export was answered with success, 1 if one failed, 3 if the SDK is
not installed. Prints one JSON line: the trace id, each span's ids and times as the SDK
recorded them, the histogram's values and the scale the SDK chose.

Requires: pip install opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
"""

import json
import sys

PIP = "pip install opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2"

try:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ExponentialHistogram, MetricExportResult, PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as e:
    print(f"the OpenTelemetry Python SDK is missing ({e}); install it with: {PIP}", file=sys.stderr)
    sys.exit(3)

RESULTS = []
SPANS = {}
SCALES = []


class CheckedSpanExporter(OTLPSpanExporter):
    """Remembers whether each export succeeded and what each span was."""

    def export(self, spans):
        result = super().export(spans)
        RESULTS.append(("traces", len(spans), result == SpanExportResult.SUCCESS))
        for s in spans:
            SPANS[s.name] = {
                "span_id": format(s.context.span_id, "016x"),
                "parent": format(s.parent.span_id, "016x") if s.parent else None,
                "start": s.start_time,
                "end": s.end_time,
            }
        return result


class CheckedMetricExporter(OTLPMetricExporter):
    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        RESULTS.append(("metrics", 1, result == MetricExportResult.SUCCESS))
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if isinstance(m.data, ExponentialHistogram):
                        SCALES.extend(p.scale for p in m.data.data_points)
        return result


def provider(url, headers, resource, compression):
    exporter = CheckedSpanExporter(endpoint=f"{url}/v1/traces", headers=headers, compression=compression)
    p = TracerProvider(resource=Resource.create(resource), shutdown_on_exit=False)
    p.add_span_processor(BatchSpanProcessor(exporter))
    return p


def main(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    agent_provider = provider(url, headers, {"service.name": "agent", "host.name": "web-1"}, Compression.NoCompression)
    gateway_provider = provider(url, headers, {"service.name": "llm-gateway"}, Compression.Gzip)
    agent = agent_provider.get_tracer("agent.runtime", "0.3")
    gateway = gateway_provider.get_tracer("gateway")

    with agent.start_as_current_span(
        "invoke_agent", kind=SpanKind.SERVER, attributes={"gen_ai.agent.name": "planner", "user.id": 7}
    ) as root:
        with agent.start_as_current_span("plan") as plan:
            plan.add_event("thought", {"step": 1, "text": "search first"})
        with agent.start_as_current_span(
            "execute_tool search", attributes={"gen_ai.tool.name": "search"}, links=[Link(plan.get_span_context())]
        ) as tool:
            tool.set_status(Status(StatusCode.OK))
        with agent.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as client:
            # The gateway is another service: its span's parent arrives as the client's
            # context, as it would through a traceparent header.
            ctx = trace.set_span_in_context(client)
            with gateway.start_as_current_span(
                "POST /v1/chat/completions",
                context=ctx,
                kind=SpanKind.SERVER,
                attributes={"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 812},
                record_exception=False,
                set_status_on_exception=False,
            ) as server:
                server.record_exception(RuntimeError("429 Too Many Requests"))
                server.set_status(Status(StatusCode.ERROR, "rate limited"))
        trace_id = format(root.get_span_context().trace_id, "032x")
    for p in (agent_provider, gateway_provider):
        if not p.force_flush(10_000):
            print("span force_flush timed out", file=sys.stderr)
            return 1

    # An exponential histogram of known latencies (ms), exported once by force_flush.
    exporter = CheckedMetricExporter(endpoint=f"{url}/v1/metrics", headers=headers)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "agent"}),
        views=[View(instrument_name="llm.latency", aggregation=ExponentialBucketHistogramAggregation())],
        shutdown_on_exit=False,
    )
    latency = meter_provider.get_meter("agent.metrics").create_histogram("llm.latency", unit="ms")
    values = [40.0 + (i * 37 % 1000) * 2.5 for i in range(400)]
    for v in values:
        latency.record(v, {"model": "gpt-4o"})
    if not meter_provider.force_flush(10_000):
        print("metric force_flush timed out", file=sys.stderr)
        return 1

    print(json.dumps({"trace_id": trace_id, "spans": SPANS, "values": values, "scales": SCALES, "exports": RESULTS}))
    failed = [r for r in RESULTS if not r[2]]
    if failed or {r[0] for r in RESULTS} != {"traces", "metrics"} or len(SPANS) != 5:
        print(f"exports failed or missing: {RESULTS}, spans {list(SPANS)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
