"""A browser session: the refresh token in an HttpOnly cookie, a page with plain JavaScript."""
