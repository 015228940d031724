"""Options made at startup from an app container (``examples.async_registration.app:app``)."""

from __future__ import annotations

from typing import Annotated

from dependency_injector import containers, providers
from fastapi import Depends, FastAPI

from auth_refresh import (
    AuthenticationModule,
    AuthJwtGuard,
    AuthJwtModule,
    AuthLocalModule,
    AuthRefreshModule,
    AuthRefreshOptions,
    ExtractJwt,
)
from examples.demo import DemoUser, DemoUsers, ensure_development_secrets

ensure_development_secrets()


class ExampleContainer(containers.DeclarativeContainer):
    """The application's own services, as an application would already have them."""

    users = providers.Singleton(DemoUsers.with_demo_user)
    authentication = providers.Singleton(AuthenticationModule.for_root)


container = ExampleContainer()


async def refresh_options(
    users: DemoUsers, authentication: AuthenticationModule
) -> AuthRefreshOptions:
    # Runs once, at startup: a real application might read a vault or a database here.
    return AuthRefreshOptions(
        user_lookup_service=users,
        issue_token_service=authentication.issue_token_service,
        verify_token_service=authentication.verify_token_service,
    )


async def mobile_refresh_options(users: DemoUsers) -> dict[str, object]:
    return {
        "user_lookup_service": users,
        "settings": {"jwt_from_request": ExtractJwt.from_auth_header_as_bearer_token()},
    }


app = FastAPI(title="auth-refresh: asynchronous registration")

# POST /auth/refresh, POST /auth/logout and the session routes under /auth/sessions; token
# families live in the store AUTH_REFRESH_STORE_URL names (by default ./auth-refresh.db).
refresh = AuthRefreshModule.for_root_async(
    factory=refresh_options,
    inject=[container.users, container.authentication],
    logout_path="/auth/logout",
    sessions_path="/auth/sessions",
)
refresh.attach(app)

# Each login starts a token family in the refresh module's store (resolved at login time, so
# the options made at startup apply).
AuthLocalModule.for_root(
    user_lookup_service=container.users(),
    issue_token_service=refresh.login_issue_token_service,
).attach(app)

AuthJwtModule.for_root(
    user_lookup_service=container.users(),
    verify_token_service=container.authentication().verify_token_service,
).attach(app)

AuthRefreshModule.register_async(
    factory=mobile_refresh_options,
    inject=[container.users],
    path="/auth/mobile/refresh",
).attach(app)


@app.get("/me")
async def me(user: Annotated[DemoUser, Depends(AuthJwtGuard())]) -> dict[str, str]:
    return {"id": user.id, "username": user.username}
