#!/usr/bin/env python3
"""Sends logs and metrics to a running lake with the OpenTelemetry Python SDK over
OTLP/HTTP (protobuf; the logs gzipped), for the end-to-end test `lake/tests/otlp.rs`.

Usage: send.py <lake url> <node token>

Exits 0 once every export was answered with success, 1 if one failed, 3 if the SDK is
not installed. Prints one JSON line with the trace and span ids of the log emitted inside
a span, so the test can look for them.

Requires: pip install opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2
"""

import json
import sys

PIP = "pip install opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-http==1.45.2"

try:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
except ImportError as e:
    print(f"the OpenTelemetry Python SDK is missing ({e}); install it with: {PIP}", file=sys.stderr)
    sys.exit(3)

RESULTS = []


class CheckedLogExporter(OTLPLogExporter):
    """Remembers whether each export succeeded (the SDK only logs failures)."""

    def export(self, batch):
        result = super().export(batch)
        RESULTS.append(("logs", len(batch), result == LogRecordExportResult.SUCCESS))
        return result


class CheckedMetricExporter(OTLPMetricExporter):
    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        RESULTS.append(("metrics", 1, result == MetricExportResult.SUCCESS))
        return result


def main(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}

    # Logs: a resource naming the service and the host, one scope, five severities, one
    # record inside a span (trace and span ids), one with a structured body.
    log_resource = Resource.create({"service.name": "shop", "host.name": "web-1"})
    logger_provider = LoggerProvider(resource=log_resource, shutdown_on_exit=False)
    log_exporter = CheckedLogExporter(endpoint=f"{url}/v1/logs", headers=headers, compression=Compression.Gzip)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logger = logger_provider.get_logger("shop.payments", "1.0")

    def emit(severity, text, body, attributes=None):
        logger.emit(LogRecord(severity_number=severity, severity_text=text, body=body, attributes=attributes))

    emit(SeverityNumber.INFO, "INFO", "order placed", {"order.id": 17, "amount": 12.5})
    emit(SeverityNumber.WARN, "WARN", "disk almost full", {"mount": "/"})
    tracer = TracerProvider(resource=log_resource).get_tracer("shop")
    with tracer.start_as_current_span("checkout") as span:
        emit(SeverityNumber.ERROR, "ERROR", "payment failed", {"order.id": 18})
        ctx = span.get_span_context()
    emit(SeverityNumber.DEBUG, "DEBUG", {"step": "auth", "ok": True})
    emit(SeverityNumber.FATAL, "FATAL", "out of memory")
    if not logger_provider.force_flush(10_000):
        print("log force_flush timed out", file=sys.stderr)
        return 1

    # Metrics: no host.name (the lake uses the token's node), a counter, an up-down
    # counter, a gauge and a histogram with explicit buckets; exported once by force_flush.
    metric_exporter = CheckedMetricExporter(endpoint=f"{url}/v1/metrics", headers=headers)
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    meter = meter_provider.get_meter("shop.metrics")
    orders = meter.create_counter("orders", unit="1", description="orders placed")
    orders.add(3, {"region": "eu"})
    orders.add(2, {"region": "eu"})
    orders.add(4, {"region": "us"})
    queue = meter.create_up_down_counter("queue.depth")
    queue.add(7)
    queue.add(-2)
    meter.create_gauge("temperature", unit="Cel").set(21.5, {"room": "rack"})
    latency = meter.create_histogram("latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
    for v in (0.05, 0.3, 0.5, 3.0):
        latency.record(v)
    if not meter_provider.force_flush(10_000):
        print("metric force_flush timed out", file=sys.stderr)
        return 1

    print(json.dumps({"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"), "exports": RESULTS}))
    failed = [r for r in RESULTS if not r[2]]
    if failed or {r[0] for r in RESULTS} != {"logs", "metrics"}:
        print(f"exports failed or missing: {RESULTS}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
