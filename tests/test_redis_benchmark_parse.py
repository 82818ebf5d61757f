"""parse_redis_benchmark against real redis-benchmark 7.0.15 outputs (tests/fixtures/redis_benchmark).

Expected numbers were read off the fixture files by eye.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from targets.workloads.redis_benchmark import (
    RedisBenchmarkResult,
    parse_redis_benchmark,
    quantile_from_points,
)
from tuner.errors import WorkloadError

FIXTURES = Path(__file__).parent / "fixtures" / "redis_benchmark"


def load(name: str) -> RedisBenchmarkResult:
    return parse_redis_benchmark((FIXTURES / name).read_text())


def assert_monotonic(result: RedisBenchmarkResult) -> None:
    for stats in result.commands.values():
        chain = [stats.p50_ms, stats.p95_ms, stats.p99_ms, stats.p999_ms, stats.max_ms]
        chain = [v for v in chain if v is not None]
        assert chain == sorted(chain), (stats.name, chain)


ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.txt") if p.name != "connection_refused.txt")


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_parses_monotonic(name: str) -> None:
    result = load(name)
    assert result.commands
    assert_monotonic(result)
    for stats in result.commands.values():
        assert stats.ops_per_s > 0


def test_full_output_with_precision_one_client() -> None:
    r = load("get_set_c1_precision3.txt")
    assert r.format == "full"
    assert list(r.commands) == ["SET", "GET"]
    s = r["SET"]
    assert s.requests == 5000
    assert s.duration_s == 0.44
    assert s.ops_per_s == 11286.68
    assert (s.avg_ms, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == (
        0.081, 0.024, 0.079, 0.127, 0.199, 1.503,
    )
    # rank ceil(0.999*5000)=4995: 0.503 ms covers 4994, 0.607 ms (cumulative list) covers 4995
    assert s.p999_ms == 0.607
    g = r["GET"]
    assert g.ops_per_s == 13157.89
    assert (g.p50_ms, g.p95_ms, g.p99_ms, g.max_ms) == (0.071, 0.095, 0.119, 4.143)
    # 0.295 ms covers 4996 >= 4995, 0.191 covers 4991
    assert g.p999_ms == 0.295
    # merged distribution: both lists, sorted, ends at the full count
    assert g.distribution[0] == (0.039, 2)
    assert g.distribution[-1] == (5.103, 5000)


def test_full_output_default_precision() -> None:
    r = load("get_set_c1_default.txt")
    s, g = r["SET"], r["GET"]
    assert s.requests == g.requests == 2000
    assert s.ops_per_s == 21739.13
    assert (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == (0.055, 0.079, 0.095, 0.335)
    assert s.p999_ms == 0.167  # rank 1998: 0.143 -> 1994, 0.167 -> 1999
    assert (g.p50_ms, g.p95_ms, g.p99_ms, g.max_ms) == (0.055, 0.079, 0.103, 0.903)
    assert g.p999_ms == 0.303  # 0.207 -> 1997, 0.303 -> 1998 (cumulative list)


def test_multiple_commands_including_setup_step() -> None:
    r = load("multi_commands_c2.txt")
    assert list(r.commands) == [
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "LPUSH (needed to benchmark LRANGE)",
        "LRANGE_100 (first 100 elements)",
    ]
    incr = r["INCR"]
    assert incr.ops_per_s == 28571.43
    assert (incr.avg_ms, incr.min_ms, incr.p50_ms, incr.p95_ms, incr.p99_ms, incr.max_ms) == (
        0.055, 0.008, 0.055, 0.087, 0.103, 0.207,
    )
    assert incr.p999_ms == 0.135
    assert r["LPUSH (needed to benchmark LRANGE)"].is_setup_step
    assert not r["LPUSH"].is_setup_step
    lr = r["LRANGE_100 (first 100 elements)"]
    assert lr.ops_per_s == 16260.16
    assert lr.max_ms == 3.135


def test_pipeline() -> None:
    r = load("pipeline_p16_c4.txt")
    s, g = r["SET"], r["GET"]
    assert s.requests == 20000
    assert s.ops_per_s == 606060.62
    assert (s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == (0.087, 0.143, 0.223, 0.647)
    assert s.p999_ms == 0.591  # rank 19980: 0.575 -> 19968, 0.591 -> 19984
    assert g.ops_per_s == 800000.00
    assert (g.p50_ms, g.p95_ms, g.p99_ms, g.max_ms) == (0.063, 0.103, 0.167, 0.255)
    assert g.p999_ms == 0.247  # 0.207 -> 19936, 0.247 -> 19984


def test_threads_and_custom_command() -> None:
    t = load("threads2_get_d128.txt")["GET"]
    assert t.requests == 4000
    assert (t.p50_ms, t.p95_ms, t.p99_ms, t.max_ms) == (0.055, 0.111, 0.143, 1.087)
    assert t.p999_ms == 0.479  # rank 3996: 0.407 -> 3995, 0.479 -> 3997
    r = load("custom_command_set.txt")
    c = r["set k:__rand_int__ hello"]
    assert c.requests == 1000
    assert c.ops_per_s == 18518.52
    assert c.p999_ms == 0.215  # rank 999: 0.207 -> 998, 0.215 -> 999


def test_csv_output() -> None:
    r = load("csv_get_set_c1.txt")
    assert r.format == "csv"
    s, g = r["SET"], r["GET"]
    assert (s.ops_per_s, s.avg_ms, s.min_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms) == (
        19230.77, 0.049, 0.032, 0.047, 0.055, 0.079, 0.191,
    )
    assert g.max_ms == 0.839
    assert s.p999_ms is None and s.requests is None
    p = load("csv_pipeline_p16_c4.txt")
    assert p["SET"].ops_per_s == 444444.44
    assert p["SET"].max_ms == 3.239
    q = load("csv_quiet_get_set_c1.txt")
    assert q.format == "csv"
    assert q["GET"].p95_ms == 0.063


def test_quiet_output() -> None:
    r = load("quiet_get_set_c1.txt")
    assert r.format == "quiet"
    assert r["SET"].ops_per_s == 15503.88
    assert r["SET"].p50_ms == 0.063
    assert r["GET"].ops_per_s == 18181.82
    assert r["GET"].p50_ms == 0.055
    assert r["GET"].p99_ms is None


def test_connection_refused_is_workload_error() -> None:
    with pytest.raises(WorkloadError, match="Could not connect to Redis at 127.0.0.1:1"):
        load("connection_refused.txt")


@pytest.mark.parametrize("text", ["", "   \n", "garbage\nmore garbage\n"])
def test_empty_or_garbage_output(text: str) -> None:
    with pytest.raises(WorkloadError, match="no results"):
        parse_redis_benchmark(text)


def test_truncated_section_names_missing_summary() -> None:
    text = (FIXTURES / "get_set_c1_precision3.txt").read_text()
    cut = text[: text.index("Summary:", text.index("====== GET"))]
    with pytest.raises(WorkloadError, match="'GET'.*throughput summary"):
        parse_redis_benchmark(cut)


def test_missing_requests_line() -> None:
    text = (FIXTURES / "get_set_c1_default.txt").read_text()
    text = text.replace("2000 requests completed in 0.09 seconds", "")
    with pytest.raises(WorkloadError, match="'SET'.*requests completed"):
        parse_redis_benchmark(text)


def test_incomplete_distribution() -> None:
    text = (FIXTURES / "get_set_c1_default.txt").read_text()
    # a distribution whose largest cumulative count falls short of the request count
    text = text.replace("2000 requests completed in 0.09", "2500 requests completed in 0.09")
    with pytest.raises(WorkloadError, match="'SET'.*covers 2000 of 2500"):
        parse_redis_benchmark(text)


def test_csv_bad_number() -> None:
    text = (FIXTURES / "csv_get_set_c1.txt").read_text().replace('"19230.77"', '"fast"')
    with pytest.raises(WorkloadError, match="'rps' of test 'SET'"):
        parse_redis_benchmark(text)


def test_summary_missing_falls_back_to_distribution() -> None:
    text = (FIXTURES / "get_set_c1_precision3.txt").read_text()
    text = text.replace("        0.081     0.024     0.079     0.127     0.199     1.503", "")
    s = parse_redis_benchmark(text)["SET"]
    # rank 2500 -> 0.079 (3019); rank 4750 -> 0.135 (4865); rank 4950 -> 0.207 (4953); max 1.503
    assert (s.p50_ms, s.p95_ms, s.p99_ms, s.p999_ms, s.max_ms) == (0.079, 0.135, 0.207, 0.607, 1.503)


def test_quantile_from_points_known_answers() -> None:
    pts = [(3.0, 10), (1.0, 5), (2.0, 8)]
    assert quantile_from_points(pts, 0.5, 10) == 1.0  # rank 5
    assert quantile_from_points(pts, 0.51, 10) == 2.0  # rank 6
    assert quantile_from_points(pts, 0.8, 10) == 2.0  # rank 8
    assert quantile_from_points(pts, 0.81, 10) == 3.0
    assert quantile_from_points(pts, 1.0, 10) == 3.0
    assert quantile_from_points(pts, 0.0, 10) == 1.0
    with pytest.raises(ValueError):
        quantile_from_points(pts, 0.6, 20)


def test_workload_aggregation_rules_on_fixture() -> None:
    from targets.workloads.redis_benchmark import RedisBenchmarkWorkload

    r = load("get_set_c1_precision3.txt")
    m = RedisBenchmarkWorkload().aggregate(r)
    # p-values: max over tests
    assert m["p50_ms"] == 0.079 and m["p95_ms"] == 0.127 and m["p99_ms"] == 0.199
    assert m["p999_ms"] == 0.607 and m["max_ms"] == 4.143
    # ops_per_s: total requests / total time (5000/11286.68 + 5000/13157.89 seconds)
    assert m["ops_per_s"] == pytest.approx(10000 / (5000 / 11286.68 + 5000 / 13157.89))
    assert m["requests"] == 10000
    assert m["avg_ms"] == pytest.approx((0.081 + 0.071) / 2)
    assert m["get.p999_ms"] == 0.295 and m["set.ops_per_s"] == 11286.68

    multi = RedisBenchmarkWorkload().aggregate(load("multi_commands_c2.txt"))
    assert multi["requests"] == 7 * 2000  # the LPUSH setup step is not counted
    assert multi["max_ms"] == 3.135  # LRANGE_100
    assert "lrange_100.p99_ms" in multi
