"""Saturation: each shared store behind two uvicorn workers, nothing pinned, so the workers,
wrk and the store's server share the machine's CPUs as one host running it all would
(docs/scaling.md). What the machine serves in all, per worker, and beside the raw endpoint.

The memory store is left out: its workers would not share their families.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import over_http
from bench.configurations import Configuration, environment

WORKERS = 2
# Connections per worker, as the one-worker runs have.
CONNECTIONS_PER_WORKER = 16
WARMUP_SECONDS = 2
TIMES = "\N{MULTIPLICATION SIGN}"


def saturation_phase(
    configurations: list[Configuration],
    *,
    workdir: Path,
    redis_url: str | None,
    rounds: int,
    seconds: int,
) -> list[dict[str, Any]]:
    """One row per configuration: median req/s of ``rounds`` runs, per worker, p99."""
    directory = workdir / "saturation"
    directory.mkdir()
    launches = [(c, environment(c, directory, redis_url)) for c in configurations]
    rows = []
    with over_http.running(launches, workdir=directory, cpu=None, workers=WORKERS) as servers:
        for server in servers:
            estimate = _run(server, directory, WARMUP_SECONDS, 6000).requests_per_second
            results = [_run(server, directory, seconds, estimate) for _ in range(rounds)]
            rows.append(_row(server.configuration, results))
            say_row(rows[-1])
    raw = next((row for row in rows if row["name"] == "raw"), None)
    for row in rows:
        row["ratio"] = row["requests_per_second"] / raw["requests_per_second"] if raw else None
    return rows


def _run(
    server: over_http.Server, directory: Path, seconds: int, rate: float
) -> over_http.LoadResult:
    """One wrk run of ``seconds`` with tokens for ``rate`` refreshes a second and to spare."""
    tokens = over_http.mint(server.base_url, int(rate * seconds * 1.5) + 1000)
    result = over_http.run_wrk(
        server.base_url + "/auth/refresh",
        tokens,
        seconds=seconds,
        connections=WORKERS * CONNECTIONS_PER_WORKER,
        threads=1,
        cpu=None,
        workdir=directory,
    )
    if not result.valid:
        name = server.configuration.name
        raise over_http.HarnessError(f"{name} at saturation: {result.problems()}")
    return result


def _row(configuration: Configuration, results: list[over_http.LoadResult]) -> dict[str, Any]:
    rate = statistics.median(result.requests_per_second for result in results)
    return {
        "name": configuration.name,
        "label": configuration.label,
        "workers": WORKERS,
        "requests_per_second": rate,
        "per_worker": rate / WORKERS,
        "p99_ms": statistics.median(result.p99_ms for result in results),
        "runs": [result.requests_per_second for result in results],
    }


def say_row(row: dict[str, Any]) -> None:
    print(
        f"  saturation, {row['label']}: {row['requests_per_second']:.0f} req/s with "
        f"{row['workers']} workers, p99 {row['p99_ms']:.2f} ms",
        flush=True,
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The docs and console table."""
    if not rows:
        return []
    lines = [
        f"| {WORKERS} workers, nothing pinned | req/s (median) | per worker | {TIMES} raw "
        "| p99 ms | runs, req/s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}{TIMES}" if row.get("ratio") is not None else "—"
        runs = ", ".join(f"{run:.0f}" for run in row["runs"])
        lines.append(
            f"| {row['label']} | {row['requests_per_second']:.0f} | {row['per_worker']:.0f} "
            f"| {ratio} | {row['p99_ms']:.2f} | {runs} |"
        )
    lines += [
        "",
        f"The whole machine at saturation: {WORKERS} uvicorn workers, wrk "
        f"({WORKERS * CONNECTIONS_PER_WORKER} connections) and the store's servers sharing its "
        f"CPUs, one configuration at a time (docs/scaling.md). {TIMES} raw: against the raw "
        "endpoint's median here, not side by side.",
        "",
    ]
    return lines
