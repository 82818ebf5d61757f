"""Unattended runs: budgets, one run per host, non-interactive output and the --json summary —
through the real CLI in a subprocess (command workload on the `none` host)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, last_json_line, ostune, query, spawn_ostune, try_query, wait_for
from tuner.budget import (Budget, beats, estimate_trial_s, parse_duration, parse_until,
                          trials_since_improvement)
from tuner.errors import BadInputError

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \S")


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(QUADRATIC_SPACE)
    return path


def run_cmd(space_file, db, *extra, command=QUADRATIC_COMMAND, experiment="quad", env=None, timeout_s=300):
    return ostune("run", "--app", "command", "--host", "none", "--space", str(space_file),
                  "--command", command, "--experiment", experiment, "--db", f"sqlite:///{db}",
                  "--seed", "7", "--repetitions", "2", *extra, env=env, timeout_s=timeout_s)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- budgets -------------------------------------------------------------------------------------
def test_time_budget_stops_inside_the_budget_without_starting_a_trial_it_could_not_finish(tmp_path, space_file):
    db = tmp_path / "tb.db"
    slow = f"sleep 1.2; {QUADRATIC_COMMAND}"  # each trial: 2 repetitions ≈ 2.5 s
    began = time.time()
    result = run_cmd(space_file, db, "--time-budget", "20s", "--json", command=slow)
    elapsed = time.time() - began
    assert result.returncode in (0, 7), result.stderr
    doc = json.loads(result.stdout)
    assert doc["stopped_by"] == "time" and "next trial needs about" in doc["stop_reason"]
    deadline = datetime.fromisoformat(doc["budget"]["deadline"]).timestamp()
    rows = query(db, "select number, status, started_at, ended_at, duration_s from trials order by number")
    assert len(rows) == doc["trials_run"] >= 4
    assert all(status == "succeeded" for _, status, *_ in rows)  # nothing was cut off half-way
    # Every trial that started also finished inside the budget (deadline printed to the second).
    assert all(utc(ended).timestamp() <= deadline + 1 for *_, ended, _ in rows)
    # ...and the next one would not have: what was left was less than the estimate, which is
    # at least as long as the trials really took.
    last_end = utc(rows[-1][3]).timestamp()
    estimate = doc["budget"]["next_trial_estimate_s"]
    assert estimate >= max(r[4] for r in rows)
    assert deadline - last_end < estimate + 1
    assert elapsed < 20 + 5, f"the whole process took {elapsed:.1f} s"

    # Resumed with a budget shorter than one trial: nothing is started at all.
    again = run_cmd(space_file, db, "--time-budget", "2s", "--json", command=slow)
    assert again.returncode == 8, again.stderr
    doc2 = json.loads(again.stdout)
    assert doc2["trials_run"] == 0 and doc2["stopped_by"] == "time"
    assert query(db, "select count(*) from trials") == [(len(rows),)]


def test_max_trials_caps_the_experiment_across_runs(tmp_path, space_file):
    db = tmp_path / "mt.db"
    first = run_cmd(space_file, db, "--trials", "3", "--max-trials", "5", "--json")
    assert first.returncode in (0, 7), first.stderr
    assert json.loads(first.stdout)["trials_run"] == 3
    # --trials 3 asked for, only 2 fit under the cap: the budget ran out (exit 8)
    second = run_cmd(space_file, db, "--trials", "3", "--max-trials", "5", "--json")
    assert second.returncode == 8, second.stderr
    doc = json.loads(second.stdout)
    assert (doc["trials_run"], doc["total_trials"], doc["stopped_by"]) == (2, 5, "max-trials")
    # a nightly re-run of a finished experiment does nothing and says so
    third = run_cmd(space_file, db, "--max-trials", "5")
    assert third.returncode == 8, third.stderr
    assert "max trials reached: the experiment has 5 trial(s)" in third.stdout
    assert query(db, "select count(*), max(number) from trials") == [(5, 5)]
    # without --trials the cap is the run's natural end: success, not "budget exhausted"
    fourth = run_cmd(space_file, db, "--max-trials", "7", "--json")
    assert fourth.returncode == 0, fourth.stderr
    assert json.loads(fourth.stdout)["trials_run"] == 2


def test_patience_stops_a_converged_run_and_nothing_improved_is_exit_7(tmp_path, space_file):
    db = tmp_path / "p.db"
    flat = f"{sys.executable} -c \"print('{{\\\"p99_ms\\\": 3.0}}')\""
    result = run_cmd(space_file, db, "--patience", "3", "--json", command=flat)
    assert result.returncode == 7, result.stderr
    doc = json.loads(result.stdout)
    # baseline, then 3 trials without improvement
    assert doc["trials_run"] == 4 and doc["stopped_by"] == "converged" and doc["improved"] is False
    assert query(db, "select count(*) from trials") == [(4,)]


def test_bad_budget_options_are_one_line_errors(tmp_path, space_file):
    db = tmp_path / "bad.db"
    for args, text in ((["--time-budget", "soon"], "--time-budget 'soon' is not a duration"),
                       (["--until", "25:00"], "--until '25:00' is not a local time"),
                       (["--lock-timeout", "0s"], "--lock-timeout '0s' must be longer than zero")):
        result = run_cmd(space_file, db, *args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], result.stderr
    assert not db.exists()


def test_duration_until_and_noise_rules():
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    assert parse_duration("20s") == 20 and parse_duration("1.5m") == 90
    with pytest.raises(BadInputError):
        parse_duration("2 fortnights")
    assert parse_duration("366d") == 366 * 86400
    with pytest.raises(BadInputError, match=r"--time-budget '99999999999h' is longer than a year; give at most 366d"):
        parse_duration("99999999999h")  # was a calendar overflow (internal error) when the deadline was set
    now = datetime(2026, 1, 1, 23, 30).astimezone()
    assert parse_until("06:00", now) == (now + timedelta(days=1)).replace(hour=6, minute=0)
    assert parse_until("23:45", now) == now.replace(minute=45)

    from storage.store import TrialRecord

    def trial(n, obj, sd=None, reps=5, status="succeeded", duration=None):
        return TrialRecord(n, n, status, "optimizer", {}, obj, sd, {}, reps, datetime.now(), None, duration, None)

    # 10 vs 9.5 with sd 1 over 5 repetitions: within noise; with sd 0.1 it is real
    assert not beats(trial(2, 9.5, 1.0), trial(1, 10.0, 1.0), maximize=False)
    assert beats(trial(2, 9.5, 0.1), trial(1, 10.0, 0.1), maximize=False)
    assert beats(trial(2, 11.0, 0.1), trial(1, 10.0, 0.1), maximize=True)
    history = [trial(1, 10.0, 1.0), trial(2, 9.6, 1.0), trial(3, 5.0, 1.0), trial(4, 4.9, 1.0), trial(5, 0, status="failed")]
    assert trials_since_improvement(history, maximize=False) == 2
    assert estimate_trial_s([trial(1, 1, duration=3.0), trial(2, 1, duration=5.0)]) == pytest.approx(5.5)
    clock = iter([0.0, 10.0, 17.0]).__next__
    budget = Budget.from_options(max_trials=None, time_budget="20s", until=None, patience=None,
                                 maximize=False, clock=clock)
    assert budget.should_stop([trial(1, 1, duration=5.0)]) is None      # 10 s left, needs 5.5
    assert "needs about 6 s, 3 s left" in budget.should_stop([trial(1, 1, duration=5.0)])
    # how many more trials fit: the tighter of the trial cap and the time left / trial estimate
    clock = iter([0.0, 0.0, 0.0]).__next__
    budget = Budget.from_options(max_trials=10, time_budget="60s", until=None, patience=None,
                                 maximize=False, clock=clock)
    done = [trial(1, 1, duration=4.0), trial(2, 1, duration=5.0)]
    assert budget.trials_left(done) == 8   # the cap leaves 8; 60 s at 5.5 s per trial would allow 10
    assert Budget(deadline=33.0, clock=lambda: 0.0).trials_left(done) == 6
    assert Budget(max_trials=3).trials_left(done) == 1
    assert Budget().trials_left(done) is None


# -- one run per host ----------------------------------------------------------------------------
def _lock_row(db):
    rows = try_query(db, "select host_key, run_id, holder_pid from host_locks")
    return rows[0] if rows and rows[0][1] is not None else None


def test_second_run_on_a_host_exits_with_the_lock_code_and_a_killed_holder_is_taken_over(tmp_path, space_file):
    db = tmp_path / "lock.db"
    slow = f"sleep 0.5; {QUADRATIC_COMMAND}"
    args = ["run", "--app", "command", "--host", "none", "--space", str(space_file), "--command", slow,
            "--experiment", "quad", "--db", f"sqlite:///{db}", "--seed", "7", "--repetitions", "1",
            "--lock-timeout", "10s"]
    first = spawn_ostune(*args, "--trials", "200")
    try:
        host_key, run_id, pid = wait_for(lambda: db.exists() and _lock_row(db), timeout_s=60)
        assert (host_key, pid) == ("none", first.pid)
        began = time.monotonic()
        second = ostune(*args, "--trials", "1")
        assert time.monotonic() - began < 10  # at once, not after waiting
        assert second.returncode == 6, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"host none is already being tuned by pid {first.pid}" in lines[0]
        assert query(db, "select count(*) from runs") == [(1,)]  # the second run stored nothing

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        began = time.monotonic()
        third = ostune(*args, "--trials", "1")
        assert third.returncode == 0, third.stderr
        assert time.monotonic() - began < 30
        assert f"took over the lock on host none from pid {first.pid}" in third.stdout
        assert query(db, "select status from runs order by id") == [("crashed",), ("finished",)]
        assert query(db, "select count(*) from host_locks") == [(0,)]  # released at the end
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_silent_lock_of_another_machine_is_taken_over_only_after_the_timeout(tmp_path, space_file):
    """A holder whose process this machine cannot check (another machine) counts as alive until
    its heartbeat is older than --lock-timeout."""
    db = tmp_path / "remote.db"
    assert run_cmd(space_file, db, "--trials", "1").returncode == 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    conn = sqlite3.connect(db)
    conn.execute("insert into host_locks (host_key, run_id, holder_pid, holder_machine, acquired_at, heartbeat_at) "
                 "values ('none', null, 4242, 'elsewhere', ?, ?)", (str(now), str(now - timedelta(seconds=3))))
    conn.commit()
    conn.close()
    held = run_cmd(space_file, db, "--trials", "1", "--lock-timeout", "30s")
    assert held.returncode == 6 and "pid 4242 on elsewhere" in held.stderr
    assert 3 <= int(re.search(r"last heartbeat (\d+) s ago", held.stderr).group(1)) < 30
    taken = run_cmd(space_file, db, "--trials", "1", "--lock-timeout", "2s")
    assert taken.returncode == 0, taken.stderr
    assert "took over the lock on host none from pid 4242 on elsewhere: no heartbeat for" in taken.stdout
    assert query(db, "select count(*) from trials") == [(2,)]


def test_a_lock_held_by_a_clone_with_this_hostname_is_not_taken_for_dead(tmp_path, space_file):
    """A cloned controller (same hostname and, being a clone, maybe the same pid numbers) sharing
    the database: its run is judged by its machine id, so a pid missing here proves nothing and the
    lock holds until its heartbeat times out."""
    db = tmp_path / "clone.db"
    assert run_cmd(space_file, db, "--trials", "1").returncode == 0
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    gone = subprocess.Popen(["true"])
    gone.wait()
    conn = sqlite3.connect(db)
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    run_id = conn.execute(
        "insert into runs (command, host_key, pid, pid_start_ticks, machine, boot_id, machine_id, status, "
        "started_at, host_facts_json, skipped_json) values ('run', 'none', ?, 1, ?, ?, ?, 'running', ?, '{}', '{}')",
        (gone.pid, socket.gethostname(), boot, "0" * 32, str(now))).lastrowid
    conn.execute("insert into host_locks (host_key, run_id, holder_pid, holder_machine, acquired_at, heartbeat_at) "
                 "values ('none', ?, ?, ?, ?, ?)", (run_id, gone.pid, socket.gethostname(), str(now), str(now)))
    conn.commit()
    conn.close()
    held = run_cmd(space_file, db, "--trials", "1", "--lock-timeout", "30s")
    assert held.returncode == 6, held.stdout + held.stderr
    assert query(db, "select count(*) from trials") == [(1,)]


def test_a_holder_whose_lock_was_taken_over_stops_before_its_next_trial(tmp_path, space_file):
    db = tmp_path / "lost.db"
    slow = f"sleep 0.3; {QUADRATIC_COMMAND}"
    proc = spawn_ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command", slow,
                        "--experiment", "quad", "--db", f"sqlite:///{db}", "--seed", "7", "--repetitions", "1",
                        "--lock-timeout", "2s", "--trials", "200")
    try:
        wait_for(lambda: db.exists() and _lock_row(db), timeout_s=60)
        conn = sqlite3.connect(db, timeout=30)
        conn.execute("update host_locks set holder_pid = 4242, holder_machine = 'elsewhere'")
        conn.commit()
        conn.close()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 6, err
    assert "stopped: the lock on host none was taken over by another run" in out
    assert query(db, "select status from runs") == [("finished",)]
    assert query(db, "select count(*) from trials where status = 'running'") == [(0,)]


# -- output for machines ------------------------------------------------------------------------
def test_piped_output_is_timestamped_lines_without_control_codes_and_json_matches_the_db(tmp_path, space_file):
    db = tmp_path / "o.db"
    # FORCE_COLOR / TTY_COMPATIBLE would make rich emit escape codes into a pipe; ostune must not.
    env = {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "40"}
    plain = run_cmd(space_file, db, "--trials", "4", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b" not in plain.stdout + plain.stderr and "\r" not in plain.stdout
    lines = [line for line in plain.stdout.splitlines() if line.strip()]
    assert len(lines) >= 9 and all(ISO_LINE.match(line) for line in lines), plain.stdout

    result = run_cmd(space_file, db, "--trials", "3", "--max-trials", "10", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    doc = json.loads(result.stdout)  # stdout is exactly one JSON document
    best = query(db, "select trial, objective from trial_results where experiment='quad' "
                     "and status='succeeded' order by objective limit 1")[0]
    base = query(db, "select trial, objective from trial_results where source='baseline'")[0]
    assert (doc["best"]["trial"], doc["best"]["objective"]) == best
    assert (doc["baseline"]["trial"], doc["baseline"]["objective"]) == base
    assert doc["improvement"] == pytest.approx((best[1] - base[1]) / base[1])
    assert doc["total_trials"] == query(db, "select count(*) from trials")[0][0] == 7
    assert doc["trials_run"] == query(db, "select count(*) from trials where run_id = ?", doc["run_id"])[0][0] == 3
    assert doc["verified"] is False and doc["verification"] is None
    assert doc["exit_code"] == 0 and doc["improved"] is True
    assert all(ISO_LINE.match(line) for line in result.stderr.splitlines() if line.strip())
    # what the run recommends is what `ostune best --json` prints: one shape for scripts
    best_doc = json.loads(ostune("best", "quad", "--db", f"sqlite:///{db}", "--json").stdout)
    assert doc["recommended"] == best_doc and doc["recommended_trial"] == best_doc["trial"]
    assert set(best_doc["params"]) == {"x.a", "x.b", "x.c"} and best_doc["is_baseline"] is False


def test_verified_in_the_json_summary_comes_from_the_verification_tables(tmp_path, space_file):
    db = tmp_path / "v.db"
    first = run_cmd(space_file, db, "--trials", "4", "--json")
    best = last_json_line(first.stdout)["recommended_trial"]
    conn = sqlite3.connect(db)
    exp_id = conn.execute("select id from experiments").fetchone()[0]
    now = str(datetime.now(timezone.utc).replace(tzinfo=None))
    cur = conn.execute("insert into verifications (experiment_id, created_at, rounds, metric, schedule_json, status) "
                       "values (?, ?, 6, 'p99_ms', '[]', 'finished')", (exp_id, now))
    conn.execute("insert into verification_results (verification_id, label, trial_number, params_json, metric, "
                 "samples, median, relative, ci_low, ci_high, established) "
                 "values (?, 'best', ?, '{}', 'p99_ms', 6, 1.0, 0.5, 0.4, 0.6, 1)", (cur.lastrowid, best))
    conn.commit()
    conn.close()
    again = run_cmd(space_file, db, "--max-trials", "4", "--json")
    assert again.returncode == 8
    doc = json.loads(again.stdout)
    assert doc["verified"] is True and doc["verification"]["result"]["ci_high"] == 0.6


def test_quiet_and_log_file(tmp_path, space_file):
    db = tmp_path / "q.db"
    log = tmp_path / "run.log"
    result = run_cmd(space_file, db, "--trials", "3", "--quiet", "--log-file", str(log))
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.splitlines() if line.strip()]
    # the final summary: the best single measurement, then what ostune recommends
    assert len(shown) == 2 and "best p99_ms =" in shown[0] and "3 trials this run" in shown[0]
    assert " recommended: trial " in shown[1] and "measurement(s)" in shown[1]
    logged = log.read_text().splitlines()
    assert logged[-1].split(" ", 1)[1] == shown[1].split(" ", 1)[1]
    assert all(ISO_LINE.match(line) for line in logged)
    assert sum("trial 3 succeeded" in line for line in logged) == 1 and "\x1b" not in log.read_text()
    bad = run_cmd(space_file, db, "--trials", "1", "--log-file", str(tmp_path / "no" / "dir.log"))
    assert bad.returncode == 2 and "--log-file" in bad.stderr


def test_interactive_terminal_still_gets_the_live_display(tmp_path, space_file):
    """The plain mode is for pipes only: on a pseudo-terminal rich draws its progress bar."""
    import pty
    import subprocess

    db = tmp_path / "tty.db"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", "run", "--app", "command", "--host", "none", "--space", str(space_file),
         "--command", QUADRATIC_COMMAND, "--trials", "2", "--experiment", "quad", "--db", f"sqlite:///{db}",
         "--repetitions", "1"], stdout=slave, stderr=slave, cwd=os.path.dirname(os.path.dirname(__file__)))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    assert b"\x1b[" in b"".join(chunks)
