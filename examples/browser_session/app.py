"""The refresh token in an HttpOnly cookie with CSRF: ``python -m examples.browser_session``.

Open http://127.0.0.1:3000/ to log in, call ``/me``, refresh silently and log out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
)
from examples.demo import DemoUser, DemoUsers, ensure_development_secrets

ensure_development_secrets()

users = DemoUsers.with_demo_user()
authentication = AuthenticationModule.for_root()

app = FastAPI(title="auth-refresh: browser session")

# Cookie transport: login and refresh set the refresh token as an HttpOnly, SameSite=Strict
# cookie limited to /auth/refresh and /auth/logout; the body carries the access and CSRF tokens.
# The page's "Your sessions" panel uses the session routes, with the access token.
refresh = AuthRefreshModule.for_root(
    user_lookup_service=users,
    issue_token_service=authentication.issue_token_service,
    verify_token_service=authentication.verify_token_service,
    logout_path="/auth/logout",
    sessions_path="/auth/sessions",
    settings={"cookie_transport": True},
)
refresh.attach(app)

AuthLocalModule.for_root(
    user_lookup_service=users,
    issue_token_service=refresh.login_issue_token_service,
).attach(app)

AuthJwtModule.for_root(
    user_lookup_service=users,
    verify_token_service=authentication.verify_token_service,
).attach(app)


@app.get("/me")
async def me(user: Annotated[DemoUser, Depends(AuthJwtGuard())]) -> dict[str, str]:
    return {"id": user.id, "username": user.username}


app.mount("/", StaticFiles(directory=Path(__file__).parent / "static", html=True), name="page")
