"""Benchmarks of the refresh path: in-process, over HTTP, and Redis round trips (issue 6).

``python -m bench.run`` (``make bench``) runs everything; ``--smoke`` (``make bench-smoke``)
runs a few seconds of it to prove the harness still works.
"""
