"""Profiles of the refresh hot path: ``python -m bench.profiling`` (``make bench-profile``).

- pyinstrument over the in-process pipeline (``authenticate`` + ``issue``) of every library
  configuration that runs here, and over the whole stateless application called in-process;
- cProfile over the same pipeline, as calls and time per refresh (time inflated by cProfile's
  own cost; the calls are exact);
- py-spy sampling the uvicorn worker while wrk loads it (needs wrk and ``--http``): the share
  of samples spent in each layer, from the server's socket to the library's store step.

Text reports go to ``--output-dir`` (default ``bench/results/profiles``); a summary is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from starlette.requests import Request

from bench import inprocess, over_http
from bench.common import USER_ID, BenchUsers
from bench.configurations import BY_NAME, CONFIGURATIONS, Configuration, environment, skip_reason
from bench.redis_server import redis_server

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIR = ROOT / "bench" / "results" / "profiles"

# Where a sample's time goes: the first layer (in this order) found anywhere in its stack, so
# the library's parts include what they call (json, hmac) and the framework layers only their
# own code. The shares add up to 100 %.
LAYERS = (
    ("library: store step", "_store.py"),
    ("library: rotation (signs the successor pair)", "auth_refresh/rotation.py"),
    ("library: sign tokens", "sign (auth_refresh/tokens.py"),
    ("library: verify token", "verify (auth_refresh/tokens.py"),
    ("library: extract token (read body)", "auth_refresh/extractors.py"),
    ("library: other", "auth_refresh/"),
    ("raw/authx endpoint work", "bench/apps.py"),
    ("authx", "authx/"),
    ("response: JSONResponse", "starlette/responses.py"),
    ("fastapi: dependency solving", "fastapi/dependencies/utils.py"),
    ("fastapi: routing", "fastapi/"),
    ("starlette: routing, middleware, request", "starlette/"),
    ("uvicorn: HTTP protocol (h11/httptools)", "uvicorn/"),
    ("asyncio event loop, sockets", "asyncio/"),
)


def say(message: str) -> None:
    print(message, flush=True)


async def profile_pipeline(
    configuration: Configuration, workdir: Path, redis_url: str | None, count: int
) -> str:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    warmup = count // 5
    async with inprocess.started_module(configuration, workdir, redis_url) as (app, module):
        user = BenchUsers().by_subject(USER_ID)
        tokens = [(await module.issue(user))["refreshToken"] for _ in range(warmup + 2 * count)]

        refresh = inprocess.module_refresh(module)
        requests = [
            inprocess.http_request("/auth/refresh", inprocess.refresh_body(token))
            for token in tokens
        ]
        for scope, _ in requests:
            scope["app"] = app

        async def refreshes(start: int, stop: int) -> None:
            for index in range(start, stop):
                await refresh(Request(*requests[index]))

        await refreshes(0, warmup)
        profiler = Profiler(interval=0.001, async_mode="disabled")
        began = time.perf_counter()
        profiler.start()
        await refreshes(warmup, warmup + count)
        profiler.stop()
        elapsed = (time.perf_counter() - began) / count * 1e6
        profile = cProfile.Profile()
        profile.enable()
        await refreshes(warmup + count, warmup + 2 * count)
        profile.disable()
    return (
        f"# {configuration.label}: pipeline, {count} refreshes, {elapsed:.1f} µs each "
        "under pyinstrument\n\n## Call tree\n\n"
        + profiler.output(ConsoleRenderer(unicode=True, color=False))
        + "\n\n## Flat (own time)\n\n"
        + profiler.output(ConsoleRenderer(unicode=True, color=False, flat=True))
        + "\n\n## cProfile, per refresh (times inflated by cProfile; calls exact)\n\n"
        + per_refresh(profile, count)
        + "\n"
    )


def per_refresh(profile: cProfile.Profile, count: int) -> str:
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = sorted(
        (
            (cumulative, own, calls, f"{function} ({_short(filename)}:{line})")
            for (filename, line, function), (_, calls, own, cumulative, _) in stats.items()
        ),
        reverse=True,
    )
    lines = [f"{'calls':>7} {'own µs':>8} {'total µs':>9}  function"]
    for cumulative, own, calls, name in rows[:50]:
        lines.append(
            f"{calls / count:7.2f} {own / count * 1e6:8.2f} {cumulative / count * 1e6:9.2f}  {name}"
        )
    return "\n".join(lines)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


async def profile_application(workdir: Path, count: int) -> str:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    configuration = BY_NAME["library-stateless"]
    async with inprocess.started_app(configuration, workdir, None) as app:
        tokens = await inprocess.mint(app, count + count // 5)
        requests = [
            inprocess.http_request("/auth/refresh", inprocess.refresh_body(token))
            for token in tokens
        ]
        for scope, receive in requests[: count // 5]:
            await inprocess.call_app(app, scope, receive)
        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
        for scope, receive in requests[count // 5 :]:
            await inprocess.call_app(app, scope, receive)
        profiler.stop()
    return (
        f"# {configuration.label}: whole application in-process, {count} refreshes\n\n"
        + profiler.output(ConsoleRenderer(unicode=True, color=False))
    )


def py_spy() -> str:
    """py-spy from this environment's scripts, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def profile_server(
    configuration: Configuration,
    workdir: Path,
    redis_url: str | None,
    output: Path,
    seconds: int,
    *,
    keep_stacks: bool = False,
) -> str:
    """py-spy on the pinned uvicorn worker while wrk loads it; layer shares of the samples."""
    server_cpu, load_cpu, pinning = over_http.cpu_plan()
    raw_file = workdir / "py-spy.txt"
    with over_http.running(
        [(configuration, environment(configuration, workdir, redis_url))],
        workdir=workdir,
        cpu=server_cpu,
    ) as servers:
        server = servers[0]
        tokens = over_http.mint(server.base_url, 6000 * (seconds + 3))
        sampler = subprocess.Popen(
            over_http.pinned(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--threads",
                    "--output",
                    str(raw_file),
                ],
                load_cpu,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            result = over_http.run_wrk(
                server.base_url + "/auth/refresh",
                tokens,
                seconds=seconds + 2,
                connections=16,
                threads=1,
                cpu=load_cpu,
                workdir=workdir,
            )
        finally:
            _, errors = sampler.communicate(timeout=seconds + 60)
    if not raw_file.exists():
        raise over_http.HarnessError(f"py-spy wrote nothing: {errors.decode(errors='replace')}")
    # With --threads each stack starts "thread (id): name"; the event loop runs in MainThread.
    main_stacks = Counter[str]()
    other_stacks = Counter[str]()
    for line in raw_file.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        if frames:
            target = main_stacks if thread.endswith(": MainThread") else other_stacks
            target[frames] += int(samples)
    main_total = sum(main_stacks.values()) or 1
    other_total = sum(other_stacks.values())
    lines = [
        f"# {configuration.label}: py-spy on the uvicorn worker under wrk ({pinning})",
        f"{result.requests_per_second:.0f} req/s during sampling; {main_total} samples of the "
        f"event loop thread, {other_total} of other threads (a store's thread pool)",
        "",
        "Event loop thread: where the samples go (see LAYERS in bench/profiling.py):",
        "",
    ]
    shares = Counter[str]()
    for stack, count in main_stacks.items():
        label = next((label for label, marker in LAYERS if marker in stack), "other")
        shares[label] += count
    for label in [label for label, _ in LAYERS] + ["other"]:
        if shares[label]:
            lines.append(f"{shares[label] / main_total * 100:6.1f} %  {label}")
    for title, stacks in (("Event loop thread", main_stacks), ("Other threads", other_stacks)):
        leaves = Counter[str]()
        for stack, count in stacks.items():
            leaves[stack.split(";")[-1]] += count
        lines += ["", f"{title}: top functions by own samples (% of its samples)", ""]
        total = sum(stacks.values()) or 1
        for leaf, count in leaves.most_common(20):
            lines.append(f"{count / total * 100:6.1f} %  {leaf}")
    text = "\n".join(lines) + "\n"
    output.write_text(text)
    if keep_stacks:
        # Collapsed stacks: flamegraph.pl or speedscope read them.
        raw_file.replace(output.with_suffix(".collapsed"))
    else:
        raw_file.unlink()
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("--count", type=int, default=3000, help="refreshes per profile")
    parser.add_argument("--http", action="store_true", help="also py-spy a server under wrk")
    parser.add_argument("--seconds", type=int, default=8, help="py-spy sampling time")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR)
    parser.add_argument(
        "--keep-stacks", action="store_true", help="keep py-spy's collapsed stacks too"
    )
    arguments = parser.parse_args(argv)
    logging.getLogger("auth_refresh").setLevel(logging.ERROR)
    output_dir: Path = arguments.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="auth-refresh-profile-") as temporary:
        workdir = Path(temporary)
        with redis_server(workdir, over_http.cpu_plan()[1]) as (redis_url, redis_reason):
            for configuration in CONFIGURATIONS:
                if configuration.stack != "library":
                    continue
                reason = skip_reason(configuration, redis_url, redis_reason)
                if reason is None and configuration.store is not None:
                    reason = asyncio.run(
                        inprocess.rotation_probe(configuration, workdir, redis_url)
                    )
                if reason:
                    say(f"skip {configuration.name}: {reason}")
                    continue
                path = output_dir / f"pipeline-{configuration.name}.txt"
                text = asyncio.run(
                    profile_pipeline(configuration, workdir, redis_url, arguments.count)
                )
                path.write_text(text)
                say(text.split("\n", 1)[0] + f" -> {path}")
            path = output_dir / "application-library-stateless.txt"
            path.write_text(asyncio.run(profile_application(workdir, arguments.count)))
            say(f"# whole application in-process -> {path}")
            if arguments.http:
                if over_http.wrk_version() is None:
                    say(over_http.WRK_MISSING)
                    return 2
                for name in ("library-stateless", "library-sqlite", "library-redis"):
                    configuration = BY_NAME[name]
                    reason = skip_reason(configuration, redis_url, redis_reason)
                    if reason:
                        say(f"skip py-spy {name}: {reason}")
                        continue
                    path = output_dir / f"server-{name}.txt"
                    say(
                        profile_server(
                            configuration,
                            workdir,
                            redis_url,
                            path,
                            arguments.seconds,
                            keep_stacks=arguments.keep_stacks,
                        )
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
