"""The access guard's session check: ``GET /bench/me`` with an access token naming its session
(the guard asks the per-process cache, the store at most once a second) against the same route
with a token without one (no check), side by side, per store.

Each round runs both, in alternating order, one right after the other; the ratio is the
median of the rounds' with/without ratios (req/s, and p99).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import httpx

from bench import over_http
from bench.configurations import Configuration, environment

SCRIPT = Path(__file__).resolve().parent / "guarded.lua"
VARIANTS = ("withoutSession", "withSession")
TIMES = "\N{MULTIPLICATION SIGN}"


def sessions_phase(
    stores: list[Configuration],
    *,
    workdir: Path,
    redis_url: str | None,
    rounds: int,
    seconds: int,
    connections: int,
    server_cpu: int | None,
    load_cpu: int | None,
) -> list[dict[str, Any]]:
    """One row per store: median req/s and p99 with and without the check, and the ratios."""
    directory = workdir / "sessions"
    directory.mkdir()
    launches = [(c, environment(c, directory, redis_url)) for c in stores]
    rows = []
    with over_http.running(launches, workdir=directory, cpu=server_cpu) as servers:
        for server in servers:
            tokens = httpx.get(server.base_url + "/bench/access", timeout=30).json()
            runs: dict[str, list[over_http.LoadResult]] = {variant: [] for variant in VARIANTS}
            for round_number in range(rounds):
                order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    result = over_http.run_wrk(
                        server.base_url + "/bench/me",
                        [tokens[variant]],
                        seconds=seconds,
                        connections=connections,
                        threads=1,
                        cpu=load_cpu,
                        workdir=directory,
                        script=SCRIPT,
                    )
                    if not result.valid:
                        raise over_http.HarnessError(
                            f"{server.configuration.name} {variant}: {result.problems()}"
                        )
                    runs[variant].append(result)
            rows.append(_row(server.configuration, runs))
            say_row(rows[-1])
    return rows


def _row(
    configuration: Configuration, runs: dict[str, list[over_http.LoadResult]]
) -> dict[str, Any]:
    without, with_ = runs["withoutSession"], runs["withSession"]
    pairs = list(zip(with_, without, strict=True))
    return {
        "name": configuration.name,
        "label": configuration.label,
        "without": _summary(without),
        "with": _summary(with_),
        "ratio": statistics.median(w.requests_per_second / o.requests_per_second for w, o in pairs),
        "p99_ratio": statistics.median(w.p99_ms / o.p99_ms for w, o in pairs),
    }


def _summary(results: list[over_http.LoadResult]) -> dict[str, float]:
    return {
        "requests_per_second": statistics.median(r.requests_per_second for r in results),
        "p99_ms": statistics.median(r.p99_ms for r in results),
    }


def say_row(row: dict[str, Any]) -> None:
    print(
        f"  session check, {row['label']}: {row['with']['requests_per_second']:.0f} vs "
        f"{row['without']['requests_per_second']:.0f} req/s ({row['ratio']:.2f}x), "
        f"p99 {row['with']['p99_ms']:.2f} vs {row['without']['p99_ms']:.2f} ms",
        flush=True,
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The docs and console table."""
    if not rows:
        return []
    lines = [
        "| GET /me, access-guarded | req/s with the session check | without "
        f"| {TIMES}, req/s | p99 ms with | without | {TIMES}, p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        with_, without = row["with"], row["without"]
        lines.append(
            f"| {row['label']} | {with_['requests_per_second']:.0f} "
            f"| {without['requests_per_second']:.0f} | {row['ratio']:.2f}{TIMES} "
            f"| {with_['p99_ms']:.2f} | {without['p99_ms']:.2f} | {row['p99_ratio']:.2f}{TIMES} |"
        )
    lines += [
        "",
        "The same route and worker; with: an access token naming its session (the guard's "
        "per-process cache, the store read at most once a second); without: a token without "
        "one. Medians of the rounds, run side by side in alternating order.",
        "",
    ]
    return lines
