"""The kernel lock's own rules (tuner/kernel_lock.py), on a lock file of the test's own: one holder,
described to the next comer; released on exit or death; a holder that died with it is reported to
the next holder as `previous`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tuner.errors import HostError, LockHeldError
from tuner.kernel_lock import KernelLock

HOLD = """
import sys, time
from pathlib import Path
from tuner.kernel_lock import KernelLock
KernelLock(Path(sys.argv[1])).acquire(command="run", database="sqlite:////tmp/a.db")
print("held", flush=True)
time.sleep(60)
"""


def _holder(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_one_holder_at_a_time_and_a_clean_release_leaves_nothing_to_repair(tmp_path: Path) -> None:
    path = tmp_path / "kernel.lock"
    first = KernelLock(path).acquire(command="run", database="sqlite:////tmp/a.db")
    assert first.previous is None
    other = KernelLock(path)
    assert other.holder() is not None and "ostune run, database sqlite:////tmp/a.db" in str(other.holder())
    with pytest.raises(LockHeldError, match=r"already being tuned by pid \d+ \(ostune run, database sqlite:////tmp/a.db"):
        other.acquire(command="verify", database="sqlite:////tmp/b.db")
    first.release()
    assert other.holder() is None
    assert other.acquire(command="verify", database="sqlite:////tmp/b.db").previous is None  # released cleanly
    other.release()


def test_a_holder_killed_with_the_lock_frees_it_and_is_named_to_the_next_holder(tmp_path: Path) -> None:
    path = tmp_path / "kernel.lock"
    proc = _holder(path)
    try:
        with pytest.raises(LockHeldError, match=f"pid {proc.pid} "):
            KernelLock(path).acquire(command="run", database="x")
    finally:
        proc.kill()
        proc.wait()
    lock = KernelLock(path).acquire(command="run", database="sqlite:////tmp/b.db")
    try:
        assert lock.previous is not None
        assert (lock.previous["pid"], lock.previous["command"], lock.previous["database"]) == \
            (proc.pid, "run", "sqlite:////tmp/a.db")
    finally:
        lock.release()


def test_a_lock_file_that_cannot_be_opened_is_a_host_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"cannot open the kernel lock /proc/ostune-nowhere/kernel.lock"):
        KernelLock(Path("/proc/ostune-nowhere/kernel.lock")).acquire(command="run", database="x")


def _identity(**changes: object) -> dict:
    from dataclasses import asdict

    from tuner.ownership import ProcessIdentity

    return {**asdict(ProcessIdentity.current()), "command": "run", "database": "sqlite:////tmp/theirs.db",
            "since": 0.0, **changes}


def test_a_remote_holder_that_lost_its_connection_but_lives_is_not_tuned_under() -> None:
    """It still owns the values it changed on that host and writes them back when it stops: a run
    taking the lock now would measure under that write and journal its trial values as originals."""
    from targets.hosts.none import NoneHost
    from tuner.recovery import recover_previous_remote_holder

    said: list[str] = []
    with pytest.raises(LockHeldError, match=r"lost its connection to none but is still running"):
        recover_previous_remote_holder(_identity(host="none"), None, NoneHost(), said.append)
    assert said == []


def test_a_holder_on_another_machine_is_named_with_how_to_restore_not_guessed_at() -> None:
    """Whether it is alive cannot be told from here, and its database is on its machine (a
    `sqlite:///` path there may name another file here): named, never opened."""
    from targets.hosts.none import NoneHost
    from tuner.recovery import recover_previous_holder, recover_previous_remote_holder

    said: list[str] = []
    elsewhere = _identity(machine="controller-2", machine_id="0" * 32, host="none")
    recover_previous_remote_holder(elsewhere, None, NoneHost(), said.append)
    assert len(said) == 1 and "pid" in said[0] and " on controller-2 " in said[0]
    assert "`ostune restore --host none --db URL` with its database, on controller-2, puts them back" in said[0]
    # the same holder found in this machine's own lock file (it tuned this machine over SSH)
    said.clear()
    recover_previous_holder({**elsewhere, "host": "ssh://root@thishost:22"}, None, said.append)
    assert len(said) == 1 and "did not release the kernel lock of ssh://root@thishost:22" in said[0]


def test_backing_out_of_a_take_puts_the_found_description_back(tmp_path: Path) -> None:
    """A take that found a dead holder's description and then refused to go on (its values could
    not be put back, its holder is alive) must leave that description for the next attempt: an
    empty file would tell it there is nothing to repair."""
    path = tmp_path / "kernel.lock"
    proc = _holder(path)
    proc.kill()
    proc.wait()
    lock = KernelLock(path).acquire(command="run", database="sqlite:////tmp/b.db")
    found = lock.previous
    assert found is not None and found["pid"] == proc.pid
    lock.release(restore=found)
    again = KernelLock(path).acquire(command="run", database="sqlite:////tmp/c.db")
    try:
        assert again.previous == found
    finally:
        again.release()
    last = KernelLock(path).acquire(command="run", database="x")
    assert last.previous is None  # a clean release: empty
    last.release()
