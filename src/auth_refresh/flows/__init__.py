"""The request walks: what a refresh, a logout, a login's pair, the session routes and the two
guards do per request (``refresh``, ``login``, ``sessions``, ``guards``). The registrations build
them and start them; a walk never reaches back into its registration."""
