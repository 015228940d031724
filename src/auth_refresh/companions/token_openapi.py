"""The token endpoint's OpenAPI: its answers, its form body and the password flow's scheme, whose
``tokenUrl`` is where the route really is."""

from __future__ import annotations

import posixpath
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel, Field
from starlette.routing import NoMatchFound

__all__ = [
    "CHALLENGE",
    "FORM",
    "PASSWORD_SCHEME",
    "OAuthErrorBody",
    "OAuthErrorCode",
    "OAuthTokenBody",
    "PasswordFlowScheme",
    "error_responses",
    "grant_body",
    "proof_header",
]

# The OpenAPI security scheme of the password flow: Swagger UI's Authorize logs in with it.
PASSWORD_SCHEME = "OAuth2Password"  # noqa: S105 - a scheme name
FORM = "application/x-www-form-urlencoded"
# The Basic challenge of an invalid_client answer (RFC 7617 requires a realm).
CHALLENGE = 'Basic realm="auth-refresh", charset="UTF-8"'

OAuthErrorCode = Literal[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "invalid_scope",
    "unsupported_grant_type",
    "temporarily_unavailable",
    "invalid_dpop_proof",
    "use_dpop_nonce",
]


class OAuthTokenBody(BaseModel):
    """A successful token answer (RFC 6749 §5.1)."""

    access_token: str = Field(description="Access token (JWT, typ at+jwt)")
    token_type: Literal["Bearer", "DPoP"] = Field(
        description="DPoP when the tokens are bound to the proof's key (RFC 9449 §5)"
    )
    expires_in: int | None = Field(
        default=None, description="The access token's lifetime in seconds"
    )
    refresh_token: str = Field(description="Refresh token (JWT, typ rt+jwt), for one use")


class OAuthErrorBody(BaseModel):
    """A refused token request (RFC 6749 §5.2)."""

    error: OAuthErrorCode
    error_description: str


class PasswordFlowScheme(OAuth2PasswordBearer):
    """The OAuth2 password flow scheme, its ``tokenUrl`` where the token route really is.

    FastAPI adds the ``root_path`` (a proxy's prefix, a mount's path) to the schema's servers
    per request, after the schema is made: without servers of the application's own, the URL
    is relative to the docs page (as FastAPI's tutorial writes ``tokenUrl="token"``), so Swagger
    UI finds the route below whatever prefix the page itself is under.
    """

    def __init__(self, route_name: str, path: str) -> None:
        super().__init__(
            tokenUrl=path,
            scheme_name=PASSWORD_SCHEME,
            description="Log in with a username and password (the token endpoint)",
            auto_error=False,
        )
        self.route_name = route_name
        self.path = path

    def openapi_at(self, app: FastAPI, base: str) -> dict[str, Any]:
        """The scheme's object for ``app``'s schema, whose paths are below ``base``."""
        try:
            path = str(app.url_path_for(self.route_name))
        except NoMatchFound:  # not in this application: the path as written
            path = self.path
        if base:
            url = base.rstrip("/") + path
        else:
            page = app.docs_url or "/docs"
            url = posixpath.relpath(path, page.rpartition("/")[0] or "/")
            url += "/" if path.endswith("/") else ""
        scheme: dict[str, Any] = self.model.model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        scheme["flows"]["password"]["tokenUrl"] = url
        return scheme


def error_responses() -> dict[int | str, dict[str, Any]]:
    retry_after = {
        "Retry-After": {
            "description": "Seconds to wait before trying again",
            "schema": {"type": "integer"},
        }
    }
    challenge = {"WWW-Authenticate": {"description": CHALLENGE, "schema": {"type": "string"}}}
    nonce = {
        "DPoP-Nonce": {
            "description": "With use_dpop_nonce: the nonce to sign a new proof with (RFC 9449 §8)",
            "schema": {"type": "string"},
        }
    }
    described = {
        400: (
            "invalid_request, invalid_grant, invalid_scope or unsupported_grant_type; with DPoP "
            "on, invalid_dpop_proof or use_dpop_nonce",
            nonce,
        ),
        401: ("invalid_client: client authentication was sent", challenge),
        413: ("invalid_request: the body is too large", {}),
        429: ("temporarily_unavailable: too many logins from this client", retry_after),
        503: ("temporarily_unavailable: retry shortly", retry_after),
    }
    return {
        code: {"model": OAuthErrorBody, "description": text, "headers": headers}
        for code, (text, headers) in described.items()
    }


def grant_body() -> dict[str, Any]:
    public_client = {
        "client_id": {"type": "string", "description": "Optional: a public client's name"},
        "scope": {"type": "string", "maxLength": 0, "description": "No scopes are issued"},
    }
    password = {
        "type": "object",
        "properties": {
            "grant_type": {"const": "password"},
            "username": {"type": "string", "minLength": 1, "maxLength": 320},
            "password": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4096,
                "description": "At most 4096 bytes in UTF-8",
            },
            **public_client,
        },
        "required": ["grant_type", "username", "password"],
    }
    refresh = {
        "type": "object",
        "properties": {
            "grant_type": {"const": "refresh_token"},
            "refresh_token": {"type": "string", "minLength": 1},
            **public_client,
        },
        "required": ["grant_type", "refresh_token"],
    }
    return {"required": True, "content": {FORM: {"schema": {"oneOf": [password, refresh]}}}}


def proof_header() -> dict[str, Any]:
    """The ``DPoP`` header parameter: read where the refresh registration turns DPoP on."""
    return {
        "name": "DPoP",
        "in": "header",
        "required": False,
        "description": "A DPoP proof (RFC 9449) for this request, where DPoP is on: the "
        "tokens are then bound to its key",
        "schema": {"type": "string"},
    }
