"""Where routes really are: their public paths, found from the request being answered.

A route's path as written (``/auth/refresh``) is not where a browser sees it: a router prefix
(``include_router(router, prefix="/v1")``), the server's ``root_path`` (behind a proxy) and the
mount path of a sub-application (``app.mount("/sub", api)``) come before it. Starlette knows
the rest: the application serving a request finds a named route's path below it
(``url_path_for``: prefixes and mounts included), and the request's ``root_path`` is where that
application is (the server's root path and the mounts above it).
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import NoMatchFound

__all__ = ["RoutedPaths"]


class RoutedPaths:
    """The public paths of some named routes, for each request.

    ``routes`` maps each route's name to its path as written. A route the application serving
    the request has (directly, through routers or mounted applications) is where the request's
    ``root_path`` and that application put it; another keeps its written path (a route the
    application writes itself). Routes are looked up once per application; each request adds
    only its ``root_path``.
    """

    def __init__(self, routes: Mapping[str, str]) -> None:
        self.routes = dict(routes)
        self.written = tuple(self.routes.values())
        # Per application: the path below it of each route (None: not there).
        self._below: weakref.WeakKeyDictionary[Any, tuple[str | None, ...]] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, request: Request) -> tuple[str, ...]:
        app = request.scope.get("app")
        if app is None:
            return self.written
        below = self._below.get(app)
        if below is None:
            below = self._below[app] = tuple(_path_below(app, name) for name in self.routes)
        root_path = request.scope.get("root_path", "").rstrip("/")
        return tuple(
            written if found is None else root_path + found
            for found, written in zip(below, self.written, strict=True)
        )


def _path_below(app: Any, name: str) -> str | None:
    try:
        return str(app.url_path_for(name))
    except NoMatchFound:
        return None
