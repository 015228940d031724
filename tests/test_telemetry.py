"""OpenTelemetry: spans per operation with their outcome, refresh outcome counters, reuse
detections, the access guard's session checks and store latency, read back through the SDK's
in-memory exporters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from auth_refresh import AuthenticationModule, PasswordStorageService
from auth_refresh.telemetry import instrument
from conftest import InMemoryUsers, serve
from factories import login
from rotation_app import assert_store_unavailable, refresh, rotating_app
from store_fixtures import running_redis

pytestmark = pytest.mark.anyio


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def outcomes(self, name: str) -> list[Any]:
        return [
            span.attributes.get("auth_refresh.outcome")
            for span in self.spans.get_finished_spans()
            if span.name == name and span.attributes is not None
        ]

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        if data is None:  # nothing recorded yet
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def count(self, name: str, **attributes: str) -> int:
        return sum(
            point.value for point in self.points(name) if dict(point.attributes or {}) == attributes
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """An SDK with in-memory exporters, given to auth_refresh only (the globals stay unset)."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield Telemetry(exporter, reader)
    instrument()


async def test_login_refresh_reuse_and_logout_are_traced_and_counted(
    users: InMemoryUsers, password_storage: PasswordStorageService, telemetry: Telemetry
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"grace_seconds": 30})
    async with serve(app) as client:
        first = (await login(client))["refreshToken"]
        bad = await client.post("/auth/login", json={"username": "x", "password": "wrong"})
        assert bad.status_code == 401
        second = (await refresh(client, first)).json()["refreshToken"]
        assert (await refresh(client, first)).status_code == 200  # within the grace window
        assert (await refresh(client, second)).status_code == 200
        assert (await refresh(client, second)).status_code == 200  # grace again
        other = (await login(client))["refreshToken"]
        assert (await refresh(client, other)).status_code == 200
        logout = await client.post("/auth/logout", json={"refreshToken": first})
        assert logout.status_code == 204
    assert telemetry.outcomes("auth_refresh.login") == [
        "ok",
        "AUTH_LOCAL_INVALID_CREDENTIALS_ERROR",
        "ok",
    ]
    assert telemetry.outcomes("auth_refresh.refresh") == ["ok"] * 5
    assert telemetry.outcomes("auth_refresh.logout") == ["ok"]
    counts = "auth_refresh.refresh.outcomes"
    assert telemetry.count(counts, outcome="rotated") == 3
    assert telemetry.count(counts, outcome="grace") == 2
    assert telemetry.count(counts, outcome="reused") == 0
    assert telemetry.count("auth_refresh.reuse.detections") == 0
    steps = {
        point.attributes["operation"]: point.count
        for point in telemetry.points("auth_refresh.store.duration")
    }
    assert {"start_family", "rotate", "revoke_family"} <= set(steps)


async def test_a_reused_token_counts_a_detection_and_its_refresh_span_says_why(
    users: InMemoryUsers, password_storage: PasswordStorageService, telemetry: Telemetry
) -> None:
    app, _ = rotating_app(users, password_storage, settings={"grace_seconds": 0})
    async with serve(app) as client:
        first = (await login(client))["refreshToken"]
        second = (await refresh(client, first)).json()["refreshToken"]
        assert (await refresh(client, first)).status_code == 401
        assert (await refresh(client, second)).status_code == 401
    assert telemetry.outcomes("auth_refresh.refresh") == [
        "ok",
        "AUTH_REFRESH_NOT_AUTHORIZED_ERROR",
        "AUTH_REFRESH_NOT_AUTHORIZED_ERROR",
    ]
    assert telemetry.count("auth_refresh.refresh.outcomes", outcome="reused") == 1
    assert telemetry.count("auth_refresh.refresh.outcomes", outcome="revoked") == 1
    assert telemetry.count("auth_refresh.reuse.detections") == 1


async def test_a_store_that_cannot_answer_is_counted_and_its_span_is_an_error(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    telemetry: Telemetry,
    tmp_path: Path,
) -> None:
    # A real failure: the "file" is a directory, so SQLite cannot open it.
    (tmp_path / "families.db").mkdir()
    app, _ = rotating_app(
        users, password_storage, settings={"store_url": f"sqlite:///{tmp_path / 'families.db'}"}
    )
    token = AuthenticationModule.for_root().issue_token_service.refresh_token(
        {"sub": "user-1", "fam": "a-family-the-store-cannot-look-up"}
    )
    async with serve(app) as client:
        assert (await refresh(client, token)).status_code == 503
    spans = [s for s in telemetry.spans.get_finished_spans() if s.name == "auth_refresh.refresh"]
    assert [span.status.status_code for span in spans] == [trace.StatusCode.ERROR]
    assert telemetry.outcomes("auth_refresh.refresh") == ["AUTH_REFRESH_STORE_UNAVAILABLE_ERROR"]
    counted = telemetry.count("auth_refresh.refresh.outcomes", outcome="store_unavailable")
    assert counted == 1


@pytest.mark.servers
@pytest.mark.parametrize(("stale", "outage"), [(None, "stale"), (0.0, "store_unavailable")])
async def test_the_access_guards_session_checks_are_timed_and_counted_by_outcome(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    telemetry: Telemetry,
    tmp_path: Path,
    stale: float | None,
    outage: str,
) -> None:
    """Issue 21: each read of a session from the store is a ``session_active`` store step and a
    check counted by its outcome; with the store stopped, ``stale`` while the last "live" is
    trusted (the default bound), ``store_unavailable`` once it is not (bound 0)."""
    settings: dict[str, object] = {"session_check_interval": 0}  # every request asks the store
    if stale is not None:
        settings["session_check_stale_seconds"] = stale
    checks = "auth_refresh.session.checks"

    def session_steps() -> int:
        return sum(
            point.count
            for point in telemetry.points("auth_refresh.store.duration")
            if dict(point.attributes or {}) == {"operation": "session_active"}
        )

    with running_redis(tmp_path) as server:
        app, _ = rotating_app(
            users, password_storage, settings={**settings, "store_url": server.url}
        )
        async with serve(app) as client:
            headers = {"Authorization": "Bearer " + (await login(client))["accessToken"]}
            assert (await client.get("/me", headers=headers)).status_code == 200
            assert telemetry.count(checks, outcome="live") == 1
            assert session_steps() == 1
            server.stop()
            answer = await client.get("/me", headers=headers)
            if outage == "stale":
                assert answer.status_code == 200
            else:
                assert_store_unavailable(answer)
    assert telemetry.count(checks, outcome=outage) == 1
    assert telemetry.count(checks, outcome="live") == 1
    assert session_steps() == 2  # the step that failed is timed too
