"""The OAuth 2.0 token endpoint (issue 23, item 9): ``AuthLocalModule.for_root(token_path=...)``
answers RFC 6749's password (§4.3) and refresh_token (§6) grants with §5.1's body, refuses with
§5.2's errors, and goes through the same login checks, rotation, reuse detection and sessions as
``/auth/login`` and ``/auth/refresh``."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator, Mapping
from typing import Annotated, Any
from urllib.parse import urljoin

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    ConfigurationError,
    PasswordStorageService,
)
from auth_refresh.telemetry import instrument
from conftest import InMemoryUsers, User, serve
from rotation_app import claims_of
from test_login_fairness import GatedPasswordStorage
from test_request_walks import READ_BACK, files_entered
from test_telemetry import Telemetry

pytestmark = pytest.mark.anyio

PASSWORD_GRANT = {"grant_type": "password", "username": "user@example.com", "password": "password"}


def token_app(
    users: Any,
    storage: PasswordStorageService,
    *,
    settings: Mapping[str, Any] | None = None,
    login_settings: Mapping[str, Any] | None = None,
    router: APIRouter | None = None,
    **fastapi_options: Any,
) -> tuple[FastAPI, AuthRefreshModule]:
    """The idiom as a user writes it: the refresh, login and access modules, with the token
    endpoint beside the login route; the modules on ``router`` when one is given."""
    authentication = AuthenticationModule.for_root()
    app = FastAPI(**fastapi_options)
    refresh = AuthRefreshModule.for_root(
        user_lookup_service=users, settings=settings, sessions_path="/auth/sessions"
    )
    login = AuthLocalModule.for_root(
        user_lookup_service=users,
        password_storage_service=storage,
        settings=login_settings,
        token_path="/auth/token",
    )
    access = AuthJwtModule.for_root(
        user_lookup_service=users, verify_token_service=authentication.verify_token_service
    )
    target = router if router is not None else app
    for module in (refresh, login, access):
        target.include_router(module.router)

    @target.get("/me")
    async def me(user: Annotated[Any, Depends(AuthJwtGuard())]) -> dict[str, str]:
        return {"id": user.id}

    if router is not None:
        app.include_router(router, prefix="/v1")
    return app, refresh


def assert_token_answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body: dict[str, Any] = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert claims_of(body["access_token"])["sub"] == "user-1"
    return body


def assert_oauth_error(
    response: httpx.Response, error: str, status_code: int = 400
) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    # RFC 6749 §5.2: error_description is printable ASCII without '"' and '\'.
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in body["error_description"])
    assert "eyJ" not in response.text
    return body


async def grant(client: httpx.AsyncClient, **parameters: str) -> httpx.Response:
    return await client.post("/auth/token", data=parameters)


async def test_the_password_grant_answers_rfc_6749_and_starts_a_session(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app, headers={"User-Agent": "oauth-client/1.0"}) as client:
        body = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        assert body["expires_in"] == 3600  # the access token's lifetime (JWT_MODULE_*)
        claims = claims_of(body["access_token"])
        assert claims["exp"] - claims["iat"] == body["expires_in"]
        bearer = {"Authorization": "Bearer " + body["access_token"]}
        assert (await client.get("/me", headers=bearer)).json() == {"id": "user-1"}
        # A session like a login's: labelled with the client's User-Agent, listed, and the
        # access token names it.
        sessions = (await client.get("/auth/sessions", headers=bearer)).json()
    [session] = sessions
    assert session["userAgent"] == "oauth-client/1.0"
    assert session["id"] == claims["sid"]


async def test_the_refresh_grant_rotates_and_a_replay_is_invalid_grant_ending_the_session(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage, settings={"grace_seconds": 0})
    async with serve(app) as client:
        first = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        second = assert_token_answer(
            await grant(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
        )
        assert second["refresh_token"] != first["refresh_token"]
        assert claims_of(second["access_token"])["sid"] == claims_of(first["access_token"])["sid"]
        bearer = {"Authorization": "Bearer " + second["access_token"]}
        assert (await client.get("/me", headers=bearer)).status_code == 200

        replay = await grant(
            client, grant_type="refresh_token", refresh_token=first["refresh_token"]
        )
        assert_oauth_error(replay, "invalid_grant")
        # The reuse revoked the session: its newest tokens are refused too.
        assert (await client.get("/me", headers=bearer)).status_code == 401
        successor = await grant(
            client, grant_type="refresh_token", refresh_token=second["refresh_token"]
        )
        assert_oauth_error(successor, "invalid_grant")
        # /auth/refresh judges the family the same way: it is one store, one walk.
        refused = await client.post("/auth/refresh", json={"refreshToken": second["refresh_token"]})
        assert refused.status_code == 401


async def test_a_repeat_within_the_grace_window_gets_the_same_pair(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)  # grace_seconds: 5 by default
    async with serve(app) as client:
        first = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        parameters = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        rotated = assert_token_answer(await grant(client, **parameters))
        repeated = assert_token_answer(await grant(client, **parameters))
    assert repeated["refresh_token"] == rotated["refresh_token"]
    assert repeated["access_token"] == rotated["access_token"]
    # Its expires_in is what is left of the access token's lifetime, read from the token.
    assert 3590 <= repeated["expires_in"] <= 3600


async def test_tokens_of_the_login_route_and_the_token_endpoint_are_one_family(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        credentials = {"username": "user@example.com", "password": "password"}
        login = (await client.post("/auth/login", json=credentials)).json()
        rotated = assert_token_answer(
            await grant(client, grant_type="refresh_token", refresh_token=login["refreshToken"])
        )
        again = await client.post("/auth/refresh", json={"refreshToken": rotated["refresh_token"]})
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": ""}, "invalid_request"),  # §3.2: a parameter without a value is omitted
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "user@example.com"}, "invalid_request"),
        ({"grant_type": "password", "password": "password"}, "invalid_request"),
        ({**PASSWORD_GRANT, "username": ""}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": ""}, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "not-a-token"}, "invalid_grant"),
        ({**PASSWORD_GRANT, "scope": "admin"}, "invalid_scope"),
    ],
)
async def test_refusals_are_rfc_6749_errors(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    data: dict[str, str],
    error: str,
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        assert_oauth_error(await client.post("/auth/token", data=data), error)


async def test_a_parameter_sent_twice_is_invalid_request(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    body = "grant_type=password&username=user%40example.com&password=password&password=other"
    async with serve(app) as client:
        response = await client.post(
            "/auth/token",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert_oauth_error(response, "invalid_request")


@pytest.mark.parametrize("kind", ["json", "multipart", "none"])
async def test_only_a_form_encoded_body_is_read(
    users: InMemoryUsers, password_storage: PasswordStorageService, kind: str
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        if kind == "json":
            response = await client.post("/auth/token", json=PASSWORD_GRANT)
        elif kind == "multipart":
            response = await client.post("/auth/token", data=PASSWORD_GRANT, files={"f": b"x"})
        else:
            response = await client.post("/auth/token")
    assert_oauth_error(response, "invalid_request")


async def test_a_wrong_password_is_invalid_grant_that_never_echoes_it(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    secret = "wrong-but-very-secret-password"
    async with serve(app) as client:
        for username in ("user@example.com", "nobody@example.com"):
            response = await grant(
                client, **{**PASSWORD_GRANT, "username": username, "password": secret}
            )
            body = assert_oauth_error(response, "invalid_grant")
            assert body["error_description"] == "Invalid username or password"
            assert secret not in response.text
            assert "www-authenticate" not in response.headers  # §5.2: a 400, no challenge


async def test_a_disabled_account_is_invalid_grant_on_both_grants(
    password_storage: PasswordStorageService,
) -> None:
    user = User("user-1", "user@example.com", password_storage.hash("password"))
    users = InMemoryUsers(user)
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        issued = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        user.active = False  # type: ignore[attr-defined]
        assert_oauth_error(await grant(client, **PASSWORD_GRANT), "invalid_grant")
        refreshed = await grant(
            client, grant_type="refresh_token", refresh_token=issued["refresh_token"]
        )
        assert_oauth_error(refreshed, "invalid_grant")


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": "Basic " + encoded}


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        (basic("my-app", "s3cret"), {}),  # a confidential client: none is registered here
        ({"Authorization": "Basic !!!"}, {}),
        ({"Authorization": "Bearer some-access-token"}, {}),
        ({}, {"client_id": "my-app", "client_secret": "s3cret"}),
    ],
)
async def test_client_authentication_is_invalid_client_with_a_basic_challenge(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    headers: dict[str, str],
    extra: dict[str, str],
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        response = await client.post(
            "/auth/token", data={**PASSWORD_GRANT, **extra}, headers=headers
        )
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"].startswith("Basic realm=")


@pytest.mark.parametrize(
    ("headers", "extra"),
    [
        (basic("", ""), {}),  # what Swagger UI sends by default
        (basic("my-app", ""), {}),  # a public client naming itself
        ({}, {"client_id": "my-app"}),
        ({}, {"client_id": "my-app", "client_secret": "", "scope": ""}),
    ],
)
async def test_a_public_client_may_name_itself(
    users: InMemoryUsers,
    password_storage: PasswordStorageService,
    headers: dict[str, str],
    extra: dict[str, str],
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        response = await client.post(
            "/auth/token", data={**PASSWORD_GRANT, **extra}, headers=headers
        )
    assert_token_answer(response)


async def test_a_body_over_the_limit_is_a_413_invalid_request(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        response = await grant(client, **PASSWORD_GRANT, padding="x" * 70_000)
    assert_oauth_error(response, "invalid_request", 413)


async def test_the_password_grant_shares_the_login_routes_client_share(
    users: InMemoryUsers,
) -> None:
    # One login from this address is checking its password; with a share of one, the token
    # endpoint's login from the same address waits, then gets a 429 costing no hash.
    storage = GatedPasswordStorage()
    settings = {"max_logins_per_client": 1, "hash_wait_seconds": 0.2}
    app, _ = token_app(users, storage, login_settings=settings)
    async with serve(app) as client:
        login = asyncio.ensure_future(
            client.post("/auth/login", json={"username": "user@example.com", "password": "x"})
        )
        await asyncio.to_thread(storage.started.acquire, timeout=10)
        response = await grant(client, **PASSWORD_GRANT)
        assert storage.verifications == 1
        storage.gate.set()
        assert (await login).status_code == 401
        after = await grant(client, **PASSWORD_GRANT)
    assert_oauth_error(response, "temporarily_unavailable", 429)
    assert response.headers["retry-after"] == "1"
    assert_token_answer(after)


async def test_the_password_grant_waits_for_the_hashing_cap_then_503(
    users: InMemoryUsers,
) -> None:
    storage = GatedPasswordStorage()
    settings = {"max_concurrent_hashes": 1, "hash_wait_seconds": 0.2}
    app, _ = token_app(users, storage, login_settings=settings)
    async with serve(app) as client:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            held = asyncio.ensure_future(grant(other, **PASSWORD_GRANT))
            await asyncio.to_thread(storage.started.acquire, timeout=10)
            response = await grant(client, **PASSWORD_GRANT)
            storage.gate.set()
            assert_token_answer(await held)
    assert_oauth_error(response, "temporarily_unavailable", 503)
    assert response.headers["retry-after"] == "1"


async def test_the_session_cap_applies_to_password_grants(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage, settings={"max_sessions_per_subject": 1})
    async with serve(app) as client:
        oldest = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        assert_token_answer(await grant(client, **PASSWORD_GRANT))
        refreshed = await grant(
            client, grant_type="refresh_token", refresh_token=oldest["refresh_token"]
        )
    assert_oauth_error(refreshed, "invalid_grant")


async def test_the_token_endpoint_works_without_a_lifespan(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    transport = httpx.ASGITransport(app=app)  # no lifespan: the route starts the modules
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        issued = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
        rotated = assert_token_answer(await grant(client, **refresh))
        bearer = {"Authorization": "Bearer " + rotated["access_token"]}
        assert (await client.get("/me", headers=bearer)).status_code == 200


async def test_the_token_endpoint_needs_a_refresh_registration(users: InMemoryUsers) -> None:
    app = FastAPI()
    AuthLocalModule.for_root(user_lookup_service=users, token_path="/auth/token").attach(app)
    with pytest.raises(
        ConfigurationError, match="token_path='/auth/token' needs AuthRefreshModule"
    ):
        async with app.router.lifespan_context(app):
            pass


async def test_the_token_endpoint_refuses_cookie_transport_at_startup(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage, settings={"cookie_transport": True})
    with pytest.raises(ConfigurationError, match="cookie transport"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_feature_registrations_login_service_is_the_refresh_grants_registration(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # The login issues through a feature (register): its refresh grant rotates there too.
    app = FastAPI()
    AuthRefreshModule.for_root(user_lookup_service=users).attach(app)
    feature = AuthRefreshModule.register(path="/partner/refresh")
    feature.attach(app)
    AuthLocalModule.for_root(
        user_lookup_service=users,
        issue_token_service=feature.login_issue_token_service,
        password_storage_service=password_storage,
        token_path="/partner/token",
    ).attach(app)
    async with serve(app) as client:
        issued = (await client.post("/partner/token", data=PASSWORD_GRANT)).json()
        refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
        rotated = await client.post("/partner/token", data=refresh)
        assert rotated.status_code == 200, rotated.text
        partner = await client.post(
            "/partner/refresh", json={"refreshToken": rotated.json()["refresh_token"]}
        )
    assert partner.status_code == 200


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """An SDK with in-memory exporters, given to auth_refresh only (as in test_telemetry)."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(tracer_provider, MeterProvider(metric_readers=[reader]))
    yield Telemetry(exporter, reader)
    instrument()


async def test_token_requests_are_traced_with_the_library_outcome_and_reuse_is_counted(
    users: InMemoryUsers, password_storage: PasswordStorageService, telemetry: Telemetry
) -> None:
    app, _ = token_app(users, password_storage, settings={"grace_seconds": 0})
    async with serve(app) as client:
        first = assert_token_answer(await grant(client, **PASSWORD_GRANT))
        replayed = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        assert_token_answer(await grant(client, **replayed))
        assert_oauth_error(await grant(client, **replayed), "invalid_grant")
        assert_oauth_error(await grant(client, grant_type="implicit"), "unsupported_grant_type")
        wrong = {**PASSWORD_GRANT, "password": "wrong"}
        assert_oauth_error(await grant(client, **wrong), "invalid_grant")
    assert telemetry.outcomes("auth_refresh.token") == [
        "ok",
        "ok",
        "AUTH_REFRESH_NOT_AUTHORIZED_ERROR",
        "AUTH_REFRESH_INVALID_REQUEST_ERROR",
        "AUTH_LOCAL_INVALID_CREDENTIALS_ERROR",
    ]
    assert telemetry.count("auth_refresh.reuse.detections") == 1


async def test_the_grant_walks_stay_in_the_request_layer(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # The login's and the refresh's walks, and the token endpoint's module: no registration,
    # and no token read back but a grace-window repeat's.
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        await grant(client, **PASSWORD_GRANT)  # warm: first-use imports
        answer, password_walk = await files_entered(lambda: grant(client, **PASSWORD_GRANT))
        refresh = {"grant_type": "refresh_token", "refresh_token": answer.json()["refresh_token"]}
        _, refresh_walk = await files_entered(lambda: grant(client, **refresh))
    for walk in (password_walk, refresh_walk):
        assert walk[0] == "companions/token_endpoint.py"
        assert READ_BACK not in walk
        assert not any(name.startswith("registration/") for name in walk), walk
    assert "companions/auth_local.py" in password_walk
    assert "flows/refresh.py" in refresh_walk
    assert len(password_walk) <= 11, password_walk  # the login's ten, and this module
    assert len(refresh_walk) <= 10, refresh_walk


# -- OpenAPI ---------------------------------------------------------------------------------


async def test_openapi_declares_the_password_flow_and_guarded_routes_accept_it(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    app, _ = token_app(users, password_storage)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["OAuth2Password"] == {
        "type": "oauth2",
        "description": "Log in with a username and password (the token endpoint)",
        "flows": {"password": {"tokenUrl": "auth/token", "scopes": {}}},  # from /docs
    }
    assert schema["paths"]["/me"]["get"]["security"] == [
        {"AccessToken": []},
        {"OAuth2Password": []},
    ]
    token = schema["paths"]["/auth/token"]["post"]
    assert "security" not in token
    form = token["requestBody"]["content"]
    assert list(form) == ["application/x-www-form-urlencoded"]
    grants = form["application/x-www-form-urlencoded"]["schema"]["oneOf"]
    assert [g["properties"]["grant_type"] for g in grants] == [
        {"const": "password"},
        {"const": "refresh_token"},
    ]
    assert set(token["responses"]) == {"200", "400", "401", "413", "429", "503"}
    assert "WWW-Authenticate" in token["responses"]["401"]["headers"]
    assert "Retry-After" in token["responses"]["429"]["headers"]
    answer = token["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert answer == "#/components/schemas/OAuthTokenBody"


async def test_the_token_url_follows_a_router_prefix_and_the_root_path(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    # uvicorn --root-path /api: FastAPI adds the root path to the servers per request, so the
    # token URL is relative to the docs page, where Swagger UI resolves it.
    app, _ = token_app(users, password_storage, router=APIRouter())
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        schema = (await client.get("/api/openapi.json")).json()
        assert schema["servers"] == [{"url": "/api"}]
        flow = schema["components"]["securitySchemes"]["OAuth2Password"]["flows"]["password"]
        assert flow["tokenUrl"] == "v1/auth/token"
        assert {"OAuth2Password": []} in schema["paths"]["/v1/me"]["get"]["security"]
        # And from the docs page, it is where the token route answers.
        token_url = urljoin("http://testserver/api/docs", flow["tokenUrl"])
        assert token_url == "http://testserver/api/v1/auth/token"
        assert_token_answer(await client.post(token_url, data=PASSWORD_GRANT))


async def test_the_token_url_follows_a_mount(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    api, _ = token_app(users, password_storage, docs_url="/api/docs")
    outer = FastAPI()
    outer.mount("/sub", api)
    async with api.router.lifespan_context(api), serve(outer) as client:
        schema = (await client.get("/sub/openapi.json")).json()
        flow = schema["components"]["securitySchemes"]["OAuth2Password"]["flows"]["password"]
        assert flow["tokenUrl"] == "../auth/token"
        token_url = urljoin("http://testserver/sub/api/docs", flow["tokenUrl"])
        assert_token_answer(await client.post(token_url, data=PASSWORD_GRANT))


async def test_servers_the_application_declares_prefix_the_token_url(
    users: InMemoryUsers, password_storage: PasswordStorageService
) -> None:
    servers = [{"url": "https://api.example.com/v2"}]
    app, _ = token_app(users, password_storage, servers=servers)
    async with serve(app) as client:
        schema = (await client.get("/openapi.json")).json()
    flow = schema["components"]["securitySchemes"]["OAuth2Password"]["flows"]["password"]
    assert flow["tokenUrl"] == "https://api.example.com/v2/auth/token"
