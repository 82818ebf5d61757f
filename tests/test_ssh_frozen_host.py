"""A remote host that freezes (its kernel hangs, its VM is paused, its network drops packets) must
not hang ostune: paramiko waits an hour for a channel and forever for an SFTP answer by default.
The freeze is real: the QEMU guest's process is stopped with SIGSTOP, so the guest answers nothing
while its TCP port still accepts. The run stops with one line, its trial aborted (the host, not
the configuration), and once the guest runs again `ostune restore --host` puts its values back.
Marked vm (TCG here: plumbing, not latency).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from storage.store import ResultStore
from targets.hosts.qemu import QemuHost
from targets.vm.image import GuestImage
from tests.conftest_vm import booted_guest, get_image, guest_as_ssh_host, ssh_args
from tests.helpers import ostune, query, spawn_ostune, try_query
from tuner.errors import HostError, HostUnreachableError

pytestmark = pytest.mark.vm

SPACE = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 4096], log: true}
"""


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return get_image("direct")


@pytest.fixture(scope="module")
def guest(image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuHost]:
    with booted_guest(image, tmp_path_factory.mktemp("qemu-frozen"), memory_mb=1024, vcpus=2) as vm:
        yield vm


class Frozen:
    """The guest stopped (SIGSTOP to its qemu) until the block ends or thaw() is called."""

    def __init__(self, vm: QemuHost) -> None:
        self.pid = vm.pid
        self.stopped = False

    def __enter__(self) -> "Frozen":
        os.kill(self.pid, signal.SIGSTOP)
        self.stopped = True
        return self

    def thaw(self) -> None:
        if self.stopped:
            os.kill(self.pid, signal.SIGCONT)
            self.stopped = False

    def __exit__(self, *exc: object) -> None:
        self.thaw()


def logs_in(vm: QemuHost, image: GuestImage) -> bool:
    host = guest_as_ssh_host(vm, image)
    try:
        host.run(["true"], timeout_s=30)
        return True
    except HostError:
        return False
    finally:
        host.close()


def test_a_command_on_a_frozen_host_fails_as_unreachable_in_bounded_time_and_reconnects_after(
    guest: QemuHost, image: GuestImage,
) -> None:
    host = guest_as_ssh_host(guest, image, connect_timeout_s=5)
    host.start()
    outcome: list[BaseException | None] = []

    def command() -> None:
        try:
            host.run(["sleep", "1"], timeout_s=5)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            outcome.append(exc)

    try:
        with Frozen(guest):
            started = time.monotonic()
            worker = threading.Thread(target=command, daemon=True)
            worker.start()
            worker.join(timeout=120)  # paramiko's own default would wait an hour for the channel
            elapsed = time.monotonic() - started
            assert not worker.is_alive(), "a command on a frozen host was still waiting after 120 s"
        [error] = outcome
        assert isinstance(error, HostUnreachableError), repr(error)
        assert elapsed < 60, elapsed  # a 15 s channel timeout (3 connect timeouts) and change
        # thawed: a new connection works, once the guest has caught up with its queued logins
        deadline = time.monotonic() + 180
        while (again := host.unreachable_again()) is not None:
            assert time.monotonic() < deadline, f"no new connection 180 s after the thaw: {again}"
            time.sleep(2)
        assert host.run(["echo", "back"]).stdout.strip() == "back"
    finally:
        host.close()


def test_a_run_whose_host_freezes_stops_with_one_line_and_restore_puts_the_values_back_after(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    original = guest.read_text("/proc/sys/vm/swappiness").strip()
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "frozen.db"
    host_args = ssh_args(guest, image)
    proc = spawn_ostune("run", "--trials", "6", "--space", str(space), "--repetitions", "1", "--requests", "300",
                        "--no-profiles", "--try", "vm.swappiness=7", "--experiment", "frozen",
                        "--db", f"sqlite:///{db}", *host_args, cwd=tmp_path)
    frozen = Frozen(guest)
    try:
        deadline = time.monotonic() + 600
        # the --try trial (swappiness 7 written) is running: the freeze comes mid-trial
        while not try_query(db, "select 1 from trials where number = 2 and status = 'running'"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached its second trial"
            time.sleep(0.2)
        time.sleep(1)
        with frozen:
            out, err = proc.communicate(timeout=420)
    finally:
        frozen.thaw()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = " ".join((err + out).split())
    assert proc.returncode == 4, said
    assert "Traceback" not in err, err
    assert "and the host does not answer again" in said, said
    assert f"still need restoring: run `ostune restore --host ssh://root@127.0.0.1:{guest.port}`" in said, said
    assert query(db, "select status from trials where number = 2") == [("aborted",)]
    assert query(db, "select error like 'host unreachable: %' from trials where number = 2") == [(1,)]
    assert query(db, "select count(*) from trials where status = 'failed'") == [(0,)]
    pending = query(db, "select count(*) from restore_journal where restored_at is null")[0][0]
    assert pending >= 1

    # thawed: once the guest has caught up (sshd works through the logins queued while it was
    # stopped), the values the dead connection left are put back, and nothing is left to do
    deadline = time.monotonic() + 180
    while not logs_in(guest, image):  # a new login: the guest's own idle connection answers sooner
        assert time.monotonic() < deadline, "the guest did not take a new SSH login after it was thawed"
        time.sleep(2)
    restored = ostune("restore", "--db", f"sqlite:///{db}", *host_args, timeout_s=300)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]
    assert guest.read_text("/proc/sys/vm/swappiness").strip() == original


def test_restore_removes_private_staging_directories_a_day_old_and_leaves_newer_ones(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    """A connection that drops between staging a command's private files and running it leaves
    the directory (its environment file can hold a password); nothing else ever removes it."""
    old, new = "/tmp/ostune-private-" + "a" * 32, "/tmp/ostune-private-" + "b" * 32
    for path in (old, new):
        guest.run(["mkdir", "-m", "700", path])
        guest.run(["sh", "-c", f"echo 'export MYSQL_PWD=x' > {path}/env"])
    guest.run(["touch", "-d", "2 days ago", old])
    host_args = ssh_args(guest, image)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ResultStore.open(db).close()
    try:
        result = ostune("restore", "--db", db, *host_args, timeout_s=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"removed {old} on ssh://root@127.0.0.1:{guest.port}" in result.stdout, result.stdout
        assert not guest.exists(old)
        assert guest.exists(f"{new}/env")
    finally:
        guest.run(["rm", "-rf", old, new])
