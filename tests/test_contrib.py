"""contrib/: the systemd units pass `systemd-analyze verify`, the nightly script runs a budgeted
job and verifies its best configuration, refuses bad settings before running anything, passes a
stop signal on to ostune and waits for it, and the cron line calls the same script."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, REPO, query

CONTRIB = REPO / "contrib"
SCRIPT = CONTRIB / "systemd" / "ostune-nightly"
INSTALLED = "/usr/local/bin/ostune-nightly"


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("systemd-analyze missing and installing systemd needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"], check=True, env=env,
                   capture_output=True)
    return shutil.which("systemd-analyze") or pytest.fail("systemd installed but systemd-analyze not found")


@pytest.mark.parametrize("instance", ["", "redis-nightly"])
def test_units_pass_systemd_analyze_verify(tmp_path, instance):
    analyze = _systemd_analyze()
    names = []
    for unit in ("ostune-nightly@.service", "ostune-nightly@.timer"):
        text = (CONTRIB / "systemd" / unit).read_text()
        assert INSTALLED in text or unit.endswith(".timer")
        # verify checks that ExecStart is executable: point it at the script in this checkout
        name = unit.replace("@", f"@{instance}") if instance else unit
        (tmp_path / name).write_text(text.replace(INSTALLED, str(SCRIPT)))
        names.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # verify prints warnings but still exits 0


def test_service_treats_outcome_codes_as_success_and_gives_restore_time():
    text = (CONTRIB / "systemd" / "ostune-nightly@.service").read_text()
    assert re.search(r"^SuccessExitStatus=7 8$", text, re.M)
    assert re.search(r"^ExecStart=/usr/local/bin/ostune-nightly %i$", text, re.M)
    assert re.search(r"^OnCalendar=", (CONTRIB / "systemd" / "ostune-nightly@.timer").read_text(), re.M)


def test_cron_line_runs_the_same_script_nightly():
    lines = [line for line in (CONTRIB / "cron" / "ostune-nightly").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split()
    minute, hour, dom, month, dow, user, command = fields[:7]
    assert (dom, month, dow, user) == ("*", "*", "*", "root")
    assert 0 <= int(minute) < 60 and 0 <= int(hour) < 24
    assert command == INSTALLED and fields[7] == "redis-nightly"


_SCRIPT_SETTINGS = {"OSTUNE_NO_CONF", "OSTUNE_DB", "OSTUNE_TIME_BUDGET", "OSTUNE_UNTIL", "OSTUNE_MAX_TRIALS",
                    "OSTUNE_PATIENCE", "OSTUNE_VERIFY_ROUNDS", "OSTUNE_RUN_ARGS", "OSTUNE_STATE_DIR"}


def _nightly_env(tmp_path, **overrides):
    space = tmp_path / "space.yaml"
    space.write_text(QUADRATIC_SPACE)
    bench = tmp_path / "bench.sh"
    bench.write_text(f"#!/bin/sh\n{QUADRATIC_COMMAND}\n")
    bench.chmod(0o755)
    wrapper = tmp_path / "ostune"
    # every call is logged, so a test can tell that the script refused before running anything
    wrapper.write_text(f"#!/bin/sh\necho \"$*\" >>{tmp_path}/calls\n"
                       f"cd {REPO} && exec {sys.executable} -m tuner.cli \"$@\"\n")
    wrapper.chmod(0o755)
    conf = tmp_path / "etc"
    conf.mkdir()
    settings = {
        "OSTUNE_DB": f"sqlite:///{tmp_path}/n.db",
        "OSTUNE_RUN_ARGS": f'"--app command --host none --space {space} --command {bench} --repetitions 2 --seed 3"',
        "OSTUNE_UNTIL": "", "OSTUNE_MAX_TRIALS": "5", "OSTUNE_VERIFY_ROUNDS": "3",
        "OSTUNE_STATE_DIR": str(tmp_path / "state"), **overrides,
    }
    (conf / "nightly-test.env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    # the script's own settings come from the env file alone (the test's environment may set some)
    env = {k: v for k, v in os.environ.items() if k not in _SCRIPT_SETTINGS}
    return {**env, "OSTUNE": str(wrapper), "OSTUNE_CONF_DIR": str(conf)}


def _calls(tmp_path) -> list[str]:
    calls = tmp_path / "calls"
    return calls.read_text().splitlines() if calls.exists() else []


def _has_verify() -> bool:
    return subprocess.run([sys.executable, "-m", "tuner.cli", "verify", "--help"], cwd=REPO,
                          capture_output=True).returncode == 0


def test_nightly_script_runs_a_budgeted_job_then_verifies_the_best_configuration(tmp_path):
    env = _nightly_env(tmp_path)
    result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "n.db"
    summary = json.loads((tmp_path / "state" / "nightly-test.last.json").read_text())
    assert summary["total_trials"] == 5 == query(db, "select count(*) from trials")[0][0]
    assert summary["stopped_by"] == "max-trials"
    if _has_verify():
        assert "ostune-nightly: verify exited 0" in result.stdout
        assert query(db, "select count(*) from verifications where status != 'running'")[0][0] >= 1
    else:
        assert "no 'verify' command; skipping verification" in result.stderr
    # the next night: the cap is reached, nothing is run, the exit code says so (8)
    again = subprocess.run([str(SCRIPT), "nightly-test"], env={**env}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 8, again.stdout + again.stderr
    assert query(db, "select count(*) from trials")[0][0] == 5


def test_nightly_script_refuses_to_run_without_a_budget_and_passes_the_lock_code_through(tmp_path):
    import sqlite3
    from datetime import datetime, timezone

    env = _nightly_env(tmp_path, OSTUNE_MAX_TRIALS="")
    result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no budget set" in result.stderr

    (tmp_path / "x").mkdir()
    env = _nightly_env(tmp_path / "x", OSTUNE_MAX_TRIALS="2", OSTUNE_VERIFY_ROUNDS="0")
    first = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    db = tmp_path / "x" / "n.db"
    now = str(datetime.now(timezone.utc).replace(tzinfo=None))
    conn = sqlite3.connect(db)
    conn.execute("insert into host_locks (host_key, run_id, holder_pid, holder_machine, acquired_at, heartbeat_at) "
                 "values ('none', null, 4242, 'elsewhere', ?, ?)", (now, now))
    conn.commit()
    conn.close()
    held = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=60)
    assert held.returncode == 6, held.stdout + held.stderr
    assert "already being tuned by pid 4242 on elsewhere" in held.stderr
    assert "ostune-nightly: verify" not in held.stdout
    assert query(db, "select count(*) from trials")[0][0] == 2


# -- the script refuses bad settings before running anything ---------------------------------------
def test_nightly_script_refuses_a_missing_settings_file_unless_told_to_use_the_environment(tmp_path):
    """A misspelt instance name (ostune-nightly@redis-nighlty) must not start a new tuning job with
    the default budget: without its env file the script names the file and runs nothing."""
    env = _nightly_env(tmp_path)
    # A script that wrongly went ahead would run the default experiment (Redis on this machine,
    # the system database): only a stub that tunes nothing is within its reach.
    stub = tmp_path / "stub-ostune"
    stub.write_text(f"#!/bin/sh\necho \"$*\" >>{tmp_path}/calls\nexit 64\n")
    stub.chmod(0o755)
    refused = {**env, "OSTUNE": str(stub), "OSTUNE_DB": f"sqlite:///{tmp_path}/never.db",
               "OSTUNE_STATE_DIR": str(tmp_path / "never")}
    missing = f"{env['OSTUNE_CONF_DIR']}/nightly-tset.env"
    result = subprocess.run([str(SCRIPT), "nightly-tset"], env=refused, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and missing in result.stderr, result.stderr
    assert "OSTUNE_NO_CONF=1" in result.stderr and result.stdout == ""
    assert _calls(tmp_path) == [] and not (tmp_path / "never").exists()

    bad = subprocess.run([str(SCRIPT), "nightly-tset"], env={**refused, "OSTUNE_NO_CONF": "yes"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "OSTUNE_NO_CONF=yes" in bad.stderr and "use 1" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and _calls(tmp_path) == []

    # opting out: every setting from the environment, no env file
    space = tmp_path / "space.yaml"
    settings = {
        "OSTUNE_NO_CONF": "1", "OSTUNE_DB": f"sqlite:///{tmp_path}/env.db", "OSTUNE_UNTIL": "",
        "OSTUNE_RUN_ARGS": f"--app command --host none --space {space} --command {tmp_path}/bench.sh "
                           "--repetitions 1 --seed 3",
        "OSTUNE_MAX_TRIALS": "2", "OSTUNE_VERIFY_ROUNDS": "0", "OSTUNE_STATE_DIR": str(tmp_path / "state"),
    }
    ok = subprocess.run([str(SCRIPT), "env-only"], env={**env, **settings}, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode in (0, 7), ok.stdout + ok.stderr
    assert json.loads((tmp_path / "state" / "env-only.last.json").read_text())["total_trials"] == 2
    assert query(tmp_path / "env.db", "select count(*) from trials")[0][0] == 2


def test_nightly_script_refuses_bad_verify_rounds_and_an_unusable_state_dir_before_tuning(tmp_path):
    """A typo in OSTUNE_VERIFY_ROUNDS used to cost a whole night's tuning before verify rejected it;
    an unusable OSTUNE_STATE_DIR sent the run's summary nowhere."""
    from tuner.verify import MAX_ROUNDS, MIN_ROUNDS

    bad = (str(MIN_ROUNDS - 1), str(MAX_ROUNDS + 1), "six", "-1", "3.5", "99999999999999999999999")
    for i, rounds in enumerate(bad):
        case = tmp_path / f"r{i}"
        case.mkdir()
        env = _nightly_env(case, OSTUNE_VERIFY_ROUNDS=rounds)
        result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, (rounds, result.stdout + result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"OSTUNE_VERIFY_ROUNDS={rounds}:" in result.stderr, result.stderr
        assert f"0 (no verification) or a whole number of rounds from {MIN_ROUNDS} to {MAX_ROUNDS}" in result.stderr
        assert _calls(case) == [] and not (case / "n.db").exists(), rounds

    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("")
    case = tmp_path / "s"
    case.mkdir()
    env = _nightly_env(case, OSTUNE_STATE_DIR=str(not_a_dir))
    result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"OSTUNE_STATE_DIR={not_a_dir} is not a directory" in result.stderr
    assert result.stdout == "" and _calls(case) == []

    if os.geteuid() != 0:  # mode 555 stops no root: only a read-only mount would
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        case = tmp_path / "w"
        case.mkdir()
        env = _nightly_env(case, OSTUNE_STATE_DIR=str(read_only))
        result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and f"OSTUNE_STATE_DIR={read_only} is not writable" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and _calls(case) == []


def test_nightly_script_says_summary_only_when_the_run_wrote_one(tmp_path):
    """A run that ends before writing its summary (bad input here; lock held or interrupted alike)
    must not point at NAME.last.json, which is then the previous night's or absent."""
    env = _nightly_env(tmp_path, OSTUNE_MAX_TRIALS="0x5")  # ostune run rejects it: exit 2, no summary
    summary = tmp_path / "state" / "nightly-test.last.json"
    summary.parent.mkdir()
    summary.write_text('{"night": "previous"}\n')
    result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(_calls(tmp_path)) == 1  # the run did start: this is the run's own refusal
    assert "summary in" not in result.stdout, result.stdout
    assert f"run exited 2; it wrote no summary (the previous one, {summary}, is kept)" in result.stdout
    assert summary.read_text() == '{"night": "previous"}\n'
    assert sorted(p.name for p in summary.parent.iterdir()) == [summary.name]  # no .tmp left behind

    summary.unlink()
    result = subprocess.run([str(SCRIPT), "nightly-test"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "summary in" not in result.stdout, result.stdout
    assert re.search(r"run exited 2; it wrote no summary$", result.stdout, re.M), result.stdout
    assert list(summary.parent.iterdir()) == []


# -- stopping the job ------------------------------------------------------------------------------
def _process_group(pgid: int) -> dict[int, tuple[int, str]]:
    """Live (not zombie) processes of a process group: pid -> (ppid, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


SLOW_BENCH = """#!{python}
# The quadratic objective, held for a long time while PHASE ('run' or 'verify') measures, so that
# the test's signal arrives in the middle of a measurement.
import json, math, os, time

pid = os.getppid()
for _ in range(3):  # the workload's `sh -c` may or may not exec the command
    argv = open(f"/proc/{{pid}}/cmdline", "rb").read().split(b"\\0")
    if b"{phase}" in argv:
        open("{marker}", "a").close()
        time.sleep(60)
        break
    pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
p = json.load(open(os.environ["OSTUNE_PARAMS_FILE"]))
print(json.dumps({{"p99_ms": 1 + (p["x.a"] - 3) ** 2 + abs(math.log10(p["x.b"]) - 1) + (p["x.c"] != "q")}}))
"""


@pytest.mark.parametrize("phase", ["run", "verify"])
def test_stopping_the_nightly_script_lets_ostune_finish_its_cleanup(tmp_path, phase):
    """systemctl stop (KillMode=mixed) and TimeoutStartSec send SIGTERM to the script alone and kill
    whatever is left once it exits: the script must pass the signal on to the running `ostune run`
    or `ostune verify`, wait until it has ended its run, exit 130 and not start verification.

    The black-box experiment runs on the `none` host, so this test never touches the kernel; that
    ostune restores every kernel value on SIGTERM is covered by ostune's own SIGTERM tests. Here
    the evidence that ostune finished its cleanup is the database (run ended, measurement aborted)
    and that no ostune process outlives the script."""
    marker = tmp_path / "measuring"
    bench = tmp_path / "slow-bench"
    bench.write_text(SLOW_BENCH.format(python=sys.executable, phase=phase, marker=marker))
    bench.chmod(0o755)
    # the run must improve on the baseline (exit 0) for verify to start: a few fast trials
    env = _nightly_env(tmp_path, OSTUNE_MAX_TRIALS="1" if phase == "run" else "6",
                       OSTUNE_RUN_ARGS=f'"--app command --host none --space {tmp_path}/space.yaml --command {bench} '
                                       f'--repetitions 2 --seed 3"')
    real = REPO / ".venv" / "bin" / "ostune"
    if real.exists():
        env["OSTUNE"] = str(real)
    script = subprocess.Popen([str(SCRIPT), "nightly-test"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert script.poll() is None, script.communicate()
            assert time.monotonic() < deadline, "the slow measurement never started"
            time.sleep(0.1)
        time.sleep(1)
        children = [pid for pid, (ppid, _) in _process_group(script.pid).items() if ppid == script.pid]
        assert len(children) == 1, _process_group(script.pid)
        ostune_pid = children[0]

        os.kill(script.pid, signal.SIGTERM)  # the script only, as systemd's KillMode=mixed does
        try:
            out, err = script.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the script did not exit within 120 s of SIGTERM")
        assert script.returncode == 130, out + err
        assert not Path(f"/proc/{ostune_pid}").exists(), "ostune outlived the script"
        # the benchmark command itself may outlive them: ostune kills the workload's `sh -c`, not
        # its children (the finally below ends it)
        left = {pid: cmd for pid, (_, cmd) in _process_group(script.pid).items() if str(bench) not in cmd}
        assert left == {}, f"processes outlived the script: {left}"
        db = tmp_path / "n.db"
        assert query(db, "select count(*) from runs where status = 'running'")[0][0] == 0
        if phase == "run":
            assert query(db, "select status from trials order by number desc limit 1")[0][0] == "aborted"
            assert "run exited 130; it wrote no summary" in out
            assert "stopped by SIGTERM; not verifying" in out and "ostune-nightly: verify" not in out
        else:
            assert "run exited 0; summary in" in out, out + err
            assert query(db, "select count(*) from verifications where status = 'running'")[0][0] == 0
            assert query(db, "select count(*) from verifications")[0][0] == 1
            assert "verify exited 130" in out
    finally:
        try:
            os.killpg(script.pid, signal.SIGKILL)  # whatever a failing script left behind
        except ProcessLookupError:
            pass
        script.wait()
