"""The request walks: what a refresh, a logout, a login's pair, the session routes and the two
guards do per request (``refresh``, which has the login's pair too; ``sessions``; ``guards``).
The registrations build them and start them; a walk never reaches back into its registration."""
