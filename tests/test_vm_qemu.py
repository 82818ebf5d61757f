"""QemuHost and SshHost against a real QEMU guest (TCG unless KVM works). Marked vm.

One VM is booted for the module and reused; the tests run in file order. Expect ~3 TCG boots
(~30-50 s each) plus the image build on a cold cache (~2 min).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Iterator

import pytest

from targets.hosts.qemu import BootFailedError, QemuHost
from targets.hosts.ssh import SshHost
from targets.vm.image import GuestImage
from tests.conftest_vm import get_image, progress, qemu_pids_for
from tuner.errors import ApplyError, HostError, HostUnreachableError, KnobUnavailableError

pytestmark = pytest.mark.vm

TOKENS = ("mitigations=off", "sysctl.vm.swappiness=13")
SYSCTLS = (
    "/proc/sys/vm/swappiness",
    "/proc/sys/vm/dirty_ratio",
    "/proc/sys/net/core/somaxconn",
    "/proc/sys/kernel/sched_autogroup_enabled",
)


@pytest.fixture(scope="session")
def direct_image() -> GuestImage:
    return get_image("direct")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qemu-run")


@pytest.fixture(scope="module")
def vm(direct_image: GuestImage, run_dir: Path) -> Iterator[QemuHost]:
    host = QemuHost(direct_image, memory_mb=1024, vcpus=2, accel="auto", run_dir=run_dir, progress=progress)
    try:
        host.start(TOKENS)
        yield host
    finally:
        host.close()
    assert qemu_pids_for(str(run_dir)) == [], "a qemu process outlived its QemuHost"
    assert list(run_dir.glob("qemu-*")) == [], "pidfile records left behind"


def test_boot_tokens_reach_the_guest_kernel(vm: QemuHost) -> None:
    cmdline = vm.read_text("/proc/cmdline").split()
    assert all(token in cmdline for token in TOKENS)
    assert vm.read_text("/proc/sys/vm/swappiness").strip() == "13"
    facts = vm.facts()
    assert facts.kernel.endswith("cloud-amd64") and facts.cpu_count == 2
    assert 800 < facts.memory_mb <= 1024
    assert facts.extra["qemu_accel"] in ("kvm", "tcg")
    assert vm.key.startswith("qemu:") and vm.supports_boot
    progress(f"boot took {vm.last_boot_s:.1f} s with {vm.accel_used}")


def test_pidfile_records_the_running_qemu(vm: QemuHost, run_dir: Path) -> None:
    records = list(run_dir.glob("qemu-*.json"))
    assert len(records) == 1
    assert qemu_pids_for(str(run_dir)) == [vm.pid]
    assert (run_dir / records[0].name.replace(".json", ".pid")).read_text().strip() == str(vm.pid)


def test_runtime_sysctl_write_and_read_back(vm: QemuHost) -> None:
    path = "/proc/sys/vm/dirty_ratio"
    before = vm.read_text(path).strip()
    vm.write_text(path, "33")
    assert vm.read_text(path).strip() == "33"
    vm.write_text(path, before)
    assert vm.read_text(path).strip() == before


def test_kernel_refusals_are_typed_errors(vm: QemuHost) -> None:
    with pytest.raises(ApplyError, match="Invalid argument"):
        vm.write_text("/proc/sys/vm/swappiness", "not-a-number")
    with pytest.raises(ApplyError):
        vm.write_text("/proc/sys/kernel/osrelease", "1.0")  # read-only sysctl
    with pytest.raises(KnobUnavailableError):
        vm.write_text("/proc/sys/vm/no_such_knob", "1")
    with pytest.raises(KnobUnavailableError):
        vm.read_text("/proc/sys/vm/no_such_knob")
    assert vm.read_text("/proc/sys/vm/swappiness").strip() == "13"


def test_commands_are_not_shell_interpreted(vm: QemuHost) -> None:
    evil = "$(touch /tmp/pwned); `touch /tmp/pwned` && touch /tmp/pwned 'quote\" \\ \n"
    result = vm.run(["printf", "%s", evil])
    assert result.stdout == evil
    assert not vm.exists("/tmp/pwned")
    assert vm.run(["sh", "-c", "exit 3"], check=False).exit_code == 3
    with pytest.raises(HostError, match="exit 3"):
        vm.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert vm.run(["cat"], input_text="from stdin").stdout == "from stdin"
    assert vm.run(["sh", "-c", 'printf %s "$X"'], env={"X": "a b"}).stdout == "a b"


def test_spawn_workdir_and_terminate(vm: QemuHost) -> None:
    workdir = vm.make_workdir("redis")
    assert vm.exists(workdir)
    proc = vm.spawn(["redis-server", "--port", "6390", "--save", ""], log_path=f"{workdir}/redis.log", cwd=workdir)
    deadline = time.monotonic() + 60
    while vm.run(["redis-cli", "-p", "6390", "ping"], check=False).stdout.strip() != "PONG":
        assert vm.is_alive(proc) and time.monotonic() < deadline, vm.read_text(f"{workdir}/redis.log")
        time.sleep(0.5)
    vm.terminate(proc, timeout_s=5)
    assert not vm.is_alive(proc)
    vm.remove_tree(workdir)
    assert not vm.exists(workdir)


def test_ensure_boot_with_same_tokens_does_not_reboot(vm: QemuHost) -> None:
    boot_id = vm.boot_id()
    assert vm.ensure_boot(list(TOKENS)) is False
    assert vm.boot_id() == boot_id


def test_ssh_host_applies_and_restores_runtime_values(vm: QemuHost, direct_image: GuestImage) -> None:
    url = f"ssh://root@127.0.0.1:{vm.port}"
    # unknown host key: refused unless pinned or explicitly accepted
    stranger = SshHost(url, key_path=str(direct_image.ssh_key), connect_timeout_s=20)
    with pytest.raises(HostError, match="unknown|known_hosts"):
        stranger.run(["true"])
    stranger.close()

    host = SshHost(
        url,
        key_path=str(direct_image.ssh_key),
        known_hosts_path=str(direct_image.known_hosts),
        host_key_alias=direct_image.host_key_alias,
        connect_timeout_s=20,
    )
    try:
        host.start()
        assert host.key == url + "" and host.supports_boot
        snapshot = {path: host.read_text(path) for path in SYSCTLS}
        new_values = {
            "/proc/sys/vm/swappiness": "71",
            "/proc/sys/vm/dirty_ratio": "17",
            "/proc/sys/net/core/somaxconn": "2048",
            "/proc/sys/kernel/sched_autogroup_enabled": "0",
        }
        for path, value in new_values.items():
            host.write_text(path, value)
        assert {p: vm.read_text(p).strip() for p in SYSCTLS} == new_values  # seen by the other connection
        for path, value in snapshot.items():
            host.write_text(path, value.strip())
        assert {path: host.read_text(path) for path in SYSCTLS} == snapshot
        assert host.facts().hostname == "ostune-guest"
    finally:
        host.close()

    trusting = SshHost(url, key_path=str(direct_image.ssh_key), accept_unknown_host_key=True, connect_timeout_s=20)
    try:
        assert trusting.run(["uname", "-n"]).stdout.strip() == "ostune-guest"
    finally:
        trusting.close()


def test_ssh_host_non_root_without_passwordless_sudo_is_a_clear_error(vm: QemuHost, direct_image: GuestImage) -> None:
    vm.run(["useradd", "--create-home", "--shell", "/bin/sh", "tuner"])
    vm.run(["install", "-d", "-o", "tuner", "-m", "700", "/home/tuner/.ssh"])
    vm.run(["install", "-o", "tuner", "-m", "600", "/root/.ssh/authorized_keys", "/home/tuner/.ssh/authorized_keys"])
    host = SshHost(
        f"ssh://tuner@127.0.0.1:{vm.port}",
        key_path=str(direct_image.ssh_key),
        known_hosts_path=str(direct_image.known_hosts),
        host_key_alias=direct_image.host_key_alias,
        connect_timeout_s=20,
    )
    try:
        with pytest.raises(HostError, match="passwordless sudo"):
            host.read_text("/proc/sys/vm/swappiness")
    finally:
        host.close()
        vm.run(["userdel", "--remove", "tuner"], check=False)


def test_failed_boot_reports_console_and_next_boot_works(vm: QemuHost, run_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BootFailedError) as info:
        vm.ensure_boot(["init=/bin/false"])
    progress(f"failed boot detected after {time.monotonic() - started:.1f} s: {info.value}")
    assert "Kernel panic" in info.value.console_tail or "init" in info.value.console_tail
    assert "console" in str(info.value)
    assert not vm.running and qemu_pids_for(str(run_dir)) == []
    with pytest.raises(HostError, match="not running"):
        vm.run(["true"])
    # the next boot starts fresh
    assert vm.ensure_boot(["sysctl.vm.swappiness=21"]) is True
    assert vm.read_text("/proc/sys/vm/swappiness").strip() == "21"
    assert "init=/bin/false" not in vm.read_text("/proc/cmdline")


def test_a_guest_whose_qemu_died_is_lost_and_replaced_by_a_fresh_one_with_its_command_line(vm: QemuHost) -> None:
    tokens = vm.current_tokens
    old_pid = vm.pid
    assert old_pid is not None and tokens
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while vm.running and time.monotonic() < deadline:
        time.sleep(0.1)
    # whatever command comes next finds the guest gone, not a command failing on it
    with pytest.raises(HostUnreachableError, match="is gone: qemu exited with code -9"):
        vm.run(["true"], timeout_s=10)
    assert vm.crash_report() is None  # killed: its console shows no panic
    said = vm.stop_unless_answering(HostUnreachableError("gone"), "test")
    assert said.startswith("booted a fresh guest") and "qemu exited" in said, said
    assert vm.running and vm.pid != old_pid
    assert set(tokens) <= set(vm.read_text("/proc/cmdline").split())
    assert vm.ensure_boot(tokens) is True  # the replacement is the next caller's boot, once
    assert vm.ensure_boot(tokens) is False


def test_close_leaves_no_qemu(vm: QemuHost, run_dir: Path) -> None:
    pid = vm.pid
    assert pid is not None and qemu_pids_for(str(run_dir)) == [pid]
    vm.close()
    assert qemu_pids_for(str(run_dir)) == []
    assert not Path(f"/proc/{pid}").exists() or "qemu" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert list(run_dir.glob("qemu-*")) == []


def test_boot_timeout_kills_the_vm(direct_image: GuestImage, tmp_path: Path) -> None:
    host = QemuHost(direct_image, accel="tcg", boot_timeout_s=4, run_dir=tmp_path, progress=progress)
    try:
        with pytest.raises(BootFailedError, match="did not answer SSH in time") as info:
            host.start()
        assert isinstance(info.value.console_tail, str)
        assert not host.running and qemu_pids_for(str(tmp_path)) == []
        assert list(tmp_path.glob("qemu-*")) == []
    finally:
        host.close()


def test_qemu_dies_with_a_killed_owner_and_its_record_is_reaped(direct_image: GuestImage, tmp_path: Path) -> None:
    """kill -9 of the ostune process: PDEATHSIG kills qemu; reap_stale_qemu clears the record."""
    import subprocess
    import sys

    from targets.hosts.qemu import reap_stale_qemu

    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from targets.vm.image import GuestImage\n"
        "from targets.hosts.qemu import QemuHost\n"
        "host = QemuHost(GuestImage.load(Path(sys.argv[1])), accel='tcg', run_dir=sys.argv[2])\n"
        "host._launch('tcg', ())\n"
        "print(host.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(direct_image.directory), str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert owner.stdout is not None
        qemu_pid = int(owner.stdout.readline())
        assert qemu_pids_for(str(tmp_path)) == [qemu_pid]
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while qemu_pids_for(str(tmp_path)):
            assert time.monotonic() < deadline, "qemu outlived its kill -9'd owner"
            time.sleep(0.1)
        assert len(list(tmp_path.glob("qemu-*.json"))) == 1  # the dead owner could not clean up
        record = json.loads(next(tmp_path.glob("qemu-*.json")).read_text())
        assert Path(record["workdir"]).is_dir()
        assert reap_stale_qemu(tmp_path) == []  # qemu already gone: nothing to kill
        assert not Path(record["workdir"]).exists()  # its overlay is cleaned up
        assert list(tmp_path.glob("qemu-*")) == []
    finally:
        owner.kill()
        owner.wait()
