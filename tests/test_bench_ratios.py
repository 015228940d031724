"""The benchmark's ratios: each configuration against the raw run beside it, and a note when
the machine's speed drifted."""

from bench.configurations import BY_NAME
from bench.over_http import LoadResult
from bench.run import _http_rows, raw_drift


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


def test_ratios_are_medians_of_side_by_side_runs_not_ratios_of_medians() -> None:
    raw, stateless = BY_NAME["raw"], BY_NAME["library-stateless"]
    # The machine ran at two speeds; each stateless run was as fast as the raw run beside it.
    pairs = [(run(1000), run(1000)), (run(2000), run(2000)), (run(2000), run(2000))]
    raw_runs = [raw_run for _, raw_run in pairs] + [run(1000), run(1000)]
    rows = _http_rows(
        [raw, stateless],
        {raw.name: None, stateless.name: None},
        {raw.name: raw_runs, stateless.name: [own for own, _ in pairs]},
        {raw.name: [], stateless.name: []},
        {raw.name: [], stateless.name: pairs},
    )
    by_name = {row["name"]: row for row in rows}
    assert by_name["raw"]["requests_per_second"] == 1000
    assert by_name["library-stateless"]["requests_per_second"] == 2000
    # A ratio of medians would say 2.0.
    assert by_name["library-stateless"]["ratio"] == 1.0
    assert by_name["library-stateless"]["pair_ratios"] == [1.0, 1.0, 1.0]
    assert by_name["raw"]["ratio"] == 1.0


def test_a_raw_endpoint_whose_speed_varied_is_noted() -> None:
    def results(*speeds: float) -> dict[str, object]:
        rounds = [{"requests_per_second": speed} for speed in speeds]
        return {"http": {"configurations": [{"name": "raw", "rounds": rounds}]}}

    note = raw_drift(results(1200, 2000, 1500))
    assert note is not None
    assert "from 1200 to 2000 req/s" in note
    assert raw_drift(results(1900, 2000, 1950)) is None
    assert raw_drift({"http": None}) is None
