"""The product's promise on this machine: `ostune run` tunes a real local Redis with real kernel
writes on the shipped space, and leaves every knob as it found it."""

import os
import shutil
import subprocess

import pytest

from spaces.loader import load_space
from tests.helpers import ostune, query

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="writes real kernel knobs: needs root"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (./setup.sh installs it)"),
]


def redis_pids() -> list[str]:
    return subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True).stdout.split()


def test_five_real_trials_on_the_shipped_space_restore_every_knob(tmp_path):
    from tests.helpers import snapshot

    space = load_space("redis-latency")
    before = snapshot(space)
    pids_before = redis_pids()
    db = tmp_path / "redis.db"
    result = ostune("run", "--trials", "5", "--repetitions", "2", "--requests", "3000", "--seed", "5",
                    "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert snapshot(space) == before
    assert redis_pids() == pids_before
    rows = query(db, "select trial, status, source, p50_ms, p99_ms, p999_ms, ops_per_s from trial_results order by trial")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0][2] == "baseline"
    for _trial, status, _source, p50, p99, p999, ops in rows:
        assert status == "succeeded"
        assert 0 < p50 <= p99 <= p999 and ops > 0
    # the optimizer's trials really changed knobs: at least one value differs from the baseline's
    baseline = dict(query(db, "select param, value from trial_params where trial=1"))
    later = query(db, "select param, value from trial_params where trial>1")
    assert any(baseline[name] != value for name, value in later)
    # two repetitions per trial, each with its own metrics and noise attribution
    reps = query(db, "select trial, count(distinct repetition) from trial_repetitions group by trial")
    assert all(n == 2 for _, n in reps)
    assert query(db, "select count(*) from trial_repetitions where metric='other_cpu_s'")[0][0] == 10
    # parameters this kernel forbids are reported as skipped, with their reason stored
    skipped = query(db, "select skipped_json from runs")[0][0]
    for name in ("base_slice_ns", "migration_cost_ns"):
        if name not in before:
            assert name in skipped and f"skipping {name}" in result.stdout


def test_missing_redis_server_is_one_line_and_stores_nothing(tmp_path):
    db = tmp_path / "none.db"
    result = ostune("run", "--trials", "1", "--db", f"sqlite:///{db}", "--app-set", "binary=/nonexistent/redis-server",
                    cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "redis-server" in lines[0]
    assert not db.exists()  # a first run that failed on bad input leaves no database behind


def test_kill_9_takes_the_redis_server_down_too_and_the_next_command_restores(tmp_path):
    from tests.helpers import snapshot, spawn_ostune, try_query, wait_for

    space = load_space("redis-latency")
    before = snapshot(space)
    pids_before = redis_pids()
    db = tmp_path / "k.db"
    proc = spawn_ostune("run", "--trials", "6", "--repetitions", "3", "--requests", "20000",
                        "--no-profiles", "--db", f"sqlite:///{db}", cwd=tmp_path)
    wait_for(lambda: try_query(db, "select 1 from trials where number=2 and status='running'"), timeout_s=120)
    # (a trial that changes THP restarts Redis: between stop and start there is no server)
    wait_for(lambda: len(redis_pids()) > len(pids_before), timeout_s=60)
    proc.kill()
    proc.wait()
    # the server dies with ostune (parent-death signal), it does not linger serving nobody
    wait_for(lambda: redis_pids() == pids_before, timeout_s=15)
    listed = ostune("experiments", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "recovered from an interrupted run" in listed.stderr
    assert snapshot(space) == before
