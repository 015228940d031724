"""Synchronous registration: ``for_root`` and ``register`` with service instances."""
