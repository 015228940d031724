"""Results: the machine and versions, the JSON file, the table, the docs page and the chart."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "auth-refresh",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "PyJWT",
    "cryptography",
    "dependency-injector",
    "authx",
    "redis",
    "orjson",
)
CHART_NAME = "benchmarks.png"
TIMES = "\N{MULTIPLICATION SIGN}"
NDASH = "\N{EN DASH}"
DOCS_NAME = "benchmarks.md"


# -- machine and versions ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average": list(load_average()),
    }


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_busy(seconds: float = 1.0) -> float | None:
    """The share of all CPUs' time spent busy over ``seconds`` (None without /proc/stat).

    Read before the benchmark starts: the load average still counts what ran a minute ago
    (the install step of ``make bench``), this does not."""

    def times() -> tuple[int, int] | None:
        try:
            fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:9]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields), idle

    before = times()
    time.sleep(seconds)
    after = times()
    if before is None or after is None or after[0] == before[0]:
        return None
    return 1 - (after[1] - before[1]) / (after[0] - before[0])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def source() -> dict[str, Any]:
    """The commit measured, and whether the work tree had changes on top of it."""

    def git(*arguments: str) -> str | None:
        try:
            completed = subprocess.run(
                ["git", *arguments], cwd=ROOT, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return completed.stdout.strip()

    status = git("status", "--porcelain", "--", "src")
    import auth_refresh

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_modified": bool(status) if status is not None else None,
        "library_path": str(Path(auth_refresh.__file__).parent),
    }


def server_stack(loop: str, http: str) -> dict[str, str]:
    """What uvicorn's ``auto`` picks here."""
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {"loop": loop, "http": http}


# -- results file --------------------------------------------------------------------------


def write_json(results: dict[str, Any], directory: Path, stamp: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    paths = [directory / f"bench-{stamp}.json", directory / "latest.json"]
    for path in paths:
        path.write_text(text)
    return paths


# -- tables --------------------------------------------------------------------------------


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}{TIMES}"


def inprocess_table(results: dict[str, Any]) -> list[str]:
    section = results.get("inprocess") or {}
    lines = []
    pipeline = section.get("pipeline") or []
    if pipeline:
        lines += [
            f"| Pipeline (module API) | µs per refresh | {TIMES} raw PyJWT |",
            "| --- | ---: | ---: |",
        ]
        for row in pipeline:
            if row.get("skipped"):
                lines.append(f"| {row['label']} | skipped: {row['skipped']} | |")
            else:
                lines.append(
                    f"| {row['label']} | {row['microseconds']:.1f} | {_ratio(row.get('ratio'))} |"
                )
        lines.append("")
    application = section.get("application") or []
    if application:
        lines += [
            f"| Whole application, in-process ASGI | µs per refresh | {TIMES} raw endpoint |",
            "| --- | ---: | ---: |",
        ]
        for row in application:
            if row.get("skipped"):
                lines.append(f"| {row['label']} | skipped: {row['skipped']} | |")
            else:
                lines.append(
                    f"| {row['label']} | {row['microseconds']:.1f} | {_ratio(row.get('ratio'))} |"
                )
        lines.append("")
    return lines


def http_table(results: dict[str, Any]) -> list[str]:
    rows = (results.get("http") or {}).get("configurations") or []
    if not rows:
        return []
    lines = [
        f"| Over HTTP | req/s | {TIMES} raw | {TIMES} raw, range | p50 ms | p99 ms "
        f"| {TIMES} raw p50 | {TIMES} raw p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | | |")
            continue
        pair_ratios = row.get("pair_ratios") or []
        spread = (
            f"{min(pair_ratios):.2f}{NDASH}{max(pair_ratios):.2f}" if len(pair_ratios) > 1 else ""
        )
        lines.append(
            f"| {row['label']} | {row['requests_per_second']:.0f} | {_ratio(row.get('ratio'))} "
            f"| {spread} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {_ratio(row.get('p50_ratio'))} | {_ratio(row.get('p99_ratio'))} |"
        )
    lines += [
        "",
        f"req/s and latencies: medians of the runs. {TIMES} raw: the median over the rounds of",
        "each run against the raw run beside it, so it can differ from the quotient of the",
        "medians when the machine's speed drifted during the benchmark; the range is the",
        "lowest and highest of those side-by-side ratios.",
        "",
    ]
    return lines


def redis_lines(results: dict[str, Any]) -> list[str]:
    section = results.get("redis") or {}
    lines = []
    calibration = section.get("calibration")
    if calibration:
        checks = ", ".join(
            f"{name}: {value['round_trips_per_refresh']:g} (expected {value['expected']})"
            for name, value in calibration.items()
        )
        lines.append(f"Counter check against known clients (round trips per call): {checks}.")
        lines.append("")
    store = section.get("store")
    if store and store.get("skipped"):
        lines.append(f"Redis store: skipped: {store['skipped']}")
    elif store:
        commands = ", ".join(f"{k} {v:g}" for k, v in store["commands_per_refresh"].items())
        lines.append(
            f"Redis store: **round trips per refresh: {store['round_trips_per_refresh']:g}** "
            f"(over {store['refreshes']} refreshes); commands per refresh: {commands}."
        )
    if lines:
        lines.append("")
    return lines


def targets_table(results: dict[str, Any]) -> list[str]:
    rows = results.get("targets") or []
    if not rows:
        return []
    lines = ["| Target | Measured | Status |", "| --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['target']} | {row['measured']} | {row['status']} |")
    lines.append("")
    return lines


def console_table(results: dict[str, Any]) -> str:
    return "\n".join(
        inprocess_table(results)
        + http_table(results)
        + redis_lines(results)
        + targets_table(results)
    )


# -- targets -------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets against this run's ratios: met, missed, or not measured and why."""
    http_rows = {row["name"]: row for row in (results.get("http") or {}).get("configurations", [])}
    pipeline = {row["name"]: row for row in (results.get("inprocess") or {}).get("pipeline", [])}
    store = (results.get("redis") or {}).get("store") or {}
    targets: list[dict[str, str]] = []
    smoke = results.get("kind") == "smoke"

    def add(target: str, row: dict[str, Any] | None, key: str, check: Any, show: Any) -> None:
        if row is None:
            targets.append({"target": target, "measured": "—", "status": "not measured"})
        elif row.get("skipped"):
            targets.append(
                {"target": target, "measured": "—", "status": f"not measured: {row['skipped']}"}
            )
        else:
            value = row[key]
            targets.append(
                {
                    "target": target,
                    "measured": show(value),
                    "status": _status(check(value), smoke),
                }
            )

    def ratio(value: float) -> str:
        return f"{value:.2f}{TIMES}"

    add(
        f"In-process pipeline ≤ 1.3{TIMES} raw PyJWT",
        pipeline.get("library-stateless"),
        "ratio",
        lambda value: value <= 1.3,
        ratio,
    )
    add(
        f"Stateless ≥ 0.85{TIMES} raw req/s",
        http_rows.get("library-stateless"),
        "ratio",
        lambda value: value >= 0.85,
        ratio,
    )
    add(
        f"SQLite store ≥ 0.75{TIMES} raw req/s",
        http_rows.get("library-sqlite"),
        "ratio",
        lambda value: value >= 0.75,
        ratio,
    )
    add(
        f"Redis store ≥ 0.7{TIMES} raw req/s",
        http_rows.get("library-redis"),
        "ratio",
        lambda value: value >= 0.7,
        ratio,
    )
    add(
        "Redis store: exactly 1 round trip per refresh",
        store or None,
        "round_trips_per_refresh",
        lambda value: abs(value - 1) < 0.01,
        lambda value: f"{value:g}",
    )
    # Issue 14's targets for the PostgreSQL store (its one statement per refresh is counted
    # from pg_stat_statements in tests/test_postgres_store.py).
    add(
        f"PostgreSQL store ≥ 0.75{TIMES} raw req/s",
        http_rows.get("library-postgres"),
        "ratio",
        lambda value: value >= 0.75,
        ratio,
    )
    add(
        f"PostgreSQL store p99 ≤ 1.5{TIMES} raw",
        http_rows.get("library-postgres"),
        "p99_ratio",
        lambda value: value <= 1.5,
        ratio,
    )
    stateless = http_rows.get("library-stateless")
    authx = http_rows.get("authx")
    if stateless and authx and not stateless.get("skipped") and not authx.get("skipped"):
        ours, theirs = stateless["requests_per_second"], authx["requests_per_second"]
        targets.append(
            {
                "target": "Stateless faster than authx (req/s)",
                "measured": f"{ours:.0f} vs {theirs:.0f} ({ours / theirs:.2f}{TIMES})",
                "status": _status(ours > theirs, smoke),
            }
        )
    else:
        reason = (authx or {}).get("skipped") or (stateless or {}).get("skipped") or "no HTTP run"
        targets.append(
            {
                "target": "Stateless faster than authx (req/s)",
                "measured": "—",
                "status": f"not measured: {reason}",
            }
        )
    return targets


def _status(met: bool, smoke: bool) -> str:
    if smoke:
        return "not judged (smoke run)"
    return "met" if met else "MISSED"


# -- chart and page ------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Write the PNG; None when done, otherwise why not."""
    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http_rows = [
        row
        for row in (results.get("http") or {}).get("configurations", [])
        if not row.get("skipped")
    ]
    application = [
        row
        for row in (results.get("inprocess") or {}).get("application", [])
        if not row.get("skipped")
    ]
    panels = [panel for panel in (http_rows, application) if panel]
    if not panels:
        return "nothing was measured"
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), squeeze=False)
    column = 0
    if http_rows:
        axis = axes[0][column]
        column += 1
        labels = [row["label"] for row in http_rows]
        values = [row["requests_per_second"] for row in http_rows]
        bars = axis.barh(labels, values, color=_colors(http_rows))
        axis.invert_yaxis()
        axis.set_xlabel("requests per second (higher is better)")
        axis.set_title(f"POST /auth/refresh over HTTP ({results['http'].get('loader', '')})")
        for bar, row in zip(bars, http_rows, strict=True):
            axis.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {_ratio(row.get('ratio'))}",
                va="center",
                fontsize=8,
            )
        axis.set_xlim(0, max(values) * 1.2)
    if application:
        axis = axes[0][column]
        labels = [row["label"] for row in application]
        values = [row["microseconds"] for row in application]
        bars = axis.barh(labels, values, color=_colors(application))
        axis.invert_yaxis()
        axis.set_xlabel("µs per refresh, in-process (lower is better)")
        axis.set_title("Whole application without a server")
        for bar, row in zip(bars, application, strict=True):
            axis.text(
                bar.get_width(),
                bar.get_y() + bar.get_height() / 2,
                f" {_ratio(row.get('ratio'))}",
                va="center",
                fontsize=8,
            )
        axis.set_xlim(0, max(values) * 1.2)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def _colors(rows: list[dict[str, Any]]) -> list[str]:
    palette = {"raw": "#7f7f7f", "authx": "#d62728"}
    return [palette.get(row["name"], "#1f77b4") for row in rows]


def page(results: dict[str, Any], chart_name: str | None) -> str:
    settings = results["settings"]
    machine_info = results["machine"]
    http_section = results.get("http") or {}
    server_stack = http_section.get("server") or {}
    lines = [
        "# Benchmarks",
        "",
        "<!-- Written by `make bench` (bench/report.py) from bench/results/latest.json. -->",
        "",
        "What a refresh costs with this library, measured side by side in one run against the",
        "same work written by hand (the limit of the stack) and against authx. Run it yourself",
        "with `make bench` (needs `wrk`: `apt-get install wrk`); `make bench-smoke` checks the",
        "harness in a few seconds.",
        "",
        "## What is measured",
        "",
        "- **In-process pipeline**: `AuthRefreshModule.authenticate(request)` on a real",
        "  Starlette `Request` (extract the body field, verify, the store step when there is a",
        "  store, user lookup), then `issue(...)` (with rotation the successor pair signed",
        "  during the store step, otherwise two new tokens), against the raw work: PyJWT's",
        "  `jwt.decode` of the same token, the same user lookup and two `jwt.encode` calls with",
        "  the same claims and `typ` headers. One refresh at a time, so for the Redis store",
        "  this includes waiting for the round trip.",
        "- **Whole application, in-process**: each application's `POST /auth/refresh` called",
        "  as an ASGI app without a server or sockets: what routing, dependencies and the",
        "  response add.",
        "- **Over HTTP**: one uvicorn worker ("
        + f"{server_stack.get('loop', '?')} loop, {server_stack.get('http', '?')} parser, "
        + "no access log);",
        f"  {http_section.get('pinning', 'pinning unknown')}, and Redis beside the load",
        f"  generator; {http_section.get('loader', '?')} with {settings.get('connections')}"
        + f" connections for {settings.get('duration')} s per run, after a warm-up. In each",
        f"  of {settings.get('rounds')} rounds every configuration runs beside a run of the raw",
        "  endpoint, just before or just after it (alternately, the tokens of both minted",
        "  first so that the two runs follow each other at once): the machine's speed drifts",
        "  over minutes, so each ratio is the median of side-by-side ratios, not a ratio of",
        "  medians; req/s and latencies are the medians of the runs. Every",
        "  request presents a refresh token never presented before (pre-minted by each",
        "  application's own issuing code and fed to wrk by `bench/refresh.lua`), so the",
        "  rotating stores do their real work; a run with any non-2xx answer is left out.",
        "- **Raw endpoint**: a hand-written FastAPI route reading the JSON body, PyJWT decode,",
        "  user lookup, two PyJWT encodes, JSON response: the fastest this stack can answer.",
        "- **authx**: the same flow with authx (`refresh_token_required` with the token in the",
        "  JSON body, `create_access_token` + `create_refresh_token`).",
        "- **Redis round trips**: sequential refreshes against the Redis store's server; round",
        "  trips are the Redis server's read events (`total_reads_processed` in `INFO stats`),",
        "  commands come from `INFO commandstats` (which also counts the commands a Lua script",
        "  runs). The counter is first checked against clients whose round trips are known.",
        "",
        "## Results",
        "",
    ]
    if results.get("notes"):
        lines += [f"> {note}" for note in results["notes"]] + [""]
    lines += targets_table(results)
    if chart_name:
        lines += [f"![Refresh throughput and in-process cost]({chart_name})", ""]
    lines += http_table(results) + inprocess_table(results) + redis_lines(results)
    lines += [
        "## What the profiles showed, and what changed",
        "",
        "`make bench-profile` (pyinstrument and cProfile over the pipeline, py-spy on a loaded",
        "worker) found the costs below on the refresh path; each was changed as listed.",
        "",
        "- **Per-request resolution**: the refresh route calls its module directly rather than",
        "  through a guard dependency; keys are parsed and checked once, when the key ring is",
        "  built; settings, the verifier and the issuer are singletons of the module's container.",
        "- **Tokens**: signing and verifying are compact JWS over the one pinned key (PyJWT's",
        "  algorithm objects do the cryptography); the JOSE header of each token type is encoded",
        "  once per key; the JSON decoder and encoder are built once; claims that are flat",
        "  built-in scalars are not read back after signing. This is why the stateless refresh",
        "  costs less than PyJWT's own decode and two encodes.",
        "- **SQLite store**: a step whose write lock is free runs at once on the caller's thread",
        "  (tens of microseconds without a disk sync) instead of a hand-off to the store's",
        "  thread, which now only waits for a lock another process holds and runs the WAL",
        "  checkpoints. The refresh of a live token is one `UPDATE ... RETURNING` (the rotation",
        "  rule in SQL) instead of `BEGIN IMMEDIATE`, a `SELECT`, an `UPDATE` and `COMMIT` with",
        "  the decision in Python between them.",
        "- **Redis store**: a step is one `EVALSHA`. redis-py opens and authenticates each",
        "  connection; the store then writes its commands on it itself and matches the replies",
        "  (hiredis) to them in order, one connection per event loop shared by the steps in",
        "  flight. redis-py's per-command machinery (pool lock, retry wrapper, a task per",
        "  timeout, telemetry) had cost a refresh more than the round trip. A rotation's",
        "  answer does not carry the successor pair back: the caller signed it.",
        "- **The two store changes, measured**: each version's whole application in one",
        "  process, 16 refreshes at once, CPU time per refresh against the raw application's in",
        "  16 interleaved rounds, three runs of each version taking turns (medians): the SQLite",
        f"  store went from 0.71{TIMES} to 0.74{TIMES}, the Redis store from 0.62{TIMES} to",
        f"  0.74{TIMES}. Over HTTP the machine's drift is about as large: the four full runs",
        f"  earlier on the day of the changes gave SQLite 0.63{TIMES} to 0.85{TIMES} and Redis",
        f"  0.67{TIMES} to 0.93{TIMES}, the three after them 0.76{TIMES} to 0.81{TIMES} and",
        f"  0.74{TIMES} to 1.00{TIMES} (the first of those three is not in bench/results).",
        "- **Tried, not kept**: uvloop and httptools (`uvicorn[standard]`) make every",
        "  configuration faster in absolute terms, the raw endpoint most, so the ratios fall",
        "  (two runs a few minutes apart: raw 2167 req/s with them, 1511 without; the SQLite",
        f"  store 0.63{TIMES} and Redis 0.55{TIMES} with them, 0.89{TIMES} and 0.73{TIMES}",
        "  without).",
        "  The benchmark runs the server that `auth-refresh[server]` installs; add them to your",
        "  deployment all the same.",
        "- **orjson, not added**: the answers are two short strings, for which `json.dumps`",
        "  costs a few microseconds.",
        "",
        "## Machine and versions",
        "",
        f"- Run: {results['started_at']} ({results['kind']} run), commit "
        f"`{(results['source'].get('commit') or '?')[:12]}`"
        + (" with uncommitted changes in src/" if results["source"].get("src_modified") else ""),
        f"- Machine: {machine_info['cpu']}, {machine_info['cpus']} CPUs "
        f"({machine_info['cpus_usable']} usable), {machine_info['memory_gib']} GiB, "
        f"{machine_info['platform']}",
        f"- Load average at start: {', '.join(f'{v:.2f}' for v in machine_info['load_average'])}"
        + (
            f"; at end: {', '.join(f'{v:.2f}' for v in results['load_average_end'])}"
            if results.get("load_average_end")
            else ""
        ),
        f"- {machine_info['python']}; wrk: {results.get('wrk') or 'not installed'}; "
        f"redis-server: {results.get('redis_server_version') or 'not used'}",
        "- Packages: "
        + ", ".join(
            f"{name} {version}" for name, version in results["versions"].items() if version
        ),
        "",
    ]
    return "\n".join(lines)


def write_docs(results: dict[str, Any], directory: Path) -> tuple[Path, str | None]:
    """docs page and chart; returns the page and why the chart is missing (None if drawn)."""
    directory.mkdir(parents=True, exist_ok=True)
    chart_path = directory / CHART_NAME
    missing = chart(results, chart_path)
    page_path = directory / DOCS_NAME
    page_path.write_text(page(results, None if missing else CHART_NAME))
    return page_path, missing
