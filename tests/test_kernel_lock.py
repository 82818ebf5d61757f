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
