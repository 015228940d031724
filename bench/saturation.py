"""Saturation: each shared store behind two uvicorn workers, nothing pinned, so the workers,
the load generators and the store's server share the machine's CPUs as one host running it all
would (docs/scaling.md). What the machine serves in all, per worker, and beside the raw
endpoint.

The workers are two uvicorn processes, each loaded by its own wrk, as a load balancer in front
would spread them: ``uvicorn --workers`` on the asyncio loop leaves Nagle's algorithm on for
its shared socket's connections (docs/how-to/deploy.md), which would measure that instead. The
memory store is left out: its workers would not share their families.
"""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
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
    rows = []
    for configuration in configurations:
        # One environment: the SQLite store's file is the workers' shared one.
        launch = (configuration, environment(configuration, directory, redis_url))
        with ExitStack() as stack:
            workers = []
            for index in range(WORKERS):
                place = directory / f"{configuration.name}-{index}"
                place.mkdir()
                [worker] = stack.enter_context(over_http.running([launch], workdir=place, cpu=None))
                workers.append(worker)
            estimate = _run(workers, WARMUP_SECONDS, 6000).requests_per_second
            results = [_run(workers, seconds, estimate) for _ in range(rounds)]
        rows.append(_row(configuration, results))
        say_row(rows[-1])
    raw = next((row for row in rows if row["name"] == "raw"), None)
    for row in rows:
        row["ratio"] = row["requests_per_second"] / raw["requests_per_second"] if raw else None
    return rows


@dataclass
class Run:
    """Every worker's run at once: req/s in all, the higher p99, and the answers that were
    not a token pair (a store that gave up: 503), which saturation may bring."""

    requests_per_second: float
    p99_ms: float
    requests: int
    failed: int


def _run(workers: list[over_http.Server], seconds: int, rate: float) -> Run:
    """Every worker loaded at once for ``seconds``."""
    tokens = [
        over_http.mint(worker.base_url, int(rate / WORKERS * seconds * 2) + 2000)
        for worker in workers
    ]

    def load(index: int) -> over_http.LoadResult:
        result = over_http.run_wrk(
            workers[index].base_url + "/auth/refresh",
            tokens[index],
            seconds=seconds,
            connections=CONNECTIONS_PER_WORKER,
            threads=1,
            cpu=None,
            workdir=workers[index].log.parent,
        )
        if result.wraps:
            name = workers[index].configuration.name
            raise over_http.HarnessError(f"{name} at saturation: {result.problems()}")
        return result

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(load, range(WORKERS)))
    return Run(
        requests_per_second=sum(r.requests_per_second for r in results),
        p99_ms=max(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        failed=sum(r.non_2xx + r.errors for r in results),
    )


def _row(configuration: Configuration, results: list[Run]) -> dict[str, Any]:
    rate = statistics.median(run.requests_per_second for run in results)
    return {
        "name": configuration.name,
        "label": configuration.label,
        "workers": WORKERS,
        "requests_per_second": rate,
        "per_worker": rate / WORKERS,
        "p99_ms": statistics.median(run.p99_ms for run in results),
        "runs": [run.requests_per_second for run in results],
        "requests": sum(run.requests for run in results),
        "failed": sum(run.failed for run in results),
    }


def say_row(row: dict[str, Any]) -> None:
    print(
        f"  saturation, {row['label']}: {row['requests_per_second']:.0f} req/s with "
        f"{row['workers']} workers, p99 {row['p99_ms']:.2f} ms, {row['failed']} failed",
        flush=True,
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The docs and console table."""
    if not rows:
        return []
    lines = [
        f"| {WORKERS} workers, nothing pinned | req/s (median) | per worker | {TIMES} raw "
        "| p99 ms | failed answers | runs, req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}{TIMES}" if row.get("ratio") is not None else "—"
        runs = ", ".join(f"{run:.0f}" for run in row["runs"])
        lines.append(
            f"| {row['label']} | {row['requests_per_second']:.0f} | {row['per_worker']:.0f} "
            f"| {ratio} | {row['p99_ms']:.2f} | {row['failed']} of {row['requests']} | {runs} |"
        )
    lines += [
        "",
        f"The whole machine at saturation: {WORKERS} uvicorn workers, each loaded by its own wrk "
        f"({CONNECTIONS_PER_WORKER} connections), and the store's servers sharing its CPUs, one "
        f"configuration at a time (docs/scaling.md). {TIMES} raw: against the raw endpoint's "
        "median here, not side by side. p99: the higher worker's, median of the runs. Failed "
        "answers: not a token pair (a store that gave up answers 503), counted, not left out.",
        "",
    ]
    return lines
