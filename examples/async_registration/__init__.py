"""Asynchronous registration: ``for_root_async``, ``register_async``, ``factory`` and ``inject``."""
