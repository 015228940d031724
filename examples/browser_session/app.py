"""The refresh token in an HttpOnly cookie with CSRF: ``python -m examples.browser_session``.

Open http://127.0.0.1:3000/ to log in, call ``/me``, refresh silently and log out.

With ``AUTH_REFRESH_DPOP=required`` (or ``optional``) the tokens are bound to a key the page
keeps: a non-extractable ES256 key in IndexedDB, which signs a DPoP proof (RFC 9449) for every
login, refresh, logout and API call, and survives reloads (docs/how-to/dpop.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    AuthRefreshSettings,
)
from examples.demo import DemoUser, DemoUsers, ensure_development_secrets

ensure_development_secrets()

PAGE = Path(__file__).parent / "static" / "index.html"

users = DemoUsers.with_demo_user()
authentication = AuthenticationModule.for_root()

app = FastAPI(title="auth-refresh: browser session")

# Cookie transport: login and refresh set the refresh token as an HttpOnly, SameSite=Strict
# cookie limited to /auth/refresh and /auth/logout; the body carries the access and CSRF tokens.
# The page's "Your sessions" panel uses the session routes, with the access token. The
# environment's AUTH_REFRESH_* settings apply too: AUTH_REFRESH_DPOP turns DPoP on.
settings = AuthRefreshSettings(cookie_transport=True)
refresh = AuthRefreshModule.for_root(
    user_lookup_service=users,
    issue_token_service=authentication.issue_token_service,
    verify_token_service=authentication.verify_token_service,
    logout_path="/auth/logout",
    sessions_path="/auth/sessions",
    settings=settings,
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


@app.get("/page-settings")
async def page_settings() -> dict[str, str]:
    """What the page needs to know before it logs in: whether to sign DPoP proofs."""
    return {"dpop": settings.dpop}


# A route for the page alone: a StaticFiles mount on "/" would also take the API paths' other
# methods (OPTIONS /auth/refresh answered 405 with "Allow: GET, HEAD", not what the schema says).
@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(PAGE)
