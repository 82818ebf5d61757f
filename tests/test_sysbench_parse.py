"""parse_sysbench / percentiles_from_histogram on real sysbench 1.0.20 outputs (MariaDB 10.11).

Fixtures in tests/fixtures/sysbench were captured on this project's VM; numbers below were read
off the files by eye (and the cumulative counts summed by hand with awk).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from targets.apps.base import Endpoint
from targets.hosts.base import CommandResult
from targets.hosts.local import LocalHost
from targets.workloads.sysbench import (
    SysbenchResult,
    SysbenchWorkload,
    parse_sysbench,
    percentiles_from_histogram,
)
from tuner.errors import BadInputError, WorkloadError

FIXTURES = Path(__file__).parent / "fixtures" / "sysbench"


def load(name: str) -> SysbenchResult:
    return parse_sysbench((FIXTURES / name).read_text())


HIST_FIXTURES = sorted(p.name for p in FIXTURES.glob("*histogram*.txt"))


# -- percentiles_from_histogram: known answers -------------------------------------------------


def test_known_histogram() -> None:
    # 10 events: 1 ms x4, 2 ms x3, 5 ms x2, 9 ms x1 (given out of order, with an empty bucket)
    buckets = [(5.0, 2), (1.0, 4), (3.0, 0), (9.0, 1), (2.0, 3)]
    got = percentiles_from_histogram(buckets, [0.1, 0.4, 0.45, 0.5, 0.7, 0.75, 0.9, 0.95, 0.999, 1.0])
    # rank = floor(10*q + 0.5): 1, 4, 5, 5, 7, 8, 9, 10, 10, 10
    assert got == {
        0.1: 1.0, 0.4: 1.0, 0.45: 2.0, 0.5: 2.0, 0.7: 2.0, 0.75: 5.0,
        0.9: 5.0, 0.95: 9.0, 0.999: 9.0, 1.0: 9.0,
    }


def test_rank_rounding_and_minimum_rank() -> None:
    # 1000 events: 998 at 1 ms, 1 at 10 ms, 1 at 100 ms
    buckets = [(1.0, 998), (10.0, 1), (100.0, 1)]
    got = percentiles_from_histogram(buckets, [0.001, 0.998, 0.9985, 0.999, 0.9995])
    # ranks: floor(1.5)=1, floor(998.5)=998, floor(999)=999, floor(999.5)=999, floor(1000)=1000
    assert got == {0.001: 1.0, 0.998: 1.0, 0.9985: 10.0, 0.999: 10.0, 0.9995: 100.0}
    # tiny quantile on a tiny histogram: rank floor(0.5)=0 is raised to 1
    assert percentiles_from_histogram([(3.0, 1)], [0.01]) == {0.01: 3.0}


def test_single_bucket_and_errors() -> None:
    assert percentiles_from_histogram([(0.5, 7)], [0.5, 0.999]) == {0.5: 0.5, 0.999: 0.5}
    with pytest.raises(ValueError, match="empty"):
        percentiles_from_histogram([], [0.5])
    with pytest.raises(ValueError, match="empty"):
        percentiles_from_histogram([(1.0, 0)], [0.5])
    with pytest.raises(ValueError, match="outside"):
        percentiles_from_histogram([(1.0, 1)], [0.0])
    with pytest.raises(ValueError, match="outside"):
        percentiles_from_histogram([(1.0, 1)], [1.5])
    with pytest.raises(ValueError, match=">= 0"):
        percentiles_from_histogram([(1.0, -1)], [0.5])


@pytest.mark.parametrize("name", HIST_FIXTURES)
def test_histogram_rule_reproduces_sysbench_own_percentile(name: str) -> None:
    r = load(name)
    assert r.percentile is not None and r.latency_pct_ms is not None
    ours = percentiles_from_histogram(r.histogram, [r.percentile / 100])[r.percentile / 100]
    assert ours == pytest.approx(r.latency_pct_ms, abs=0.0051)  # sysbench prints 2 decimals
    assert r.histogram_events == r.events


@pytest.mark.parametrize("name", HIST_FIXTURES)
def test_metrics_monotonic(name: str) -> None:
    m = SysbenchWorkload().metrics(load(name))
    assert 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"] <= m["p999_ms"] <= m["max_ms"]
    assert m["ops_per_s"] == m["tps"] > 0


# -- parse_sysbench on real outputs --------------------------------------------------------------


def test_read_write_two_threads_histogram() -> None:
    r = load("oltp_read_write_t2_histogram.txt")
    assert r.threads == 2 and r.rate is None
    assert (r.transactions, r.tps) == (2593, 862.51)
    assert (r.queries, r.qps) == (51860, 17250.29)
    assert (r.reads, r.writes, r.other) == (36302, 10372, 5186)
    assert (r.errors, r.reconnects) == (0, 0)
    assert r.total_time_s == 3.0060 and r.events == 2593
    assert (r.latency_min_ms, r.latency_avg_ms, r.latency_max_ms) == (0.91, 2.31, 39.74)
    assert (r.percentile, r.latency_pct_ms, r.latency_sum_ms) == (95, 4.82, 5998.93)
    assert len(r.histogram) == 146
    assert r.histogram[0] == (0.920, 6) and r.histogram[-1] == (39.650, 2)
    m = SysbenchWorkload().metrics(r)
    # N=2593: ranks 1297 -> 2.069 (cum 1387), 2463 -> 4.823, 2567 -> 10.090 (cum 2568),
    # 2590 -> 17.633 (cum 2590)
    assert (m["p50_ms"], m["p95_ms"], m["p99_ms"], m["p999_ms"], m["max_ms"]) == (
        2.069, 4.823, 10.090, 17.633, 39.74,
    )
    assert m["tps"] == 862.51 and m["qps"] == 17250.29 and m["errors"] == 0


def test_read_write_without_histogram() -> None:
    r = load("oltp_read_write_t1.txt")
    assert (r.threads, r.transactions, r.tps, r.qps) == (1, 1625, 541.39, 10827.84)
    assert (r.latency_min_ms, r.latency_avg_ms, r.latency_max_ms, r.latency_pct_ms) == (0.92, 1.84, 12.02, 4.91)
    assert r.histogram == ()
    with pytest.raises(WorkloadError, match="histogram"):
        SysbenchWorkload().metrics(r)


def test_point_select_percentile_99() -> None:
    r = load("oltp_point_select_t1_histogram_p99.txt")
    assert (r.transactions, r.tps, r.qps) == (73706, 36817.88, 36817.88)
    assert (r.reads, r.writes, r.other) == (73706, 0, 0)
    assert (r.percentile, r.latency_pct_ms, r.latency_max_ms) == (99, 0.06, 4.85)
    assert r.histogram[-1] == (4.823, 1)


def test_point_select_no_histogram() -> None:
    r = load("oltp_point_select_t1.txt")
    assert (r.transactions, r.tps, r.latency_max_ms, r.latency_pct_ms) == (70740, 35353.11, 25.01, 0.04)


def test_deadlocks_are_ignored_errors() -> None:
    r = load("oltp_read_write_t8_deadlocks_histogram.txt")
    assert r.threads == 8
    assert (r.errors, r.errors_per_s, r.reconnects) == (596, 296.94, 0)
    assert (r.transactions, r.tps) == (2446, 1218.66)
    m = SysbenchWorkload().metrics(r)
    assert m["errors"] == 596 and m["errors_per_s"] == 296.94 and m["reconnects"] == 0
    assert m["p95_ms"] == 12.301 and m["max_ms"] == 25.28


def test_rate_limited_runs() -> None:
    r = load("oltp_read_only_rate100_histogram.txt")
    assert r.rate == 100 and r.tps == 91.38 and r.transactions == 183
    m = SysbenchWorkload().metrics(r)
    assert m["rate_achieved"] == pytest.approx(0.9138)
    assert m["p999_ms"] == 3.956 and m["max_ms"] == 3.96  # last bucket (3.956) below max
    p = load("oltp_point_select_rate200_histogram.txt")
    assert p.rate == 200 and p.tps == 194.17 and p.latency_pct_ms == 0.69


def test_write_only_and_update_index() -> None:
    w = load("oltp_write_only_t1_histogram.txt")
    assert (w.tps, w.qps, w.reads) == (1301.79, 7810.75, 0)
    u = load("oltp_update_index_t2_histogram.txt")
    assert (u.threads, u.tps, u.latency_max_ms, u.latency_pct_ms) == (2, 2350.8, 102.72, 3.68)


def test_percentile_clamped_to_exact_max() -> None:
    text = (FIXTURES / "oltp_read_write_t2_histogram.txt").read_text()
    # make the exact max fall inside the last bucket, below its centre 39.650
    text = text.replace("max:                                   39.74", "max:                                   39.60")
    m = SysbenchWorkload().metrics(parse_sysbench(text))
    assert m["max_ms"] == 39.60 and m["p999_ms"] <= 39.60


def test_reconnects_line_parsed() -> None:
    # sysbench 1.0.20 as packaged (MariaDB client library) segfaults instead of reconnecting
    # (see segfault_on_reconnect.txt), so no real output with reconnects > 0 could be captured;
    # this edits a real report's reconnects line to check the field is read.
    text = (FIXTURES / "oltp_read_write_t2_histogram.txt").read_text()
    text = text.replace("reconnects:                          0      (0.00 per sec.)",
                        "reconnects:                          3      (1.00 per sec.)")
    r = parse_sysbench(text)
    assert (r.reconnects, r.reconnects_per_s) == (3, 1.0)
    assert SysbenchWorkload().metrics(r)["reconnects"] == 3


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("fatal_server_killed.txt", "error 2013 (Lost connection to server during query)"),
        ("fatal_too_many_connections.txt", "error 1040: Too many connections"),
        ("fatal_wrong_password.txt", "error 1045: Access denied for user 'sbtest'@'127.0.0.1'"),
        ("fatal_connection_refused.txt", "error 2002: Can't connect to server on '127.0.0.1'"),
        ("fatal_missing_table.txt", "1146 \"Table 'sbtest.sbtest3' doesn't exist\""),
    ],
)
def test_fatal_outputs_name_the_error(name: str, needle: str) -> None:
    with pytest.raises(WorkloadError) as info:
        load(name)
    assert "no report" in str(info.value) and needle in str(info.value)


def test_segfault_and_prepare_outputs_have_no_report() -> None:
    with pytest.raises(WorkloadError, match="no 'transactions: N"):
        load("segfault_on_reconnect.txt")
    with pytest.raises(WorkloadError, match="no 'transactions: N"):
        load("prepare_2x10000.txt")


def test_empty_and_truncated() -> None:
    with pytest.raises(WorkloadError, match="printed nothing"):
        parse_sysbench("")
    text = (FIXTURES / "oltp_read_write_t2_histogram.txt").read_text()
    with pytest.raises(WorkloadError, match="'Latency \\(ms\\)' max:"):
        parse_sysbench(text[: text.index("         max:")])
    with pytest.raises(WorkloadError, match="'reconnects:'"):
        parse_sysbench(text.replace("reconnects:", "reconnect count:"))
    # a histogram that lost lines no longer matches the event count
    lines = [line for line in text.splitlines() if not line.startswith("      39.650 |")]
    with pytest.raises(WorkloadError, match="histogram holds 2591 events but the report says 2593"):
        parse_sysbench("\n".join(lines))


# -- workload settings / argv (no server needed) ---------------------------------------------------


def test_workload_argv_has_no_password() -> None:
    w = SysbenchWorkload(test="oltp_point_select", clients=2, time_s=3, rate=500)
    ep = Endpoint("127.0.0.1", 3307, "/tmp/x.sock", {"user": "u", "password": "s3cret", "database": "bench"})
    argv = w.build_argv(ep, "run", config_file="/tmp/cfg")
    assert "s3cret" not in " ".join(argv)
    assert argv[:3] == ["sysbench", "oltp_point_select", "--config-file=/tmp/cfg"]
    for expected in ("--mysql-host=127.0.0.1", "--mysql-port=3307", "--mysql-db=bench", "--threads=2",
                     "--time=3", "--rate=500", "--histogram=on", "--tables=2", "--table-size=10000"):
        assert expected in argv
    assert argv[-1] == "run"
    sock = SysbenchWorkload(use_socket=True).build_argv(ep, "prepare")
    assert "--mysql-socket=/tmp/x.sock" in sock and "--threads=1" not in sock


def test_workload_settings_validated() -> None:
    with pytest.raises(BadInputError, match="oltp_read_write"):
        SysbenchWorkload(test="tpcc")
    with pytest.raises(BadInputError, match="threads"):
        SysbenchWorkload(threads=0)
    with pytest.raises(BadInputError, match="disagree"):
        SysbenchWorkload(threads=2, clients=3)
    with pytest.raises(BadInputError, match="rate"):
        SysbenchWorkload(rate=-5)
    assert SysbenchWorkload(clients=4).threads == 4
    assert SysbenchWorkload(requests=100).events == 100


def test_reprepare_rule() -> None:
    w = SysbenchWorkload(tables=2, table_size=100, reprepare_writes_factor=10)
    w._writes_since_prepare = 2000
    assert not w.needs_reprepare()
    w._writes_since_prepare = 2001
    assert w.needs_reprepare()
    assert not SysbenchWorkload(test="oltp_read_only").needs_reprepare()
    w2 = SysbenchWorkload(reprepare_writes_factor=None)
    w2._writes_since_prepare = 10**9
    assert not w2.needs_reprepare()


# -- user and password in the config file, and in messages (no server needed) -------------------


class _RecordingHost(LocalHost):
    """Keeps the config file sysbench would read and answers the sysbench run with ``output``."""

    def __init__(self, output: str = "", exit_code: int = 0) -> None:
        super().__init__()
        self.output, self.exit_code = output, exit_code
        self.config = ""
        self.argv: list[str] = []

    def put_file(self, path: str, text: str) -> None:
        self.config = text
        super().put_file(path, text)

    def run(self, argv, *, timeout_s=None, check=True, input_text=None, env=None):  # type: ignore[no-untyped-def]
        self.argv = list(argv)
        return CommandResult(tuple(argv), self.exit_code, self.output, "", 0.01)


@pytest.mark.parametrize(("password", "line"), [
    ("s3cret", "mysql-password='s3cret'"),
    ("a b", "mysql-password='a b'"),          # unquoted, sysbench stops at the space: "a"
    ("a,b", "mysql-password='a,b'"),          # unquoted, a list: sysbench takes "a"
    ("#ab", "mysql-password='#ab'"),          # unquoted, a comment: no password at all
    ("it's", "mysql-password=\"it's\""),
])
def test_config_file_quotes_the_password_as_sysbench_reads_it(password: str, line: str) -> None:
    host = _RecordingHost(exit_code=1)
    ep = Endpoint("127.0.0.1", 3307, extra={"user": "bench user", "password": password, "database": "sbtest"})
    with pytest.raises(WorkloadError):
        SysbenchWorkload(binary="/bin/true").run_once(host, ep)
    assert host.config == f"mysql-user='bench user'\n{line}\n"
    assert not any(password in arg for arg in host.argv)


def test_a_password_sysbench_cannot_read_back_is_refused_not_written() -> None:
    host = _RecordingHost()
    ep = Endpoint("127.0.0.1", 3307, extra={"user": "u", "password": "it's \"x\"", "database": "sbtest"})
    with pytest.raises(BadInputError, match="^sysbench cannot take a password containing both ' and \"") as info:
        SysbenchWorkload(binary="/bin/true").run_once(host, ep)
    assert "it's" not in str(info.value) and host.config == "" and host.argv == []


def test_sysbench_error_keeps_words_that_spell_the_password() -> None:
    # user and password "ro": the old masking printed "er***r 1142 ... user '***'"
    fatal = ("FATAL: mysql_drv_query() returned error 1142 (DROP command denied to user 'ro'@'127.0.0.1' "
             "for table `sbtest`.`sbtest1`) for query 'DROP TABLE IF EXISTS sbtest1'")
    host = _RecordingHost(output=fatal + "\n", exit_code=1)
    ep = Endpoint("127.0.0.1", 3307, extra={"user": "ro", "password": "ro", "database": "sbtest"})
    with pytest.raises(WorkloadError) as info:
        SysbenchWorkload(binary="/bin/true").run_once(host, ep)
    assert str(info.value) == f"sysbench oltp_read_write run exited 1: {fatal}"
