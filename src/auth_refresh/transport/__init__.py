"""How tokens travel: finding one in a request (``extractors``, ``bodies``), the cookie transport
with its CSRF token (``cookies``), the token and error answers (``responses``), the security
schemes OpenAPI shows (``schemes``) and the JWK Set route (``jwks``). Nothing here knows
rotation or a store."""

from auth_refresh.transport.bodies import MAX_BODY_BYTES, read_body_fields, single_field
from auth_refresh.transport.extractors import (
    AuthHeaderSchemeExtractor,
    BodyFieldExtractor,
    ChainExtractor,
    CookieExtractor,
    ExtractJwt,
    Extractor,
    HeaderExtractor,
    QueryParameterExtractor,
    TokenExtractor,
)

__all__ = [
    "MAX_BODY_BYTES",
    "AuthHeaderSchemeExtractor",
    "BodyFieldExtractor",
    "ChainExtractor",
    "CookieExtractor",
    "ExtractJwt",
    "Extractor",
    "HeaderExtractor",
    "QueryParameterExtractor",
    "TokenExtractor",
    "read_body_fields",
    "single_field",
]
