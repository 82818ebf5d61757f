"""Boot parameters through GRUB: SshHost against a QEMU guest that boots from its own disk.

The guest (grub image, disk boot mode) reboots itself inside the same QEMU process, exactly as
a real machine would. Three TCG boots (~30-50 s each) plus, on a cold cache, the grub image build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from storage.store import ResultStore
from targets.hosts.qemu import QemuHost
from targets.hosts.ssh import GRUB_DROPIN, GrubBoot, SshHost
from targets.vm.image import GuestImage
from tests.conftest_vm import booted_guest, get_image, guest_as_ssh_host, progress, ssh_args
from tests.helpers import ostune

pytestmark = pytest.mark.vm

TOKENS = ["sysctl.vm.swappiness=17", "ostune.test=grub"]


@pytest.fixture(scope="module")
def grub_image() -> GuestImage:
    return get_image("grub")


@pytest.fixture(scope="module")
def grub_vm(grub_image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuHost]:
    with booted_guest(grub_image, tmp_path_factory.mktemp("qemu-grub-run")) as host:
        assert host.boot_mode == "disk"
        yield host


def _ssh(vm: QemuHost, image: GuestImage) -> SshHost:
    return guest_as_ssh_host(vm, image, reboot_timeout_s=300)


def test_guest_boots_through_its_own_grub(grub_vm: QemuHost) -> None:
    cmdline = grub_vm.read_text("/proc/cmdline")
    assert "BOOT_IMAGE=" in cmdline  # set by GRUB, never by QEMU's direct kernel boot
    assert "root=UUID=" in cmdline
    assert not grub_vm.exists(GRUB_DROPIN)


def test_ssh_host_applies_boot_tokens_via_grub_and_restores(grub_vm: QemuHost, grub_image: GuestImage) -> None:
    host = _ssh(grub_vm, grub_image)
    try:
        host.start()
        first_boot = host.boot_id()
        original_cmdline = host.read_text("/proc/cmdline").split()
        swappiness = host.read_text("/proc/sys/vm/swappiness").strip()
        # a run holds the machine's kernel lock across its boot changes: the holding shell dies
        # with the old boot, and the lock is taken again once the machine answers
        lock = host.take_kernel_lock(command="run", database="sqlite:///grub.db")
        try:
            assert host.ensure_boot(TOKENS) is True
            second_boot = host.boot_id()
            assert second_boot != first_boot
            assert lock.lost() is None and host.kernel_lock is lock
            assert host.run(["flock", "-n", "/run/lock/ostune-kernel.lock", "true"], check=False).exit_code == 1
            assert '"database": "sqlite:///grub.db"' in host.read_text("/run/lock/ostune-kernel.lock")
            cmdline = host.read_text("/proc/cmdline").split()
            assert all(token in cmdline for token in TOKENS)
            assert host.read_text("/proc/sys/vm/swappiness").strip() == "17"
            assert "ostune" in host.read_text(GRUB_DROPIN)
            # same tokens again: nothing to do
            assert host.ensure_boot(TOKENS) is False
            assert host.boot_id() == second_boot
            progress("GRUB boot tokens applied with one reboot")
        finally:
            restored = host.restore_boot()
        assert restored is True
        assert host.boot_id() not in (first_boot, second_boot)
        assert not host.exists(GRUB_DROPIN)
        assert host.read_text("/proc/cmdline").split() == original_cmdline
        assert host.read_text("/proc/sys/vm/swappiness").strip() == swappiness
        assert host.restore_boot() is False  # nothing left to undo
        assert lock.lost() is None
        lock.release()
        assert host.kernel_lock is None
        assert host.read_text("/run/lock/ostune-kernel.lock") == ""
    finally:
        host.close()


def test_a_drop_in_left_by_a_killed_run_is_removed_and_the_host_rebooted_back(
    grub_vm: QemuHost, grub_image: GuestImage, tmp_path: Path,
) -> None:
    """A run killed during a boot-parameter trial leaves its drop-in and the host booted with its
    tokens; the next run took those for the host's own (its baseline) and "restored" into them."""
    host = _ssh(grub_vm, grub_image)
    try:
        host.start()
        host.grub._install(GrubBoot.dropin_text(TOKENS))  # what the killed run had written
        host.grub.reboot()
        assert all(t in host.cmdline_tokens() for t in TOKENS)
    finally:
        host.close()
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ResultStore.open(db).close()
    restored = ostune("restore", "--db", db, *ssh_args(grub_vm, grub_image), timeout_s=900)
    assert restored.returncode == 0, restored.stderr + restored.stdout
    said = " ".join((restored.stdout + restored.stderr).split())
    assert f"removed {GRUB_DROPIN}, left by a dead ostune run, and rebooted ssh://root@127.0.0.1:{grub_vm.port}" in said, said
    after = _ssh(grub_vm, grub_image)  # the guest's own connection died with its reboots
    try:
        after.start()
        assert not after.exists(GRUB_DROPIN)
        assert not any(t in after.cmdline_tokens() for t in TOKENS), after.cmdline_tokens()
    finally:
        after.close()
