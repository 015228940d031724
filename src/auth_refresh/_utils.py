"""Small helpers shared by the modules."""

from __future__ import annotations

import asyncio
import binascii
import json
import math
import re
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from importlib.metadata import entry_points
from inspect import CO_ITERABLE_COROUTINE
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from types import GeneratorType
from typing import Any, Protocol, TypeAlias, TypeGuard, TypeVar, cast
from urllib.parse import urlsplit

from dependency_injector.providers import Dependency
from starlette.requests import Request

T = TypeVar("T")

MaybeAwaitable: TypeAlias = T | Awaitable[T]


# Whether a type's instances have ``__await__``, by type: a getattr that misses raises and
# catches an AttributeError inside (0.5 µs), and a refresh asks about a dozen plain values.
_AWAITS: dict[type, bool] = {}
_AWAITS_MAX = 512  # types made at run time do not grow it without bound


def is_awaitable(value: object) -> TypeGuard[Awaitable[Any]]:
    """What ``await`` takes, as ``inspect.isawaitable`` tells: its type has ``__await__`` (a
    coroutine, a future, a task), or it is a generator-based coroutine. Without the ABC
    dispatch that costs ``isawaitable`` a fraction of a microsecond on every plain value."""
    kind = type(value)
    awaits = _AWAITS.get(kind)
    if awaits is None:
        awaits = getattr(kind, "__await__", None) is not None
        if len(_AWAITS) < _AWAITS_MAX:
            _AWAITS[kind] = awaits
    if awaits:
        return True
    return type(value) is GeneratorType and bool(value.gi_code.co_flags & CO_ITERABLE_COROUTINE)


async def resolve(value: MaybeAwaitable[T]) -> T:
    """``value``, awaited if it is awaitable: services may be sync or async."""
    if is_awaitable(value):
        return cast(T, await value)
    return cast(T, value)


def provided(dependency: Any) -> Any:
    """What calling the dependency-injector ``Dependency`` provider ``dependency`` gives.

    While nothing overrides it, its default is called directly: through the wrapper, the eight
    calls a refresh makes cost 2-3% more of its CPU (measured in place, memory store).
    An override goes through the provider itself, with its ``instance_of`` check (the
    defaults a registration sets are checked when set), as does a provider of another kind.
    """
    if type(dependency) is Dependency and dependency.last_overriding is None:
        default = dependency.default
        if default is not None:
            return default()
    return dependency()


def ready(value: object) -> Any:
    """What a sync caller can use of a provider's value: the value itself, or an async
    provider's once made (a done future); None for one still to come (which is dropped)."""
    if not is_awaitable(value):
        return value
    if isinstance(value, asyncio.Future) and value.done() and not value.cancelled():
        return value.result()
    if isinstance(value, asyncio.Future):
        value.cancel()
    elif isinstance(value, Coroutine):
        value.close()  # never to be awaited
    return None


def attribute_of(user: Any, name: str, default: Any = None) -> Any:
    """``user.name``, or ``user[name]`` for users given as mappings."""
    if isinstance(user, Mapping):
        return user.get(name, default)
    return getattr(user, name, default)


def user_id_of(user: Any) -> str:
    """The ``id`` of a user object or mapping, as the string a ``sub`` claim carries."""
    identifier = attribute_of(user, "id")
    if identifier is None or isinstance(identifier, bool) or identifier == "":
        raise TypeError("a user must have a non-empty 'id'")
    return str(identifier)


def is_active(user: Any) -> bool:
    """Users without an ``active`` attribute are active; one that has it must be true."""
    return bool(attribute_of(user, "active", True))


def refuse_json_constant(name: str) -> Any:
    """``parse_constant`` for ``json``: NaN and Infinity are not JSON (RFC 8259 §6)."""
    raise ValueError(f"{name} is not JSON")


def is_unicode_text(text: str) -> bool:
    """Whether ``text`` is Unicode text: no lone surrogate, which UTF-8 cannot encode."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str | None:
    """The origin of an absolute http(s) URL as a browser writes it (``scheme://host[:port]``,
    lowercase, no default port); None for anything else, ``null`` included."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in _DEFAULT_PORTS or not host or parts.username or parts.password:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


class HashState(Protocol):
    """A ``hashlib`` hash object, as the keyed and labelled digests copy and extend it."""

    @property
    def block_size(self) -> int: ...
    def copy(self) -> HashState: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


_TO_BASE64URL = bytes.maketrans(b"+/", b"-_")
_FROM_BASE64URL = bytes.maketrans(b"-_", b"+/")


def base64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    encoded = binascii.b2a_base64(data, newline=False).translate(_TO_BASE64URL)
    return encoded.rstrip(b"=").decode("ascii")


def canonical_base64url_decode(segment: str) -> bytes | None:
    """The bytes of ``segment`` when it is their one spelling in base64url (no padding, no stray
    characters, no set trailing bits), else None: an altered segment never decodes to the same
    bytes."""
    rest = len(segment) % 4
    if not _BASE64URL_TEXT.fullmatch(segment) or rest == 1:
        return None
    if rest and segment[-1] not in CANONICAL_LAST_CHARACTERS[rest]:
        return None
    try:
        return base64url_decode(segment)
    except ValueError:
        return None


_BASE64URL_TEXT = re.compile(r"[A-Za-z0-9_-]*")
# The last character of a segment 2 (or 3) characters past a quantum carries 4 (or 2) unused
# bits: only the characters with those bits clear spell their bytes canonically.
CANONICAL_LAST_CHARACTERS = {2: "AQgw", 3: "AEIMQUYcgkosw048"}


def base64url_decode(segment: str) -> bytes:
    """The bytes of base64url text, padded or not; ``ValueError`` for what is not base64url
    (``binascii.Error`` and ``UnicodeError`` are ``ValueError``s). Not canonical-only."""
    padded = segment.encode("ascii").translate(_FROM_BASE64URL) + b"=" * (-len(segment) % 4)
    return binascii.a2b_base64(padded)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31557600}
_DURATION = re.compile(r"\s*(\d+)\s*([smhdwy]?)\s*")


def parse_duration(value: object) -> int:
    """Seconds from a number or a string: ``"30"``, ``"30s"``, ``"30m"``, ``"1h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a string like '30m', '1h', '7d'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            return int(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    raise ValueError("must be a number of seconds or a string like '30m', '1h', '7d'")


def unverified_claims(token: object) -> Mapping[str, Any]:
    """The claims of a JWT read back without verifying it ({} for what is not one): for a token
    the library signed itself, never for one a request brought."""
    if not isinstance(token, str):
        return {}
    try:
        segment = token.split(".")[1]
        payload = json.loads(base64url_decode(segment))
    except (IndexError, ValueError):  # binascii.Error and UnicodeError are ValueErrors
        return {}
    return payload if isinstance(payload, dict) else {}


# Nested deeper than this, a JSON value is refused: no token's header or claims need more.
MAX_JSON_DEPTH = 16


def strict_json_object(data: bytes) -> dict[str, Any] | None:
    """A JSON object from strict UTF-8 text: no duplicate members, NaN or deep nesting."""
    try:
        text = data.decode("utf-8")
        value = _STRICT_DECODER.decode(text)
        if not isinstance(value, dict):
            return None
        # Each level of nesting opens a bracket: with few brackets there is nothing to measure.
        if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _too_deep(value):
            return None
        # "\ud800" escapes decode to lone surrogates, which are not Unicode text. Strict UTF-8
        # decoding never yields a surrogate, so without a "\u" there is nothing to check.
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        return None
    return value


def _too_deep(value: object) -> bool:
    # Iterative, so measuring a deep value cannot itself recurse too deeply.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if not isinstance(item, list):
            continue
        if depth > MAX_JSON_DEPTH:
            return True
        pending.extend((child, depth + 1) for child in item)
    return False


def _without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 / RFC 7519 §4: duplicate member names are refused, never "last one wins".
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_without_duplicates, parse_constant=refuse_json_constant
)


# What AUTH_REFRESH_STORE_URL may name: the built-in stores' schemes, those registered with
# register_store_scheme (stores.registry, which opens them) and those of entry points.
BUILT_IN_STORE_SCHEMES = frozenset(
    {
        "memory",
        "sqlite",
        "redis",
        "rediss",
        "postgresql",
        "postgres",
        "redis-cluster",
        "rediss-cluster",
    }
)
STORE_ENTRY_POINT_GROUP = "auth_refresh.stores"
_registered_store_schemes: set[str] = set()


def store_scheme_of(url: str) -> str | None:
    """The lower-cased scheme of a store URL; None when it has none, or for ``sqlite://x``
    (a host where the path belongs, as in SQLAlchemy)."""
    scheme, separator, _ = url.partition("://")
    if not separator or (scheme.lower() == "sqlite" and not url.startswith("sqlite:///")):
        return None
    return scheme.lower()


def accept_store_scheme(scheme: str) -> None:
    """Let ``AUTH_REFRESH_STORE_URL`` name ``scheme`` (``register_store_scheme`` calls this)."""
    _registered_store_schemes.add(scheme)


def is_store_scheme(scheme: str) -> bool:
    """Whether a store is known for ``scheme``: built in, registered, or an entry point's."""
    return (
        scheme in BUILT_IN_STORE_SCHEMES
        or scheme in _registered_store_schemes
        or bool(entry_points(group=STORE_ENTRY_POINT_GROUP, name=scheme))
    )


# The client's address: the peer's, or what trusted proxies say in X-Forwarded-For. A proxy
# appends the address it received the request from; anything left of that may be whatever the
# client sent. So the header is read from the right, and only while the hop that wrote it is a
# trusted proxy: the first address that is not one is the client. Without trusted proxies (the
# default) the header is never read.

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def client_address(request: Request, trusted_proxies: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address; None when the server names no peer (a Unix socket, say)."""
    peer = _address(request.client.host) if request.client else None
    if peer is None or not trusted_proxies:
        return peer
    hops = [hop for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        if not _is_trusted(client, trusted_proxies):
            break
        address = _address(hop.strip())
        if address is None:  # not written by a trusted proxy: the last trusted hop answers
            break
        client = address
    return client


def _address(text: str) -> IPAddress | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1 (a dual-stack socket)
    return address


def _is_trusted(address: IPAddress, trusted_proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted_proxies)


def from_trusted_proxy(request: Request, trusted_proxies: Sequence[IPNetwork]) -> bool:
    """Whether the request's peer is one of ``trusted_proxies``, whose ``X-Forwarded-*``
    headers are believed."""
    peer = _address(request.client.host) if request.client else None
    return peer is not None and _is_trusted(peer, trusted_proxies)
