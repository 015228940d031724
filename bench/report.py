"""Results: the machine and versions, the JSON file, the table, the docs page and the chart."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.configurations import ANCHORS, BY_NAME, WITHOUT_PROOF
from bench.saturation import table as saturation_table
from bench.sessions import table as session_table

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
STORES = {
    "library-memory": "Memory store",
    "library-sqlite": "SQLite store",
    "library-redis": "Redis store",
}
# Issue 20's targets: each shared store against its by-hand anchor (the same driver, no
# library), req/s; each configuration's req/s (at least) and p99 (at most) against raw's over
# HTTP; the memory store's refresh in-process against raw PyJWT; SQLite's p99 at saturation.
ANCHOR_TARGET = 1.1
HTTP_TARGETS: dict[str, tuple[float, float | None]] = {
    "library-stateless": (1.0, None),
    "library-memory": (0.9, 1.3),
    "library-sqlite": (0.85, 1.5),
    "library-redis": (0.82, 1.3),
    "library-postgres": (0.80, 1.5),
    "library-redis-cluster": (0.75, 1.5),
}
INPROCESS_TARGET = 1.0
SATURATION_P99_TARGET = 2.0
# docs/benchmarks.md is written by hand around these two lines; the run replaces what is between.
RESULTS_START = "<!-- results: written by make bench (bench/report.py), do not edit -->"
RESULTS_END = "<!-- end of results -->"


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


# Issue 15: the telemetry hooks with the API but no SDK, against none.
TELEMETRY_TARGET = 0.02
# Issue 24: refreshes with a DPoP proof, per second over HTTP, over those without, on the same
# store.
DPOP_TARGET = 0.8


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}{TIMES}"


def inprocess_table(results: dict[str, Any]) -> list[str]:
    section = results.get("inprocess") or {}
    lines = []
    pipeline = section.get("pipeline") or []
    if pipeline:
        lines += [
            f"| Pipeline (module API) | µs per refresh | {TIMES} raw PyJWT "
            f"| {TIMES} raw, range | quotient of the medians |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in pipeline:
            if row.get("skipped"):
                lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | |")
                continue
            spread = row.get("ratio_range")
            lines.append(
                f"| {row['label']} | {row['microseconds']:.1f} | {_ratio(row.get('ratio'))} "
                f"| {f'{spread[0]:.2f}{NDASH}{spread[1]:.2f}' if spread else ''} "
                f"| {_ratio(row.get('ratio_of_medians'))} |"
            )
        rounds = len(pipeline[0].get("rounds") or [])
        lines += [
            "",
            f"µs: each side's median over the {rounds} rounds. {TIMES} raw PyJWT: the median over",
            "the rounds of each side's round against raw's beside it, as over HTTP; the range is",
            "the lowest and highest of those ratios, the quotient of the two medians beside them.",
            "",
        ]
        lines += _telemetry_cost(pipeline)
    return lines


def dpop_lines(results: dict[str, Any]) -> list[str]:
    """A refresh with a DPoP proof against one without on the same store: over HTTP, requests
    per second (the target) and p99; in-process, what the proof costs the CPU, undiluted."""
    http_rows = {
        row["name"]: row for row in (results.get("http") or {}).get("configurations") or []
    }
    pipeline = {row["name"]: row for row in (results.get("inprocess") or {}).get("pipeline") or []}
    lines = []
    for name, plain_name in WITHOUT_PROOF.items():
        store = BY_NAME[plain_name].label.removeprefix("auth-refresh, ")
        row, plain = http_rows.get(name) or {}, http_rows.get(plain_name) or {}
        sentences = []
        if "dpop_ratio" in row:
            verdict = "met" if row["dpop_ratio"] >= DPOP_TARGET else "missed"
            sentences.append(
                f"DPoP over HTTP: refreshes with a proof serve {row['dpop_ratio']:.2f}{TIMES} "
                f"the requests per second of refreshes without ({store}, same run; target at "
                f"least {DPOP_TARGET}{TIMES}: {verdict}), p99 {row['p99_ms']:.2f} ms against "
                f"{plain['p99_ms']:.2f} ms ({row['dpop_p99_ratio']:.2f}{TIMES}); both ratios "
                "through the raw runs beside each, as a store against its anchor."
            )
        row = pipeline.get(name) or {}
        if "dpop_ratio" in row:
            sentences.append(
                f"In-process, where nothing else dilutes it (what a proof costs the CPU): "
                f"{row['dpop_ratio']:.2f}{TIMES} the refreshes per second."
            )
        if sentences:
            lines += [" ".join(sentences), ""]
    return lines


def _telemetry_cost(pipeline: list[dict[str, Any]]) -> list[str]:
    # The same store with the OpenTelemetry API's hooks (no SDK) and without them, one run.
    rows = {row["name"]: row for row in pipeline if not row.get("skipped")}
    hooked, quiet = rows.get("library-memory"), rows.get("library-memory-telemetry-off")
    if hooked is None or quiet is None:
        return []
    # Round by round (the two sides ran next to each other), so the machine's drift cancels.
    pairs = zip(hooked["rounds"], quiet["rounds"], strict=True)
    cost = statistics.median(on / off for on, off in pairs) - 1
    verdict = "met" if cost <= TELEMETRY_TARGET else "missed"
    return [
        f"OpenTelemetry with no SDK costs {cost:+.1%} per refresh (memory store, in-process; "
        f"target at most {TELEMETRY_TARGET:.0%}: {verdict}).",
        "",
    ]


def http_table(results: dict[str, Any]) -> list[str]:
    rows = (results.get("http") or {}).get("configurations") or []
    if not rows:
        return []
    lines = [
        f"| Over HTTP | req/s | {TIMES} raw | {TIMES} raw, range | p50 ms | p99 ms "
        f"| {TIMES} raw p50 | {TIMES} raw p99 | loop lag p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if row.get("skipped"):
            lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | | | |")
            continue
        pair_ratios = row.get("pair_ratios") or []
        spread = (
            f"{min(pair_ratios):.2f}{NDASH}{max(pair_ratios):.2f}" if len(pair_ratios) > 1 else ""
        )
        lines.append(
            f"| {row['label']} | {row['requests_per_second']:.0f} | {_ratio(row.get('ratio'))} "
            f"| {spread} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {_ratio(row.get('p50_ratio'))} | {_ratio(row.get('p99_ratio'))} "
            f"| {row.get('lag_p99_ms', 0):.2f} |"
        )
    lines += [
        "",
        f"req/s and latencies: medians of the runs. {TIMES} raw: the median over the rounds of",
        "each run against the raw run beside it, so it can differ from the quotient of the",
        "medians when the machine's speed drifted during the benchmark; the range is the",
        "lowest and highest of those side-by-side ratios. Loop lag: how late a 1 ms sleep on",
        "the server's event loop woke up during the run (99th percentile; median of the runs).",
        "",
    ]
    return lines


def anchor_table(results: dict[str, Any]) -> list[str]:
    """Each store against the raw endpoint and against its by-hand anchor, side by side."""
    rows = {row["name"]: row for row in (results.get("http") or {}).get("configurations") or []}
    lines = []
    for name, anchor_name in ANCHORS.items():
        row, anchor = rows.get(name), rows.get(anchor_name) or {}
        if row is None:
            continue
        if row.get("skipped"):
            lines.append(f"| {row['label']} | skipped: {row['skipped']} | | | | | |")
            continue
        if anchor.get("skipped"):
            by_hand = f"skipped: {anchor['skipped']}"
        else:
            by_hand = f"{anchor['requests_per_second']:.0f}" if anchor else "not selected"
        lines.append(
            f"| {row['label']} | {row['requests_per_second']:.0f} | {by_hand} "
            f"| {_ratio(row.get('ratio'))} | {_ratio(row.get('anchor_ratio'))} "
            f"| {_ratio(row.get('p99_ratio'))} | {_ratio(row.get('anchor_p99_ratio'))} |"
        )
    if not lines:
        return []
    return [
        f"| Store, over HTTP | req/s | by hand, req/s | {TIMES} raw | {TIMES} by hand "
        f"| {TIMES} raw p99 | {TIMES} by hand p99 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *lines,
        "",
        f"By hand: FastAPI + PyJWT + the store's driver, each refresh token consumed once in one "
        f"atomic step (bench/by_hand.py), the shortest correct code without this library. "
        f"{TIMES} by hand: the store's {TIMES} raw over its anchor's (each against the raw run "
        "beside it).",
        "",
    ]


def round_trip_lines(results: dict[str, Any]) -> list[str]:
    """The Redis store's round trips and the PostgreSQL store's statements per refresh."""
    section = results.get("redis") or {}
    lines = []
    store = section.get("store")
    if store and store.get("skipped"):
        lines.append(f"Redis store: skipped: {store['skipped']}")
    elif store:
        commands = ", ".join(f"{k} {v:g}" for k, v in store["commands_per_refresh"].items())
        lines.append(
            f"Redis store: **round trips per refresh: {store['round_trips_per_refresh']:g}** "
            f"(over {store['refreshes']} refreshes); commands per refresh: {commands}."
        )
    postgres = (results.get("postgres") or {}).get("store")
    if postgres and postgres.get("skipped"):
        lines += ["", f"PostgreSQL store: skipped: {postgres['skipped']}"]
    elif postgres:
        lines += [
            "",
            "PostgreSQL store: **statements (round trips) per refresh: "
            f"{postgres['statements_per_refresh']:g}** (over {postgres['refreshes']} refreshes, "
            "from pg_stat_statements).",
        ]
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
        + anchor_table(results)
        + dpop_lines(results)
        + round_trip_lines(results)
        + session_table(results.get("sessions") or [])
        + saturation_table(results.get("saturation") or [])
        + targets_table(results)
    )


# -- targets -------------------------------------------------------------------------------


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets against this run's ratios: met, missed, or not measured and why."""
    http_rows = {row["name"]: row for row in (results.get("http") or {}).get("configurations", [])}
    pipeline = {row["name"]: row for row in (results.get("inprocess") or {}).get("pipeline", [])}
    store = (results.get("redis") or {}).get("store") or {}
    postgres = (results.get("postgres") or {}).get("store") or {}
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
        f"In-process: memory store ≤ {INPROCESS_TARGET}{TIMES} raw PyJWT",
        pipeline.get("library-memory"),
        "ratio",
        lambda value: value <= INPROCESS_TARGET,
        ratio,
    )
    for name, plain_name in WITHOUT_PROOF.items():
        row = http_rows.get(name)
        if row is not None and not row.get("skipped") and "dpop_ratio" not in row:
            plain = http_rows.get(plain_name) or {}
            row = {"skipped": plain.get("skipped") or f"{plain_name} not measured"}
        label = BY_NAME[plain_name].label.removeprefix("auth-refresh, ")
        add(
            f"{label[0].upper() + label[1:]}: a refresh with a DPoP proof ≥ {DPOP_TARGET}{TIMES} "
            "one without (req/s)",
            row,
            "dpop_ratio",
            lambda value: value >= DPOP_TARGET,
            ratio,
        )
    for name, (least, most_p99) in HTTP_TARGETS.items():
        label = BY_NAME[name].label.removeprefix("auth-refresh, ")
        label = label[0].upper() + label[1:]
        add(
            f"{label} ≥ {least}{TIMES} raw req/s",
            http_rows.get(name),
            "ratio",
            lambda value, least=least: value >= least,
            ratio,
        )
        if most_p99 is not None:
            add(
                f"{label}: p99 ≤ {most_p99}{TIMES} raw p99",
                http_rows.get(name),
                "p99_ratio",
                lambda value, most=most_p99: value <= most,
                ratio,
            )
    saturation = {row["name"]: row for row in results.get("saturation") or []}
    raw_saturated, sqlite_saturated = saturation.get("raw"), saturation.get("library-sqlite")
    if raw_saturated and sqlite_saturated and not sqlite_saturated.get("skipped"):
        sqlite_saturated = {
            **sqlite_saturated,
            "p99_ratio": sqlite_saturated["p99_ms"] / raw_saturated["p99_ms"],
        }
    add(
        f"SQLite store, 2 workers at saturation: p99 ≤ {SATURATION_P99_TARGET}{TIMES} raw's",
        sqlite_saturated if raw_saturated else None,
        "p99_ratio",
        lambda value: value <= SATURATION_P99_TARGET,
        ratio,
    )
    session_rows = {row["name"]: row for row in results.get("sessions") or []}
    for name, label in STORES.items():
        add(
            f"{label}: access guard with the session check ≥ 0.9{TIMES} without (req/s)",
            session_rows.get(name),
            "ratio",
            lambda value: value >= 0.9,
            ratio,
        )
    add(
        "Redis store: at most 1 round trip per refresh",
        store or None,
        "round_trips_per_refresh",
        lambda value: value <= 1.01,
        lambda value: f"{value:g}",
    )
    add(
        "PostgreSQL store: at most 1 round trip (statement) per refresh",
        postgres or None,
        "statements_per_refresh",
        lambda value: value <= 1.01,
        lambda value: f"{value:g}",
    )
    for name, anchor_name in ANCHORS.items():
        row = http_rows.get(name)
        if row is not None and not row.get("skipped") and "anchor_ratio" not in row:
            anchor = http_rows.get(anchor_name) or {}
            row = {"skipped": anchor.get("skipped") or f"{anchor_name} not measured"}
        add(
            f"{BY_NAME[name].label.removeprefix('auth-refresh, ')} "
            f"≥ {ANCHOR_TARGET}{TIMES} its by-hand anchor req/s",
            row,
            "anchor_ratio",
            lambda value: value >= ANCHOR_TARGET,
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
    if not http_rows:
        return "nothing was measured"
    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.3 * len(http_rows)))
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
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def _colors(rows: list[dict[str, Any]]) -> list[str]:
    palette = {"raw": "#7f7f7f", "authx": "#d62728"} | dict.fromkeys(ANCHORS.values(), "#bdbdbd")
    return [palette.get(row["name"], "#1f77b4") for row in rows]


def results_section(results: dict[str, Any], chart_name: str | None) -> list[str]:
    settings = results["settings"]
    machine_info = results["machine"]
    http_section = results.get("http") or {}
    server_stack = http_section.get("server") or {}
    lines = [RESULTS_START, ""]
    lines += [f"> {note}" for note in results.get("notes") or []] + [""]
    lines += targets_table(results)
    if chart_name:
        lines += [f"![Refresh throughput over HTTP]({chart_name})", ""]
    lines += http_table(results) + anchor_table(results) + dpop_lines(results)
    lines += inprocess_table(results)
    lines += round_trip_lines(results)
    lines += session_table(results.get("sessions") or [])
    lines += saturation_table(results.get("saturation") or [])
    lines += [
        f"- Run: {results['started_at']} ({results['kind']} run), commit "
        f"`{(results['source'].get('commit') or '?')[:12]}`"
        + (" with uncommitted changes in src/" if results["source"].get("src_modified") else ""),
        f"- Over HTTP: one uvicorn worker ({server_stack.get('loop', '?')} loop, "
        f"{server_stack.get('http', '?')} parser), {http_section.get('pinning', '?')}; "
        f"{http_section.get('loader', '?')} with {settings.get('connections')} connections, "
        f"{settings.get('duration')} s per run, {settings.get('rounds')} rounds",
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
        RESULTS_END,
    ]
    return lines


def write_docs(results: dict[str, Any], directory: Path) -> tuple[Path, str | None]:
    """docs page and chart; returns the page and why the chart is missing (None if drawn)."""
    directory.mkdir(parents=True, exist_ok=True)
    chart_path = directory / CHART_NAME
    missing = chart(results, chart_path)
    page_path = directory / DOCS_NAME
    text = (
        page_path.read_text()
        if page_path.exists()
        else f"# Benchmarks\n\n{RESULTS_START}\n{RESULTS_END}\n"
    )
    before, _, rest = text.partition(RESULTS_START)
    _, _, after = rest.partition(RESULTS_END)
    section = "\n".join(results_section(results, None if missing else CHART_NAME))
    page_path.write_text(before + section + after)
    return page_path, missing
