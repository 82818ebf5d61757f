"""RedisApp and RedisBenchmarkWorkload against a real redis-server (short runs: < 2 s each)."""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest

from targets.apps.base import Endpoint
from targets.apps.managed import free_loopback_port
from targets.apps.redis import RedisApp
from targets.hosts.local import WORKDIR_OWNER_FILE, LocalHost
from targets.workloads.redis_benchmark import RedisBenchmarkWorkload
from tuner.errors import AppError, BadInputError, WorkloadError

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-benchmark")),
    reason="redis-server / redis-benchmark not installed",
)


@pytest.fixture
def host() -> LocalHost:
    return LocalHost()


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_start_benchmark_stop(host: LocalHost) -> None:
    app = RedisApp()
    endpoint = app.start(host)
    try:
        assert endpoint.address == "127.0.0.1" and endpoint.port > 0
        assert app.is_healthy()
        pids = app.pids()
        assert len(pids) == 1
        workdir = app.workdir
        assert workdir and os.path.isdir(workdir)
        conf = open(os.path.join(workdir, "redis.conf")).read()
        assert 'save ""' in conf and "appendonly no" in conf and "bind 127.0.0.1" in conf
        assert host.run(["redis-cli", "-p", str(endpoint.port), "ping"]).stdout.strip() == "PONG"
        assert host.run(["redis-cli", "-p", str(endpoint.port), "config", "get", "save"]).stdout.split() == ["save"]

        workload = RedisBenchmarkWorkload(requests=2000, keyspace=1000)
        workload.prepare(host, endpoint)
        dbsize = host.run(["redis-cli", "-p", str(endpoint.port), "dbsize"]).stdout.strip()
        assert dbsize == "1000"  # every key of the key space, exactly
        started = time.monotonic()
        metrics = workload.measure(host, endpoint, {})
        elapsed = time.monotonic() - started
        assert elapsed < 10
        for key in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "ops_per_s"):
            assert metrics[key] > 0, key
        assert metrics["p50_ms"] <= metrics["p95_ms"] <= metrics["p99_ms"] <= metrics["p999_ms"] <= metrics["max_ms"]
        assert metrics["requests"] == 4000
        assert metrics["p99_ms"] == max(metrics["get.p99_ms"], metrics["set.p99_ms"])
        assert "_client_cpu_s" in metrics
        assert "log" in app.failure_context().lower() or app.failure_context()  # server log has lines
    finally:
        app.stop()
    assert all(_pid_gone(p) for p in pids)
    assert not os.path.exists(workdir)
    assert app.pids() == [] and not app.is_healthy()
    app.stop()  # idempotent


def test_duration_calibration_and_warmup(host: LocalHost) -> None:
    app = RedisApp()
    endpoint = app.start(host)
    try:
        workload = RedisBenchmarkWorkload(duration_s=0.5, keyspace=100, commands="get")
        workload.prepare(host, endpoint)
        assert workload.effective_requests >= 1000
        workload.warmup(host, endpoint, {})
        started = time.monotonic()
        metrics = workload.measure(host, endpoint, {})
        assert time.monotonic() - started < 5
        assert "get.p99_ms" in metrics and "set.p99_ms" not in metrics
    finally:
        app.stop()


def test_keep_leaves_workdir(host: LocalHost) -> None:
    app = RedisApp(keep=True)
    app.start(host)
    workdir = app.workdir
    app.stop()
    try:
        assert workdir and os.path.exists(os.path.join(workdir, "redis.log"))
        # kept on purpose: not claimed any more, so a later command's cleanup of dead runs'
        # leftovers does not remove it even once this process is gone
        assert not os.path.exists(os.path.join(workdir, WORKDIR_OWNER_FILE))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_missing_binary_is_one_line_app_error(host: LocalHost) -> None:
    app = RedisApp(binary="redis-server-does-not-exist")
    with pytest.raises(AppError) as info:
        app.start(host)
    msg = str(info.value)
    assert "not found on PATH" in msg and "apt-get install redis-server" in msg and "app.binary" in msg
    assert "\n" not in msg


def test_bad_config_line_fails_with_log_context(host: LocalHost) -> None:
    app = RedisApp(config={"no-such-directive": "1"}, start_timeout_s=5)
    with pytest.raises(AppError, match="exited during start"):
        app.start(host)
    assert "no-such-directive" in app.failure_context() or "Bad directive" in app.failure_context()
    assert app.pids() == []


def test_reserved_config_rejected() -> None:
    with pytest.raises(BadInputError, match="port"):
        RedisApp(config={"port": 1234})


def test_port_in_use_is_app_error(host: LocalHost) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        app = RedisApp(port=port, start_timeout_s=5)
        with pytest.raises(AppError, match="address already in use"):
            app.start(host)
        assert app.pids() == []
    finally:
        blocker.close()


def test_benchmark_against_dead_server_fails_fast(host: LocalHost) -> None:
    port = free_loopback_port(host)
    workload = RedisBenchmarkWorkload(requests=1000)
    started = time.monotonic()
    with pytest.raises(WorkloadError, match="does not answer PING|not reachable"):
        workload.measure(host, Endpoint("127.0.0.1", port), {})
    assert time.monotonic() - started < 10


def test_workload_settings_validated() -> None:
    with pytest.raises(BadInputError, match="unknown"):
        RedisBenchmarkWorkload(commands="get,frobnicate")
    with pytest.raises(BadInputError, match="clients"):
        RedisBenchmarkWorkload(clients=0)
    argv = RedisBenchmarkWorkload(commands=["GET"], clients=2, pipeline=4, threads=2, value_size=64,
                                  keyspace=50).build_argv(Endpoint("127.0.0.1", 7000))
    assert argv == ["redis-benchmark", "-h", "127.0.0.1", "-p", "7000", "-c", "2", "-n", "10000",
                    "-P", "4", "-d", "64", "-r", "50", "--threads", "2", "--precision", "3", "-t", "get"]


def test_missing_benchmark_binary(host: LocalHost) -> None:
    workload = RedisBenchmarkWorkload(binary="redis-benchmark-nope")
    with pytest.raises(WorkloadError, match="not found on PATH"):
        workload.measure(host, Endpoint("127.0.0.1", 1), {})
