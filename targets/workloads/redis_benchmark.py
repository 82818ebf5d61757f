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
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from targets.apps.base import Endpoint
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import BadInputError, HostOperationError, WorkloadError

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


# ---------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------

#: test names redis-benchmark 7.x accepts with -t
KNOWN_TESTS = (
    "ping_inline", "ping_mbulk", "set", "get", "incr", "lpush", "rpush", "lpop", "rpop", "sadd",
    "hset", "spop", "zadd", "zpopmin", "lrange", "lrange_100", "lrange_300", "lrange_500",
    "lrange_600", "mset", "xadd",
)

_METRICS = ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")


def _slug(test_name: str) -> str:
    """``LRANGE_100 (first 100 elements)`` -> ``lrange_100``; ``set k:__rand_int__ v`` -> ``set``."""
    return re.sub(r"[^a-z0-9_]", "_", test_name.split()[0].lower())


class RedisBenchmarkWorkload(Workload):
    """redis-benchmark against a Redis endpoint; one invocation per repetition.

    Defaults are latency-oriented: 1 client and no pipelining keep the server below saturation so
    the kernel's effect on per-request latency is visible (throughput runs would measure queueing).
    ``requests`` (per test) defaults to 10000: with get,set at ~12-15k requests/s per client on a
    small VM one repetition takes about 1.5 s. Alternatively ``duration_s`` asks for a target
    repetition time; ``prepare()`` then calibrates the request count once with a short probe
    run and keeps it fixed for the experiment (comparable repetitions need the same N: the max
    and p99.9 of N samples depend on N).

    Aggregation over several tests (e.g. get,set), stated so results can be read:

    * ``p50_ms`` ... ``max_ms``: the **maximum over tests** - the worst command bounds what a
      client mixing these commands sees, and minimising it cannot trade one command for another.
    * ``ops_per_s``: **total requests / total time**, time per test = requests / its rps. The
      tests run one after another, so summing their rates would report a throughput never
      reached; this is the rate of the repetition as a whole.
    * ``avg_ms``: request-weighted mean; ``requests``: total requests.
    * per test: ``<test>.<metric>`` (e.g. ``get.p99_ms``, ``set.ops_per_s``), usable as objective.

    redis-benchmark's helper steps (``LPUSH (needed to benchmark LRANGE)``) are left out.
    """

    name = "redis-benchmark"

    def __init__(
        self,
        *,
        commands: str | Sequence[str] = "get,set",
        clients: int = 1,
        pipeline: int = 1,
        requests: int = 10000,
        duration_s: float | None = None,
        value_size: int = 3,
        keyspace: int = 10000,
        threads: int | None = None,
        binary: str = "redis-benchmark",
        cli_binary: str = "redis-cli",
        timeout_s: float | None = None,
        warmup_requests: int | None = None,
        load_dataset: bool = True,
        per_command_metrics: bool = True,
    ) -> None:
        if isinstance(commands, str):
            tests = [c.strip().lower() for c in commands.split(",") if c.strip()]
        else:
            tests = [str(c).strip().lower() for c in commands if str(c).strip()]
        if not tests:
            raise BadInputError("redis-benchmark commands is empty; give e.g. commands=get,set")
        for test in tests:
            if test not in KNOWN_TESTS:
                raise BadInputError(
                    f"redis-benchmark command {test!r} is unknown; valid: {', '.join(KNOWN_TESTS)}"
                )
        self.tests = tests
        for label, value, minimum in (
            ("clients", clients, 1), ("pipeline", pipeline, 1), ("requests", requests, 1),
            ("value_size", value_size, 1), ("keyspace", keyspace, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise BadInputError(
                    f"redis-benchmark {label}={value!r} is invalid; give an integer >= {minimum}"
                )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise BadInputError(f"redis-benchmark threads={threads!r} is invalid; give an integer >= 1")
        if duration_s is not None and not (isinstance(duration_s, (int, float)) and duration_s > 0):
            raise BadInputError(f"redis-benchmark duration_s={duration_s!r} is invalid; give seconds > 0")
        self.clients = clients
        self.pipeline = pipeline
        self.requests = requests
        self.duration_s = float(duration_s) if duration_s is not None else None
        self.value_size = value_size
        self.keyspace = keyspace
        self.threads = threads
        self.binary = binary
        self.cli_binary = cli_binary
        self.timeout_s = timeout_s
        self.warmup_requests = warmup_requests
        self.load_dataset = load_dataset
        self.per_command_metrics = per_command_metrics
        self._calibrated_requests: int | None = None

    # -- argv ------------------------------------------------------------------------------
    @property
    def effective_requests(self) -> int:
        return self._calibrated_requests or self.requests

    def _target_args(self, endpoint: Endpoint) -> list[str]:
        if endpoint.socket_path:
            return ["-s", endpoint.socket_path]
        return ["-h", endpoint.address or "127.0.0.1", "-p", str(endpoint.port)]

    def build_argv(self, endpoint: Endpoint, *, requests: int | None = None, binary: str | None = None) -> list[str]:
        argv = [binary or self.binary, *self._target_args(endpoint)]
        argv += ["-c", str(self.clients), "-n", str(requests or self.effective_requests)]
        argv += ["-P", str(self.pipeline), "-d", str(self.value_size), "-r", str(self.keyspace)]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        argv += ["--precision", "3", "-t", ",".join(self.tests)]
        return argv

    def _timeout(self, requests: int) -> float:
        if self.timeout_s is not None:
            return float(self.timeout_s)
        # generous: assumes at least 1000 requests/s per test; a hung run (redis-benchmark spins
        # forever on a refused connection) must never stall the tuner
        return 30.0 + requests * len(self.tests) / 1000.0

    # -- running ---------------------------------------------------------------------------
    def _resolve(self, host: Host, program: str, what: str) -> str:
        if "/" in program:
            if not host.exists(program):
                raise WorkloadError(f"{what} {program} does not exist; install redis-tools or set {what}")
            return program
        path = host.which(program)
        if not path:
            raise WorkloadError(
                f"{program} not found on PATH of {host.key}; install redis-tools "
                "(apt-get install redis-tools) or set the workload's binary"
            )
        return path

    def _ping(self, host: Host, endpoint: Endpoint) -> None:
        """redis-benchmark 7 busy-loops forever when it cannot connect: check first."""
        cli = host.which(self.cli_binary) if "/" not in self.cli_binary else self.cli_binary
        if cli:
            result = host.run([cli, *self._target_args(endpoint), "ping"], timeout_s=5, check=False)
            if result.ok and "PONG" in result.stdout:
                return
            detail = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no reply"]
            raise WorkloadError(f"redis at {_where(endpoint)} does not answer PING: {detail[0][:160]}")
        if endpoint.socket_path or not host.which("bash"):
            return  # no way to probe; the run timeout still bounds a hung redis-benchmark
        probe = f"exec 3<>/dev/tcp/{endpoint.address or '127.0.0.1'}/{endpoint.port}"
        result = host.run(["timeout", "3", "bash", "-c", probe], timeout_s=5, check=False)
        if not result.ok:
            raise WorkloadError(f"redis at {_where(endpoint)} is not reachable (TCP connect failed)")

    def run_once(self, host: Host, endpoint: Endpoint, *, requests: int | None = None) -> tuple[RedisBenchmarkResult, float | None]:
        """One redis-benchmark invocation; returns the parsed result and the client's CPU seconds."""
        binary = self._resolve(host, self.binary, "binary")
        self._ping(host, endpoint)
        n = requests or self.effective_requests
        argv = self.build_argv(endpoint, requests=n, binary=binary)
        timeout = self._timeout(n)
        try:
            result = host.run(argv, timeout_s=timeout, check=False)
        except HostOperationError as exc:
            raise WorkloadError(f"redis-benchmark did not finish: {exc}") from None
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise WorkloadError(f"redis-benchmark exited {result.exit_code}: {tail[0][:200]}")
        parsed = parse_redis_benchmark(result.stdout)
        if parsed.format != "full":
            raise WorkloadError(f"redis-benchmark printed {parsed.format} output; expected the full report")
        missing = [t for t in self.tests if not any(_slug(n) == t for n in parsed.commands)]
        if missing:
            raise WorkloadError(
                f"redis-benchmark printed no result for {', '.join(missing)} "
                f"(got: {', '.join(parsed.commands) or 'nothing'})"
            )
        if parsed.errors:
            raise WorkloadError(f"redis-benchmark reported errors: {parsed.errors[0][:200]}")
        return parsed, result.cpu_s

    def aggregate(self, parsed: RedisBenchmarkResult) -> dict[str, float]:
        """Metrics of one repetition (see the class docstring for the rules)."""
        tests = [s for s in parsed.commands.values() if not s.is_setup_step]
        if not tests:
            raise WorkloadError("redis-benchmark printed only setup steps, no measured test")
        metrics: dict[str, float] = {}
        for key in _METRICS:
            values = [getattr(s, key) for s in tests]
            if any(v is None for v in values):
                raise WorkloadError(f"redis-benchmark output lacks {key} for a test")
            metrics[key] = max(values)  # type: ignore[type-var]
        total_requests = sum(s.requests or 0 for s in tests)
        total_time = sum((s.requests or 0) / s.ops_per_s for s in tests if s.ops_per_s > 0)
        metrics["ops_per_s"] = total_requests / total_time if total_time > 0 else 0.0
        metrics["requests"] = float(total_requests)
        if all(s.avg_ms is not None for s in tests) and total_requests:
            metrics["avg_ms"] = sum((s.avg_ms or 0) * (s.requests or 0) for s in tests) / total_requests
        if self.per_command_metrics:
            for s in tests:
                slug = _slug(s.name)
                for key in _METRICS:
                    metrics[f"{slug}.{key}"] = float(getattr(s, key))
                metrics[f"{slug}.ops_per_s"] = s.ops_per_s
        return metrics

    def prepare(self, host: Host, endpoint: Endpoint) -> None:
        """Load ``keyspace`` keys (``key:%012d``, the names redis-benchmark's -r uses) of
        ``value_size`` bytes so GETs hit real values; then calibrate ``duration_s`` if set.

        Runs after every application start (a non-persistent Redis comes back empty)."""
        self._ping(host, endpoint)
        if self.load_dataset:
            self._load(host, endpoint)
        if self.duration_s is not None and self._calibrated_requests is None:
            probe = max(1000, min(self.requests, 5000))
            parsed, _ = self.run_once(host, endpoint, requests=probe)
            tests = [s for s in parsed.commands.values() if not s.is_setup_step]
            seconds_per_request = sum(1.0 / s.ops_per_s for s in tests if s.ops_per_s > 0)
            n = int(self.duration_s / seconds_per_request) if seconds_per_request > 0 else self.requests
            self._calibrated_requests = max(1000, round(n, -3))

    def _load(self, host: Host, endpoint: Endpoint) -> None:
        value = "x" * self.value_size
        cli = host.which(self.cli_binary) if "/" not in self.cli_binary else self.cli_binary
        if cli:
            chunks = []
            for i in range(self.keyspace):
                key = f"key:{i:012d}"
                chunks.append(f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(value)}\r\n{value}\r\n")
            result = host.run([cli, *self._target_args(endpoint), "--pipe"], input_text="".join(chunks),
                              timeout_s=60 + self.keyspace / 10000, check=False)
            m = re.search(r"errors: (?P<errors>\d+), replies: (?P<replies>\d+)", result.stdout)
            if not result.ok or not m or int(m["errors"]) or int(m["replies"]) != self.keyspace:
                tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
                raise WorkloadError(f"loading {self.keyspace} keys with redis-cli --pipe failed: {tail[0][:200]}")
            return
        # no redis-cli: random SETs over the key space (3x the key space fills ~95% of the keys)
        binary = self._resolve(host, self.binary, "binary")
        argv = [binary, *self._target_args(endpoint), "-c", "4", "-P", "16", "-q", "-t", "set",
                "-n", str(3 * self.keyspace), "-r", str(self.keyspace), "-d", str(self.value_size)]
        result = host.run(argv, timeout_s=self._timeout(3 * self.keyspace), check=False)
        if not result.ok:
            raise WorkloadError(f"loading the key space with redis-benchmark failed (exit {result.exit_code})")

    def warmup(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> None:
        """An unmeasured run of ``warmup_requests`` (default: a fifth of a repetition, >= 1000)."""
        n = self.warmup_requests or max(1000, self.effective_requests // 5)
        self.run_once(host, endpoint, requests=n)

    def measure(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> dict[str, float]:
        parsed, cpu_s = self.run_once(host, endpoint)
        metrics = self.aggregate(parsed)
        if cpu_s is not None:
            metrics["_client_cpu_s"] = cpu_s
        return metrics

    def describe(self) -> dict[str, object]:
        return {
            "workload": self.name,
            "commands": ",".join(self.tests),
            "clients": self.clients,
            "pipeline": self.pipeline,
            "requests": self.requests,
            "duration_s": self.duration_s,
            "value_size": self.value_size,
            "keyspace": self.keyspace,
            "threads": self.threads,
        }


def _where(endpoint: Endpoint) -> str:
    return endpoint.socket_path or f"{endpoint.address or '127.0.0.1'}:{endpoint.port}"
