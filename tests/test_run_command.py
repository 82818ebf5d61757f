"""`ostune run` end to end with the command workload on the `none` host: storage, views,
resume, and bad input handling — through the real CLI in a subprocess."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, dump_db, last_json_line, ostune, query


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(QUADRATIC_SPACE)
    return path


def run_quadratic(space_file, db, trials, *extra):
    return ostune("run", "--app", "command", "--host", "none", "--space", str(space_file),
                  "--command", QUADRATIC_COMMAND, "--trials", str(trials), "--experiment", "quad",
                  "--db", f"sqlite:///{db}", "--seed", "7", "--repetitions", "2", *extra)


def test_a_resumed_command_experiment_reuses_its_command_and_seed_and_refuses_others(tmp_path, space_file):
    """The command is the command workload's whole set-up: left out on resume it is the stored
    one; another one (a different script under the same name) was run and stored silently."""
    db = tmp_path / "c.db"
    assert run_quadratic(space_file, db, 3).returncode == 0
    resumed = ostune("run", "--app", "command", "--host", "none", "--experiment", "quad", "--trials", "1",
                     "--db", f"sqlite:///{db}", "--repetitions", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert query(db, "select count(*) from trials where status = 'succeeded'") == [(4,)]
    for extra, message in (
            (("--command", "python3 other.py"), "error: --command 'python3 other.py': experiment 'quad' measures "),
            (("--command", QUADRATIC_COMMAND, "--seed", "8"),
             "error: --seed 8: experiment 'quad' keeps the seed it was created with (7); leave --seed out")):
        refused = ostune("run", "--app", "command", "--host", "none", "--experiment", "quad", "--trials", "1",
                         "--db", f"sqlite:///{db}", *extra)
        assert refused.returncode == 2 and refused.stderr.startswith(message), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert query(db, "select count(*) from trials") == [(4,)]
    # a new experiment still needs its command
    new = ostune("run", "--app", "command", "--host", "none", "--experiment", "other", "--space", str(space_file),
                 "--db", f"sqlite:///{db}")
    assert new.returncode == 2 and "--app command needs --command" in new.stderr, new.stderr


def test_a_resumed_experiment_is_measured_on_its_own_host_and_refuses_another(tmp_path, space_file):
    """Left out, --host was `local`: an experiment tuned elsewhere (an SSH host, the `none` black
    box) went on on this machine and stored those trials with the others."""
    db = tmp_path / "h.db"
    assert run_quadratic(space_file, db, 2).returncode == 0
    before = dump_db(db)
    refused = ostune("run", "--app", "command", "--host", "local", "--experiment", "quad", "--trials", "1",
                     "--db", f"sqlite:///{db}")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip() == ("error: --host local: experiment 'quad' was tuned on none; another machine "
                                      "makes its trials incomparable (use a new --experiment name, or leave --host out)")
    assert dump_db(db) == before
    resumed = ostune("run", "--app", "command", "--experiment", "quad", "--trials", "1", "--db", f"sqlite:///{db}",
                     "--repetitions", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert query(db, "select distinct host_key from runs") == [("none",)]
    assert query(db, "select count(*) from trials where status = 'succeeded'") == [(3,)]


def test_this_machine_under_a_new_hostname_resumes_its_experiment_another_machine_does_not(tmp_path):
    """A local host's key carries the hostname; the machine id of the experiment's runs tells a
    renamed machine (resumes) from a copied database on another one (refused). The rename is
    simulated in the database: renaming the machine running the suite would disturb everything."""
    import sqlite3

    space = tmp_path / "s.yaml"
    space.write_text("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [10, 60]}\n")
    db = tmp_path / "l.db"
    command = "echo '{\"p99_ms\": 1.0}'"
    first = ostune("run", "--app", "command", "--host", "local", "--space", str(space), "--command", command,
                   "--trials", "1", "--no-profiles", "--experiment", "here", "--db", f"sqlite:///{db}")
    assert first.returncode == 0, first.stderr
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("update experiments set target_json = replace(target_json, ?, '\"local:old-name\"')",
                     (json.dumps(query(db, "select host_key from runs")[0][0]),))
        conn.execute("update runs set host_key = 'local:old-name'")
    conn.close()
    renamed = ostune("run", "--app", "command", "--experiment", "here", "--trials", "1", "--db", f"sqlite:///{db}")
    assert renamed.returncode == 0, renamed.stderr
    other_machine = "0123456789abcdef0123456789abcdef"
    this_machine = Path("/etc/machine-id").read_text().strip()
    this_key = query(db, "select host_key from runs order by id desc")[0][0]
    assert this_key.startswith("local:") and this_key != "local:old-name"
    conn = sqlite3.connect(db)
    with conn:  # the database was copied from another machine
        conn.execute("update runs set machine_id = ?", (other_machine,))
    conn.close()
    elsewhere = ostune("run", "--app", "command", "--experiment", "here", "--trials", "1", "--db", f"sqlite:///{db}")
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert "--host local: experiment 'here' was tuned on local:old-name (machine id 0123456789ab…" in elsewhere.stderr
    # a verify there from this machine does not make this machine the experiment's
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("update runs set command = 'verify', machine_id = ? where id = (select max(id) from runs)",
                     (this_machine,))
    conn.close()
    still = ostune("run", "--app", "command", "--experiment", "here", "--trials", "1", "--db", f"sqlite:///{db}")
    assert still.returncode == 2 and "was tuned on local:old-name" in still.stderr, still.stderr
    # nor does the same hostname: a clone of that machine is another machine
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("update runs set host_key = ?, machine_id = ?", (this_key, other_machine))
        conn.execute("update experiments set target_json = replace(target_json, '\"local:old-name\"', ?)",
                     (json.dumps(this_key),))
    conn.close()
    clone = ostune("run", "--app", "command", "--experiment", "here", "--trials", "1", "--db", f"sqlite:///{db}")
    assert clone.returncode == 2, clone.stderr
    assert f"was tuned on {this_key} (machine id 0123456789ab…" in clone.stderr
    assert query(db, "select count(*) from trials") == [(2,)]


def test_resume_continues_numbering_and_the_model_sees_all_earlier_trials(tmp_path, space_file):
    db = tmp_path / "r.db"
    first = run_quadratic(space_file, db, 5)
    assert first.returncode == 0, first.stderr
    second = run_quadratic(space_file, db, 5)
    assert second.returncode == 0, second.stderr
    rows = query(db, "select trial, status, source from trial_results where experiment='quad' order by trial")
    assert [r[0] for r in rows] == list(range(1, 11))
    assert all(r[1] == "succeeded" for r in rows)
    assert [r[2] for r in rows].count("baseline") == 1
    # Each proposal was made by a model rebuilt from every finished trial before it,
    # including the ones stored by the first process.
    told = query(db, "select number, json_extract(proposal_json, '$.observations') from trials "
                     "where source in ('optimizer', 'rerun') order by number")
    assert told == [(n, n - 1) for n in range(2, 11)]
    assert query(db, "select count(*) from experiments") == [(1,)]


def test_views_give_one_row_per_trial_with_metrics_and_long_forms(tmp_path, space_file):
    db = tmp_path / "v.db"
    assert run_quadratic(space_file, db, 3).returncode == 0
    rows = query(db, "select experiment, trial, status, objective, p99_ms, ops_per_s, p50_ms from trial_results")
    assert len(rows) == 3
    for experiment, _trial, status, objective, p99, ops, p50 in rows:
        assert (experiment, status) == ("quad", "succeeded")
        assert objective == p99 and ops == 1000.0 and p50 is None
    # baseline is the space defaults on the `none` host: 1 + 4 + 1 + 1
    assert rows[0][3] == pytest.approx(7.0)
    long_metrics = query(db, "select metric, value from trial_metrics where trial=1 and metric='p99_ms'")
    assert long_metrics == [("p99_ms", pytest.approx(7.0))]
    params = dict(query(db, "select param, value from trial_params where trial=1"))
    assert params == {"x.a": 5, "x.b": 1, "x.c": "p"}
    assert type(params["x.a"]) is int  # a whole number as written, not the float column's 5.0
    reps = query(db, "select repetition, value from trial_repetitions where trial=1 and metric='p99_ms'")
    assert [r[0] for r in reps] == [1, 2]
    assert query(db, "pragma journal_mode") == [("wal",)]


def test_best_json_reports_the_lowest_trial_with_typed_params(tmp_path, space_file):
    db = tmp_path / "b.db"
    assert run_quadratic(space_file, db, 6).returncode == 0
    result = ostune("best", "quad", "--db", f"sqlite:///{db}", "--json")
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)
    # The recommendation is a configuration (its first trial and every re-measurement of it), with
    # the median of its measured objectives; not simply the lowest noisy trial.
    rows = query(db, "select trial, objective from trial_results where trial in (%s)" % ",".join(map(str, best["trials"])))
    assert best["trial"] == min(best["trials"]) and len(rows) == best["measurements"] >= 1
    assert best["objective"] == pytest.approx(sorted(r[1] for r in rows)[(len(rows) - 1) // 2 : len(rows) // 2 + 1][0]) or \
        best["objective"] == pytest.approx(sum(sorted(r[1] for r in rows)[(len(rows) - 1) // 2 : len(rows) // 2 + 1]) / 2)
    assert isinstance(best["params"]["x.a"], int) and best["verified"] is False
    text = ostune("best", "quad", "--db", f"sqlite:///{db}")
    assert f"x.a = {best['params']['x.a']}" in text.stdout


def test_json_summary_matches_the_database(tmp_path, space_file):
    db = tmp_path / "j.db"
    result = run_quadratic(space_file, db, 3, "--json")
    assert result.returncode == 0, result.stderr
    summary = last_json_line(result.stdout)
    best = query(db, "select trial, objective from trial_results order by objective limit 1")[0]
    assert (summary["best"]["trial"], summary["best"]["objective"]) == best
    assert summary["trials_run"] == 3 == summary["total_trials"]
    # parameter values in their types everywhere in it (x.a is an int: 5, not the database's 5.0)
    for doc in (summary["best"], summary["baseline"], summary["recommended"]):
        assert isinstance(doc["params"]["x.a"], int) and not isinstance(doc["params"]["x.a"], bool), doc
    assert summary["baseline"]["params"]["x.a"] == 5


def test_json_output_is_a_document_with_the_error_when_a_command_fails(tmp_path, space_file):
    """A script piping --json into a parser gets one document on stdout whatever happened (before:
    nothing at all on exit 2, 3, 4 or 130), and the error line stays on stderr."""
    db = tmp_path / "j.db"
    refused = run_quadratic(space_file, db, 3, "--json", "--set", "no_such_setting=1")
    assert refused.returncode == 2
    doc = json.loads(refused.stdout)
    assert doc["exit_code"] == 2 and doc["error"].startswith("--set no_such_setting: not a setting of"), doc
    assert refused.stderr.strip() == f"error: {doc['error']}"
    assert run_quadratic(space_file, db, 2).returncode == 0
    missing = ostune("best", "nope", "--db", f"sqlite:///{db}", "--json")
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"].startswith("no experiment named 'nope'")
    # without --json nothing is printed on stdout
    assert ostune("best", "nope", "--db", f"sqlite:///{db}").stdout == ""
    # click's own usage errors too
    usage = ostune("run", "--trials", "zero", "--json", "--db", f"sqlite:///{db}")
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"].startswith("Invalid value for '--trials'")


def test_failed_trials_are_stored_with_their_error_and_the_run_goes_on(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("parameters:\n  x.a: {kind: sysctl, type: int, range: [0, 10], default: 5}\n")
    command = ("python3 -c \"import json,os,sys;p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
               "sys.exit(3) if p['x.a'] > 6 else print(json.dumps({'p99_ms': 1 + p['x.a']}))\"")
    db = tmp_path / "f.db"
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", command,
                    "--trials", "8", "--experiment", "f", "--db", f"sqlite:///{db}", "--seed", "3",
                    "--repetitions", "1")
    assert result.returncode == 0, result.stderr
    rows = query(db, "select status, error from trial_results")
    failed = [r for r in rows if r[0] == "failed"]
    assert failed and all("command exited 3" in r[1] for r in failed)
    assert len(rows) == 8
    # failures in a row are told apart from a broken set-up by measuring the baseline, which works
    assert query(db, "select status from trial_results where source = 'baseline'") == \
        [("succeeded",)] * len(query(db, "select 1 from trial_results where source = 'baseline'"))


# fails while the file named by FAIL_MARKER exists; the optimum x.a = 5 is the space's default,
# which the `none` host reports as the baseline
FLAKY_COMMAND = ("python3 -c \"import json,os,sys;p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
                 "os.path.exists(os.environ['FAIL_MARKER']) and sys.exit('server went away');"
                 "print(json.dumps({'p99_ms': 1 + abs(p['x.a'] - 5) * 0.2}))\"")
FLAKY_SPACE = "parameters:\n  x.a: {kind: sysctl, type: int, range: [0, 10], default: 5}\n"


def test_a_transient_failure_of_the_baseline_does_not_rule_the_baseline_out(tmp_path):
    """A baseline that failed once (the server was down) and then ran is the host's own
    configuration: it stays eligible, and its failure does not teach the model to avoid it. It was
    passed over for a configuration that measured 90% worse."""
    space = tmp_path / "s.yaml"
    space.write_text(FLAKY_SPACE)
    marker = tmp_path / "down"
    marker.touch()
    db = tmp_path / "b.db"
    common = ("run", "--app", "command", "--host", "none", "--experiment", "flaky", "--db", f"sqlite:///{db}",
              "--repetitions", "1")
    first = ostune(*common, "--space", str(space), "--command", FLAKY_COMMAND, "--trials", "1", "--seed", "3",
                   env={"FAIL_MARKER": str(marker)})
    assert first.returncode == 5, first.stderr  # it measured nothing
    assert first.stderr.strip() == "error: every trial of this run failed (1); the errors are stored with them " \
                                   "(`ostune show flaky`)"
    marker.unlink()
    second = ostune(*common, "--trials", "3", env={"FAIL_MARKER": str(marker)})
    assert second.returncode == 0, second.stderr
    assert query(db, "select trial, status, source from trial_results where trial <= 2") == \
        [(1, "failed", "baseline"), (2, "succeeded", "baseline")]
    best = json.loads(ostune("best", "flaky", "--db", f"sqlite:///{db}", "--json").stdout)
    assert best["is_baseline"] is True and best["trial"] == 2, best
    assert "recommended: nothing to change" in second.stdout


def test_a_broken_set_up_stops_the_run_with_exit_5_instead_of_storing_failures(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(FLAKY_SPACE)
    marker = tmp_path / "down"
    marker.touch()
    db = tmp_path / "x.db"
    common = ("run", "--app", "command", "--host", "none", "--space", str(space), "--command", FLAKY_COMMAND,
              "--db", f"sqlite:///{db}", "--repetitions", "1", "--seed", "3")
    # from the start: the baseline fails, and the next two the same way
    result = ostune(*common, "--experiment", "broken", "--max-trials", "10", "--json", env={"FAIL_MARKER": str(marker)})
    assert result.returncode == 5, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 5
    assert result.stderr.strip().splitlines()[-1].startswith(  # the last line: --json sends progress to stderr
        "error: run stopped: the last 3 trials failed the same way, the baseline (the host's own values) among "
        "them (command exited 1: server went away): the set-up looks broken")
    assert query(db, "select count(*) from trials where experiment_id = "
                     "(select id from experiments where name = 'broken')") == [(3,)]

    # mid-run: trials go on failing the same way after the server went away; the baseline, which
    # ran before, is measured to tell, fails too, and the run stops
    marker.unlink()
    started = ostune(*common, "--experiment", "midway", "--trials", "3", env={"FAIL_MARKER": str(marker)})
    assert started.returncode == 0, started.stderr
    marker.touch()
    resumed = ostune("run", "--app", "command", "--experiment", "midway", "--trials", "10", "--db", f"sqlite:///{db}",
                     "--repetitions", "1", env={"FAIL_MARKER": str(marker)})
    assert resumed.returncode == 5, resumed.stderr
    said = " ".join(resumed.stdout.split())
    assert "the last 3 trials failed the same way: measuring the baseline, to tell a broken set-up from bad " \
           "configurations" in said, said
    rows = query(db, "select status, source from trial_results where experiment = 'midway' and trial > 3 order by trial")
    assert rows == [("failed", "optimizer")] * 3 + [("failed", "baseline")], rows
    assert "error: run stopped: the last 4 trials failed the same way" in " ".join(resumed.stderr.split())


BAD_SPACE = "parameters:\n  vm.x: {kind: sysctl, type: int, range: [10, 1]}\n"


@pytest.mark.parametrize("case", ["malformed", "range", "unknown_sysctl", "reuse_other_space", "db_dir",
                                  "db_driver", "no_command", "bad_host", "ssh_setting", "qemu_setting",
                                  "qemu_internal", "qemu_args_text", "qemu_args_number",
                                  "setting_for_none", "setting_type", "workload_setting"])
def test_bad_input_is_one_line_nonzero_and_leaves_the_database_unchanged(tmp_path, space_file, case):
    db = tmp_path / "bad.db"
    assert run_quadratic(space_file, db, 2).returncode == 0
    before = dump_db(db)
    other = tmp_path / "other.yaml"
    db_url = f"sqlite:///{db}"
    if case == "malformed":
        other.write_text("parameters:\n  x.a: {kind: sysctl, type: int, range: [0, 10]\n")
        args = ["--space", str(other), "--experiment", "new"]
    elif case == "range":
        other.write_text(BAD_SPACE)
        args = ["--space", str(other), "--experiment", "new"]
    elif case == "unknown_sysctl":
        other.write_text("parameters:\n  vm.no_such_knob_ostune: {kind: sysctl, type: int, range: [0, 10]}\n")
        args = ["--space", str(other), "--experiment", "new", "--host", "local"]
    elif case == "reuse_other_space":
        other.write_text(QUADRATIC_SPACE.replace("[0, 10]", "[0, 9]"))
        args = ["--space", str(other), "--experiment", "quad"]
    elif case == "db_dir":
        args = ["--space", str(space_file), "--experiment", "quad"]
        db_url = f"sqlite:///{tmp_path}/missing-dir/x.db"
    elif case == "db_driver":
        # a server database whose Python driver is not installed (ostune depends on SQLite only;
        # PostgreSQL's is the `postgres` extra)
        args = ["--space", str(space_file), "--experiment", "quad"]
        db_url = "mysql://ostune@127.0.0.1/ostune"
    elif case == "no_command":
        result = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file),
                        "--trials", "1", "--db", db_url)
        args = None
    elif case == "ssh_setting":
        # misspelled (key_file for key_path): named with the valid ones, before any connection
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "ssh://root@192.0.2.1",
                "--host-set", "key_file=~/.ssh/id_ed25519"]
    elif case == "qemu_setting":
        # checked before the guest image is built (minutes)
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "qemu", "--host-set", "memory=2048"]
    elif case == "qemu_internal":
        # booted the shared cached image itself, writing into it
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "qemu", "--host-set", "use_overlay=false"]
    elif case in ("qemu_args_text", "qemu_args_number"):
        value = "-nographic" if case == "qemu_args_text" else "5"
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "qemu", "--host-set",
                f"extra_qemu_args={value}"]
    elif case == "setting_type":
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "ssh://root@192.0.2.1",
                "--host-set", "connect_timeout_s=soon"]
    elif case == "workload_setting":
        args = ["--space", str(space_file), "--experiment", "quad", "--set", "timeout=5"]
    elif case == "setting_for_none":
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "none", "--host-set", "accel=tcg"]
    else:
        args = ["--space", str(space_file), "--experiment", "quad", "--host", "telnet://x"]
    if args is not None:
        host = [] if "--host" in args else ["--host", "none"]
        result = ostune("run", "--app", "command", *host, "--command", QUADRATIC_COMMAND, "--trials", "1",
                        "--db", db_url, *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    if case == "db_driver":
        assert "mysql driver is not installed (MySQLdb)" in lines[0] and "pip install 'mysqlclient'" in lines[0]
        assert "sqlite:///" in lines[0]
    if case == "ssh_setting":
        assert "--host-set key_file: not a setting of ssh hosts" in lines[0] and "key_path" in lines[0]
    if case == "qemu_setting":
        assert "--host-set memory: not a setting of qemu hosts" in lines[0] and "memory_mb" in lines[0]
    if case == "qemu_internal":
        assert "--host-set use_overlay: not a setting of qemu hosts" in lines[0] and "memory_mb" in lines[0]
    if case in ("qemu_args_text", "qemu_args_number"):
        assert "--host-set extra_qemu_args=" in lines[0] and "give a list of qemu arguments" in lines[0]
        assert result.returncode == 2
    if case == "setting_type":
        assert "--host-set connect_timeout_s=soon: expected a number" in lines[0]
    if case == "workload_setting":
        assert "--set timeout: not a setting of the command workload (valid: timeout_s, warmup)" in lines[0]
    if case == "setting_for_none":
        assert "--host none takes no host settings" in lines[0]
    assert dump_db(db) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only filesystem needs root")
def test_unwritable_database_is_a_storage_error(tmp_path, space_file):
    # Root ignores permission bits, so a read-only filesystem is the honest "unwritable" here.
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        db = mount / "x.db"
        assert run_quadratic(space_file, db, 1).returncode == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        before = dump_db(db)
        result = run_quadratic(space_file, db, 1)
        assert result.returncode == 3, result.stderr
        assert "not writable" in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert dump_db(db) == before
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_show_and_experiments_list_the_experiment(tmp_path, space_file):
    db = tmp_path / "s.db"
    assert run_quadratic(space_file, db, 2).returncode == 0
    shown = ostune("show", "quad", "--db", f"sqlite:///{db}")
    assert shown.returncode == 0 and "baseline" in shown.stdout
    listed = ostune("experiments", "--db", f"sqlite:///{db}")
    assert "quad" in listed.stdout
    missing = ostune("show", "nope", "--db", f"sqlite:///{db}")
    assert missing.returncode == 2 and "no experiment named 'nope' (known: quad)" in missing.stderr
    # error text is printed as text: "[report]" is not taken for rich markup and dropped
    bracketed = ostune("show", "nope[report]", "--db", f"sqlite:///{db}")
    assert "no experiment named 'nope[report]'" in bracketed.stderr, bracketed.stderr
    # off a terminal (80 columns) a long name is still whole: it is what `show NAME` takes
    long_name = "redis-p99-fleet-east-nightly-halt-poll"
    assert ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                  QUADRATIC_COMMAND, "--trials", "1", "--experiment", long_name, "--db", f"sqlite:///{db}").returncode == 0
    listed = ostune("experiments", "--db", f"sqlite:///{db}", env={"COLUMNS": "80"})
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines() if line.split()}
    assert long_name in rows and "quad" in rows, listed.stdout
    assert "1/1" in rows[long_name], listed.stdout
    # a name with brackets is shown as given, not taken for rich markup
    assert ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                  QUADRATIC_COMMAND, "--trials", "1", "--experiment", "lab[east]", "--db", f"sqlite:///{db}").returncode == 0
    assert ostune("show", "lab[east]", "--db", f"sqlite:///{db}").stdout.startswith("lab[east]: minimize p99_ms")
    assert "lab[east]" in ostune("experiments", "--db", f"sqlite:///{db}").stdout
    compared = ostune("compare", "lab[east]", "quad", "--db", f"sqlite:///{db}")
    assert compared.returncode == 0 and "lab[east] vs quad" in compared.stdout, compared.stdout + compared.stderr


def test_show_never_cuts_a_number_and_fits_a_narrow_terminal(tmp_path, space_file):
    import io

    from rich.console import Console

    from storage.store import ResultStore
    from tuner.progress import fitting_trials_table

    db = tmp_path / "n.db"
    assert run_quadratic(space_file, db, 4).returncode == 0
    # off a terminal the table is as wide as it needs: every value whole, one column per parameter
    shown = ostune("show", "quad", "--db", f"sqlite:///{db}", env={"COLUMNS": "60"})
    header = next(line for line in shown.stdout.splitlines() if "┃" in line and "p99_ms" in line)
    assert all(name in header for name in ("x.a", "x.b", "x.c")), shown.stdout
    assert "…" not in shown.stdout, shown.stdout
    store = ResultStore.open(f"sqlite:///{db}")
    try:
        trials = store.trials(store.get_experiment("quad").id)
    finally:
        store.close()
    values = [f"{t.objective:.4g}" for t in trials]
    names = ["x.a", "x.b", "x.c"]
    for width in (200, 60):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=False, color_system=None)
        console.print(fitting_trials_table(console, trials, "p99_ms", None, names))
        text = out.getvalue()
        assert max(len(line) for line in text.splitlines()) <= width, text
        assert all(v in text for v in values), text  # the objective of every trial, whole
        if width == 60:  # compact: what each trial changed, in one folded column
            assert "changed from the" in text and "(as baseline)" in text, text
            base_a = trials[0].params["x.a"]
            moved = [t for t in trials if t.params["x.a"] != base_a]
            assert moved and all(f"x.a={t.params['x.a']:g}" in text for t in moved), text
        else:
            assert "changed from" not in text


def test_an_objective_the_workload_never_reports_stops_the_run_in_one_line(tmp_path, space_file):
    db = tmp_path / "o.db"
    assert run_quadratic(space_file, db, 2).returncode == 0
    kept = query(db, "select number, status, objective from trials order by number")
    wrong = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                   QUADRATIC_COMMAND, "--trials", "5", "--experiment", "typo", "--objective", "p95", "--db",
                   f"sqlite:///{db}", "--repetitions", "1", "--no-warmup")
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert wrong.returncode == 2 and len(lines) == 1, wrong.stderr
    assert lines[0].startswith("error: --objective p95: the workload does not report it (it reports: ")
    assert "p99_ms" in lines[0] and "ops_per_s" in lines[0]
    # not five failed trials, and no experiment left holding the wrong objective under that name
    assert query(db, "select name from experiments") == [("quad",)]
    assert query(db, "select number, status, objective from trials order by number") == kept
    right = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                   QUADRATIC_COMMAND, "--trials", "1", "--experiment", "typo", "--db", f"sqlite:///{db}",
                   "--repetitions", "1", "--no-warmup")
    assert right.returncode == 0, right.stderr


@pytest.mark.parametrize("extra, message", [
    (("--try", "x.q=1"), "--try 'x.q=1': 'x.q' is not a parameter of the space"),
    (("--try", "x.a=1,x.a=2"), "--try 'x.a=1,x.a=2': 'x.a' is given twice"),
    (("--experiment", "nightly\nrun"), "--experiment 'nightly\\nrun': a name is up to 200 printable characters on one line"),
    (("--experiment", " nightly"), "--experiment ' nightly': a name is up to 200 printable characters"),
    (("--experiment", "  "), "--experiment: give a name"),
    (("--app-set", "port=7000"), "--app-set port: --app command has no application settings"),
    (("--clients", "3"), "--clients: the command workload has no clients setting (its command makes the load"),
    # stored in a signed 32-bit column (PostgreSQL's integer): a larger seed would fail there
    (("--seed", "2147483648"), "--seed 2147483648: a new experiment's seed is at most 2147483647"),
])
def test_bad_input_on_a_first_run_is_one_line_and_leaves_no_database(tmp_path, space_file, extra, message):
    db = tmp_path / "new.db"
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space_file), "--command",
                    QUADRATIC_COMMAND, "--trials", "1", "--db", f"sqlite:///{db}", *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith(f"error: {message}"), result.stderr
    assert not list(tmp_path.glob("new.db*"))


@pytest.mark.parametrize("args, message", [
    (("run", "--trials", "0"), "error: Invalid value for '--trials': 0 is not in the range x>=1. (see `ostune run --help`)"),
    (("show",), "error: Missing argument 'NAME'. (see `ostune show --help`)"),
    (("bogus",), "error: No such command 'bogus'. (see `ostune --help`)"),
    (("run", "--engine", "foo"), "error: Invalid value for '--engine': 'foo' is not one of 'skopt', 'random'."),
    (("vm", "prune", "--bogus"), "error: No such option '--bogus'"),
])
def test_usage_errors_are_one_line_too(args, message):
    """click's own usage errors, like ostune's: one line naming the bad thing, exit 2."""
    result = ostune(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith(message), result.stderr
