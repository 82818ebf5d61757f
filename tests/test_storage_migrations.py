"""Schema changes go through Alembic: a database made by an older ostune is upgraded in place when
opened, keeps its rows, and ends with exactly the schema the models declare."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from storage.database import _alembic_config
from storage.models import Base
from storage.store import ResultStore
from tuner.ownership import ProcessIdentity, boot_id
from tuner.recovery import dead_runs


def _database_at(path: Path, revision: str) -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    engine.dispose()
    return url


def _insert_experiment(conn) -> None:  # type: ignore[no-untyped-def]
    """Experiment 1, 'e', as any revision since 0001 stores it."""
    conn.execute(text("insert into experiments (id, name, space_json, space_hash, target_json, objective, direction, "
                      "seed, settings_json, created_at, updated_at) values (1, 'e', '{}', 'h', '{}', 'p99_ms', "
                      "'minimize', 1, '{}', '2026-11-01', '2026-11-01')"))


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_database_from_revision_0003_is_upgraded_and_keeps_its_runs(tmp_path):
    url = _database_at(tmp_path / "old.db", "0003")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into runs (command, host_key, pid, pid_start_ticks, machine, boot_id, status, started_at, "
            "host_facts_json, skipped_json) values ('run', 'local:x', :pid, 1, :machine, :boot, 'running', "
            "'2026-11-01 00:00:00', '{}', '{}')"), {"pid": _exited_pid(), "machine": socket.gethostname(),
                                                   "boot": boot_id()})
    engine.dispose()

    store = ResultStore.open(url)  # migrates to the newest revision
    try:
        [run] = store.running_runs()
        assert run.machine_id == ""  # unknown for an old row: judged by hostname and boot id, as before
        assert [r.id for r in dead_runs(store)] == [run.id]
    finally:
        store.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == ScriptDirectory.from_config(_alembic_config()).get_current_head()
        assert compare_metadata(context, Base.metadata) == []  # the migrations build what the models say
    engine.dispose()


def test_a_run_stored_by_a_clone_with_the_same_hostname_is_not_judged_from_here(tmp_path):
    store = ResultStore.open(f"sqlite:///{tmp_path / 'shared.db'}")
    try:
        me = ProcessIdentity.current()
        assert me.machine_id, "this machine has /etc/machine-id"
        common = dict(experiment_id=None, command="run", host_key="local:x", pid=_exited_pid(), pid_start_ticks=1,
                      machine=me.machine, boot_id=me.boot_id, host_facts={})
        clone = store.start_run(**common, machine_id="0" * 32)  # another installation, same hostname
        mine = store.start_run(**common, machine_id=me.machine_id)
        assert [r.id for r in dead_runs(store)] == [mine]
        assert clone in {r.id for r in store.running_runs()}
    finally:
        store.close()


def test_a_fresh_database_has_the_models_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    ResultStore.open(url).close()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
    assert os.path.getsize(tmp_path / "new.db") > 0


def test_an_older_databases_verification_of_a_dead_run_is_closed_on_upgrade(tmp_path):
    url = _database_at(tmp_path / "old.db", "0005")
    engine = create_engine(url)
    with engine.begin() as conn:
        _insert_experiment(conn)
        for run_id, status in ((1, "crashed"), (2, "running")):
            conn.execute(text(
                "insert into runs (id, experiment_id, command, host_key, pid, machine, boot_id, status, started_at, "
                "host_facts_json, skipped_json) values (:id, 1, 'verify', 'local:x', 1, 'm', 'b', :status, "
                "'2026-11-01', '{}', '{}')"), {"id": run_id, "status": status})
            conn.execute(text("insert into verifications (experiment_id, run_id, created_at, rounds, metric, "
                              "schedule_json, status) values (1, :run, '2026-11-01', 6, 'p99_ms', '[]', 'running')"),
                         {"run": run_id})
    engine.dispose()
    ResultStore.open(url).close()  # migrates to the newest revision
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("select run_id, status from verifications order by run_id")).all()
    engine.dispose()
    # the crashed run's verification is closed; a live run's is left to that run (or to recovery)
    assert [tuple(r) for r in rows] == [(1, "aborted"), (2, "running")]


def test_trial_params_shows_whole_numbers_as_written_after_upgrade(tmp_path):
    url = _database_at(tmp_path / "old.db", "0006")
    engine = create_engine(url)
    with engine.begin() as conn:
        _insert_experiment(conn)
        conn.execute(text("insert into trials (id, experiment_id, number, status, source, started_at, repetitions, rebooted, "
                          "proposal_json) values (1, 1, 1, 'succeeded', 'baseline', '2026-11-01', 0, 0, '{}')"))
        for name, num, txt in (("read_ahead_kb", 8192.0, None), ("ratio", 0.5, None), ("thp", None, "never"),
                               ("huge", 1e30, None)):
            conn.execute(text("insert into trial_param_values (trial_id, name, value_num, value_text) "
                              "values (1, :name, :num, :txt)"), {"name": name, "num": num, "txt": txt})
        before = dict(conn.execute(text("select param, value from trial_params")).all())
    engine.dispose()
    assert repr(before["read_ahead_kb"]) == "8192.0"  # what older versions showed
    ResultStore.open(url).close()  # migrates to the newest revision
    engine = create_engine(url)
    with engine.connect() as conn:
        after = {row[0]: row[1:] for row in conn.execute(text("select param, value, value_num from trial_params"))}
    engine.dispose()
    assert repr(after["read_ahead_kb"]) == "(8192, 8192.0)"  # as sysctl and the space file write it
    assert after["ratio"] == (0.5, 0.5) and after["thp"] == ("never", None)
    assert after["huge"] == (1e30, 1e30)  # beyond INTEGER's range: stays the float it is


def _tables(path: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("select name from sqlite_master where type in ('table', 'view')")}


def test_a_database_from_a_newer_ostune_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    from tests.helpers import ostune

    path = tmp_path / "future.db"
    ResultStore.open(f"sqlite:///{path}").close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("update alembic_version set version_num = '0099_from_the_future'"))
    engine.dispose()
    before = _tables(path)
    for args in (("experiments",), ("show", "x"), ("best", "x", "--json")):
        result = ostune(*args, "--db", f"sqlite:///{path}")
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"error: database sqlite:///{path} has schema revision '0099_from_the_future', which this ostune does "
            f"not know (it knows up to '{ScriptDirectory.from_config(_alembic_config()).get_current_head()}'): it "
            "was written by a newer ostune; upgrade ostune to read it"], result.stderr
    assert _tables(path) == before


def test_another_programs_sqlite_file_is_refused_not_given_ostunes_tables(tmp_path):
    """A slip of --db (another tool's database) used to get ostune's 17 tables and views added to
    it, or, with a table both use (`runs`), a half-made schema that refused every later command."""
    import sqlite3

    from tests.helpers import ostune

    for table in ("foo", "runs"):
        path = tmp_path / f"{table}.db"
        with sqlite3.connect(path) as conn:
            conn.execute(f"create table {table} (id integer primary key, note text)")
            conn.execute(f"insert into {table} (note) values ('theirs')")
        result = ostune("experiments", "--db", f"sqlite:///{path}")
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip() == (f"error: database sqlite:///{path} is not an ostune database (it has tables "
                                          f"{table} and no ostune schema); give a new file, or an empty database")
        assert _tables(path) == {table}
    # an empty file (what `touch` or a fresh volume gives) is a new database
    empty = tmp_path / "empty.db"
    empty.touch()
    assert ostune("experiments", "--db", f"sqlite:///{empty}").returncode == 0
