"""An experiment keeps the set-up it was measured under: a resumed run and a verification reuse
its workload, application and host settings, and a resumed run refuses a different set-up."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from storage.store import ExperimentRecord, ResultStore
from tests.helpers import QUADRATIC_SPACE, dump_db, ostune, query
from tuner.errors import BadInputError
from tuner.factory import TargetOptions
from tuner.stored_settings import (
    resumed_options, reuse_host, reuse_measured, settings_to_store, verify_options,
)


def _experiment(target: dict, settings: dict, name: str = "e") -> ExperimentRecord:
    now = datetime(2026, 1, 1)
    return ExperimentRecord(1, name, {}, "h", target, "p99_ms", "minimize", 1, settings, now, now)


def test_the_dsn_is_never_stored():
    stored = settings_to_store(workload={"clients": 2}, app_settings={"dsn": "mysql://u:secret@h/db", "client": "x"},
                               host_settings={"key_path": "/k"})
    assert stored == {"workload": {"clients": 2}, "app_settings": {"client": "x"}, "host_settings": {"key_path": "/k"}}


def test_reuse_takes_the_stored_set_up_and_refuses_another():
    stored = {"clients": 1, "requests": 2000}
    assert reuse_measured(stored, {}, what="workload setting", experiment="e") == stored
    assert reuse_measured(stored, {"clients": 1}, what="workload setting", experiment="e") == stored
    with pytest.raises(BadInputError, match=r"workload setting clients=4: experiment 'e' was measured with clients=1"):
        reuse_measured(stored, {"clients": 4}, what="workload setting", experiment="e")
    with pytest.raises(BadInputError, match=r"--app-set keep=true: .* measured with the default keep"):
        reuse_measured({}, {"keep": True}, what="--app-set", experiment="e")
    # an experiment from before app settings were stored: nothing known, nothing refused
    assert reuse_measured(None, {"keep": True}, what="--app-set", experiment="e") == {"keep": True}


def test_host_settings_are_reused_only_on_the_experiments_own_host():
    stored = {"key_path": "/old", "connect_timeout_s": 5}
    assert reuse_host(stored, {"key_path": "/new"}, same_host=True) == {"key_path": "/new", "connect_timeout_s": 5}
    assert reuse_host(stored, {}, same_host=False) == {}
    assert reuse_host(None, {"key_path": "/k"}, same_host=True) == {"key_path": "/k"}


def test_a_resumed_vm_run_keeps_the_machine_it_measured():
    experiment = _experiment({"app": "redis", "host": "qemu:0123abcd"},
                             {"workload": {}, "app_settings": {}, "host_settings": {"memory_mb": 2048}})
    # how long to wait for the guest is not part of what is measured: taken, merged with the stored
    options = resumed_options(TargetOptions(app="redis", host="qemu", host_settings={"boot_timeout_s": 900}),
                              experiment)
    assert options.host_settings == {"memory_mb": 2048, "boot_timeout_s": 900}
    # another machine is: a guest of another size, or the default vCPU count changed
    with pytest.raises(BadInputError, match=r"--host-set memory_mb=4096: experiment 'e' was measured with memory_mb=2048"):
        resumed_options(TargetOptions(app="redis", host="qemu", host_settings={"memory_mb": 4096}), experiment)
    with pytest.raises(BadInputError, match=r"--host-set vcpus=4: .* measured with the default vcpus=2"):
        resumed_options(TargetOptions(app="redis", host="qemu", host_settings={"vcpus": 4}), experiment)
    # the default given explicitly is the machine it measured (vcpus 2, accel auto, direct boot)
    same = resumed_options(TargetOptions(app="redis", host="qemu", host_settings={"vcpus": 2, "accel": "auto"}),
                           experiment)
    assert same.host_settings == {"memory_mb": 2048, "vcpus": 2, "accel": "auto"}
    # an SSH host's settings only say how to reach it: a new key file replaces the stored one
    remote = _experiment({"app": "redis", "host": "ssh://root@h:22"},
                         {"workload": {}, "app_settings": {}, "host_settings": {"key_path": "/old"}})
    moved = resumed_options(TargetOptions(app="redis", host="ssh://root@h:22", host_settings={"key_path": "/new"}),
                            remote)
    assert moved.host_settings == {"key_path": "/new"}


def test_a_setting_given_as_its_default_is_what_an_experiment_that_left_it_out_measured():
    experiment = _experiment({"app": "command", "host": "none", "command": "x"},
                             {"workload": {}, "app_settings": {}, "host_settings": {}})
    given = resumed_options(TargetOptions(app="command", host="none", workload={"timeout_s": 600}), experiment)
    assert given.workload == {"timeout_s": 600}
    with pytest.raises(BadInputError, match=r"timeout_s=601: .* measured with the default timeout_s=600.0;"):
        resumed_options(TargetOptions(app="command", host="none", workload={"timeout_s": 601}), experiment)
    # a bool setting is not matched by a number that Python calls equal (False == 0)
    with pytest.raises(BadInputError, match=r"warmup=0: .* measured with the default warmup=false;"):
        resumed_options(TargetOptions(app="command", host="none", workload={"warmup": 0}), experiment)
    redis = _experiment({"app": "redis", "host": "local:x"}, {"workload": {}, "app_settings": {}})
    assert resumed_options(TargetOptions(app="redis", workload={"pipeline": 1}), redis).workload == {"pipeline": 1}


def test_a_resumed_vm_run_with_another_machine_is_refused_before_anything_runs(tmp_path):
    db_file = tmp_path / "vm.db"
    store = ResultStore.open(f"sqlite:///{db_file}")
    store.create_experiment(name="vm", space={}, space_hash="h", target={"app": "redis", "host": "qemu:0123abcd"},
                            objective="p99_ms", direction="minimize", seed=1,
                            settings={"workload": {}, "app_settings": {}, "host_settings": {"vcpus": 2}})
    store.close()
    before = dump_db(db_file)
    refused = ostune("run", "--experiment", "vm", "--host", "qemu", "--host-set", "vcpus=1", "--trials", "1",
                     "--db", f"sqlite:///{db_file}")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: --host-set vcpus=1: experiment 'vm' was measured with vcpus=2")
    assert dump_db(db_file) == before


def test_a_resumed_run_of_another_app_is_left_to_the_runs_own_refusal():
    experiment = _experiment({"app": "redis", "host": "local:x"}, {"workload": {"clients": 1}, "app_settings": {}})
    options = TargetOptions(app="mariadb", workload={"threads": 4})
    assert resumed_options(options, experiment) is options


def test_the_command_app_refuses_app_settings_and_ignores_ones_older_versions_stored(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text(QUADRATIC_SPACE)
    db = tmp_path / "c.db"
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", "true",
                    "--db", f"sqlite:///{db}", "--app-set", "port=7000")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--app-set port: --app command has no application settings" in result.stderr
    assert not db.exists()
    # an experiment stored with them (accepted, and never used, before) stays runnable and verifiable
    old = _experiment({"app": "command", "host": "none", "command": "true"},
                      {"workload": {}, "app_settings": {"port": 7000}})
    assert resumed_options(TargetOptions(app="command", command="true", host="none"), old).app_settings == {}
    assert verify_options(old, host_spec=None, host_settings={}, dsn=None).app_settings == {}


def test_verify_uses_the_stored_set_up_and_its_own_host():
    experiment = _experiment(
        {"app": "redis", "host": "ssh://root@10.0.0.5:22"},
        {"workload": {"clients": 1}, "app_settings": {"binary": "/opt/redis"}, "host_settings": {"key_path": "/k"}})
    options = verify_options(experiment, host_spec=None, host_settings={}, dsn=None)
    assert (options.app, options.host, options.workload, options.app_settings, options.host_settings) == \
        ("redis", "ssh://root@10.0.0.5:22", {"clients": 1}, {"binary": "/opt/redis"}, {"key_path": "/k"})
    elsewhere = verify_options(experiment, host_spec="local", host_settings={}, dsn=None)
    assert elsewhere.host == "local" and elsewhere.host_settings == {}
    with pytest.raises(BadInputError, match="--dsn: experiment 'e' did not tune an external MySQL server"):
        verify_options(experiment, host_spec=None, host_settings={}, dsn="mysql://u:p@h:3306/db")


def test_verify_of_an_external_server_needs_that_servers_dsn():
    experiment = _experiment({"app": "mysql", "managed": False, "dsn": "mysql://bench@db1:3306/sbtest",
                              "host": "local:x"}, {"workload": {}, "app_settings": {}})
    with pytest.raises(BadInputError, match=r"tuned the external server mysql://bench@db1:3306/sbtest; give its DSN"):
        verify_options(experiment, host_spec=None, host_settings={}, dsn=None)
    with pytest.raises(BadInputError, match=r"--dsn mysql://bench@db2:3306/sbtest is not the server") as err:
        verify_options(experiment, host_spec=None, host_settings={}, dsn="mysql://bench:Pw-4711@db2:3306/sbtest")
    assert "Pw-4711" not in str(err.value)
    options = verify_options(experiment, host_spec=None, host_settings={}, dsn="mysql://bench:Pw-4711@db1/sbtest")
    assert options.app == "mariadb" and options.app_settings == {"dsn": "mysql://bench:Pw-4711@db1/sbtest"}


# -- through the CLI, on the command workload --------------------------------------------------------------------
COUNTING_COMMAND = (
    "echo x >> {count}; python3 -c \"import json,os;p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
    "print(json.dumps({{'p99_ms': 1+(p['x.a']-3)**2, 'ops_per_s': 1000.0}}))\""
)


def _invocations(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_resumed_run_measures_under_the_stored_workload_settings(tmp_path):
    space = tmp_path / "q.yaml"
    space.write_text(QUADRATIC_SPACE)
    count = tmp_path / "count"
    db_file = tmp_path / "s.db"
    common = ("--app", "command", "--host", "none", "--command", COUNTING_COMMAND.format(count=count),
              "--experiment", "w", "--db", f"sqlite:///{db_file}", "--repetitions", "2", "--trials", "1")
    first = ostune("run", "--space", str(space), "--set", "warmup=true", *common)
    assert first.returncode == 0, first.stderr
    assert _invocations(count) == 3  # the workload's warm-up run, then two repetitions
    settings = query(db_file, "select settings_json from experiments")[0][0]
    assert '"workload": {"warmup": true}' in settings and '"app_settings": {}' in settings

    # resumed without --set: the stored warm-up still runs (3 invocations per trial, not 2)
    resumed = ostune("run", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert _invocations(count) == 6

    # resumed under another set-up: one line, nothing run, nothing stored
    before = dump_db(db_file)
    refused = ostune("run", "--set", "warmup=false", *common)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode != 0 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: workload setting warmup=false: experiment 'w' was measured with warmup=true")
    assert _invocations(count) == 6 and dump_db(db_file) == before


def test_a_resumed_experiment_from_before_app_settings_were_stored_refuses_nothing():
    old = _experiment({"app": "redis", "host": "local:x"}, {"workload": {"clients": 1}})  # no app_settings key
    options = resumed_options(TargetOptions(app="redis", host="local", app_settings={"keep": True}), old)
    assert options.app_settings == {"keep": True}
    assert verify_options(old, host_spec=None, host_settings={}, dsn=None).app_settings == {}
