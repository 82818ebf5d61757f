"""redis-benchmark: a pure output parser and the Redis latency workload.

Parser
------
:func:`parse_redis_benchmark` understands the three output shapes of redis-benchmark 7.x:

* **full** (default, with or without ``--precision``): one ``====== <TEST> ======`` section per
  test with ``N requests completed``, the "Latency by percentile distribution" and "Cumulative
  distribution of latencies" lists and a "Summary" with the throughput and the
  ``avg min p50 p95 p99 max`` latency table (msec).
* **csv** (``--csv``, with or without ``-q``): a header ``"test","rps","avg_latency_ms",...`` and
  one row per test (no p99.9, no request count).
* **quiet** (``-q`` without ``--csv``): ``<TEST>: <rps> requests per second, p50=<x> msec``
  (only throughput and p50).

Progress lines (``SET: rps=... avg_msec=...``) are separated by carriage returns and ignored.

p99.9 rule (full output only). redis-benchmark prints p50/p95/p99/max but not p99.9. Both
distribution lists are points ``(latency v, cumulative count c)`` meaning "c requests took
<= v ms". The parser merges the points of both lists (more points = finer resolution), sorts them
by latency and takes, for a quantile q, the *smallest printed latency whose cumulative count is
>= ceil(q * N)* (nearest-rank, stepping; no interpolation). Because a printed point only says
"at most v", this is an upper bound of the true p99.9 at the resolution of the printed points: it
never reports a tail better than measured. The value is clamped to ``max_ms``. The same rule gives
p50/p95/p99 when the summary table is missing; when it is present, redis-benchmark's own values
(read from its full HdrHistogram) are used. csv and quiet outputs have no p99.9: ``p999_ms`` is
None there.

Workload
--------
:class:`RedisBenchmarkWorkload` runs redis-benchmark once per repetition, parses the full output
and aggregates over the tests it ran (see :meth:`RedisBenchmarkWorkload.aggregate`).
"""

from __future__ import annotations

import csv
import io
import math
import re
import shlex
import socket
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from targets.apps.base import Endpoint
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import BadInputError, HostError, WorkloadError

# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisCommandStats:
    """One redis-benchmark test (e.g. ``SET``). Latencies in milliseconds; None = not printed."""

    name: str
    ops_per_s: float
    requests: int | None = None
    duration_s: float | None = None
    avg_ms: float | None = None
    min_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    #: merged (latency_ms, cumulative_count) points of both distribution lists, sorted
    distribution: tuple[tuple[float, int], ...] = ()

    @property
    def is_setup_step(self) -> bool:
        """redis-benchmark's helper steps such as ``LPUSH (needed to benchmark LRANGE)``."""
        return "(needed to benchmark" in self.name


@dataclass(frozen=True)
class RedisBenchmarkResult:
    #: "full", "csv" or "quiet"
    format: str
    #: test name as printed (``SET``, ``LRANGE_100 (first 100 elements)``, ``set k:__rand_int__ v``)
    commands: dict[str, RedisCommandStats] = field(default_factory=dict)
    #: lines redis-benchmark printed about errors (``Error from server: ...``)
    errors: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> RedisCommandStats:
        return self.commands[name]


_SECTION_RE = re.compile(r"^\s*====== (?P<name>.+?) ======\s*$")
_COMPLETED_RE = re.compile(
    r"^\s*(?P<n>\d+) requests completed in (?P<s>[0-9.]+) seconds\s*$"
)
_POINT_RE = re.compile(
    r"^\s*(?P<pct>[0-9.]+)% <= (?P<v>[0-9.]+) milliseconds \(cumulative count (?P<c>\d+)\)\s*$"
)
_THROUGHPUT_RE = re.compile(r"^\s*throughput summary: (?P<rps>[0-9.]+) requests per second\s*$")
_QUIET_RE = re.compile(
    r"^\s*(?P<name>.+?): (?P<rps>[0-9.]+) requests per second(?:, p50=(?P<p50>[0-9.]+) msec)?\s*$"
)
_PROGRESS_RE = re.compile(r":\s+rps=\S+ \(overall: \S+\) avg_msec=")
_CSV_HEADER = '"test","rps"'
_NUM = r"-?[0-9]+(?:\.[0-9]+)?"


def _lines(output: str) -> list[str]:
    # progress lines are terminated by '\r' only; treat every '\r' as a line break
    return [line for line in re.split(r"\r\n|\r|\n", output)]


def quantile_from_points(points: Sequence[tuple[float, int]], q: float, total: int) -> float:
    """Smallest latency whose cumulative count is >= ceil(q * total) (nearest-rank stepping).

    ``points`` are (latency, cumulative count) pairs; they need not be sorted. Raises ValueError
    if no point reaches the rank (the distribution does not cover ``total`` requests).
    """
    if total <= 0:
        raise ValueError("total must be positive")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} outside [0, 1]")
    rank = max(1, math.ceil(q * total - 1e-9))
    for value, count in _monotone(points):
        if count >= rank:
            return value
    raise ValueError(f"distribution reaches no cumulative count >= {rank}")


def _monotone(points: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    """Sort by latency; make counts non-decreasing conservatively (suffix minimum).

    Two lists printed by redis-benchmark never contradict each other in practice; if they did,
    lowering an earlier count to a later one can only move a quantile to a larger latency.
    """
    ordered = sorted(points)
    out: list[tuple[float, int]] = []
    running = None
    for value, count in reversed(ordered):
        running = count if running is None else min(running, count)
        out.append((value, running))
    out.reverse()
    return out


def parse_redis_benchmark(output: str) -> RedisBenchmarkResult:
    """Parse redis-benchmark 7.x output (full, ``--csv`` or ``-q``). Pure function.

    Raises WorkloadError naming what is missing when the output contains no complete result.
    """
    if not isinstance(output, str):
        raise WorkloadError(f"redis-benchmark output must be text, got {type(output).__name__}")
    lines = _lines(output)
    errors = tuple(
        line.strip()
        for line in lines
        if line.strip().startswith(("Error", "ERR", "Could not connect", "WRONGTYPE"))
    )
    stripped = [line.strip() for line in lines if line.strip()]
    if any(line.startswith(_CSV_HEADER) for line in stripped):
        return _parse_csv(stripped, errors)
    if any(_SECTION_RE.match(line) for line in lines):
        return _parse_full(lines, errors)
    quiet = [
        m for line in stripped if (m := _QUIET_RE.match(line)) and not _PROGRESS_RE.search(line)
    ]
    if quiet:
        commands = {
            m["name"]: RedisCommandStats(
                name=m["name"],
                ops_per_s=float(m["rps"]),
                p50_ms=float(m["p50"]) if m["p50"] else None,
            )
            for m in quiet
        }
        return RedisBenchmarkResult(format="quiet", commands=commands, errors=errors)
    first = errors[0] if errors else (stripped[0][:120] if stripped else "<empty output>")
    raise WorkloadError(
        "redis-benchmark printed no results: expected '====== <TEST> ======' sections, a --csv "
        f"header or '-q' lines 'TEST: N requests per second'; got: {first}"
    )


def _parse_csv(lines: list[str], errors: tuple[str, ...]) -> RedisBenchmarkResult:
    start = next(i for i, line in enumerate(lines) if line.startswith(_CSV_HEADER))
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header = rows[0]
    need = ("test", "rps")
    for col in need:
        if col not in header:
            raise WorkloadError(f"redis-benchmark --csv header lacks column {col!r}: {header}")
    commands: dict[str, RedisCommandStats] = {}
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a stray non-csv line (warnings)
        rec = dict(zip(header, row))

        def num(col: str) -> float | None:
            value = rec.get(col)
            if value is None or value == "":
                return None
            try:
                return float(value)
            except ValueError:
                raise WorkloadError(
                    f"redis-benchmark --csv: column {col!r} of test {rec['test']!r} is not a "
                    f"number: {value!r}"
                ) from None

        rps = num("rps")
        if rps is None:
            raise WorkloadError(f"redis-benchmark --csv: test {rec['test']!r} has no rps")
        commands[rec["test"]] = RedisCommandStats(
            name=rec["test"],
            ops_per_s=rps,
            avg_ms=num("avg_latency_ms"),
            min_ms=num("min_latency_ms"),
            p50_ms=num("p50_latency_ms"),
            p95_ms=num("p95_latency_ms"),
            p99_ms=num("p99_latency_ms"),
            max_ms=num("max_latency_ms"),
        )
    if not commands:
        raise WorkloadError("redis-benchmark --csv output has a header but no result rows")
    return RedisBenchmarkResult(format="csv", commands=commands, errors=errors)


def _parse_full(lines: list[str], errors: tuple[str, ...]) -> RedisBenchmarkResult:
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        m = _SECTION_RE.match(line)
        if m:
            sections.append((m["name"], []))
        elif sections:
            sections[-1][1].append(line)
    commands: dict[str, RedisCommandStats] = {}
    for name, body in sections:
        commands[name] = _parse_section(name, body)
    return RedisBenchmarkResult(format="full", commands=commands, errors=errors)


def _parse_section(name: str, body: list[str]) -> RedisCommandStats:
    requests = duration = rps = None
    points: list[tuple[float, int]] = []
    summary: dict[str, float] = {}
    header_cols: list[str] | None = None
    for raw in body:
        line = raw.strip()
        if _PROGRESS_RE.search(line):
            continue
        if m := _COMPLETED_RE.match(line):
            requests, duration = int(m["n"]), float(m["s"])
        elif m := _POINT_RE.match(line):
            points.append((float(m["v"]), int(m["c"])))
        elif m := _THROUGHPUT_RE.match(line):
            rps = float(m["rps"])
        elif line.split() and line.split()[0] == "avg" and "max" in line.split():
            header_cols = line.split()
        elif header_cols is not None and not summary:
            values = line.split()
            if len(values) == len(header_cols) and all(re.fullmatch(_NUM, v) for v in values):
                summary = {col: float(v) for col, v in zip(header_cols, values)}
    if rps is None:
        raise WorkloadError(
            f"redis-benchmark test {name!r}: missing 'throughput summary: N requests per second' "
            "(output truncated or the run was interrupted?)"
        )
    if requests is None:
        raise WorkloadError(
            f"redis-benchmark test {name!r}: missing 'N requests completed in S seconds'"
        )
    total = max((c for _, c in points), default=0)
    if points and total != requests:
        # a distribution that does not cover every request cannot give tail quantiles
        raise WorkloadError(
            f"redis-benchmark test {name!r}: latency distribution covers {total} of "
            f"{requests} requests"
        )
    dist = tuple(_monotone(points))

    def from_points(q: float) -> float | None:
        return quantile_from_points(dist, q, requests) if dist else None

    # without the summary: the smallest point covering every request is the percentile list's
    # 100% line, i.e. the maximum (the cumulative list's bucket bounds may lie above it)
    max_ms = summary.get("max", from_points(1.0))
    p50 = summary.get("p50", from_points(0.50))
    p95 = summary.get("p95", from_points(0.95))
    p99 = summary.get("p99", from_points(0.99))
    p999 = from_points(0.999)
    if p999 is not None:
        if max_ms is not None:
            p999 = min(p999, max_ms)
        if p99 is not None:
            p999 = max(p999, p99)
    if not summary and not dist:
        raise WorkloadError(
            f"redis-benchmark test {name!r}: missing both the 'latency summary (msec)' table and "
            "the 'Latency by percentile distribution' list"
        )
    return RedisCommandStats(
        name=name,
        ops_per_s=rps,
        requests=requests,
        duration_s=duration,
        avg_ms=summary.get("avg"),
        min_ms=summary.get("min"),
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        p999_ms=p999,
        max_ms=max_ms,
        distribution=dist,
    )
