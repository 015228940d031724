"""The benchmark: ``python -m bench.run`` (``make bench``), ``--smoke`` (``make bench-smoke``).

Full run: in-process pipeline and applications, every configuration over HTTP with wrk (rounds
interleaved across configurations), Redis round trips, the session check, and two workers at
saturation; results to ``bench/results/*.json``, ``docs/benchmarks.md`` and
``docs/benchmarks.png``; the table and the targets printed.

Smoke run: a few seconds of the same code paths (tiny iteration counts, one short load per
configuration with wrk when installed, a Python load loop otherwise), results to a temporary
directory. No thresholds: it exits non-zero only when the harness is broken.

Exit status: 0 done; 1 the harness failed; 2 a tool the full run needs is missing; 3 targets
missed (only with ``--check-targets``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import inprocess, over_http, report, saturation, sessions
from bench.common import UNFROZEN_HEAP
from bench.configurations import (
    ANCHORS,
    BY_NAME,
    CONFIGURATIONS,
    RAW,
    SERVER_URL_VARIABLES,
    WITHOUT_PROOF,
    Configuration,
    environment,
    skip_reason,
)
from bench.redis_server import count_round_trips, redis_server
from bench.scale_out import count_statements, scale_out_servers

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOCS_DIR = ROOT / "docs"
# Tokens minted for a warm-up second: above what one core serves.
WARMUP_TOKENS_PER_SECOND = 6000
SMOKE_WRK_TOKENS = 6000
SMOKE_WRK_CHECK_TOKENS = 1000
SMOKE_PYTHON_TOKENS = 150
SMOKE_PYTHON_SECONDS = 0.3
WARMUP_REFRESHES = 20
# More than this share of the CPUs busy before the start, or raw runs this far apart, is noted.
BUSY_AT_START = 0.1
DRIFT_NOTED = 1.2
# The whole machine at saturation: what docs/scaling.md needs, not a side-by-side ratio.
SATURATION_ROUNDS = 3


@dataclass
class Options:
    smoke: bool
    duration: int
    warmup: int
    rounds: int
    connections: int
    threads: int
    iterations: int
    inprocess_rounds: int
    loader: str
    only: list[str]
    output_dir: Path | None
    docs_dir: Path | None
    check_targets: bool
    loop: str
    http: str
    counted_refreshes: int
    unfrozen_heap: bool


def parse_arguments(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds, no thresholds")
    parser.add_argument("--duration", type=int, default=4, help="seconds per HTTP run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of HTTP warm-up")
    parser.add_argument("--rounds", type=int, default=7, help="HTTP rounds (medians reported)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--iterations", type=int, default=1000, help="in-process, per round")
    parser.add_argument("--inprocess-rounds", type=int, default=11)
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--only", default="", help="comma-separated configurations (raw is always included)"
    )
    parser.add_argument("--output-dir", type=Path, help="where the JSON results go")
    parser.add_argument("--docs-dir", type=Path, help="where benchmarks.md and the chart go")
    parser.add_argument("--check-targets", action="store_true", help="exit 3 if a target is missed")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop")
    parser.add_argument("--http", default="auto", help="uvicorn --http")
    parser.add_argument(
        "--counted-refreshes",
        type=int,
        default=200,
        help="sequential refreshes counted on the Redis and PostgreSQL servers",
    )
    parser.add_argument(
        "--unfrozen-heap",
        action="store_true",
        help="servers without the deploy guide's gc.freeze() at startup (its A/B)",
    )
    arguments = parser.parse_args(argv)
    only = [name for name in arguments.only.split(",") if name]
    for name in only:
        if name not in BY_NAME:
            parser.error(f"unknown configuration {name!r}; known: {', '.join(BY_NAME)}")
    smoke = arguments.smoke
    partial = smoke or bool(only) or arguments.unfrozen_heap
    loader = arguments.loader
    if loader == "auto":
        # The smoke run checks wrk once (on the raw endpoint) and loads the rest with Python:
        # minting a second of tokens for the slower stores would take longer than the run.
        loader = "python" if smoke else "wrk"
    return Options(
        smoke=smoke,
        duration=1 if smoke else arguments.duration,
        warmup=0 if smoke else arguments.warmup,
        rounds=1 if smoke else arguments.rounds,
        connections=arguments.connections,
        threads=arguments.threads,
        iterations=30 if smoke else arguments.iterations,
        inprocess_rounds=2 if smoke else arguments.inprocess_rounds,
        loader=loader,
        only=only,
        # Only a complete full run, deployed as the guide says, replaces the published results.
        output_dir=arguments.output_dir or (None if partial else RESULTS_DIR),
        docs_dir=arguments.docs_dir or (None if partial else DOCS_DIR),
        check_targets=arguments.check_targets,
        loop=arguments.loop,
        http=arguments.http,
        counted_refreshes=20 if smoke else arguments.counted_refreshes,
        unfrozen_heap=arguments.unfrozen_heap,
    )


def say(message: str) -> None:
    print(message, flush=True)


class Failures:
    """What went wrong in the harness; any entry makes the run exit 1."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)
        say(f"FAILED: {message}")


def main(argv: list[str] | None = None) -> int:
    options = parse_arguments(argv)
    # The library's own warnings (stateless mode, reuse detected by the probe) are expected here.
    logging.getLogger("auth_refresh").setLevel(logging.ERROR)
    if options.loader == "wrk" and over_http.wrk_version() is None:
        say(over_http.WRK_MISSING)
        return 2
    if options.unfrozen_heap:
        os.environ[UNFROZEN_HEAP] = "1"
    started = datetime.now(UTC)
    failures = Failures()
    with tempfile.TemporaryDirectory(prefix="auth-refresh-bench-") as temporary:
        workdir = Path(temporary)
        try:
            results = collect(options, workdir, started, failures)
        except Exception:
            traceback.print_exc()
            say("FAILED: the harness stopped with the error above")
            return 1
        output_dir = options.output_dir or workdir / "results"
        docs_dir = options.docs_dir or workdir / "docs"
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        for path in report.write_json(results, output_dir, stamp):
            say(f"results: {path}")
        page, chart_missing = report.write_docs(results, docs_dir)
        say(f"docs: {page}" + (f" (no chart: {chart_missing})" if chart_missing else ""))
        if chart_missing and not options.smoke:
            failures.add(f"no chart: {chart_missing}")
        say("")
        say(report.console_table(results))
        say(f"phases (s): {results.get('phase_seconds')}")
    if failures.messages:
        say(f"{len(failures.messages)} harness failure(s)")
        return 1
    if options.check_targets and any(t["status"] != "met" for t in results["targets"]):
        return 3
    return 0


def collect(
    options: Options, workdir: Path, started: datetime, failures: Failures
) -> dict[str, Any]:
    selected = [
        configuration
        for configuration in CONFIGURATIONS
        if not options.only or configuration.name in options.only or configuration is RAW
    ]
    machine = report.machine()
    results: dict[str, Any] = {
        "kind": "smoke" if options.smoke else "full",
        "started_at": started.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine,
        "versions": report.versions(),
        "source": report.source(),
        "wrk": over_http.wrk_version(),
        "settings": {
            "duration": options.duration,
            "warmup": options.warmup,
            "rounds": options.rounds,
            "connections": options.connections,
            "wrk_threads": options.threads,
            "iterations": options.iterations,
            "inprocess_rounds": options.inprocess_rounds,
            "heap": "unfrozen" if options.unfrozen_heap else "frozen at startup",
        },
        "notes": [],
    }
    if options.smoke:
        results["notes"].append(
            "Smoke run: tiny samples to check the harness; the numbers mean nothing."
        )
    busy = report.cpu_busy()
    results["cpu_busy_at_start"] = busy
    if busy is not None and busy > BUSY_AT_START:
        results["notes"].append(
            f"The machine was not idle ({busy:.0%} of the CPUs busy just before the start): "
            "other work shared the CPUs, so these numbers are noisy."
        )
    _, load_cpu, _ = over_http.cpu_plan()
    server_cpu = None if options.smoke else load_cpu
    # The smoke run checks the harness, not the servers: it starts no scale-out server.
    scale_out = set() if options.smoke else {c.store for c in selected if c.store}
    with (
        redis_server(workdir, server_cpu) as (redis_url, redis_reason),
        scale_out_servers(scale_out, workdir, server_cpu) as not_started,
    ):
        results["redis_server_version"] = _redis_version(redis_url) if redis_url else None
        skipped = availability(selected, redis_url, redis_reason, not_started)
        phases = results["phase_seconds"] = {}
        began = time.monotonic()
        results["inprocess"] = inprocess_phase(options, selected, skipped, workdir, redis_url)
        phases["inprocess"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        results["http"], counted = http_phase(
            options, selected, skipped, workdir, redis_url, failures
        )
        phases["http"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        results["redis"] = redis_phase(skipped, redis_url, redis_reason, counted.get("redis"))
        results["postgres"] = {
            "store": counted.get("postgres")
            or {"skipped": skipped.get("library-postgres") or "not selected (--only)"}
        }
        phases["redis"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        results["sessions"] = sessions_phase(options, selected, skipped, workdir, redis_url)
        phases["sessions"] = round(time.monotonic() - began, 1)
        began = time.monotonic()
        results["saturation"] = saturation_phase(options, selected, skipped, workdir, redis_url)
        phases["saturation"] = round(time.monotonic() - began, 1)
    results["load_average_end"] = list(report.load_average())
    drift = raw_drift(results)
    if drift is not None:
        results["notes"].append(drift)
    results["targets"] = report.evaluate_targets(results)
    return results


def sessions_phase(
    options: Options,
    selected: list[Configuration],
    skipped: dict[str, str | None],
    workdir: Path,
    redis_url: str | None,
) -> list[dict[str, Any]]:
    """The access guard with and without the session check, per store (needs wrk)."""
    # Each store once: with DPoP required, the guard would refuse these unbound access tokens.
    stores = [
        c
        for c in selected
        if c.stack == "library" and c.store is not None and not c.dpop and not skipped[c.name]
    ]
    if not stores or over_http.wrk_version() is None:
        return []
    server_cpu, load_cpu, _ = (None, None, "") if options.smoke else over_http.cpu_plan()
    say(f"session check: {len(stores)} stores, {options.rounds} rounds")
    return sessions.sessions_phase(
        stores,
        workdir=workdir,
        redis_url=redis_url,
        rounds=options.rounds,
        seconds=options.duration,
        connections=options.connections,
        server_cpu=server_cpu,
        load_cpu=load_cpu,
    )


def saturation_phase(
    options: Options,
    selected: list[Configuration],
    skipped: dict[str, str | None],
    workdir: Path,
    redis_url: str | None,
) -> list[dict[str, Any]]:
    """The raw endpoint and each shared store behind two workers, nothing pinned (needs wrk)."""
    shared = [
        c
        for c in selected
        if (c is RAW or (c.stack == "library" and c.store not in (None, "memory")))
        and not skipped[c.name]
    ]
    if options.smoke or len(shared) < 2 or over_http.wrk_version() is None:
        return []
    rounds = min(options.rounds, SATURATION_ROUNDS)
    say(f"saturation: {len(shared)} configurations, {rounds} rounds each")
    return saturation.saturation_phase(
        shared, workdir=workdir, redis_url=redis_url, rounds=rounds, seconds=options.duration
    )


def raw_drift(results: dict[str, Any]) -> str | None:
    """A note when the raw endpoint's own runs differ much: the machine's speed drifted."""
    rows = (results.get("http") or {}).get("configurations") or []
    raw = next((row for row in rows if row["name"] == RAW.name and row.get("rounds")), None)
    if raw is None or len(raw["rounds"]) < 2:
        return None
    speeds = [run["requests_per_second"] for run in raw["rounds"]]
    if max(speeds) < DRIFT_NOTED * min(speeds):
        return None
    return (
        f"The same raw endpoint served from {min(speeds):.0f} to {max(speeds):.0f} req/s in "
        "this run: the machine's speed drifted (a shared host), so read each ratio with the "
        "range of its side-by-side runs."
    )


def availability(
    selected: list[Configuration],
    redis_url: str | None,
    redis_reason: str,
    not_started: dict[str, str],
) -> dict[str, str | None]:
    """Why each configuration is skipped (None: it runs)."""
    skipped: dict[str, str | None] = {}
    for configuration in selected:
        reason = not_started.get(configuration.store or "") or skip_reason(
            configuration, redis_url, redis_reason
        )
        skipped[configuration.name] = reason
        if reason:
            say(f"skip {configuration.name}: {reason}")
    return skipped


def _row(configuration: Configuration) -> dict[str, Any]:
    return {"name": configuration.name, "label": configuration.label}


def _against_raw(timing: inprocess.Timing, raw: inprocess.Timing) -> dict[str, Any]:
    # As the HTTP table: the median of the round-by-round ratios, the machine's drift between
    # rounds cancelled; the quotient of the medians beside it.
    ratios = timing.ratios(raw)
    return {
        "microseconds": timing.median,
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "ratio_of_medians": timing.median / raw.median,
        "rounds": timing.microseconds,
    }


def inprocess_phase(
    options: Options,
    selected: list[Configuration],
    skipped: dict[str, str | None],
    workdir: Path,
    redis_url: str | None,
) -> dict[str, Any]:
    runnable = [c for c in selected if not skipped[c.name]]
    library = [c for c in runnable if c.stack == "library"]
    say(f"in-process: pipeline ({len(library)} configurations)")
    directory = workdir / "inprocess"
    directory.mkdir()
    timings = asyncio.run(
        inprocess.measure_pipeline(
            library,
            iterations=options.iterations,
            rounds=options.inprocess_rounds,
            workdir=directory,
            redis_url=redis_url,
        )
    )
    raw = timings[0]
    pipeline: list[dict[str, Any]] = [
        {
            "name": "raw",
            "label": "PyJWT by hand: decode + 2 encodes",
            "microseconds": raw.median,
            "ratio": 1.0,
            "rounds": raw.microseconds,
        }
    ]
    by_name = {timing.name: timing for timing in timings[1:]}
    for configuration in selected:
        if configuration.stack != "library":
            continue
        row = _row(configuration)
        timing = by_name.get(configuration.name)
        if timing is None:
            row["skipped"] = skipped[configuration.name]
        else:
            row.update(_against_raw(timing, raw))
        pipeline.append(row)
    quiet = by_name.get(inprocess.TELEMETRY_OFF)
    if quiet is not None:
        pipeline.append(
            {
                "name": quiet.name,
                "label": "auth-refresh, memory store, OpenTelemetry hooks off",
                **_against_raw(quiet, raw),
            }
        )
    for row in pipeline:
        proven, plain = by_name.get(row["name"]), by_name.get(WITHOUT_PROOF.get(row["name"], ""))
        if proven is not None and plain is not None:
            # Round by round (the sides ran next to each other): refreshes per second with a
            # proof over those without, on the same store.
            row["dpop_ratio"] = statistics.median(plain.ratios(proven))
    return {"pipeline": pipeline}


def http_phase(
    options: Options,
    selected: list[Configuration],
    skipped: dict[str, str | None],
    workdir: Path,
    redis_url: str | None,
    failures: Failures,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Every runnable configuration over HTTP; also the Redis store's round trips, counted on
    its server while it is up."""
    runnable = [c for c in selected if not skipped[c.name]]
    if options.smoke:
        server_cpu, load_cpu, pinning = None, None, "not pinned (smoke run)"
    else:
        server_cpu, load_cpu, pinning = over_http.cpu_plan()
    directory = workdir / "http"
    directory.mkdir()
    seconds: float = options.duration
    if options.smoke and options.loader == "python":
        seconds = SMOKE_PYTHON_SECONDS

    def load(
        server: over_http.Server, presented: over_http.Refreshes, duration: float
    ) -> over_http.LoadResult:
        url = server.base_url + "/auth/refresh"
        if options.loader == "wrk":
            return over_http.run_wrk(
                url,
                presented.tokens,
                seconds=max(1, round(duration)),
                connections=options.connections,
                threads=options.threads,
                cpu=load_cpu,
                workdir=directory,
                proofs=presented.proofs,
            )
        return over_http.run_python_load(
            url,
            presented.tokens,
            seconds=duration,
            connections=options.connections,
            proofs=presented.proofs,
        )

    say(f"over HTTP: {len(runnable)} servers ({pinning}), {options.loader} load")
    launches = [(c, environment(c, directory, redis_url)) for c in runnable]
    runs: dict[str, list[over_http.LoadResult]] = {c.name: [] for c in runnable}
    invalid: dict[str, list[str]] = {c.name: [] for c in runnable}
    # Each configuration's valid runs with the raw run beside them: (run, raw run).
    pairs: dict[str, list[tuple[over_http.LoadResult, over_http.LoadResult]]] = {
        c.name: [] for c in runnable
    }
    with over_http.running(
        launches, workdir=directory, cpu=server_cpu, loop=options.loop, http=options.http
    ) as servers:
        estimates: dict[str, float] = {}
        if options.warmup > 0:
            for server in servers:
                name = server.configuration.name
                presented = over_http.refreshes(server, WARMUP_TOKENS_PER_SECOND * options.warmup)
                warm = load(server, presented, options.warmup)
                estimates[name] = warm.requests_per_second
                say(f"  warm-up {name}: {warm.requests_per_second:.0f} req/s")

        def tokens_for(server: over_http.Server) -> over_http.Refreshes:
            if options.smoke:
                needed = SMOKE_WRK_TOKENS if options.loader == "wrk" else SMOKE_PYTHON_TOKENS
            else:
                estimate = estimates.get(server.configuration.name, WARMUP_TOKENS_PER_SECOND)
                needed = int(estimate * seconds * 1.5) + 1000
            return over_http.refreshes(server, needed)

        def measure(
            server: over_http.Server, round_number: int, presented: over_http.Refreshes
        ) -> over_http.LoadResult | None:
            name = server.configuration.name
            needed = len(presented.tokens)
            over_http.start_lag(server.base_url)
            result = load(server, presented, seconds)
            if result.wraps and not options.smoke:
                say(f"  {name}: ran out of tokens, again with more")
                more = over_http.refreshes(server, needed * 3)
                over_http.start_lag(server.base_url)
                result = load(server, more, seconds)
            result.lag_p99_ms = over_http.lag(server.base_url)
            say(
                f"  round {round_number + 1} {name}: {result.requests_per_second:.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"loop lag p99 {result.lag_p99_ms:.2f} ms"
            )
            if result.valid:
                runs[name].append(result)
                return result
            message = f"{name} over HTTP: {result.problems()}"
            invalid[name].append(result.problems())
            if options.smoke:
                failures.add(message)
            else:
                say(f"  INVALID (left out of the medians): {message}")
            return None

        raw_server = next(s for s in servers if s.configuration.name == RAW.name)
        others = [server for server in servers if server is not raw_server]
        for round_number in range(options.rounds):
            if not others:
                measure(raw_server, round_number, tokens_for(raw_server))
            shift = round_number % len(others) if others else 0
            for server in others[shift:] + others[:shift]:
                # The machine's speed drifts over minutes (shared hosts): each ratio compares
                # a run with a raw run made just before or after it, alternately. The tokens of
                # both are minted first, so the two runs follow each other at once.
                pair = [raw_server, server] if round_number % 2 == 0 else [server, raw_server]
                minted = [tokens_for(member) for member in pair]
                raw_result, result = (
                    measure(member, round_number, presented)
                    for member, presented in zip(pair, minted, strict=True)
                )
                if pair[0] is server:
                    raw_result, result = result, raw_result
                if raw_result is not None and result is not None:
                    pairs[server.configuration.name].append((result, raw_result))
        wrk_checks = []
        if options.smoke and options.loader == "python" and over_http.wrk_version():
            wrk_checks = smoke_wrk_checks(servers, directory, failures)
        counted: dict[str, dict[str, Any]] = {}
        postgres_url = os.environ.get(SERVER_URL_VARIABLES["postgres"])
        # The library's stores only (an anchor shares their server).
        for server in (s for s in servers if s.configuration.stack == "library"):
            if server.configuration.store == "redis" and redis_url is not None:
                say("Redis round trips per refresh")
                counted["redis"] = round_trips(
                    server,
                    options.counted_refreshes,
                    lambda n, refresh: count_round_trips(redis_url, n, refresh).as_json(),
                )
            if server.configuration.store == "postgres" and postgres_url:
                say("PostgreSQL statements per refresh")
                counted["postgres"] = round_trips(
                    server,
                    options.counted_refreshes,
                    lambda n, refresh: count_statements(postgres_url, n, refresh),
                )
    return {
        "loader": options.loader,
        "pinning": pinning,
        "server": report.server_stack(options.loop, options.http),
        "configurations": _http_rows(selected, skipped, runs, invalid, pairs),
        "wrk_checks": wrk_checks,
    }, counted


def smoke_wrk_checks(
    servers: list[over_http.Server], directory: Path, failures: Failures
) -> list[dict[str, Any]]:
    """One second of wrk and the Lua script, the full run's load path: on the raw endpoint, and
    on each configuration with DPoP (a proof in every request's header)."""
    checks = []
    for server in servers:
        if server.configuration is RAW:
            # The raw endpoint does not rotate: wrk may present these tokens more than once.
            presented = over_http.Refreshes(over_http.mint(server.base_url, SMOKE_WRK_CHECK_TOKENS))
        elif server.configuration.dpop:
            # Each token and proof once, as many as the smoke run gives wrk for a second.
            presented = over_http.refreshes(server, SMOKE_WRK_TOKENS)
        else:
            continue
        result = over_http.run_wrk(
            server.base_url + "/auth/refresh",
            presented.tokens,
            seconds=1,
            connections=16,
            threads=1,
            cpu=None,
            workdir=directory,
            proofs=presented.proofs,
        )
        name = server.configuration.name
        say(f"  wrk check on {name}: {result.problems()}")
        if result.requests == 0 or result.non_2xx or result.errors:
            failures.add(f"wrk check on {name}: {result.problems()}")
        checks.append({"configuration": name, "problems": result.problems()})
    return checks


def _http_rows(
    selected: list[Configuration],
    skipped: dict[str, str | None],
    runs: dict[str, list[over_http.LoadResult]],
    invalid: dict[str, list[str]],
    pairs: dict[str, list[tuple[over_http.LoadResult, over_http.LoadResult]]],
) -> list[dict[str, Any]]:
    rows = []
    for configuration in selected:
        row = _row(configuration)
        results = runs.get(configuration.name)
        if skipped[configuration.name]:
            row["skipped"] = skipped[configuration.name]
        elif not results:
            row["skipped"] = "no valid run: " + "; ".join(invalid.get(configuration.name, []))
        else:
            row.update(
                requests_per_second=statistics.median(r.requests_per_second for r in results),
                p50_ms=statistics.median(r.p50_ms for r in results),
                p99_ms=statistics.median(r.p99_ms for r in results),
                lag_p99_ms=statistics.median(r.lag_p99_ms for r in results),
                rounds=[
                    {
                        "requests": r.requests,
                        "seconds": r.seconds,
                        "requests_per_second": r.requests_per_second,
                        "p50_ms": r.p50_ms,
                        "p99_ms": r.p99_ms,
                        "lag_p99_ms": r.lag_p99_ms,
                    }
                    for r in results
                ],
                invalid_rounds=invalid.get(configuration.name, []),
            )
        rows.append(row)
    for row in rows:
        if row["name"] == RAW.name and not row.get("skipped"):
            row.update(ratio=1.0, p50_ratio=1.0, p99_ratio=1.0)
        elif pairs.get(row["name"]):
            # The median of the ratios of runs made side by side, not a ratio of medians.
            beside = pairs[row["name"]]
            ratios = [run.requests_per_second / raw.requests_per_second for run, raw in beside]
            row.update(
                ratio=statistics.median(ratios),
                p50_ratio=statistics.median(run.p50_ms / raw.p50_ms for run, raw in beside),
                p99_ratio=statistics.median(run.p99_ms / raw.p99_ms for run, raw in beside),
                pair_ratios=ratios,
            )
    by_name = {row["name"]: row for row in rows}
    # A store against its by-hand anchor; a configuration with DPoP against the same without.
    for prefix, partners in (("anchor", ANCHORS), ("dpop", WITHOUT_PROOF)):
        for name, partner_name in partners.items():
            row, partner = by_name.get(name), by_name.get(partner_name)
            if row and partner and "ratio" in row and "ratio" in partner:
                # Each against the raw runs beside it, so the machine's drift cancels here too.
                row[f"{prefix}_ratio"] = row["ratio"] / partner["ratio"]
                row[f"{prefix}_p99_ratio"] = row["p99_ratio"] / partner["p99_ratio"]
    return rows


def redis_phase(
    skipped: dict[str, str | None],
    redis_url: str | None,
    redis_reason: str,
    redis_store: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Redis store's round trips, counted while its server was up."""
    if redis_url is None:
        say(f"skip Redis round trips: {redis_reason}")
        return {"store": {"skipped": redis_reason}}
    return {
        "store": redis_store or {"skipped": skipped.get("library-redis") or "not selected (--only)"}
    }


def round_trips(
    server: over_http.Server,
    refreshes: int,
    count: Callable[[int, Callable[[int], None]], dict[str, Any]],
) -> dict[str, Any]:
    """Sequential refreshes on a store's server, counted from its statistics by ``count``."""
    tokens = over_http.mint(server.base_url, WARMUP_REFRESHES + refreshes)
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:

        def refresh(index: int) -> None:
            response = client.post("/auth/refresh", json={"refreshToken": tokens[index]})
            if response.status_code != 200:
                raise over_http.HarnessError(
                    f"{server.configuration.name}: POST /auth/refresh answered "
                    f"{response.status_code}"
                )

        # Connections (HTTP and the store's own to Redis) are set up before counting.
        for index in range(WARMUP_REFRESHES):
            refresh(index)
        return count(refreshes, lambda index: refresh(WARMUP_REFRESHES + index))


def _redis_version(url: str) -> str | None:
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            version: str = client.info("server")["redis_version"]
            return version
    except redis.RedisError:
        return None


if __name__ == "__main__":
    began = time.monotonic()
    status = main()
    say(f"bench: {time.monotonic() - began:.1f} s, exit {status}")
    sys.exit(status)
