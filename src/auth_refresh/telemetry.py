"""OpenTelemetry instrumentation: a span per operation, refresh outcomes, store latency.

It reports through OpenTelemetry's global tracer and meter providers when ``opentelemetry-api``
is installed (the extra ``auth-refresh[otel]``), or through the providers given to
``instrument()``; the application's SDK decides where it goes. Without an SDK the API's
providers do nothing, and without the API nothing is imported at all.

* spans ``auth_refresh.login``, ``auth_refresh.refresh``, ``auth_refresh.logout``, ...; each
  carries ``auth_refresh.outcome`` (``ok`` or the error's ``error_code``);
* counter ``auth_refresh.refresh.outcomes`` by ``outcome`` (``rotated``, ``grace``,
  ``reused``, ``revoked``, ``expired``, ``unknown``, ``store_unavailable``);
* counter ``auth_refresh.reuse.detections``;
* counter ``auth_refresh.session.checks`` by ``outcome`` (``live``, ``ended``, ``stale``,
  ``store_unavailable``): the access guard's reads of a session from the store;
* histogram ``auth_refresh.store.duration`` (seconds) by ``operation``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from auth_refresh.exceptions import AuthRefreshError, StoreUnavailableError

__all__ = [
    "OUTCOME_ATTRIBUTE",
    "STORE_UNAVAILABLE",
    "instrument",
    "operation_span",
    "record_refresh",
    "record_session_check",
    "store_step",
    "uninstrument",
]

INSTRUMENTATION_NAME = "auth_refresh"
OUTCOME_ATTRIBUTE = "auth_refresh.outcome"
STORE_UNAVAILABLE = "store_unavailable"
SDK_RECHECK_SECONDS = 1.0
# When the global providers were last asked about, and whether an SDK stood behind each:
# (checked at, traces, metrics).
_sdk_seen: tuple[float, bool, bool] = (-SDK_RECHECK_SECONDS, False, False)

try:
    from opentelemetry import metrics, trace
except ImportError:  # the extra is not installed: every hook below is a no-op
    metrics = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]


class _Instruments:
    """The tracer and instruments; built once, proxies until the application sets an SDK."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        # What goes through a global provider is skipped while no SDK stands behind it.
        self.follows_global = tracer_provider is None
        self.measures_globally = meter_provider is None
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        self.refresh_outcomes = meter.create_counter(
            "auth_refresh.refresh.outcomes",
            unit="{refresh}",
            description="Refreshes by what the store made of the presented token",
        )
        self.reuse_detections = meter.create_counter(
            "auth_refresh.reuse.detections",
            unit="{detection}",
            description="Consumed refresh tokens presented again: each revoked its session",
        )
        self.session_checks = meter.create_counter(
            "auth_refresh.session.checks",
            unit="{check}",
            description="The access guard's reads of a session's state from the store",
        )
        self.store_duration = meter.create_histogram(
            "auth_refresh.store.duration",
            unit="s",
            description="Time of one token-store step",
        )


_instruments: _Instruments | None = _Instruments() if trace is not None else None


def instrument(tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Report through these providers from now on; None means OpenTelemetry's global one.

    A global tracer provider set later is noticed within a second, or at once by calling this.
    """
    global _instruments, _sdk_seen
    if trace is None:
        raise RuntimeError("install the extra 'auth-refresh[otel]' (opentelemetry-api)")
    _instruments = _Instruments(tracer_provider, meter_provider)
    _sdk_seen = (-SDK_RECHECK_SECONDS, False, False)


def uninstrument() -> None:
    """Report nothing from now on, whatever SDK is installed; ``instrument()`` resumes."""
    global _instruments
    _instruments = None


def operation_span(name: str) -> AbstractContextManager[Any]:
    """A span named ``auth_refresh.<name>`` around one operation, with its outcome."""
    instruments = _instruments
    if instruments is None or (instruments.follows_global and not _sdk_behind()[0]):
        return nullcontext()
    return _span(instruments, f"{INSTRUMENTATION_NAME}.{name}")


def _measuring() -> _Instruments | None:
    # The instruments to record with, or None while no SDK would receive the measurements.
    instruments = _instruments
    if instruments is None or (instruments.measures_globally and not _sdk_behind()[1]):
        return None
    return instruments


def _sdk_behind() -> tuple[bool, bool]:
    # The API's stand-ins, until an application sets a provider, make spans and measurements
    # that are only cost (a span about 9 µs); asking the API reads os.environ, so the answer
    # is kept a second. A meter provider from the API's own package is its stand-in.
    global _sdk_seen
    checked_at, traces, measures = _sdk_seen
    now = time.monotonic()
    if now - checked_at >= SDK_RECHECK_SECONDS:
        provider = trace.get_tracer_provider()
        traces = not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
        measures = not type(metrics.get_meter_provider()).__module__.startswith(
            "opentelemetry.metrics"
        )
        _sdk_seen = (now, traces, measures)
    return traces, measures


@contextmanager
def _span(instruments: _Instruments, name: str) -> Iterator[Any]:
    # Error messages name no internals, but the outcome code is all an operator needs.
    with instruments.tracer.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except AuthRefreshError as error:
            span.set_attribute(OUTCOME_ATTRIBUTE, error.error_code)
            if error.status_code >= 500:
                span.set_status(trace.StatusCode.ERROR, error.error_code)
            raise
        except BaseException as error:
            span.set_attribute(OUTCOME_ATTRIBUTE, "error")
            span.set_status(trace.StatusCode.ERROR, type(error).__name__)
            raise
        span.set_attribute(OUTCOME_ATTRIBUTE, "ok")


def record_refresh(outcome: str) -> None:
    """Count one refresh by its store outcome (a ``RotationOutcome`` value)."""
    instruments = _measuring()
    if instruments is None:
        return
    instruments.refresh_outcomes.add(1, {"outcome": outcome})
    if outcome == "reused":
        instruments.reuse_detections.add(1)


def store_step(operation: str) -> AbstractContextManager[None]:
    """Measure one store step; a store that could not answer counts as ``store_unavailable``."""
    instruments = _measuring()
    if instruments is None:
        return nullcontext()
    return _StoreStep(instruments, operation)


class _StoreStep:
    # A class rather than @contextmanager: it runs on every refresh, and costs half as much.
    __slots__ = ("instruments", "operation", "started")

    def __init__(self, instruments: _Instruments, operation: str) -> None:
        self.instruments = instruments
        self.operation = operation

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        instruments = self.instruments
        instruments.store_duration.record(
            time.perf_counter() - self.started, {"operation": self.operation}
        )
        if (
            kind is not None
            and issubclass(kind, StoreUnavailableError)
            and self.operation == "rotate"
        ):
            instruments.refresh_outcomes.add(1, {"outcome": STORE_UNAVAILABLE})


def record_session_check(outcome: str) -> None:
    """Count one session check the access guard made of the store, by its outcome."""
    instruments = _measuring()
    if instruments is not None:
        instruments.session_checks.add(1, {"outcome": outcome})
