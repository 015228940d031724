"""Every option given up front: ``uvicorn examples.sync_registration.app:app``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    ExtractJwt,
)
from examples.demo import DemoUser, DemoUsers, ensure_development_secrets

ensure_development_secrets()

users = DemoUsers.with_demo_user()
authentication = AuthenticationModule.for_root()

app = FastAPI(title="auth-refresh: synchronous registration")

# The global registration: POST /auth/refresh with {"refreshToken": "..."}, POST /auth/logout
# and the caller's sessions (GET /auth/sessions, DELETE /auth/sessions/{id}, POST
# /auth/sessions/revoke-others, with the access token). Rotation is on: each refresh token
# works once, within a token family (a session) kept in the store AUTH_REFRESH_STORE_URL names
# (by default the SQLite file ./auth-refresh.db). GET /health/ready answers 200 while that store
# answers with this release's schema, 503 with the reason otherwise (for the load balancer).
# AUTH_REFRESH_DPOP=optional or required binds the tokens to the client's DPoP key (RFC 9449):
# docs/how-to/dpop.md.
refresh = AuthRefreshModule.for_root(
    user_lookup_service=users,
    issue_token_service=authentication.issue_token_service,
    verify_token_service=authentication.verify_token_service,
    logout_path="/auth/logout",
    sessions_path="/auth/sessions",
    readiness_path="/health/ready",
)
refresh.attach(app)

# Each login starts a token family in the refresh module's store. POST /auth/token is the OAuth
# 2.0 token endpoint for clients that speak the standard (password and refresh_token grants),
# and Swagger UI's Authorize logs in through it.
AuthLocalModule.for_root(
    user_lookup_service=users,
    issue_token_service=refresh.login_issue_token_service,
    token_path="/auth/token",
).attach(app)

AuthJwtModule.for_root(
    user_lookup_service=users,
    verify_token_service=authentication.verify_token_service,
).attach(app)

# One feature with its own route and extractor; the services come from the global registration.
AuthRefreshModule.register(
    settings={"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
    path="/auth/mobile/refresh",
).attach(app)


@app.get("/me")
async def me(user: Annotated[DemoUser, Depends(AuthJwtGuard())]) -> dict[str, str]:
    return {"id": user.id, "username": user.username}
