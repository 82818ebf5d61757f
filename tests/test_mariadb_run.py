"""`ostune run --app mariadb|mysql` end to end: a real mariadbd, real sysbench, real kernel writes
on the shipped mysql-latency space (including the block queue of the disk under the datadir).

Trials are kept short (1 table x 1000 rows, 1 s warm-up, 2 repetitions of 2 s): a trial takes
about 5-7 s here, most of it the 5 s of sysbench."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from spaces.loader import load_space
from spaces.placeholders import expand
from targets.apps.mariadb import MariaDBApp, datadir_block_device
from targets.hosts.local import LocalHost
from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, dump_db, ostune, query, snapshot

HAVE_MARIADB = bool(shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")) and bool(
    shutil.which("mariadb-install-db"))
HAVE_SYSBENCH = bool(shutil.which("sysbench"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes real kernel knobs: needs root"),
    pytest.mark.skipif(not HAVE_MARIADB, reason="mariadb-server not installed (./setup.sh test installs it)"),
]
needs_sysbench = pytest.mark.skipif(not HAVE_SYSBENCH, reason="sysbench not installed")

SHORT = ("--repetitions", "2", "--set", "time_s=2", "--set", "warmup_s=1", "--set", "tables=1",
         "--set", "table_size=1000")
PER_REPETITION = ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "tps", "qps", "errors", "reconnects")


def run_ostune(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """ostune, waiting while another process holds this host's run lock (exit 6)."""
    deadline = time.monotonic() + 900
    while True:
        result = ostune(*args, cwd=cwd, env=env)
        if result.returncode != 6 or "already being tuned" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(5)


def host_space():
    """The shipped space with {datadir_device} resolved the way a managed server's datadir (under
    the temp dir) resolves it, for snapshots of every knob the run may touch."""
    space = load_space("mysql-latency")
    device = datadir_block_device(LocalHost(), tempfile.gettempdir())
    return space, expand(space, {"datadir_device": device} if device else {}).space, device


def mariadbd_with(marker: str) -> list[int]:
    """Pids of mariadbd processes whose command line mentions marker (e.g. their work dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(cmdline.split(" ")[0]) in ("mariadbd", "mysqld") and marker in cmdline:
            pids.append(int(entry.name))
    return pids


def workdir_from(output: str) -> str:
    match = re.search(r"\(datadir (/\S+)/data\)", output)
    assert match, output
    return match.group(1)


def all_text(db: Path) -> str:
    """Every text value of every table, and the raw bytes of the database files."""
    conn = sqlite3.connect(db)
    try:
        chunks = []
        for (table,) in conn.execute("select name from sqlite_master where type='table'"):
            for row in conn.execute(f"select * from {table}"):
                chunks += [str(v) for v in row if isinstance(v, (str, bytes))]
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


def _failed_only_on_the_disk(db) -> bool:
    """Whether every trial that did not succeed failed on a configuration the disk refuses (the
    scheduler `none` caps nr_requests at the disk's tag depth; a scheduler the kernel lacks), as
    random proposals of mysql-latency can: not on the server or the workload."""
    failed = query(db, "select status, error from trials where status != 'succeeded'")
    return all(status == "failed" and error.startswith("kernel refused") and "/sys/block/" in error
               for status, error in failed)


# -- managed mariadbd ---------------------------------------------------------------------------


@needs_sysbench
def test_five_trials_on_mysql_latency_store_latency_and_restore_everything(tmp_path):
    space, expanded, device = host_space()
    before = snapshot(expanded)
    db = tmp_path / "mysql.db"
    started = time.monotonic()
    result = run_ostune("run", "--app", "mariadb", "--space", "mysql-latency", "--trials", "5", "--seed", "7",
                        "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # every kernel value the space touched is back, the disk's queue knobs included
    assert snapshot(expanded) == before
    workdir = workdir_from(result.stdout)
    assert not os.path.exists(workdir), "the private datadir is removed"
    assert mariadbd_with(workdir) == [], "mariadbd is stopped"

    rows = query(db, "select trial, status, source, p95_ms, p99_ms, p999_ms, ops_per_s, errors, duration_s "
                     "from trial_results order by trial")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][2] == "baseline"
    succeeded = [r for r in rows if r[1] == "succeeded"]
    assert len(succeeded) >= 4, rows  # a scheduler this kernel lacks may fail one trial, nothing else
    for _trial, _status, _source, p95, p99, p999, tps, errors, _d in succeeded:
        assert 0 < p95 <= p99 <= p999 and tps > 0 and errors >= 0
    # per repetition: two of each trial, each with its own percentiles, throughput and errors
    reps = query(db, "select trial, repetition, metric, value from trial_repetitions")
    for trial, *_ in succeeded:
        mine = [(r, m, v) for t, r, m, v in reps if t == trial]
        assert len({r for r, _, _ in mine}) == 2
        for metric in PER_REPETITION:
            assert len([v for _, m, v in mine if m == metric]) == 2, (trial, metric)
        for rep in {r for r, _, _ in mine}:
            values = {m: v for r, m, v in mine if r == rep}
            assert 0 < values["p50_ms"] <= values["p95_ms"] <= values["p99_ms"] <= values["p999_ms"] <= values["max_ms"]
            assert values["tps"] > 0 and values["errors"] >= 0
    # the space is stored with its placeholder (hash of the shipped text: resumable elsewhere);
    # the journal holds the concrete files that were written and restored
    stored_hash, space_json = query(db, "select space_hash, space_json from experiments")[0]
    assert stored_hash == space.hash() and "{datadir_device}" in space_json
    journal = dict(query(db, "select name, path from restore_journal"))
    if device:
        assert journal["block.scheduler"] == f"/sys/block/{device}/queue/scheduler"
        assert journal["block.nr_requests"] == f"/sys/block/{device}/queue/nr_requests"
        assert f"{{datadir_device}} = {device}" in result.stdout
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]
    # what is deployed names the disk the runs tuned, never the placeholder
    for trial in range(1, 6):
        for fmt in ("sysctl.d", "tuned"):
            out = tmp_path / f"export-{trial}-{fmt}"
            exported = ostune("export", "mariadb-mysql-latency", "--db", f"sqlite:///{db}", "--format", fmt,
                              "--trial", str(trial), "--output", str(out))
            if trial not in [r[0] for r in succeeded]:
                continue
            assert exported.returncode == 0, exported.stderr
            text = (out / "tuned.conf" if fmt == "tuned" else out).read_text()
            assert "{datadir_device}" not in text, text
            if device:
                assert f"/sys/block/{device}/queue/" in text, text
    # the optimizer really moved knobs away from the baseline
    baseline = dict(query(db, "select param, value from trial_params where trial=1"))
    later = query(db, "select param, value from trial_params where trial>1")
    assert any(baseline[name] != value for name, value in later)
    durations = [r[8] for r in rows]
    print(f"\nmysql-latency, 5 trials: {elapsed:.1f} s total; per trial {', '.join(f'{d:.1f}' for d in durations)} s")


@needs_sysbench
def test_keep_flag_leaves_the_datadir_but_stops_the_server(tmp_path):
    db = tmp_path / "keep.db"
    result = run_ostune("run", "--app", "mariadb", "--space", "mysql-latency", "--trials", "1", "--no-warmup",
                        "--app-set", "keep=true", "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    workdir = workdir_from(result.stdout)
    try:
        assert os.path.isdir(f"{workdir}/data/mysql") and os.path.exists(f"{workdir}/my.cnf")
        assert mariadbd_with(workdir) == []
        assert not os.path.exists(f"{workdir}/init.sql")  # no passwords left on disk
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@needs_sysbench
def test_datadir_without_block_device_skips_queue_knobs_with_reason(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mnt)], check=True)
    try:
        db = tmp_path / "tmpfs.db"
        result = run_ostune(
            "run", "--app", "mariadb", "--space", "mysql-latency", "--trials", "1", "--no-warmup",
            "--app-set", f"datadir_parent={mnt}",
            "--app-set", "config={innodb_log_file_size: 48M, innodb_buffer_pool_size: 128M}",
            "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        for name in ("block.scheduler", "block.read_ahead_kb", "block.nr_requests"):
            assert re.search(rf"skipping {re.escape(name)}: datadir {mnt}/ostune-mariadb-\w+/data is on a tmpfs "
                             r"filesystem without a block device", result.stdout), result.stdout
        skipped = query(db, "select skipped_json from runs")[0][0]
        assert "block.scheduler" in skipped and "without a block device" in skipped
        assert query(db, "select status from trials") == [("succeeded",)]
        assert os.listdir(mnt) == []
        # --strict refuses instead of skipping
        strict = run_ostune("run", "--app", "mariadb", "--space", "mysql-latency", "--trials", "1", "--strict",
                            "--experiment", "strict", "--app-set", f"datadir_parent={mnt}",
                            "--app-set", "config={innodb_log_file_size: 48M, innodb_buffer_pool_size: 128M}",
                            "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
        assert strict.returncode == 4 and "without a block device" in strict.stderr, strict.stderr
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- external server (--dsn) --------------------------------------------------------------------


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    """A mariadbd started by the test itself: 'somebody else's' server for the DSN runs."""
    host = LocalHost()
    app = MariaDBApp()
    endpoint = app.start(host)
    yield app, endpoint
    app.stop()


def _variables(endpoint, sql: str = "SHOW GLOBAL VARIABLES") -> str:  # type: ignore[no-untyped-def]
    r = subprocess.run(
        ["mariadb", "--protocol=tcp", "-h127.0.0.1", f"-P{endpoint.port}", f"-u{endpoint.extra['user']}",
         "--batch", "--skip-column-names", "-e", sql],
        capture_output=True, text=True, env={**os.environ, "MYSQL_PWD": endpoint.extra["password"]}, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _queries_served(endpoint) -> int:  # type: ignore[no-untyped-def]
    return int(_variables(endpoint, "SHOW GLOBAL STATUS LIKE 'Queries'").split()[-1])


@needs_sysbench
def test_external_dsn_leaves_the_server_running_unchanged_and_never_stores_the_password(tmp_path, server):
    app, endpoint = server
    password = endpoint.extra["password"]
    assert len(password) >= 20
    pid = app.pids()
    variables = _variables(endpoint)
    _, expanded, _ = host_space()
    before = snapshot(expanded)
    dsn = f"mysql://sbtest:{password}@127.0.0.1:{endpoint.port}/sbtest"
    db = tmp_path / "ext.db"
    first = run_ostune("run", "--app", "mysql", "--dsn", dsn, "--space", "mysql-latency", "--trials", "2",
                       "--experiment", "ext", "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "never starts, stops, restarts or reconfigures it" in first.stdout
    # the --app-set path (and a resume of the same experiment) takes the DSN too
    second = run_ostune("run", "--app", "mysql", "--app-set", f"dsn={dsn}", "--space", "mysql-latency",
                        "--trials", "1", "--experiment", "ext", "--db", f"sqlite:///{db}", *SHORT, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # continued without its server's DSN it would start a server of its own and store those
    # trials with these: refused, nothing stored
    alone = run_ostune("run", "--app", "mysql", "--trials", "1", "--experiment", "ext", "--db", f"sqlite:///{db}",
                       *SHORT, cwd=tmp_path)
    _assert_one_line_error(alone, 2, f"tuned the external server mysql://sbtest@127.0.0.1:{endpoint.port}/sbtest; "
                                     "give its DSN")
    shown = query(db, "select name from experiments")
    listing = ostune("show", "ext", "--db", f"sqlite:///{db}")
    assert listing.returncode == 0 and shown == [("ext",)]

    # the server: same process, same variables, still answering
    assert app.pids() == pid and app.is_healthy()
    assert _variables(endpoint) == variables
    assert snapshot(expanded) == before
    # three measured trials against it
    rows = query(db, "select trial, status, p99_ms, ops_per_s from trial_results order by trial")
    assert [r[0] for r in rows] == [1, 2, 3] and all(r[2] > 0 and r[3] > 0 for r in rows if r[1] == "succeeded")
    assert rows[0][1] == "succeeded" and _failed_only_on_the_disk(db), rows
    # the DSN is stored without its password; the password is nowhere: not in any column, not
    # in the raw database bytes, not in any output
    target = query(db, "select target_json from experiments")[0][0]
    assert f'"dsn": "mysql://sbtest@127.0.0.1:{endpoint.port}/sbtest"' in target and '"managed": false' in target
    for text in (all_text(db), first.stdout, first.stderr, second.stdout, second.stderr, listing.stdout):
        assert password not in text
    # verify re-measures that same server: its DSN is asked for again (it is never stored), and
    # given (here through OSTUNE_DSN) the interleaved rounds run against it, not a server of its own
    url = f"sqlite:///{db}"
    refused = run_ostune("verify", "ext", "--db", url, "--rounds", "3", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert f"tuned the external server mysql://sbtest@127.0.0.1:{endpoint.port}/sbtest" in refused.stderr
    served = _queries_served(endpoint)
    verified = run_ostune("verify", "ext", "--db", url, "--rounds", "3", "--repetitions", "1",
                          cwd=tmp_path, env={"OSTUNE_DSN": dsn})
    assert verified.returncode == 0, verified.stderr
    assert _queries_served(endpoint) > served + 100 and app.pids() == pid, verified.stdout
    assert password not in verified.stdout + verified.stderr + all_text(db)
    # it asked the server where its datadir lives: the queue knobs of that disk were tuned
    device = datadir_block_device(LocalHost(), app.datadir or "")
    if device:
        assert dict(query(db, "select name, path from restore_journal"))["block.scheduler"] == \
            f"/sys/block/{device}/queue/scheduler"


@needs_sysbench
def test_an_experiment_on_ostunes_own_server_is_not_continued_on_another(tmp_path, server):
    """The server is part of the set-up: trials on two servers in one experiment would rank
    configurations by server. An OSTUNE_DSN exported for other experiments is left unused."""
    app, endpoint = server
    dsn = f"mysql://sbtest:{endpoint.extra['password']}@127.0.0.1:{endpoint.port}/sbtest"
    db = tmp_path / "own.db"
    common = ("run", "--app", "mariadb", "--space", "mysql-latency", "--no-profiles", "--experiment", "own",
              "--db", f"sqlite:///{db}", *SHORT)
    first = run_ostune(*common, "--trials", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = dump_db(db)
    served = _queries_served(endpoint)

    refused = run_ostune(*common, "--trials", "2", "--dsn", dsn, cwd=tmp_path)
    _assert_one_line_error(refused, 2, "--dsn: experiment 'own' did not tune an external MySQL server "
                                       r"\(it was tuned on a MariaDB server ostune starts itself\); leave --dsn out")
    assert dump_db(db) == before
    continued = run_ostune(*common, "--trials", "2", cwd=tmp_path, env={"OSTUNE_DSN": dsn})
    assert continued.returncode in (0, 7), continued.stderr
    assert "external server" not in continued.stdout and "(datadir /" in continued.stdout
    assert query(db, "select count(*) from trials") == [(3,)]
    assert _failed_only_on_the_disk(db)
    assert _queries_served(endpoint) - served < 20  # only this test's own status queries reached it


# -- bad input --------------------------------------------------------------------------------------


@pytest.fixture
def existing_db(tmp_path):
    """A database that already holds an experiment, to show bad input changes nothing in it."""
    space = tmp_path / "q.yaml"
    space.write_text(QUADRATIC_SPACE)
    db = tmp_path / "existing.db"
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command",
                    QUADRATIC_COMMAND, "--trials", "2", "--experiment", "kept", "--db", f"sqlite:///{db}",
                    "--repetitions", "1", "--no-warmup")
    assert result.returncode == 0, result.stderr
    return db


def _assert_one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert re.search(needle, lines[0]), lines[0]
    return lines[0]


def _mariadb_args(db: Path, *extra: str) -> tuple[str, ...]:
    return ("run", "--app", "mariadb", "--space", "mysql-latency", "--trials", "1", "--experiment", "new",
            "--db", f"sqlite:///{db}", *SHORT, *extra)


def test_unreachable_dsn(tmp_path, existing_db):
    before = dump_db(existing_db)
    secret = "Unreach-Secret-4711"
    result = run_ostune("run", "--app", "mysql", "--dsn", f"mysql://bench:{secret}@127.0.0.1:1/sbtest",
                        "--space", "mysql-latency", "--trials", "1", "--db", f"sqlite:///{existing_db}", cwd=tmp_path)
    _assert_one_line_error(result, 5, "cannot connect to MySQL at 127.0.0.1:1")
    assert secret not in result.stdout + result.stderr
    assert dump_db(existing_db) == before


def test_wrong_password(tmp_path, existing_db, server):
    app, endpoint = server
    before = dump_db(existing_db)
    secret = "Wrong-Secret-0815"
    result = run_ostune("run", "--app", "mysql", "--dsn", f"mysql://sbtest:{secret}@127.0.0.1:{endpoint.port}/sbtest",
                        "--space", "mysql-latency", "--trials", "1", "--db", f"sqlite:///{existing_db}", cwd=tmp_path)
    _assert_one_line_error(result, 5, "access denied for sbtest", "wrong user or password")
    assert secret not in result.stdout + result.stderr
    assert dump_db(existing_db) == before
    assert app.is_healthy()


def test_dsn_with_redis_or_twice_is_bad_input(tmp_path, existing_db):
    before = dump_db(existing_db)
    secret = "Twice-Secret-1"
    dsn = f"mysql://u:{secret}@127.0.0.1:1/db"
    for args, needle in (
        (("--dsn", dsn), "--dsn is for --app mysql"),
        (("--app", "mysql", "--dsn", dsn, "--app-set", f"dsn={dsn}"), "give the DSN once"),
        (("--app", "mysql", "--app-set", f"dsn={dsn}", "--app-set", "config={a: 1}"), "do not apply"),
        (("--app", "mysql", "--app-set", f"mysql://u:{secret}@h/db"), "not KEY=VALUE"),
    ):
        result = run_ostune("run", *args, "--trials", "1", "--db", f"sqlite:///{existing_db}", cwd=tmp_path)
        _assert_one_line_error(result, 2, needle)
        assert secret not in result.stdout + result.stderr
    assert dump_db(existing_db) == before
    # OSTUNE_DSN, exported for the MySQL experiments of a shell or a job, does not break the others
    other = run_ostune("run", "--app", "command", "--experiment", "kept", "--trials", "3", "--db",
                       f"sqlite:///{existing_db}", cwd=tmp_path, env={"OSTUNE_DSN": dsn})
    assert other.returncode in (0, 7), other.stderr
    assert query(existing_db, "select count(*) from trials") == [(2 + 3,)]


def test_sysbench_missing(tmp_path, existing_db):
    before = dump_db(existing_db)
    result = run_ostune(*_mariadb_args(existing_db, "--set", "binary=/nonexistent/sysbench"), cwd=tmp_path)
    _assert_one_line_error(result, 5, "sysbench binary /nonexistent/sysbench does not exist")
    assert dump_db(existing_db) == before
    # the server ostune started for it is gone again, with its datadir
    workdir = workdir_from(result.stdout)
    assert not os.path.exists(workdir) and mariadbd_with(workdir) == []


@pytest.mark.parametrize("opts, needle", [
    ("ro,size=1m", "cannot create the MariaDB data directory under .*Read-only file system"),
    ("size=1m", "mariadb-install-db failed .*no space left on device"),
])
def test_datadir_on_read_only_or_full_filesystem(tmp_path, existing_db, opts, needle):
    before = dump_db(existing_db)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True)
    try:
        result = run_ostune(*_mariadb_args(existing_db, "--app-set", f"datadir_parent={mnt}"), cwd=tmp_path)
        _assert_one_line_error(result, 5, needle)
        assert os.listdir(mnt) == []
        assert mariadbd_with(str(mnt)) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert dump_db(existing_db) == before
