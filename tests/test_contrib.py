"""contrib/: the systemd units pass `systemd-analyze verify`, the nightly script runs a budgeted
job and verifies its best configuration, and the cron line calls the same script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

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


def _nightly_env(tmp_path, **overrides):
    space = tmp_path / "space.yaml"
    space.write_text(QUADRATIC_SPACE)
    bench = tmp_path / "bench.sh"
    bench.write_text(f"#!/bin/sh\n{QUADRATIC_COMMAND}\n")
    bench.chmod(0o755)
    wrapper = tmp_path / "ostune"
    wrapper.write_text(f"#!/bin/sh\ncd {REPO} && exec {sys.executable} -m tuner.cli \"$@\"\n")
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
    return {**os.environ, "OSTUNE": str(wrapper), "OSTUNE_CONF_DIR": str(conf)}


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
