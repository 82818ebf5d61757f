"""MariaDBApp / ExternalMySQL / SysbenchWorkload against a real mariadbd (each sysbench run <= 2 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from urllib.parse import quote

import pytest

from targets.apps.base import Endpoint
from targets.apps.mariadb import (
    ExternalMySQL,
    MariaDBApp,
    datadir_block_device,
    make_mysql_app,
    parse_dsn,
    size_config,
)
from targets.hosts.base import CommandResult
from targets.hosts.local import LocalHost
from targets.workloads.sysbench import SysbenchWorkload
from tuner.errors import AppError, BadInputError, WorkloadError

HAVE_MARIADB = bool(shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")) and bool(
    shutil.which("mariadb-install-db")
)
HAVE_SYSBENCH = bool(shutil.which("sysbench"))
IS_ROOT = os.geteuid() == 0

needs_mariadb = pytest.mark.skipif(not HAVE_MARIADB, reason="mariadb-server not installed")
needs_sysbench = pytest.mark.skipif(not HAVE_SYSBENCH, reason="sysbench not installed")


@pytest.fixture
def host() -> LocalHost:
    return LocalHost()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def server(host: LocalHost):  # type: ignore[no-untyped-def]
    """A managed server standing in for 'somebody else's' MySQL in the external-DSN tests."""
    app = MariaDBApp()
    endpoint = app.start(host)
    yield app, endpoint
    app.stop()


def _dsn(endpoint: Endpoint, password: str | None = None) -> str:
    extra = endpoint.extra
    pw = extra["password"] if password is None else password
    return f"mysql://{extra['user']}:{pw}@127.0.0.1:{endpoint.port}/{extra['database']}"


def _sql(app: MariaDBApp, sql: str) -> str:
    ep = app.endpoint
    assert ep is not None
    r = subprocess.run(
        ["mariadb", "--protocol=tcp", "-h127.0.0.1", f"-P{ep.port}", f"-u{ep.extra['user']}", "--batch",
         "--skip-column-names", "-e", sql],
        capture_output=True, text=True, env={**os.environ, "MYSQL_PWD": ep.extra["password"]}, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _root_sql(app: MariaDBApp, sql: str) -> None:
    """As the managed server's root (over its socket): creating the users the DSN tests log in as."""
    ep = app.endpoint
    assert ep is not None
    r = subprocess.run(
        ["mariadb", f"--socket={ep.socket_path}", "-uroot", "--batch", "-e", sql],
        capture_output=True, text=True, env={**os.environ, "MYSQL_PWD": app._root_password}, timeout=30,
    )
    assert r.returncode == 0, r.stderr


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


# -- managed ---------------------------------------------------------------------------------------


@needs_mariadb
@needs_sysbench
def test_managed_start_prepare_measure_stop(host: LocalHost) -> None:
    app = MariaDBApp()
    t0 = time.monotonic()
    endpoint = app.start(host)
    start_s = time.monotonic() - t0
    workdir, datadir = app.workdir, app.datadir
    try:
        assert workdir and datadir and os.path.isdir(datadir)
        assert endpoint.address == "127.0.0.1" and endpoint.port > 0
        assert endpoint.socket_path == f"{workdir}/mysqld.sock" and os.path.exists(endpoint.socket_path)
        pids = app.pids()
        assert len(pids) == 1 and app.is_healthy()
        cnf = open(f"{workdir}/my.cnf").read()
        for needle in ("bind-address=127.0.0.1", f"port={endpoint.port}", "innodb_buffer_pool_size=",
                       "innodb_log_file_size=", "innodb_flush_method=O_DIRECT", "max_connections="):
            assert needle in cnf
        assert not os.path.exists(f"{workdir}/init.sql")  # passwords do not stay on disk
        desc = app.describe()
        assert desc["managed"] is True and "10.11" in str(desc.get("version", "")) or desc.get("version")
        assert endpoint.extra["password"] not in str(desc)

        workload = SysbenchWorkload(time_s=2, warmup_s=1, tables=2, table_size=2000)
        t0 = time.monotonic()
        workload.prepare(host, endpoint)
        prepare_s = time.monotonic() - t0
        assert workload.prepare_count == 1
        workload.prepare(host, endpoint)  # dataset intact: reused
        assert workload.prepare_count == 1
        t0 = time.monotonic()
        metrics = workload.measure(host, endpoint, {})
        measure_s = time.monotonic() - t0
        assert metrics["tps"] > 0 and metrics["ops_per_s"] == metrics["tps"]
        assert 0 < metrics["p50_ms"] <= metrics["p95_ms"] <= metrics["p99_ms"] <= metrics["p999_ms"] <= metrics["max_ms"]
        assert metrics["errors"] >= 0 and metrics["reconnects"] == 0
        assert measure_s < 6
        print(f"\nmanaged mariadb: start {start_s:.2f}s prepare {prepare_s:.2f}s measure {measure_s:.2f}s")

        # restart keeps the datadir: no re-prepare needed
        endpoint = app.restart(host)
        assert workload.dataset_ok(host, endpoint) is True
        assert app.pids() and app.pids() != pids
        pids = app.pids()
    finally:
        app.stop()
    assert all(_gone(p) for p in pids)
    assert not os.path.exists(workdir)
    assert app.pids() == [] and not app.is_healthy()
    app.stop()  # idempotent


@needs_mariadb
def test_keep_leaves_datadir(host: LocalHost) -> None:
    app = MariaDBApp(keep=True)
    app.start(host)
    workdir = app.workdir
    app.stop()
    try:
        assert workdir and os.path.isdir(f"{workdir}/data/mysql")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@needs_mariadb
def test_crashed_server_is_app_error_with_log_tail(host: LocalHost) -> None:
    app = MariaDBApp()
    app.start(host)
    workdir = app.workdir
    pid = app.pids()[0]
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while app.is_healthy() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not app.is_healthy()
    assert "ready for connections" in app.failure_context()
    with pytest.raises(AppError, match="had exited before stop") as info:
        app.stop()
    assert "\n" not in str(info.value)
    assert not os.path.exists(workdir)


@needs_mariadb
def test_bad_config_fails_start_with_error_line(host: LocalHost) -> None:
    app = MariaDBApp(config={"innodb_no_such_option": 1}, start_timeout_s=30)
    # mariadb-install-db already reads the generated my.cnf, so the bad option stops it there
    with pytest.raises(AppError, match="failed.*unknown variable 'innodb_no_such_option=1'") as info:
        app.start(host)
    assert "\n" not in str(info.value)
    assert app.workdir is None and app.pids() == []
    assert "innodb_no_such_option" in app.failure_context()


def test_missing_binaries_are_one_line_errors(host: LocalHost) -> None:
    with pytest.raises(AppError, match="mariadbd-nope not found .*apt-get install mariadb-server.*app.binary"):
        MariaDBApp(binary="mariadbd-nope").start(host)


def test_reserved_and_invalid_settings() -> None:
    with pytest.raises(BadInputError, match="datadir"):
        MariaDBApp(config={"datadir": "/x"})
    with pytest.raises(BadInputError, match="database"):
        MariaDBApp(database="x; drop")
    with pytest.raises(BadInputError, match="not understood"):
        make_mysql_app(frobnicate=1)
    assert isinstance(make_mysql_app(), MariaDBApp)
    assert isinstance(make_mysql_app(dsn="mysql://u:p@127.0.0.1:3306/db"), ExternalMySQL)
    with pytest.raises(BadInputError, match="do not apply"):
        make_mysql_app(dsn="mysql://u:p@127.0.0.1:3306/db", config={"a": 1})


def test_size_config_rules() -> None:
    assert size_config(24105, 2) == {
        "innodb_buffer_pool_size": "1024M", "innodb_log_file_size": "256M",
        "innodb_flush_method": "O_DIRECT", "innodb_flush_log_at_trx_commit": "1", "max_connections": "80",
    }
    small = size_config(1024, 1)
    assert small["innodb_buffer_pool_size"] == "256M" and small["innodb_log_file_size"] == "64M"
    assert size_config(256, 1)["innodb_buffer_pool_size"] == "128M"
    assert size_config(256, 1)["innodb_log_file_size"] == "48M"


@needs_mariadb
def test_a_datadir_under_its_own_parent_carries_the_owner_record(host: LocalHost, tmp_path) -> None:
    # without the record a run killed with -9 left the data directory there for good
    from targets.hosts.workdir_records import WORKDIR_OWNER_FILE, parse_owner

    app = MariaDBApp(datadir_parent=str(tmp_path), start_timeout_s=30)
    app.start(host)
    try:
        workdir = app.workdir
        assert workdir is not None and os.path.dirname(workdir) == str(tmp_path)
        owner = parse_owner(open(os.path.join(workdir, WORKDIR_OWNER_FILE)).read())
        assert owner.pid == os.getpid() and owner.is_alive() is True
    finally:
        app.stop()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("parent", "why"), [
    ("/tmp/x/dd dir", "it contains whitespace, at which mariadb-install-db splits the paths it is given"),
    ("/tmp/x/tab\tdir", "it contains whitespace"),
    ("/tmp/x/dd#1", "it contains '#', after which my.cnf reads the rest of a line as a comment"),
    ("/tmp/x/dd\\sdir", "it contains a backslash, which my.cnf reads as an escape"),
])
def test_datadir_parent_that_mariadb_install_db_or_my_cnf_would_break_is_refused(parent: str, why: str) -> None:
    # before, mariadb-install-db split '--defaults-file=/tmp/x/dd dir/my.cnf' and the start failed
    # with "[Warning] Can't create test file ..."
    with pytest.raises(BadInputError) as info:
        MariaDBApp(datadir_parent=parent)
    msg = str(info.value)
    assert msg.startswith(f"mariadb datadir_parent={parent!r} cannot hold the datadir: {why}") and "\n" not in msg
    assert msg.endswith("choose a directory whose path has no whitespace, '#' or backslash")
    with pytest.raises(BadInputError, match="datadir_parent=.*cannot hold"):
        make_mysql_app(datadir_parent=parent)


@needs_mariadb
def test_temp_dir_with_whitespace_is_named_before_install_db_runs(host: LocalHost, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spaced = tmp_path / "temp dir"
    spaced.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spaced))
    app = MariaDBApp(start_timeout_s=20)
    with pytest.raises(AppError) as info:
        app.start(host)
    msg = str(info.value)
    assert msg.startswith(f"cannot put the MariaDB datadir in {spaced}/ostune-mariadb-") and "\n" not in msg
    assert "it contains whitespace" in msg and "--app-set datadir_parent=DIR" in msg
    assert app.pids() == [] and app.workdir is None and os.listdir(spaced) == []


@needs_mariadb
@pytest.mark.skipif(not IS_ROOT, reason="needs root to mount a tmpfs")
def test_datadir_on_read_only_or_full_filesystem(host: LocalHost) -> None:
    for opts, expect in (("ro,size=1m", "Read-only file system"), ("size=1m", "mariadb-install-db failed.*no space left on device")):
        mnt = tempfile.mkdtemp(prefix="ostune-test-mnt-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", mnt], check=True)
        try:
            app = MariaDBApp(datadir_parent=mnt, start_timeout_s=20)
            with pytest.raises(AppError, match=expect) as info:
                app.start(host)
            assert "\n" not in str(info.value)
            assert app.pids() == [] and app.workdir is None
            assert os.listdir(mnt) == []  # nothing left behind
        finally:
            subprocess.run(["umount", mnt], check=True)
            os.rmdir(mnt)


# -- external DSN ----------------------------------------------------------------------------------


def _variables(app: MariaDBApp) -> str:
    return _sql(app, "SHOW GLOBAL VARIABLES")


@needs_mariadb
@needs_sysbench
def test_external_dsn_leaves_server_running_and_unchanged(host: LocalHost, server) -> None:  # type: ignore[no-untyped-def]
    managed, endpoint = server
    before_vars = _variables(managed)
    before_pids = managed.pids()
    password = endpoint.extra["password"]
    ext = ExternalMySQL(_dsn(endpoint))
    assert ext.managed is False
    ep = ext.start(host)
    desc = ext.describe()
    assert desc["dsn"] == f"mysql://sbtest@127.0.0.1:{endpoint.port}/sbtest"
    assert password not in str(desc) and desc["managed"] is False
    assert ext.is_healthy()
    assert ext.pids() == before_pids  # found through ss on loopback

    workload = SysbenchWorkload(test="oltp_point_select", time_s=1, warmup_s=0, tables=1, table_size=1000)
    workload.prepare(host, ep)
    metrics = workload.measure(host, ep, {})
    assert metrics["tps"] > 0

    ext.stop()
    ext.restart(host)  # re-checks only
    ext.stop()
    assert managed.pids() == before_pids and managed.is_healthy()
    assert _variables(managed) == before_vars


@needs_mariadb
def test_external_wrong_password_is_clean_app_error(host: LocalHost, server) -> None:  # type: ignore[no-untyped-def]
    _, endpoint = server
    secret = "Wr0ng-Secret-xyz"
    ext = ExternalMySQL(_dsn(endpoint, password=secret))
    with pytest.raises(AppError) as info:
        ext.start(host)
    msg = str(info.value)
    assert "access denied" in msg and "\n" not in msg
    assert secret not in msg and secret not in ext.failure_context() and secret not in str(ext.describe())


@needs_mariadb
@needs_sysbench
def test_dsn_passwords_with_spaces_commas_hashes_quotes_reach_sysbench(host: LocalHost, server) -> None:  # type: ignore[no-untyped-def]
    # before, sysbench's config file carried them unquoted: it cut 'a b' at the space and 'a,b'
    # at the comma, read a leading '#' as a comment, and every trial failed with error 1045
    managed, endpoint = server
    passwords = {"sp1": "a b", "sp2": "a,b", "sp3": "#a b", "sp4": "it's x", "sp5": 'say "hi"',
                 "sp6": "p@ss:w/rd%20", "sp7": "y" * 238}
    for user, password in passwords.items():
        _root_sql(managed, f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY {_sql_string(password)}; "
                           f"GRANT ALL ON sbtest.* TO '{user}'@'127.0.0.1';")
    workload = SysbenchWorkload(test="oltp_point_select", time_s=1, warmup_s=0, tables=1, table_size=100)
    for user, password in passwords.items():
        ext = ExternalMySQL(f"mysql://{user}:{quote(password, safe='')}@127.0.0.1:{endpoint.port}/sbtest")
        ep = ext.start(host)
        workload.rebuild(host, ep)  # sysbench cleanup + prepare: both log in with the password
        assert workload.dataset_ok(host, ep) is True, user
    assert workload.measure(host, ep, {})["tps"] > 0


@needs_mariadb
@needs_sysbench
def test_messages_keep_words_that_spell_the_password(host: LocalHost, server) -> None:  # type: ignore[no-untyped-def]
    # before, the password was masked as a substring anywhere: "wrong" turned "wrong user or
    # password" into "*** user or password"; user and password "ro" made "error 1142" "er***r 1142"
    managed, endpoint = server
    with pytest.raises(AppError) as info:
        ExternalMySQL(f"mysql://sbtest:wrong@127.0.0.1:{endpoint.port}/sbtest").start(host)
    assert str(info.value) == f"access denied for sbtest at 127.0.0.1:{endpoint.port} (wrong user or password in --dsn)"

    _root_sql(managed, "CREATE USER 'ro'@'127.0.0.1' IDENTIFIED BY 'ro'; GRANT SELECT ON sbtest.* TO 'ro'@'127.0.0.1';")
    ep = ExternalMySQL(f"mysql://ro:ro@127.0.0.1:{endpoint.port}/sbtest").start(host)
    with pytest.raises(WorkloadError) as info:
        SysbenchWorkload(test="oltp_point_select", tables=1, table_size=100).rebuild(host, ep)
    msg = str(info.value)
    assert "error 1142" in msg and "denied to user 'ro'@'127.0.0.1'" in msg and "***" not in msg, msg


def test_external_unreachable_dsn(host: LocalHost) -> None:
    if not (shutil.which("mariadb") or shutil.which("mysql")):
        pytest.skip("no mysql client")
    secret = "pw-not-shown-123"
    ext = ExternalMySQL(f"mysql://bench:{secret}@127.0.0.1:1/sbtest", connect_timeout_s=2)
    with pytest.raises(AppError, match="cannot connect to MySQL at 127.0.0.1:1") as info:
        ext.start(host)
    assert secret not in str(info.value) and "\n" not in str(info.value)


def test_dsn_parsing() -> None:
    parts = parse_dsn("mysql://bench:p%40ss@db.example:3307/sbtest")
    assert parts == {"user": "bench", "password": "p@ss", "host": "db.example", "port": 3307, "database": "sbtest"}
    assert parse_dsn("mysql://u@h/db")["port"] == 3306
    secret = "Zq9-secret"
    for bad in (f"postgres://u:{secret}@h/db", f"mysql://u:{secret}@h:xx/db", f"mysql://u:{secret}@h:3306/",
                f"mysql://:{secret}@h/db"):
        with pytest.raises(BadInputError) as info:
            parse_dsn(bad)
        assert secret not in str(info.value)


# -- sysbench missing ------------------------------------------------------------------------------


def test_sysbench_missing_is_clear_error(host: LocalHost) -> None:
    workload = SysbenchWorkload(binary="sysbench-not-installed")
    ep = Endpoint("127.0.0.1", 1, extra={"user": "u", "password": "p", "database": "sbtest"})
    with pytest.raises(WorkloadError, match="sysbench-not-installed not found on PATH.*apt-get install sysbench"):
        workload.prepare(host, ep)
    with pytest.raises(WorkloadError, match="not found on PATH"):
        workload.measure(host, ep, {})


@needs_sysbench
def test_sysbench_against_nothing_fails_fast(host: LocalHost) -> None:
    secret = "never-printed-42"
    ep = Endpoint("127.0.0.1", 1, extra={"user": "u", "password": secret, "database": "sbtest"})
    workload = SysbenchWorkload(time_s=1, warmup_s=0)
    t0 = time.monotonic()
    with pytest.raises(WorkloadError, match="error 2002") as info:
        workload.run_once(host, ep)
    assert time.monotonic() - t0 < 10 and secret not in str(info.value)


# -- block device ----------------------------------------------------------------------------------


def test_block_device_of_tmp(host: LocalHost) -> None:
    dev = datadir_block_device(host, tempfile.gettempdir() + "/does/not/exist/yet")
    if dev is None:
        pytest.skip("temp dir is not on a block device here (tmpfs?)")
    assert os.path.exists(f"/sys/block/{dev}/queue/scheduler")
    assert datadir_block_device(host, "/proc") is None


@pytest.mark.skipif(not (IS_ROOT and shutil.which("losetup") and shutil.which("mkfs.ext4")),
                    reason="needs root, losetup and mkfs.ext4")
def test_block_device_of_loop_mount(host: LocalHost) -> None:
    tmp = tempfile.mkdtemp(prefix="ostune-test-loop-")
    image, mnt = f"{tmp}/disk.img", f"{tmp}/mnt"
    os.mkdir(mnt)
    with open(image, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    loop = subprocess.run(["losetup", "-f", "--show", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", loop], check=True, capture_output=True)
        subprocess.run(["mount", loop, mnt], check=True)
        try:
            os.mkdir(f"{mnt}/datadir")
            assert datadir_block_device(host, f"{mnt}/datadir") == os.path.basename(loop)
        finally:
            subprocess.run(["umount", mnt], check=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


class _FakeSysHost(LocalHost):
    """Pretends /data sits on partition sda2 (8:2) of disk sda."""

    def __init__(self) -> None:
        super().__init__()
        self.paths = {"/data", "/sys/devices/pci0/block/sda/sda2", "/sys/devices/pci0/block/sda/sda2/partition",
                      "/sys/block/sda"}

    def exists(self, path: str) -> bool:
        return path in self.paths

    def run(self, argv, *, timeout_s=None, check=True, input_text=None, env=None):  # type: ignore[no-untyped-def]
        out = {"stat": str(8 << 8 | 2), "readlink": "/sys/devices/pci0/block/sda/sda2"}.get(argv[0], "")
        return CommandResult(tuple(argv), 0, out + "\n", "", 0.0)


def test_partition_resolves_to_parent_disk() -> None:
    assert datadir_block_device(_FakeSysHost(), "/data/mysql") == "sda"


@needs_mariadb
@needs_sysbench
def test_write_drift_reprepares_at_trial_boundary_only(host: LocalHost, server) -> None:  # type: ignore[no-untyped-def]
    _, endpoint = server
    # 1 table x 200 rows, factor 0.5: after > 100 written queries the next trial rebuilds
    workload = SysbenchWorkload(test="oltp_write_only", time_s=1, warmup_s=0, tables=1, table_size=200,
                                reprepare_writes_factor=0.5)
    workload.prepare(host, endpoint)
    assert workload.prepare_count == 1
    workload.measure(host, endpoint, {"vm.swappiness": 10})
    assert workload.needs_reprepare()
    workload.measure(host, endpoint, {"vm.swappiness": 10})  # same trial: no rebuild mid-trial
    assert workload.prepare_count == 1
    workload.measure(host, endpoint, {"vm.swappiness": 20})  # new parameters: rebuild first
    assert workload.prepare_count == 2
    assert workload.dataset_ok(host, endpoint) is True
