"""Telemetry through OpenTelemetry's global providers: an application that sets an SDK gets
auth_refresh's spans without calling ``instrument()``. In a subprocess: the global providers
can be set once per process."""

from __future__ import annotations

import subprocess
import sys

from servers import ROOT

SCRIPT = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from auth_refresh import telemetry

with telemetry.operation_span("refresh") as span:
    assert span is None, "no SDK yet: no span is made"
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
telemetry.instrument()  # as if a second had passed: the SDK is noticed at once
with telemetry.operation_span("refresh"):
    pass
print([span.name for span in exporter.get_finished_spans()])
"""


def test_spans_go_to_the_global_sdk_once_the_application_sets_one() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert finished.stdout.strip() == "['auth_refresh.refresh']"


METRICS_SCRIPT = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from contextlib import nullcontext

from auth_refresh import telemetry

assert isinstance(telemetry.store_step("rotate"), nullcontext), "no SDK yet: nothing measured"
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
telemetry.instrument()  # as if a second had passed: the SDK is noticed at once
telemetry.record_refresh("rotated")
with telemetry.store_step("rotate"):
    pass
data = reader.get_metrics_data()
print(sorted(m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics))
"""


def test_measurements_go_to_the_global_sdk_once_the_application_sets_one() -> None:
    finished = subprocess.run(
        [sys.executable, "-c", METRICS_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert finished.stdout.strip() == (
        "['auth_refresh.refresh.outcomes', 'auth_refresh.store.duration']"
    )
