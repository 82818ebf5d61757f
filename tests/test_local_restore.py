"""Real kernel writes on this machine (root): everything ostune changes is journalled first and
put back on success, SIGTERM, Ctrl-C and — at the next command — after kill -9."""

import os
import signal

import pytest

from spaces.loader import parse_space
from tests.helpers import ostune, query, snapshot, spawn_ostune, try_query, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes real sysctls: needs root")

# Harmless knobs on a test machine; ranges exclude the usual defaults so every optimizer trial
# really changes the kernel.
SPACE = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [1, 9]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [300, 900]}
  vm.stat_interval: {kind: sysctl, type: int, range: [2, 5]}
  kernel.no_such_thing_ostune: {kind: sysctl, type: int, range: [0, 1], optional: true}
"""



def command(delay: float) -> str:
    return f"sleep {delay}; echo '{{\"p99_ms\": 1.0}}'"


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture
def original(space_file):
    space = parse_space(space_file.read_text())
    before = snapshot(space)
    yield space, before
    # Belt and braces: never leave this machine changed even if a test fails.
    from targets.hosts.local import LocalHost
    for name, text in before.items():
        LocalHost().write_text("/proc/sys/" + name.replace(".", "/"), text)


def run_args(space_file, db, trials, delay=0.0, *extra):
    return ("run", "--app", "command", "--host", "local", "--space", str(space_file), "--command",
            command(delay), "--trials", str(trials), "--experiment", "local", "--db", f"sqlite:///{db}",
            "--seed", "1", "--repetitions", "1", "--no-warmup", *extra)


def test_values_change_during_trials_and_are_restored_after(tmp_path, space_file, original):
    space, before = original
    db = tmp_path / "ok.db"
    result = ostune(*run_args(space_file, db, 4))
    assert result.returncode == 0, result.stderr
    assert "skipping kernel.no_such_thing_ostune" in result.stdout
    assert snapshot(space) == before
    # the optimizer's trials really applied values different from the originals
    applied = query(db, "select param, value from trial_params where trial > 1 and param='vm.swappiness'")
    assert applied and all(1 <= v <= 9 for _, v in applied)
    assert int(before["vm.swappiness"]) not in [v for _, v in applied] or len(applied) > 1
    journal = query(db, "select name, original, restored_at is not null from restore_journal")
    assert sorted((n, o) for n, o, _ in journal) == sorted(before.items())
    assert all(done for *_, done in journal)


def test_kernel_rejecting_a_value_fails_the_trial_not_the_run(tmp_path, original):
    space_file = tmp_path / "s.yaml"
    # vm.swappiness accepts 0..200; 201..250 are refused with EINVAL by the kernel.
    space_file.write_text("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [150, 250]}\n")
    db = tmp_path / "rej.db"
    space, before = original
    result = ostune(*run_args(space_file, db, 6))
    assert result.returncode == 0, result.stderr
    rows = query(db, "select t.status, t.error, p.value from trial_results t join trial_params p "
                     "on p.trial=t.trial where p.param='vm.swappiness' and t.trial > 1")
    for status, error, value in rows:
        if value > 200:
            assert status == "failed" and "kernel refused" in error
        else:
            assert status == "succeeded"
    assert snapshot(space) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_restore_and_abort_the_trial(tmp_path, space_file, original, sig):
    space, before = original
    db = tmp_path / "sig.db"
    proc = spawn_ostune(*run_args(space_file, db, 5, 3.0))
    wait_for(lambda: try_query(db, "select 1 from trials where number=2 and status='running'"))
    wait_for(lambda: snapshot(space) != before, timeout_s=10)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert snapshot(space) == before
    assert query(db, "select status from trials where number=2") == [("aborted",)]
    assert query(db, "select status from runs") == [("interrupted",)]


def _killed_in_trial_2(space, before, space_file, db, trials, delay):  # type: ignore[no-untyped-def]
    """A run killed with SIGKILL while trial 2 has the kernel changed; its (dead) process."""
    proc = spawn_ostune(*run_args(space_file, db, trials, delay))
    wait_for(lambda: try_query(db, "select 1 from trials where number=2 and status='running'"))
    wait_for(lambda: snapshot(space) != before, timeout_s=10)
    proc.kill()
    proc.wait()
    return proc


def test_kill_9_is_repaired_by_the_next_command_and_the_run_resumes(tmp_path, space_file, original):
    space, before = original
    db = tmp_path / "k9.db"
    _killed_in_trial_2(space, before, space_file, db, 5, 3.0)
    changed = snapshot(space)
    assert changed != before  # the dead process left the kernel changed
    listed = ostune("experiments", "--db", f"sqlite:///{db}")
    assert listed.returncode == 0, listed.stderr
    assert "recovered from an interrupted run: restored vm.swappiness" in listed.stderr
    assert "marked 1 interrupted trial(s) aborted" in listed.stderr
    assert snapshot(space) == before
    assert query(db, "select number, status from trials order by number") == [(1, "succeeded"), (2, "aborted")]
    resumed = ostune(*run_args(space_file, db, 2, 3.0))  # the experiment's own command: another is refused
    assert resumed.returncode == 0, resumed.stderr
    assert [n for (n,) in query(db, "select number from trials order by number")] == [1, 2, 3, 4]
    assert snapshot(space) == before


def _swappiness_command(delay: float) -> str:
    # lower swappiness, lower p99: the run's recommendation differs from the host's own values
    return (f"sleep {delay}; python3 -c \"import json,os; p=json.load(open(os.environ['OSTUNE_PARAMS_FILE'])); "
            "print(json.dumps({'p99_ms': 1.0 + p['vm.swappiness']}))\"")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_verification_cut_short_restores_the_host_and_is_marked_aborted(tmp_path, space_file, original, sig):
    space, before = original
    db = tmp_path / "verify.db"
    tuned = ostune("run", "--app", "command", "--host", "local", "--space", str(space_file), "--command",
                   _swappiness_command(1.0), "--trials", "6", "--experiment", "local", "--db", f"sqlite:///{db}",
                   "--seed", "1", "--repetitions", "1", "--no-warmup", "--no-profiles")
    assert tuned.returncode == 0, tuned.stderr
    assert snapshot(space) == before
    # verify runs the experiment's stored command: each measurement takes a second
    proc = spawn_ostune("verify", "local", "--db", f"sqlite:///{db}", "--rounds", "3", "--repetitions", "1",
                        "--no-profiles", "--seed", "1")
    wait_for(lambda: try_query(db, "select 1 from verifications where status='running'"))
    wait_for(lambda: snapshot(space) != before, timeout_s=20)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert snapshot(space) == before
    else:
        assert snapshot(space) != before  # the dead process left the kernel changed
        listed = ostune("experiments", "--db", f"sqlite:///{db}")
        assert listed.returncode == 0 and "recovered from an interrupted run" in listed.stderr, listed.stderr
        assert snapshot(space) == before
    # no verification reads as still in progress, and none counts as finished
    assert query(db, "select status from verifications") == [("aborted",)]
    assert query(db, "select command, status from runs where command = 'verify'") == \
        [("verify", "interrupted" if sig == signal.SIGTERM else "crashed")]


def test_a_tried_value_of_a_knob_this_host_lacks_is_named_not_silently_dropped(tmp_path, space_file, original):
    space, before = original
    db = tmp_path / "try.db"
    result = ostune(*run_args(space_file, db, 2), "--try", "kernel.no_such_thing_ostune=1,vm.swappiness=5")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "--try 1: kernel.no_such_thing_ostune=1 cannot be set on this host" in out, out
    # the rest of the tried configuration is measured as given
    assert query(db, "select value_num from trial_param_values v join trials t on t.id = v.trial_id "
                     "where t.source = 'try' and v.name = 'vm.swappiness'") == [(5.0,)]
    assert snapshot(space) == before


def test_one_process_at_a_time_changes_this_kernel_whatever_its_database(tmp_path, space_file, original):
    """Two runs from two directories use two ./ostune.db files: the host lock in one database
    cannot see the other. The kernel lock (an flock in /run/lock) does, for runs and verify."""
    space, before = original
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    first = spawn_ostune(*run_args(space_file, db_a, 30, 1.0))
    try:
        wait_for(lambda: try_query(db_a, "select 1 from trials where number=2 and status='running'"))
        second = ostune(*run_args(space_file, db_b, 1))
        assert second.returncode == 6, second.stderr
        error = second.stderr.strip()
        assert error.count("\n") == 0 and f"already being tuned by pid {first.pid} (ostune run, database sqlite:///{db_a}" in error
        assert not db_b.exists()  # refused before anything was stored, let alone written
        # verify changes the host as a run does: not under a live run either, same database or not
        verified = ostune("verify", "local", "--db", f"sqlite:///{db_a}", "--rounds", "3")
        assert verified.returncode == 6 and f"pid {first.pid}" in verified.stderr, verified.stderr
        # the `none` host changes no kernel value: it does not wait for the lock
        unkernelled = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                             command(0), "--trials", "1", "--db", f"sqlite:///{db_b}")
        assert unkernelled.returncode == 0, unkernelled.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert snapshot(space) == before
    assert ostune(*run_args(space_file, db_b, 1)).returncode == 0  # free again once the holder is done


def test_a_holder_killed_with_the_lock_is_repaired_by_the_next_holder_from_its_own_database(tmp_path, space_file,
                                                                                              original):
    from storage.store import ResultStore
    from tuner.recovery import recover

    space, before = original
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    proc = _killed_in_trial_2(space, before, space_file, db_a, 30, 1.0)
    left = snapshot(space)
    assert left != before  # left changed; a.db's journal knows the originals, b.db does not
    # A command on a.db while another process holds the kernel lock leaves the repair for later:
    # writing under a live run would corrupt its measurements and be undone by its own restore
    store = ResultStore.open(f"sqlite:///{db_a}")
    try:
        report = recover(store, kernel_holder=lambda: "pid 4242 (ostune run, database elsewhere)")
    finally:
        store.close()
    assert list(report.deferred.values()) == ["pid 4242 (ostune run, database elsewhere)"] and not report.restored
    assert snapshot(space) == left and query(db_a, "select status from runs") == [("running",)]
    # The next holder of the lock, whatever its database, repairs from a.db's journal before it
    # reads the host: its baseline is the machine's own values, not the dead run's trial
    result = ostune(*run_args(space_file, db_b, 1))
    assert result.returncode == 0, result.stderr
    assert f"recovered what pid {proc.pid} (ostune run, database sqlite:///{db_a}" in result.stdout
    baseline = dict(query(db_b, "select param, value from trial_params where trial=1"))
    assert {name: str(baseline[name]) for name in before if name in baseline} == \
        {name: text for name, text in before.items() if name in baseline}
    assert snapshot(space) == before
    assert query(db_a, "select status from runs") == [("crashed",)]


def test_a_knob_root_can_read_but_not_write_is_skipped_not_failing_every_trial(tmp_path, original):
    """kernel.random.entropy_avail is read-only (mode 0444) on every kernel; user.* sysctls are
    like it on our Firecracker VMs. The baseline writes every knob's own value back, so such a
    knob used to fail every trial, the baseline included, and then fail its "restore"."""
    space, before = original
    space_file = tmp_path / "ro.yaml"
    space_file.write_text(SPACE + "  kernel.random.entropy_avail: {kind: sysctl, type: int, range: [0, 1000000]}\n")
    db = tmp_path / "ro.db"
    result = ostune("run", "--app", "command", "--host", "local", "--space", str(space_file), "--command", command(0),
                    "--trials", "3", "--db", f"sqlite:///{db}", "--repetitions", "1", "--no-warmup", "--no-profiles")
    assert result.returncode == 0, result.stderr
    assert "skipping kernel.random.entropy_avail: cannot write back the value it holds" in result.stdout
    assert query(db, "select status from trials") == [("succeeded",)] * 3
    assert "restore failed" not in result.stdout + result.stderr
    assert snapshot(space) == before
    strict_space = tmp_path / "strict.yaml"  # only knobs that exist: --strict refuses the unwritable one
    strict_space.write_text("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [1, 9]}\n"
                            "  kernel.random.entropy_avail: {kind: sysctl, type: int, range: [0, 1000000]}\n")
    strict = ostune("run", "--app", "command", "--host", "local", "--space", str(strict_space), "--command", command(0),
                    "--trials", "1", "--db", f"sqlite:///{tmp_path}/strict.db", "--strict")
    assert strict.returncode == 4 and "kernel.random.entropy_avail (sysctl): cannot write back" in strict.stderr
