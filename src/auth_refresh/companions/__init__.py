"""The companion modules of the original: signing (``JwtModule``) and the issue and verify
services (``AuthenticationModule``) in ``authentication``; the access guard's registration
(``AuthJwtModule``) in ``auth_jwt``; the login route (``AuthLocalModule``) in ``auth_local``,
with its password hashing in ``passwords``."""
