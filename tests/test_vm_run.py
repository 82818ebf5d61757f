"""`ostune run --host qemu`: the whole loop against a guest it boots with each trial's kernel
command line. Under TCG latency is too noisy to rank anything: these tests check plumbing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest_vm import cache_root, get_image, qemu_pids_for
from tests.helpers import query, spawn_ostune, try_query

pytestmark = pytest.mark.vm

# Boot parameters the shipped tuned profiles do not set, so every trial after the baseline is the
# optimizer's; no default given for `mitigations`' alternative means most proposals carry tokens.
SPACE = """
parameters:
  mitigations: {kind: boot, type: categorical, choices: ["auto", "off"], default: auto}
  transparent_hugepage: {kind: boot, type: categorical, choices: [always, madvise, never], default: madvise}
  vm.dirty_expire_centisecs: {kind: sysctl, type: int, range: [500, 6000]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 4096], log: true}
"""


def guest_read(image, port: int, command: str) -> str | None:
    argv = ["ssh", "-p", str(port), "-i", str(image.ssh_key), "-o", f"UserKnownHostsFile={image.known_hosts}",
            "-o", f"HostKeyAlias={image.host_key_alias}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
            "root@127.0.0.1", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return result.stdout if result.returncode == 0 else None


def current_port(run_dir: Path) -> int | None:
    records = sorted(run_dir.glob("qemu-*.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        return None
    try:
        return int(json.loads(records[-1].read_text())["port"])
    except (OSError, ValueError, KeyError):
        return None


def expected_tokens(params: dict) -> set[str]:
    defaults = {"mitigations": "auto", "transparent_hugepage": "madvise"}
    return {f"{k}={params[k]}" for k in defaults if params[k] != defaults[k]}


def test_each_trial_boots_its_own_command_line_and_applies_runtime_values(tmp_path):
    image = get_image("direct")
    run_dir = tmp_path / "run"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "vm.db"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--space", str(space), "--trials", "4",
        "--seed", "2", "--repetitions", "1", "--requests", "300", "--no-warmup", "--db", f"sqlite:///{db}",
        cwd=tmp_path)
    # While each trial runs, look inside the guest the way an operator would: over SSH.
    seen: dict[int, tuple[str, str]] = {}
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        running = try_query(db, "select number from trials where status='running'")
        port = current_port(run_dir)
        if running and port:
            out = guest_read(image, port, "cat /proc/cmdline; sysctl -n vm.dirty_expire_centisecs net.core.somaxconn")
            still = try_query(db, "select number from trials where status='running'")
            if out and still == running:
                seen[running[0][0]] = (out.splitlines()[0], " ".join(out.split("\n")[1:]).split())
        time.sleep(1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err + out
    trials = query(db, "select number, status from trials order by number")
    assert [s for _, s in trials] == ["succeeded"] * 4, trials
    with_tokens = 0
    for number, _ in trials:
        params = dict(query(db, "select param, value from trial_params where trial=?", number))
        cmdline, runtime = seen[number]
        tokens = set(cmdline.split())
        want = expected_tokens(params)
        with_tokens += bool(want)
        assert want <= tokens, (number, want, cmdline)
        for name, default in (("mitigations", "auto"), ("transparent_hugepage", "madvise")):
            if params[name] == default:
                assert not any(t.startswith(f"{name}=") for t in tokens), (number, cmdline)
        if number > 1:  # the baseline leaves the guest's own values
            assert runtime == [str(int(params["vm.dirty_expire_centisecs"])), str(int(params["net.core.somaxconn"]))]
    assert with_tokens >= 1  # at least one trial really rebooted with proposed tokens
    assert query(db, "select count(*) from trials where rebooted") [0][0] >= 1
    assert qemu_pids_for(str(run_dir)) == []


def test_mariadb_in_the_guest_completes_a_trial(tmp_path):
    get_image("direct")
    space = tmp_path / "space.yaml"
    space.write_text("""
parameters:
  vm.dirty_ratio: {kind: sysctl, type: int, range: [5, 40]}
  vm.dirty_background_ratio: {kind: sysctl, type: int, range: [1, 20]}
relations:
  - vm.dirty_background_ratio < vm.dirty_ratio
""")
    db = tmp_path / "m.db"
    run_dir = tmp_path / "run"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--app", "mariadb", "--space", str(space),
        "--trials", "1", "--repetitions", "1", "--set", "time_s=2", "--set", "table_size=1000",
        "--db", f"sqlite:///{db}", cwd=tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err + out
    (status, p99, tps, errors), = query(db, "select status, p99_ms, ops_per_s, errors from trial_results")
    assert status == "succeeded" and p99 > 0 and tps > 0 and errors == 0
    assert qemu_pids_for(str(run_dir)) == []


def test_kill_9_of_a_qemu_run_leaves_no_qemu_and_the_next_command_cleans_up(tmp_path):
    get_image("direct")
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "k.db"
    run_dir = tmp_path / "run"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--space", str(space), "--trials", "3",
        "--repetitions", "1", "--requests", "300", "--db", f"sqlite:///{db}", cwd=tmp_path)
    deadline = time.monotonic() + 600
    while not try_query(db, "select 1 from trials where status='running'") and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    assert qemu_pids_for(str(run_dir))  # the guest is up and serving the trial
    proc.kill()
    proc.wait()
    # qemu dies with its owner (PR_SET_PDEATHSIG), without waiting for anyone to clean up
    deadline = time.monotonic() + 15
    while qemu_pids_for(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qemu_pids_for(str(run_dir)) == []
    workdir = Path(json.loads(next(run_dir.glob("qemu-*.json")).read_text())["workdir"])
    assert (workdir / "overlay.qcow2").exists()  # the dead owner could not remove its guest's disk
    from tests.helpers import ostune
    listed = ostune("experiments", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert not workdir.exists() and f"removed {workdir}" in listed.stderr
    assert query(db, "select status from trials") == [("aborted",)]
    # the guest's journalled values died with its throwaway overlay: nothing is left pending
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]


def test_a_trial_whose_kernel_does_not_come_up_fails_with_the_console_and_the_next_succeeds(tmp_path):
    get_image("direct")
    space = tmp_path / "space.yaml"
    space.write_text("""
parameters:
  init: {kind: boot, type: categorical, choices: ["/sbin/init", "/bin/false"], default: /sbin/init}
  mitigations: {kind: boot, type: categorical, choices: ["auto", "off"], default: auto}
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}
""")
    db = tmp_path / "f.db"
    run_dir = tmp_path / "run"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--space", str(space), "--trials", "3",
        "--try", "init=/bin/false", "--try", "mitigations=off,vm.swappiness=7",
        "--repetitions", "1", "--requests", "300", "--no-warmup", "--db", f"sqlite:///{db}", cwd=tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err + out
    rows = query(db, "select number, source, status, error from trials order by number")
    assert [(n, src, st) for n, src, st, _ in rows] == [
        (1, "baseline", "succeeded"), (2, "try", "failed"), (3, "try", "succeeded")]
    error = rows[1][3]
    # the stored error carries the serial console's last lines: the kernel saw init fail
    assert "init" in error and len(error.splitlines()) > 3, error
    assert qemu_pids_for(str(run_dir)) == []


def test_a_configuration_that_crashes_or_hangs_the_guest_fails_and_the_run_and_verify_go_on_in_a_fresh_guest(
        tmp_path):
    """A kernel that panics (qemu exits: panic=1, -no-reboot) or panics and stays hung (panic=0:
    qemu runs on, the guest never answers) under a configuration. The guest is throwaway, so the
    trial is that configuration's failure, with the console's panic, and the next trial runs in a
    freshly booted guest; a verification round goes on the same way. Here the command workload
    crashes the kernel (sysrq) under three swappiness values (10 is the shipped profiles'),
    standing in for a knob that does."""
    get_image("direct")
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}\n"
                     "  mitigations: {kind: boot, type: categorical, choices: [auto, 'off'], default: auto}\n")
    command = ('s=$(cat /proc/sys/vm/swappiness); '
               'if [ "$s" = 44 ]; then echo 0 > /proc/sys/kernel/panic; fi; '
               'case "$s" in 10|33|44) echo c > /proc/sysrq-trigger;; esac; '
               'echo \'{"p99_ms": 1.0}\'')
    db = tmp_path / "c.db"
    run_dir = tmp_path / "run"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--space", str(space), "--trials", "4",
        "--app", "command", "--command", command, "--set", "timeout_s=20", "--no-profiles",
        "--try", "vm.swappiness=33", "--try", "vm.swappiness=44", "--try", "vm.swappiness=55",
        "--repetitions", "1", "--no-warmup", "--experiment", "crash", "--db", f"sqlite:///{db}", cwd=tmp_path)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err + out
    rows = query(db, "select number, source, status, error from trials order by number")
    assert [(n, src, st) for n, src, st, _ in rows] == [
        (1, "baseline", "succeeded"), (2, "try", "failed"), (3, "try", "failed"), (4, "try", "succeeded")], rows
    for _, _, _, error in rows[1:3]:
        # the stored error carries the guest's console: its kernel panicked
        assert "Kernel panic" in error and "sysrq" in error.lower(), error
    assert out.count("booted a fresh guest") == 2, out
    params = query(db, "select trial, value from trial_params where param='vm.swappiness' order by trial")
    assert [int(float(v)) for _, v in params[1:]] == [33, 44, 55]
    # the trials after a crash ran in a guest booted for them
    assert query(db, "select number from trials where rebooted order by number") == [(3,), (4,)]
    assert qemu_pids_for(str(run_dir)) == []

    verify = spawn_ostune("verify", "crash", "--rounds", "3", "--repetitions", "1", "--db", f"sqlite:///{db}",
                          cwd=tmp_path)
    out, err = verify.communicate(timeout=900)
    assert verify.returncode == 0, err + out
    assert out.count("booted a fresh guest") == 3, out  # the profiles' swappiness, once a round
    ((samples,),) = query(db, "select count(*) from verification_samples")
    assert samples == 3  # the baseline, measured in every round
    assert qemu_pids_for(str(run_dir)) == []
