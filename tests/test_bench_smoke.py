"""The benchmark harness keeps working: ``python -m bench.run --smoke`` (``make bench-smoke``).

The smoke run measures nothing worth keeping; it proves every configuration that can run here
is served, loaded and reported, and that none that could run is skipped.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.configurations import ANCHORS

# Each test starts processes of its own: make quick leaves them out.
pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_smoke_run_measures_every_available_configuration(tmp_path: Path) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("JWT_MODULE_", "AUTH_REFRESH_"))
    }
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--output-dir",
            str(tmp_path / "results"),
            "--docs-dir",
            str(tmp_path / "docs"),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    results = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert results["kind"] == "smoke"
    sections = {
        "pipeline": results["inprocess"]["pipeline"],
        "http": results["http"]["configurations"],
    }
    for rows in sections.values():
        for row in rows:
            # Measured, or skipped with a reason: never silently missing.
            assert (
                row.get("skipped")
                or row.get("microseconds", 0) > 0
                or row.get("requests_per_second", 0) > 0
            ), row
    measured = {
        name: {row["name"] for row in rows if not row.get("skipped")}
        for name, rows in sections.items()
    }
    # The raw limit and the library itself always run.
    assert {"raw", "library-stateless"} <= measured["pipeline"]
    assert {"raw", "library-stateless"} <= measured["http"]
    # The stores that need no server are always measured, the memory store with DPoP too.
    for rows in measured.values():
        assert {"library-memory", "library-memory-dpop", "library-sqlite"} <= rows
    # A refresh with a proof against one without: in-process and over HTTP, in one run.
    for rows in sections.values():
        [proven] = [row for row in rows if row["name"] == "library-memory-dpop"]
        assert proven["dpop_ratio"] > 0
    # Over HTTP, each store's by-hand anchor runs wherever the store does.
    for name in measured["http"]:
        assert ANCHORS.get(name, name) in measured["http"], name
    # The event loop's lag is measured beside every HTTP run.
    assert all(
        row["lag_p99_ms"] >= 0 for row in results["http"]["configurations"] if "rounds" in row
    )
    if results["wrk"]:
        # wrk and its Lua script load the raw endpoint, and send a DPoP proof with each refresh.
        checked = {check["configuration"] for check in results["http"]["wrk_checks"]}
        assert checked == {"raw", "library-memory-dpop"}
        # The access guard with and without the session check, for the stores needing no server.
        checked = {row["name"]: row for row in results["sessions"]}
        assert {"library-memory", "library-sqlite"} <= set(checked)
        assert all(row["with"]["requests_per_second"] > 0 for row in checked.values())
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert page.startswith("# Benchmarks")
    assert "| FastAPI + PyJWT by hand (the limit) |" in page
