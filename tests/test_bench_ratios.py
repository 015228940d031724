"""The benchmark's ratios: each configuration against the raw run beside it, and a note when
the machine's speed drifted."""

from typing import Any

from bench.configurations import BY_NAME, Configuration
from bench.inprocess import Timing
from bench.over_http import LoadResult
from bench.report import TIMES, anchor_table, dpop_lines, evaluate_targets, inprocess_table
from bench.run import _against_raw, _http_rows, raw_drift


def run(requests_per_second: float, p50_ms: float = 10.0) -> LoadResult:
    return LoadResult(
        loader="wrk",
        requests=int(requests_per_second * 10),
        seconds=10.0,
        p50_ms=p50_ms,
        p99_ms=2 * p50_ms,
        non_2xx=0,
        errors=0,
        wraps=0,
    )


Pairs = list[tuple[LoadResult, LoadResult]]


def side_by_side(raw_runs: list[LoadResult], pairs: dict[Configuration, Pairs]) -> list[Any]:
    """The HTTP rows of the raw endpoint (``raw_runs``) and of each configuration, whose
    ``pairs`` are its runs, each with the raw run beside it."""
    raw = BY_NAME["raw"]
    configurations = [raw, *pairs]
    return _http_rows(
        configurations,
        dict.fromkeys((c.name for c in configurations), None),
        {raw.name: raw_runs, **{c.name: [own for own, _ in runs] for c, runs in pairs.items()}},
        {c.name: [] for c in configurations},
        {raw.name: [], **{c.name: runs for c, runs in pairs.items()}},
    )


def test_ratios_are_medians_of_side_by_side_runs_not_ratios_of_medians() -> None:
    stateless = BY_NAME["library-stateless"]
    # The machine ran at two speeds; each stateless run was as fast as the raw run beside it.
    pairs = [(run(1000), run(1000)), (run(2000), run(2000)), (run(2000), run(2000))]
    raw_runs = [raw_run for _, raw_run in pairs] + [run(1000), run(1000)]
    rows = side_by_side(raw_runs, {stateless: pairs})
    by_name = {row["name"]: row for row in rows}
    assert by_name["raw"]["requests_per_second"] == 1000
    assert by_name["library-stateless"]["requests_per_second"] == 2000
    # A ratio of medians would say 2.0.
    assert by_name["library-stateless"]["ratio"] == 1.0
    assert by_name["library-stateless"]["pair_ratios"] == [1.0, 1.0, 1.0]
    assert by_name["raw"]["ratio"] == 1.0


def test_in_process_ratios_are_medians_of_side_by_side_rounds_too() -> None:
    # The machine ran at two speeds; each memory round took 0.9 of the raw round beside it.
    raw = Timing("raw", [100.0, 100.0, 200.0, 200.0, 200.0])
    memory = Timing("library-memory", [90.0, 90.0, 90.0, 180.0, 180.0])
    row = {"name": "library-memory", "label": "auth-refresh, memory store"}
    row.update(_against_raw(memory, raw))
    assert (row["microseconds"], round(row["ratio"], 6)) == (90.0, 0.9)
    # A quotient of the medians would say 0.45; it is shown beside, not judged.
    assert (row["ratio_of_medians"], row["ratio_range"]) == (0.45, [0.45, 0.9])
    results = {"kind": "full", "inprocess": {"pipeline": [row]}}
    [target] = [t for t in evaluate_targets(results) if t["target"].startswith("In-process")]
    assert (target["measured"], target["status"]) == (f"0.90{TIMES}", "met")
    assert f"| 90.0 | 0.90{TIMES} | 0.45\N{EN DASH}0.90 | 0.45{TIMES} |" in "\n".join(
        inprocess_table(results)
    )


def test_a_store_is_compared_with_its_by_hand_anchor_through_the_raw_runs_beside_each() -> None:
    anchor, store = BY_NAME["raw-redis"], BY_NAME["library-redis"]
    # The machine slowed down between the two: each is judged by the raw run beside it.
    anchor_pairs = [(run(500, p50_ms=20.0), run(1000))]
    store_pairs = [(run(660, p50_ms=30.0), run(600, p50_ms=20.0))]
    rows = side_by_side([run(1000), run(600)], {anchor: anchor_pairs, store: store_pairs})
    by_name = {row["name"]: row for row in rows}
    assert round(by_name["library-redis"]["anchor_ratio"], 6) == 2.2  # 1.1 raw over 0.5 raw
    assert round(by_name["library-redis"]["anchor_p99_ratio"], 6) == 0.75  # 1.5 over 2.0
    results = {"kind": "full", "http": {"configurations": rows}}
    [target] = [t for t in evaluate_targets(results) if t["target"].startswith("Redis store ≥ 1.1")]
    assert (target["measured"], target["status"]) == (f"2.20{TIMES}", "met")
    ratios = " | ".join(f"{value}{TIMES}" for value in ("1.10", "2.20", "1.50", "0.75"))
    assert f"| auth-refresh, Redis store | 660 | 500 | {ratios} |" in anchor_table(results)
    # A store whose anchor did not run is not judged against it.
    del by_name["library-redis"]["anchor_ratio"]
    by_name["raw-redis"] = {"name": "raw-redis", "skipped": "no Redis server"}
    results = {"kind": "full", "http": {"configurations": list(by_name.values())}}
    [target] = [t for t in evaluate_targets(results) if t["target"].startswith("Redis store ≥ 1.1")]
    assert target["status"] == "not measured: no Redis server"


def test_a_refresh_with_a_dpop_proof_is_compared_with_one_without_through_the_raw_runs() -> None:
    plain, proven = BY_NAME["library-memory"], BY_NAME["library-memory-dpop"]
    # The machine was twice as fast while the memory store ran: raw runs beside each cancel it.
    plain_pairs = [(run(1800, p50_ms=5.0), run(2000, p50_ms=5.0))]
    proven_pairs = [(run(630, p50_ms=20.0), run(1000, p50_ms=10.0))]
    rows = side_by_side([run(2000), run(1000)], {plain: plain_pairs, proven: proven_pairs})
    by_name = {row["name"]: row for row in rows}
    # 0.63 raw over 0.9 raw; the quotient of the two rows' req/s would say 0.35.
    assert round(by_name["library-memory-dpop"]["dpop_ratio"], 6) == 0.7
    assert round(by_name["library-memory-dpop"]["dpop_p99_ratio"], 6) == 2.0
    assert "dpop_ratio" not in by_name["library-memory"]
    results = {"kind": "full", "http": {"configurations": rows}}
    [target] = [t for t in evaluate_targets(results) if "DPoP" in t["target"]]
    assert target["target"].startswith("Memory store: a refresh with a DPoP proof ≥ 0.8")
    assert (target["measured"], target["status"]) == (f"0.70{TIMES}", "MISSED")
    [line, _] = dpop_lines(results)
    assert f"serve 0.70{TIMES} the requests per second" in line
    assert f"p99 40.00 ms against 10.00 ms (2.00{TIMES})" in line
    # Without the same store's runs (not selected), the proof's cost is not judged.
    rows = side_by_side([run(1000)], {proven: proven_pairs})
    results = {"kind": "full", "http": {"configurations": rows}}
    [target] = [t for t in evaluate_targets(results) if "DPoP" in t["target"]]
    assert target["status"] == "not measured: library-memory not measured"
    assert dpop_lines(results) == []


def test_a_raw_endpoint_whose_speed_varied_is_noted() -> None:
    def results(*speeds: float) -> dict[str, object]:
        rounds = [{"requests_per_second": speed} for speed in speeds]
        return {"http": {"configurations": [{"name": "raw", "rounds": rounds}]}}

    note = raw_drift(results(1200, 2000, 1500))
    assert note is not None
    assert "from 1200 to 2000 req/s" in note
    assert raw_drift(results(1900, 2000, 1950)) is None
    assert raw_drift({"http": None}) is None
