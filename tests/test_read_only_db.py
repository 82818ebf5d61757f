"""An archived result database (a read-only mount, a file this user cannot write) is still read by
the commands that only read — experiments, show, best, export, report, compare — with nothing
written to it; the commands that write refuse it in one line. The read-only filesystem is a real
tmpfs remounted read-only (root, as CI runs)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from storage.store import ResultStore
from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, REPO, ostune
from tests.test_storage_migrations import _database_at, _exited_pid, _insert_experiment
from tuner.ownership import ProcessIdentity

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only filesystem needs root")


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory whose filesystem is read-only once `seal()` is called."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)

    def seal() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    try:
        yield mount, seal
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("archive")
    space = tmp / "quad.yaml"
    space.write_text(QUADRATIC_SPACE)
    db = tmp / "r.db"
    for name in ("a", "b"):
        result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command",
                        QUADRATIC_COMMAND, "--trials", "6", "--experiment", name, "--db", f"sqlite:///{db}",
                        "--seed", "3")
        assert result.returncode == 0, result.stderr
    return db, space


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_read_commands_read_an_archived_database_and_write_commands_refuse_it(tuned_db, read_only_dir, tmp_path):
    db, space = tuned_db
    mount, seal = read_only_dir
    shutil.copy(db, mount / "r.db")
    seal()
    before = _digests(mount)
    url = f"sqlite:///{mount / 'r.db'}"

    listing = ostune("experiments", "--db", url)
    assert listing.returncode == 0, listing.stderr
    assert " a " in listing.stdout and " b " in listing.stdout
    best = ostune("best", "a", "--db", url, "--json")
    assert best.returncode == 0, best.stderr
    writable = ostune("best", "a", "--db", f"sqlite:///{db}", "--json")
    assert json.loads(best.stdout) == json.loads(writable.stdout)  # the same answer as from the writable file
    shown = ostune("show", "a", "--db", url)
    assert shown.returncode == 0 and "recommended: trial" in shown.stdout, shown.stderr
    csv = ostune("export", "a", "--db", url, "--format", "csv")
    assert csv.returncode == 0 and len(csv.stdout.strip().splitlines()) == 1 + 6, csv.stderr
    html = tmp_path / "a.html"
    report = ostune("report", "a", "--db", url, "--output", str(html))
    assert report.returncode == 0 and html.stat().st_size > 10_000, report.stderr
    compared = ostune("compare", "a", "b", "--db", url)
    assert compared.returncode == 0, compared.stderr
    for result in (listing, best, shown, csv, report, compared):
        assert "Traceback" not in result.stderr and "read-only" not in result.stderr  # no dead runs: no note

    refused = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command", QUADRATIC_COMMAND,
                     "--trials", "8", "--experiment", "a", "--db", url)
    assert refused.returncode == 3
    assert refused.stderr.strip() == f"error: database {url}: file {mount / 'r.db'} is not writable"
    assert _digests(mount) == before  # no -wal or -shm created, not a byte changed


def test_a_copy_taken_mid_run_is_read_with_what_its_wal_file_holds(tuned_db, read_only_dir):
    db, _space = tuned_db
    mount, seal = read_only_dir
    work = mount.parent / "work"
    work.mkdir()
    shutil.copy(db, work / "r.db")
    writer = sqlite3.connect(work / "r.db")  # a run still writing: its last commit is only in the -wal file
    writer.execute("update experiments set name = 'renamed' where name = 'b'")
    writer.commit()
    assert (work / "r.db-wal").stat().st_size > 0
    for suffix in ("", "-wal", "-shm"):
        shutil.copy(work / f"r.db{suffix}", mount / f"r.db{suffix}")
    writer.close()
    seal()

    listing = ostune("experiments", "--db", f"sqlite:///{mount / 'r.db'}")
    assert listing.returncode == 0, listing.stderr
    assert " renamed " in listing.stdout and " b " not in listing.stdout


def test_a_dead_run_in_a_read_only_database_is_named_not_recovered(read_only_dir):
    mount, seal = read_only_dir
    url = _database_at(mount / "old.db", "head")
    store = ResultStore.open(url)
    me = ProcessIdentity.current()
    with store.engine.begin() as conn:
        _insert_experiment(conn)
    store.start_run(experiment_id=1, command="run", host_key="none", pid=_exited_pid(), pid_start_ticks=1,
                    machine=me.machine, boot_id=me.boot_id, machine_id=me.machine_id, host_facts={})
    store.close()
    seal()
    before = _digests(mount)

    listing = ostune("experiments", "--db", url)
    assert listing.returncode == 0, listing.stderr
    assert " e " in listing.stdout
    note = " ".join(listing.stderr.split())
    assert f"file {mount / 'old.db'} is not writable" in note and "the 1 run(s) in it whose process died were not recovered" in note
    assert _digests(mount) == before
    conn = sqlite3.connect(f"file:{mount / 'old.db'}?mode=ro&immutable=1", uri=True)
    try:
        assert conn.execute("select status from runs").fetchall() == [("running",)]
    finally:
        conn.close()


def test_an_older_schema_that_cannot_be_upgraded_here_is_refused_in_one_line(read_only_dir):
    mount, seal = read_only_dir
    url = _database_at(mount / "old.db", "0005")
    seal()
    before = _digests(mount)

    result = ostune("experiments", "--db", url)
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot be written here and has schema revision '0005'" in result.stderr
    assert "open it once where it can be written" in result.stderr
    assert _digests(mount) == before


def _without_capabilities(*args: str) -> subprocess.CompletedProcess:
    """ostune as root without CAP_DAC_OVERRIDE: a 0444 file is then as unwritable as another
    user's (a plain root test process writes anything)."""
    return subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "tuner.cli",
                           *args], capture_output=True, text=True, timeout=300, cwd=REPO)


def _live_writer(db: Path) -> sqlite3.Connection:
    """A connection that renames experiment b and keeps the change in the -wal (not checkpointed
    into the database file), as a running ostune does between checkpoints."""
    writer = sqlite3.connect(db)
    writer.execute("pragma wal_autocheckpoint = 0")
    writer.execute("update experiments set name = 'renamed' where name = 'b'")
    writer.commit()
    return writer


def test_a_database_read_through_a_symlink_sees_what_a_live_writer_committed(tuned_db, tmp_path):
    db, _space = tuned_db
    data, link = tmp_path / "data", tmp_path / "link"
    data.mkdir()
    link.mkdir()
    shutil.copy(db, data / "r.db")
    writer = _live_writer(data / "r.db")
    try:
        (data / "r.db").chmod(0o444)  # another user's file: the writer opened it before
        (link / "r.db").symlink_to(data / "r.db")
        listing = _without_capabilities("experiments", "--db", f"sqlite:///{link / 'r.db'}")
        assert listing.returncode == 0, listing.stderr
        assert " renamed " in listing.stdout, listing.stdout  # immutable=1 would have ignored the -wal
    finally:
        writer.close()


def test_a_wal_without_its_shm_is_read_from_a_private_copy_leaving_the_directory_as_it_was(tuned_db, tmp_path):
    """SQLite would create the -shm to read the -wal, as this user and with the database's 0444
    mode, and its owner could then no longer write the database."""
    db, _space = tuned_db
    work, archive = tmp_path / "work", tmp_path / "archive"
    work.mkdir()
    archive.mkdir()
    shutil.copy(db, work / "r.db")
    writer = _live_writer(work / "r.db")
    for suffix in ("", "-wal"):
        shutil.copy(work / f"r.db{suffix}", archive / f"r.db{suffix}")
    writer.close()
    for suffix in ("", "-wal"):
        (archive / f"r.db{suffix}").chmod(0o444)
    before = _digests(archive)

    listing = _without_capabilities("experiments", "--db", f"sqlite:///{archive / 'r.db'}")
    assert listing.returncode == 0, listing.stderr
    assert " renamed " in listing.stdout
    assert _digests(archive) == before  # no -shm made next to it
    assert not list(Path(tempfile.gettempdir()).glob("ostune-readonly-*"))  # the private copy is gone
