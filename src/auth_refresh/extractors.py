"""The import path of the extractors before the ``transport`` package: kept so that code written
against it keeps working. New code imports from ``auth_refresh.transport``."""

from auth_refresh.transport import (
    MAX_BODY_BYTES,
    AuthHeaderSchemeExtractor,
    BodyFieldExtractor,
    ChainExtractor,
    CookieExtractor,
    ExtractJwt,
    Extractor,
    HeaderExtractor,
    QueryParameterExtractor,
    TokenExtractor,
    read_body_fields,
    single_field,
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
