"""A server's work directory (data, logs) outlives an ostune process killed with -9: the next
ostune command removes it, and leaves alone the ones in use and the ones ostune did not make."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from targets.hosts.local import WORKDIR_OWNER_FILE, LocalHost, reap_stale_workdirs
from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, REPO, ostune

CHILD = (
    "import sys, time; from targets.hosts.local import LocalHost; "
    "print(LocalHost().make_workdir(sys.argv[1], parent=sys.argv[2] or None), flush=True); time.sleep(300)"
)


def _workdir_of_killed_process(tmp_path, prefix: str = "redis", parent: str = "") -> str:
    """A real ostune host object makes a work dir in a child process, which is then kill -9'd."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, prefix, parent], stdout=subprocess.PIPE, text=True,
                             cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)})
    path = child.stdout.readline().strip()  # type: ignore[union-attr]
    Path(path, "redis.log").write_text("server output\n")
    child.send_signal(signal.SIGKILL)
    child.wait()
    return path


def test_dead_owners_workdir_is_removed_live_and_foreign_ones_stay(tmp_path, monkeypatch):
    dead = _workdir_of_killed_process(tmp_path)
    owner = json.loads(open(os.path.join(dead, WORKDIR_OWNER_FILE)).read())
    assert owner["pid"] != os.getpid()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    live = LocalHost().make_workdir("mariadb")
    foreign = tmp_path / "ostune-redis-notours"
    foreign.mkdir()
    # a dead owner's record, but written on another installation that has this hostname (a
    # cloned VM): its process cannot be judged from here
    twin = tmp_path / "ostune-redis-twin"
    twin.mkdir()
    (twin / WORKDIR_OWNER_FILE).write_text(json.dumps({**owner, "boot_id": "another-boot", "machine_id": "f" * 32}))
    assert owner["machine_id"] and owner["machine_id"] != "f" * 32
    assert reap_stale_workdirs(str(tmp_path)) == [dead]
    assert not os.path.exists(dead)
    assert os.path.isdir(live) and foreign.is_dir() and twin.is_dir()
    assert reap_stale_workdirs(str(tmp_path)) == []


def test_next_command_removes_it_and_says_so(tmp_path):
    dead = _workdir_of_killed_process(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(QUADRATIC_SPACE)
    result = ostune("run", "--app", "command", "--host", "none", "--space", str(space), "--command",
                    QUADRATIC_COMMAND, "--trials", "1", "--db", f"sqlite:///{tmp_path / 'r.db'}",
                    env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert f"removed {dead}, the work directory of a dead ostune process" in result.stdout + result.stderr
    assert not os.path.exists(dead)


def test_a_dead_runs_data_dir_under_an_apps_own_parent_is_removed_before_the_next_run_there(tmp_path):
    from storage.store import ResultStore
    from targets.apps.mariadb import MariaDBApp
    from tuner.recovery import recover_before_use

    parent = tmp_path / "bigdisk"
    parent.mkdir()
    dead = _workdir_of_killed_process(tmp_path, "mariadb", str(parent))
    assert Path(dead).parent == parent
    live = LocalHost().make_workdir("mariadb", parent=str(parent))
    store = ResultStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    said: list[str] = []
    try:
        recover_before_use(store, LocalHost(), said.append, MariaDBApp(datadir_parent=f"{parent}/").workdir_parents())
    finally:
        store.close()
    assert said == [f"removed {dead}, the work directory of a dead ostune process"]
    assert not os.path.exists(dead) and os.path.isdir(live)


def test_remote_listing_keeps_only_what_ostune_certainly_made() -> None:
    from targets.hosts.workdir_records import owner_record, parse_listing
    from tuner.ownership import ProcessIdentity

    owner = ProcessIdentity(4242, 987654, "controller", "b00t")
    listing = "\n".join([
        f"/tmp/ostune-redis-a\t{owner_record(owner)}\t311 5120;312 5121;",
        # a server that exited at once has no start ticks: the directory stays listed, that line not
        f"/tmp/ostune-redis-b\t{owner_record(owner)}\t313 ;",
        f"/tmp/ostune-redis-c\t{owner_record(owner)}\t",
        "/tmp/ostune-redis-d\t{\"pid\": 1}\t",  # not an owner record
        "/tmp/ostune-redis-e\tnot json\t",
        "relative/path\t{}\t",
        "too\tmany\ttabs\there",
    ])
    parsed = {w.path: w for w in parse_listing(listing)}
    assert sorted(parsed) == ["/tmp/ostune-redis-a", "/tmp/ostune-redis-b", "/tmp/ostune-redis-c"]
    assert parsed["/tmp/ostune-redis-a"].processes == ((311, 5120), (312, 5121))
    assert parsed["/tmp/ostune-redis-a"].owner == owner
    assert parsed["/tmp/ostune-redis-b"].processes == ()
    assert parsed["/tmp/ostune-redis-c"].processes == ()


def test_a_removal_cut_short_keeps_the_owner_record_so_it_is_finished_later(tmp_path):
    """The record goes last: a work dir that could not be removed whole (here a busy mount inside
    it; a kill -9 halfway through a large data directory is the same) still says whose it was."""
    import subprocess as sp

    import pytest

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    dead = _workdir_of_killed_process(tmp_path)
    for name in ("a.log", "b.log", "z.log"):
        Path(dead, name).write_text("x")
    busy = Path(dead, "data")
    busy.mkdir()
    sp.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(busy)], check=True)
    try:
        assert reap_stale_workdirs(str(tmp_path)) == []  # not reported removed: it is not
        assert sorted(os.listdir(dead)) == sorted([WORKDIR_OWNER_FILE, "data"])
    finally:
        sp.run(["umount", str(busy)], check=True)
    assert reap_stale_workdirs(str(tmp_path)) == [dead] and not os.path.exists(dead)
