"""sysbench OLTP against MySQL/MariaDB: a pure output parser, histogram percentiles, the workload.

Parser
------
:func:`parse_sysbench` reads the report of ``sysbench 1.0.x <oltp_*> run``: SQL statistics
(transactions/queries per second, ignored errors, reconnects), general statistics, the
``Latency (ms)`` block (min/avg/max, the single ``Nth percentile`` sysbench computes, sum) and,
with ``--histogram``, the latency histogram. ``FATAL:`` lines are collected; output without a
report (sysbench prints none when a worker failed) raises WorkloadError naming the first FATAL.

Percentiles from the histogram
------------------------------
sysbench keeps latencies in 1024 logarithmic buckets between 0.001 ms and 100 s (each ~1.8 %
wide) and prints every non-empty bucket as ``value |*** count`` where value is the bucket's
centre. :func:`percentiles_from_histogram` uses **sysbench's own rule** (``sb_histogram.c``):
for quantile q over N events, rank = floor(N*q + 0.5) (at least 1); the percentile is the value
of the first bucket (ascending) at which the running count reaches the rank. No interpolation:
the result is a printed bucket value, within half a bucket (~0.9 %) of the true latency, and the
p95 computed this way equals sysbench's printed "95th percentile" (tests check it on real output).
``max_ms`` comes from the exact ``max:`` line; percentiles are clamped to it (a bucket centre can
lie above the largest sample in that bucket).

Workload
--------
See :class:`SysbenchWorkload`.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import quote

from targets.apps.base import Endpoint
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import BadInputError, HostOperationError, WorkloadError

# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SysbenchResult:
    threads: int | None
    #: --rate target (transactions/s), None for closed-loop runs
    rate: int | None
    transactions: int
    tps: float
    queries: int
    qps: float
    reads: int | None
    writes: int | None
    other: int | None
    #: "ignored errors" (deadlocks etc. sysbench retried: --mysql-ignore-errors)
    errors: int
    errors_per_s: float
    reconnects: int
    reconnects_per_s: float
    total_time_s: float | None
    events: int | None
    latency_min_ms: float
    latency_avg_ms: float
    latency_max_ms: float
    latency_sum_ms: float | None
    #: the percentile sysbench printed (``--percentile``, default 95) and its value
    percentile: int | None
    latency_pct_ms: float | None
    #: (bucket value ms, count), ascending; empty without --histogram
    histogram: tuple[tuple[float, int], ...] = ()
    fatal: tuple[str, ...] = ()

    @property
    def histogram_events(self) -> int:
        return sum(c for _, c in self.histogram)


_HIST_LINE = re.compile(r"^\s*(?P<v>[0-9]+(?:\.[0-9]+)?) \|\**\s+(?P<c>\d+)\s*$")
_COUNT_RATE = r"(?P<n>\d+)\s+\((?P<r>[0-9.]+) per sec\.\)"
_PATTERNS = {
    "threads": re.compile(r"^Number of threads: (?P<v>\d+)$"),
    "rate": re.compile(r"^Target transaction rate: (?P<v>\d+)/sec$"),
    "reads": re.compile(r"^read:\s+(?P<v>\d+)$"),
    "writes": re.compile(r"^write:\s+(?P<v>\d+)$"),
    "other": re.compile(r"^other:\s+(?P<v>\d+)$"),
    "transactions": re.compile(r"^transactions:\s+" + _COUNT_RATE + "$"),
    "queries": re.compile(r"^queries:\s+" + _COUNT_RATE + "$"),
    "errors": re.compile(r"^ignored errors:\s+" + _COUNT_RATE + "$"),
    "reconnects": re.compile(r"^reconnects:\s+" + _COUNT_RATE + "$"),
    "total_time": re.compile(r"^total time:\s+(?P<v>[0-9.]+)s$"),
    "events": re.compile(r"^total number of events:\s+(?P<v>\d+)$"),
    "min": re.compile(r"^min:\s+(?P<v>[0-9.]+)$"),
    "avg": re.compile(r"^avg:\s+(?P<v>[0-9.]+)$"),
    "max": re.compile(r"^max:\s+(?P<v>[0-9.]+)$"),
    "sum": re.compile(r"^sum:\s+(?P<v>[0-9.]+)$"),
    "pct": re.compile(r"^(?P<p>\d+)th percentile:\s+(?P<v>[0-9.]+)$"),
}


def parse_sysbench(output: str) -> SysbenchResult:
    """Parse one ``sysbench ... run`` output. Pure function; raises WorkloadError when the
    report is missing or incomplete, naming what is missing (or the first FATAL line)."""
    if not isinstance(output, str):
        raise WorkloadError(f"sysbench output must be text, got {type(output).__name__}")
    found: dict[str, re.Match[str]] = {}
    histogram: list[tuple[float, int]] = []
    fatal: list[str] = []
    in_hist = False
    section = ""
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("FATAL:"):
            fatal.append(line)
            continue
        if line.startswith("Latency histogram"):
            in_hist = True
            continue
        if in_hist:
            m = _HIST_LINE.match(raw)
            if m:
                histogram.append((float(m["v"]), int(m["c"])))
                continue
            if line.startswith("value") or not line:
                continue
            in_hist = False
        if line.endswith(":") and not line.startswith(("min", "avg", "max", "sum")):
            section = line
        for key, pattern in _PATTERNS.items():
            if key in found:
                continue
            # the "Threads fairness" block has 'events (avg/stddev)', never matched here; latency
            # keys only inside 'Latency (ms):'
            if key in ("min", "avg", "max", "sum", "pct") and section != "Latency (ms):":
                continue
            m = pattern.match(line)
            if m:
                found[key] = m
                break
    if "transactions" not in found:
        if fatal:
            raise WorkloadError(f"sysbench printed no report: {_short_fatal(fatal)}")
        if not output.strip():
            raise WorkloadError("sysbench printed nothing (expected its report with 'transactions:')")
        raise WorkloadError("sysbench output has no 'transactions: N (X per sec.)' line (no report)")
    for key, what in (("queries", "'queries:'"), ("errors", "'ignored errors:'"),
                      ("reconnects", "'reconnects:'"), ("min", "'Latency (ms)' min:"),
                      ("avg", "'Latency (ms)' avg:"), ("max", "'Latency (ms)' max:")):
        if key not in found:
            raise WorkloadError(f"sysbench report lacks the {what} line")

    def num(key: str, group: str = "v") -> float:
        return float(found[key][group])

    def opt_int(key: str) -> int | None:
        return int(found[key]["v"]) if key in found else None

    histogram.sort()
    result = SysbenchResult(
        threads=opt_int("threads"),
        rate=opt_int("rate"),
        transactions=int(found["transactions"]["n"]),
        tps=num("transactions", "r"),
        queries=int(found["queries"]["n"]),
        qps=num("queries", "r"),
        reads=opt_int("reads"),
        writes=opt_int("writes"),
        other=opt_int("other"),
        errors=int(found["errors"]["n"]),
        errors_per_s=num("errors", "r"),
        reconnects=int(found["reconnects"]["n"]),
        reconnects_per_s=num("reconnects", "r"),
        total_time_s=num("total_time") if "total_time" in found else None,
        events=opt_int("events"),
        latency_min_ms=num("min"),
        latency_avg_ms=num("avg"),
        latency_max_ms=num("max"),
        latency_sum_ms=num("sum") if "sum" in found else None,
        percentile=int(found["pct"]["p"]) if "pct" in found else None,
        latency_pct_ms=num("pct") if "pct" in found else None,
        histogram=tuple(histogram),
        fatal=tuple(fatal),
    )
    if histogram and result.events is not None and result.histogram_events != result.events:
        raise WorkloadError(
            f"sysbench histogram holds {result.histogram_events} events but the report says "
            f"{result.events} (truncated output?)"
        )
    return result


def _short_fatal(fatal: Sequence[str]) -> str:
    # prefer the line with the MySQL error number: it says what went wrong
    for line in fatal:
        if re.search(r"error \d+|errno = \d+|MySQL error", line):
            return line[:240]
    return fatal[0][:240]


def percentiles_from_histogram(
    buckets: Sequence[tuple[float, int]], quantiles: Sequence[float]
) -> dict[float, float]:
    """Quantiles (0 < q <= 1) of a bucketed latency distribution, by sysbench's rule.

    ``buckets``: (bucket value, count) pairs, any order, zero counts allowed. For each q:
    rank = max(1, floor(N*q + 0.5)); result = value of the first bucket in ascending order whose
    running count reaches rank. Returns {q: value}. Raises ValueError for an empty histogram,
    negative counts or q outside (0, 1].
    """
    ordered = sorted((float(v), int(c)) for v, c in buckets)
    if any(c < 0 for _, c in ordered):
        raise ValueError("histogram counts must be >= 0")
    total = sum(c for _, c in ordered)
    if total == 0:
        raise ValueError("histogram is empty")
    out: dict[float, float] = {}
    for q in quantiles:
        if not 0.0 < q <= 1.0:
            raise ValueError(f"quantile {q} outside (0, 1]")
        rank = max(1, math.floor(total * q + 0.5))
        running = 0
        for value, count in ordered:
            running += count
            if running >= rank:
                out[q] = value
                break
    return out


# ---------------------------------------------------------------------------------------------
# the user and password in sysbench's config file, and keeping the password out of messages
# ---------------------------------------------------------------------------------------------

#: sysbench 1.0 reads its --config-file with fgets() into a 256-byte buffer (sb_options.c
#: read_config): a longer line is cut there, the cut value taken as it stands (or, quoted,
#: refused as "unexpected EOL") and the rest read as a line of its own
_CONFIG_LINE_MAX = 255


def config_value_problem(option: str, value: str) -> str | None:
    """Why ``option=value`` cannot be a line of sysbench 1.0's --config-file that reads back as
    exactly ``value`` (as a phrase: "... a password {problem}"), or None when it can.

    sysbench's reader (sb_options.c read_config) ends an unquoted value at whitespace or ',' (it
    splits lists there: ``a,b`` connects with ``a``) and reads a value starting with '#' as a
    comment (no password), so :func:`config_line` always quotes; a quoted value is taken verbatim
    up to the next quote of the same kind, with no escape, and the file is read line by line into
    a C string."""
    if "\n" in value or "\0" in value:
        return "containing a line break or NUL character (sysbench reads its config file line by line into C strings)"
    if "'" in value and '"' in value:
        return ("containing both ' and \" (sysbench's config file quotes a value in one of them, "
                "with no escape for the other)")
    longest = _CONFIG_LINE_MAX - len(f"{option}=''")
    size = len(value.encode())
    if size > longest:
        return (f"of {size} bytes (sysbench reads config-file lines of at most {_CONFIG_LINE_MAX} bytes, "
                f"which leaves {longest} for the value of {option})")
    return None


def credentials_problem(user: str, password: str | None) -> tuple[str, str] | None:
    """(what, problem) for the first of the user name and password that sysbench's config file
    cannot carry (config_value_problem), or None: checked where a DSN is given and again where
    the config file is written."""
    for option, value, what in (("mysql-user", user, "user name"), ("mysql-password", password, "password")):
        problem = config_value_problem(option, value) if value else None
        if problem:
            return what, problem
    return None


def config_line(option: str, value: str) -> str:
    """The --config-file line that gives sysbench ``value`` for ``option`` exactly (quoted: see
    :func:`config_value_problem`, which must have found no problem)."""
    quote_char = "'" if "'" not in value else '"'
    return f"{option}={quote_char}{value}{quote_char}"


def _password_forms(password: str) -> list[tuple[str, str, str]]:
    """(text before, the password as written there, text after) for every place ostune itself
    writes a password: the MYSQL_PWD variable the mysql client reads (as given, and as
    shlex.join() puts it on an SSH command line: the whole token quoted, or the value alone), the
    sysbench config line (as written by config_line, or unquoted), and the DSN's ``user:pass@``
    (as given or percent-encoded)."""
    quoted_token = shlex.quote(f"MYSQL_PWD={password}")
    forms = [("MYSQL_PWD=", password, ""), ("MYSQL_PWD=", shlex.quote(password), ""),
             ("mysql-password=", password, "")]
    if quoted_token.startswith("'"):
        forms.append(("'MYSQL_PWD=", password.replace("'", "'\"'\"'"), "'"))
    if not config_value_problem("mysql-password", password):
        line = config_line("mysql-password", password)
        forms.append((line[: len("mysql-password=") + 1], password, line[-1]))
    for written in (password, quote(password, safe=""), quote(password)):
        forms.append((":", written, "@"))
    return forms


def mask_password(text: str, password: str | None) -> str:
    """``text`` with ``password`` replaced by ``***`` where a password really stands: in the
    forms ostune itself writes it (:func:`_password_forms`: a command line, a config line, a
    DSN). Anywhere else the same letters are ordinary words ("wrong user or password" with
    password "wrong", "error 1142" with password "ro") or the user name, and stay.

    A message cut short (an SSH timeout shows the first 160 characters of its command line) can
    end inside MYSQL_PWD=...: that tail, from the first character of the password, is masked too.
    """
    if not password or not text:
        return text
    out = text
    forms = sorted(set(_password_forms(password)), key=lambda f: len(f[0] + f[1] + f[2]), reverse=True)
    for before, written, after in forms:
        out = out.replace(before + written + after, before + "***" + after)
    for before, written, after in forms:
        if "MYSQL_PWD=" not in before:
            continue  # only command lines are cut; elsewhere a tail like ":3306" is no password
        shown = before + written + after
        for cut in range(len(shown) - 1, len(before), -1):
            if out.endswith(shown[:cut]):
                out = out[: len(out) - cut] + before + "***" + after
                break
    return out


# ---------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------

TESTS = ("oltp_read_write", "oltp_read_only", "oltp_point_select", "oltp_write_only", "oltp_update_index")
_WRITE_TESTS = {"oltp_read_write", "oltp_write_only", "oltp_update_index"}
_QUANTILES = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99, "p999_ms": 0.999}


class SysbenchWorkload(Workload):
    """sysbench OLTP; one ``sysbench <test> run`` of ``time_s`` seconds per repetition.

    Settings (``--set key=value``): ``test`` (oltp_read_write | oltp_read_only |
    oltp_point_select | oltp_write_only | oltp_update_index), ``tables`` (2), ``table_size``
    (10000 rows: ~5 MB, fits any buffer pool, so the run measures CPU, scheduler, network stack
    and fsync rather than disk reads), ``threads`` (alias ``clients``; 1: latency below
    saturation on a small machine), ``time_s`` (5), ``warmup_s`` (2), ``rate`` (None),
    ``events`` (alias ``requests``: stop after N transactions, time_s still caps), ``binary``,
    ``client_binary`` (mariadb / mysql, used to check the dataset), ``use_socket`` (False: TCP
    over loopback, so the kernel's network path is part of what is tuned), ``ps_mode``,
    ``ignore_errors`` (sysbench default 1213,1020,1205), ``reprepare_writes_factor`` (10),
    ``timeout_s``.

    Metrics per repetition: ``p50_ms p95_ms p99_ms p999_ms`` from the histogram (rule in the
    module docstring), ``max_ms`` (exact), ``min_ms``, ``avg_ms``, ``tps``, ``qps``,
    ``ops_per_s`` (= tps: sysbench's latency is per transaction, so throughput is counted in the
    same unit; qps is reported separately), ``errors`` (ignored errors, e.g. deadlocks, in the
    repetition), ``errors_per_s``, ``reconnects``, ``events``; with ``rate`` also
    ``rate_achieved`` (tps / rate: below ~0.98 the server did not keep up and latency includes
    queueing growth).

    Open loop (``rate``): sysbench then generates transactions at that average rate (Poisson
    arrivals) and measures each one from its scheduled arrival, so queueing delay behind a slow
    transaction is counted (no coordinated omission), unlike the closed loop where a stalled
    thread simply issues fewer requests. Use it when the question is "what latency do clients
    see at load X" (a production-like offered load, compare configurations at equal load); pick
    a rate well below the closed-loop throughput (e.g. 50-70 %), or latency is dominated by
    queueing. Caveat of sysbench 1.0: an idle worker polls the queue every
    0.5*threads/rate seconds, which adds up to that to a transaction's measured latency at low
    rates, so keep threads/rate small (e.g. rate >= 500*threads for sub-millisecond
    transactions) and compare open-loop results only with open-loop results at the same rate.
    Closed loop (default) suits throughput-style and "service time" comparisons.

    Dataset (prepare / re-prepare rule): ``prepare()`` runs after every application start. It
    reuses the sbtest tables when each of the ``tables`` tables exists with exactly
    ``table_size`` rows (checked with the SQL client when one is installed), otherwise it runs
    ``sysbench cleanup`` + ``prepare``. Write tests age the data (undo/purge backlog, page
    splits, secondary index churn), so results drift: once the write queries run since the
    last prepare exceed ``reprepare_writes_factor`` x tables x table_size, the dataset is
    rebuilt at the next trial boundary (the first repetition with new parameters), never
    between repetitions of one trial. ``reprepare_writes_factor=None`` disables this.
    """

    name = "sysbench"

    def __init__(
        self,
        *,
        test: str = "oltp_read_write",
        tables: int = 2,
        table_size: int = 10000,
        threads: int | None = None,
        clients: int | None = None,
        time_s: int = 5,
        warmup_s: int = 2,
        rate: int | None = None,
        events: int | None = None,
        requests: int | None = None,
        binary: str = "sysbench",
        client_binary: str | None = None,
        use_socket: bool = False,
        ps_mode: str | None = None,
        ignore_errors: str | None = None,
        reprepare_writes_factor: float | None = 10.0,
        timeout_s: float | None = None,
    ) -> None:
        if test not in TESTS:
            raise BadInputError(f"sysbench test {test!r} is not one of: {', '.join(TESTS)}")
        if threads is not None and clients is not None and threads != clients:
            raise BadInputError(f"sysbench threads={threads} and clients={clients} disagree; give one")
        threads = threads if threads is not None else (clients if clients is not None else 1)
        if events is not None and requests is not None and events != requests:
            raise BadInputError(f"sysbench events={events} and requests={requests} disagree; give one")
        events = events if events is not None else requests
        for label, value, minimum in (("tables", tables, 1), ("table_size", table_size, 1),
                                      ("threads", threads, 1), ("time_s", time_s, 1),
                                      ("warmup_s", warmup_s, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise BadInputError(f"sysbench {label}={value!r} is invalid; give an integer >= {minimum}")
        for label, value in (("rate", rate), ("events", events)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise BadInputError(f"sysbench {label}={value!r} is invalid; give an integer >= 1 or leave it unset")
        if ps_mode not in (None, "auto", "disable"):
            raise BadInputError(f"sysbench ps_mode={ps_mode!r} is invalid; give auto or disable")
        if reprepare_writes_factor is not None and not (
            isinstance(reprepare_writes_factor, (int, float)) and reprepare_writes_factor > 0
        ):
            raise BadInputError(
                f"sysbench reprepare_writes_factor={reprepare_writes_factor!r} is invalid; give a number > 0 or null"
            )
        self.test = test
        self.tables = tables
        self.table_size = table_size
        self.threads = threads
        self.time_s = time_s
        self.warmup_s = warmup_s
        self.rate = rate
        self.events = events
        self.binary = binary
        self.client_binary = client_binary
        self.use_socket = use_socket
        self.ps_mode = ps_mode
        self.ignore_errors = ignore_errors
        self.reprepare_writes_factor = reprepare_writes_factor
        self.timeout_s = timeout_s
        self._writes_since_prepare = 0
        self._last_params: dict[str, object] | None = None
        self.prepare_count = 0

    # -- argv ------------------------------------------------------------------------------
    def connection_args(self, endpoint: Endpoint) -> list[str]:
        extra = endpoint.extra or {}
        args = ["--db-driver=mysql"]
        if self.use_socket and endpoint.socket_path:
            args.append(f"--mysql-socket={endpoint.socket_path}")
        else:
            args += [f"--mysql-host={endpoint.address or '127.0.0.1'}", f"--mysql-port={endpoint.port}"]
        args.append(f"--mysql-db={extra.get('database', 'sbtest')}")
        return args

    def build_argv(self, endpoint: Endpoint, command: str, *, config_file: str | None = None,
                   time_s: int | None = None, binary: str | None = None) -> list[str]:
        """argv without secrets: user and password travel in ``config_file``."""
        argv = [binary or self.binary, self.test]
        if config_file:
            argv.append(f"--config-file={config_file}")
        argv += self.connection_args(endpoint)
        argv += [f"--tables={self.tables}", f"--table-size={self.table_size}"]
        if command == "run":
            argv += [f"--threads={self.threads}", f"--time={time_s if time_s is not None else self.time_s}",
                     "--histogram=on", "--percentile=95", "--report-interval=0"]
            if self.events:
                argv.append(f"--events={self.events}")
            if self.rate:
                argv.append(f"--rate={self.rate}")
            if self.ps_mode:
                argv.append(f"--db-ps-mode={self.ps_mode}")
            if self.ignore_errors is not None:
                argv.append(f"--mysql-ignore-errors={self.ignore_errors}")
        argv.append(command)
        return argv

    def _timeout(self, seconds: float) -> float:
        return float(self.timeout_s) if self.timeout_s is not None else 2 * seconds + 30

    # -- running ---------------------------------------------------------------------------
    def _resolve(self, host: Host) -> str:
        if "/" in self.binary:
            if host.exists(self.binary):
                return self.binary
            raise WorkloadError(f"sysbench binary {self.binary} does not exist; install sysbench or fix the binary setting")
        path = host.which(self.binary)
        if not path:
            raise WorkloadError(
                f"{self.binary} not found on PATH of {host.key}; install sysbench "
                "(apt-get install sysbench) or set the workload's binary"
            )
        return path

    def config_text(self, endpoint: Endpoint) -> str:
        """The --config-file that carries user and password (never argv, which ``ps`` shows)."""
        extra = endpoint.extra or {}
        user = str(extra.get("user", "sbtest"))
        password = str(extra["password"]) if extra.get("password") else None
        refused = credentials_problem(user, password)
        if refused:
            # written anyway, sysbench would connect with another password and fail every run
            raise BadInputError(f"sysbench cannot take a {refused[0]} {refused[1]}")
        lines = [config_line("mysql-user", user)]
        if password:
            lines.append(config_line("mysql-password", password))
        return "\n".join(lines) + "\n"

    def _sysbench(self, host: Host, endpoint: Endpoint, command: str, *, time_s: int | None = None):  # type: ignore[no-untyped-def]
        binary = self._resolve(host)
        config = self.config_text(endpoint)
        workdir = host.make_workdir("sysbench")
        try:
            cfg = f"{workdir}/sysbench.cfg"
            host.put_file(cfg, config)
            argv = self.build_argv(endpoint, command, config_file=cfg, time_s=time_s, binary=binary)
            seconds = (time_s if time_s is not None else self.time_s) if command == "run" else 60
            try:
                return host.run(argv, timeout_s=self._timeout(seconds), check=False)
            except HostOperationError as exc:
                raise WorkloadError(f"sysbench {self.test} {command} did not finish: {_redact(str(exc), endpoint)}") from None
        finally:
            host.remove_tree(workdir)

    def _check_exit(self, result, command: str, endpoint: Endpoint) -> None:  # type: ignore[no-untyped-def]
        if result.ok:
            return
        text = result.stdout + "\n" + result.stderr
        if result.exit_code in (139, -11):
            raise WorkloadError(
                f"sysbench {command} crashed (SIGSEGV); sysbench 1.0.20 with MariaDB's client library "
                "segfaults when it reconnects after a dropped connection (akopytov/sysbench#527): "
                "did the server restart or kill connections?"
            )
        fatal = [line.strip() for line in text.splitlines() if line.strip().startswith("FATAL:")]
        detail = _short_fatal(fatal) if fatal else ((text.strip().splitlines() or [""])[-1][:200])
        raise WorkloadError(f"sysbench {self.test} {command} exited {result.exit_code}: {_redact(detail, endpoint)}")

    def run_once(self, host: Host, endpoint: Endpoint, *, time_s: int | None = None) -> tuple[SysbenchResult, float | None]:
        result = self._sysbench(host, endpoint, "run", time_s=time_s)
        self._check_exit(result, "run", endpoint)
        parsed = parse_sysbench(result.stdout)
        if not parsed.histogram:
            raise WorkloadError("sysbench printed no latency histogram (ran without --histogram?)")
        self._writes_since_prepare += parsed.writes or 0
        return parsed, result.cpu_s

    def metrics(self, parsed: SysbenchResult) -> dict[str, float]:
        """One repetition's metrics from a parsed report (rules in the class docstring)."""
        if not parsed.histogram:
            raise WorkloadError("sysbench report has no histogram; percentiles need --histogram")
        values = percentiles_from_histogram(parsed.histogram, list(_QUANTILES.values()))
        out: dict[str, float] = {}
        floor = 0.0
        for name, q in _QUANTILES.items():
            value = min(values[q], parsed.latency_max_ms)
            floor = max(floor, value)  # already monotone; keep it so after clamping
            out[name] = floor
        out.update(
            max_ms=parsed.latency_max_ms,
            min_ms=parsed.latency_min_ms,
            avg_ms=parsed.latency_avg_ms,
            tps=parsed.tps,
            qps=parsed.qps,
            ops_per_s=parsed.tps,
            errors=float(parsed.errors),
            errors_per_s=parsed.errors_per_s,
            reconnects=float(parsed.reconnects),
            events=float(parsed.events if parsed.events is not None else parsed.transactions),
        )
        if parsed.rate:
            out["rate_achieved"] = parsed.tps / parsed.rate
        return out

    # -- dataset ---------------------------------------------------------------------------
    def _client(self, host: Host) -> str | None:
        names = [self.client_binary] if self.client_binary else ["mariadb", "mysql"]
        for name in names:
            path = name if "/" in name and host.exists(name) else host.which(name)
            if path:
                return path
        return None

    def dataset_ok(self, host: Host, endpoint: Endpoint) -> bool | None:
        """True if every sbtest table holds table_size rows; None if no SQL client to check."""
        client = self._client(host)
        if client is None:
            return None
        extra = endpoint.extra or {}
        db = extra.get("database", "sbtest")
        selects = " UNION ALL ".join(f"SELECT COUNT(*) FROM `{db}`.sbtest{i}" for i in range(1, self.tables + 1))
        args = [client, "--batch", "--skip-column-names", "--connect-timeout=5",
                f"--user={extra.get('user', 'sbtest')}"]
        if self.use_socket and endpoint.socket_path:
            args += [f"--socket={endpoint.socket_path}"]
        else:
            args += ["--protocol=tcp", f"--host={endpoint.address or '127.0.0.1'}", f"--port={endpoint.port}"]
        env = {"MYSQL_PWD": extra["password"]} if extra.get("password") else None
        try:
            r = host.run([*args, "-e", selects], timeout_s=30, check=False, env=env)
        except HostOperationError:
            return False
        if not r.ok:
            return False
        counts = r.stdout.split()
        return len(counts) == self.tables and all(c == str(self.table_size) for c in counts)

    def rebuild(self, host: Host, endpoint: Endpoint) -> None:
        """sysbench cleanup + prepare (drops and recreates the sbtest tables)."""
        cleanup = self._sysbench(host, endpoint, "cleanup")
        self._check_exit(cleanup, "cleanup", endpoint)
        prepared = self._sysbench(host, endpoint, "prepare")
        self._check_exit(prepared, "prepare", endpoint)
        self._writes_since_prepare = 0
        self.prepare_count += 1

    def prepare(self, host: Host, endpoint: Endpoint) -> None:
        self._resolve(host)
        if self.dataset_ok(host, endpoint):
            return
        self.rebuild(host, endpoint)

    def needs_reprepare(self) -> bool:
        if self.test not in _WRITE_TESTS or self.reprepare_writes_factor is None:
            return False
        return self._writes_since_prepare > self.reprepare_writes_factor * self.tables * self.table_size

    def warmup(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> None:
        """Trial boundary: rebuild the dataset if the drift rule says so, then run warmup_s."""
        if self.needs_reprepare():
            self.rebuild(host, endpoint)
        if self.warmup_s > 0:
            self.run_once(host, endpoint, time_s=self.warmup_s)

    def measure(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> dict[str, float]:
        current = dict(params)
        if self._last_params is not None and current != self._last_params and self.needs_reprepare():
            self.rebuild(host, endpoint)  # new trial (new parameters) and warm-up was skipped
        self._last_params = current
        parsed, cpu_s = self.run_once(host, endpoint)
        out = self.metrics(parsed)
        if cpu_s is not None:
            out["_client_cpu_s"] = cpu_s
        return out

    def describe(self) -> dict[str, object]:
        return {
            "workload": self.name,
            "test": self.test,
            "tables": self.tables,
            "table_size": self.table_size,
            "threads": self.threads,
            "time_s": self.time_s,
            "rate": self.rate,
            "events": self.events,
            "transport": "socket" if self.use_socket else "tcp",
        }


def _redact(text: str, endpoint: Endpoint) -> str:
    return mask_password(text, (endpoint.extra or {}).get("password"))
