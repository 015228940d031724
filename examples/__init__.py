"""Runnable examples: ``python -m examples.sync_registration`` (or ``async_registration``)."""
