"""Shared helpers for the VM tests (imported by tests/test_vm_*.py; not an auto-loaded conftest)."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from targets.hosts.qemu import QemuHost
from targets.hosts.ssh import SshHost
from targets.vm.image import GuestImage, build_image


def cache_root() -> Path:
    root = os.environ.get("OSTUNE_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ostune"


def progress(msg: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def require_vm_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.skip("VM tests build a guest image with debootstrap: run them as root")
    for tool in ("debootstrap", "qemu-system-x86_64", "qemu-img", "mke2fs", "ssh-keygen"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            pytest.skip(f"VM tests need {tool}")


def get_image(bootloader: str) -> GuestImage:
    require_vm_prerequisites()
    return build_image(cache_root() / "images", bootloader, progress=progress)  # type: ignore[arg-type]


def qemu_pids_for(marker: str) -> list[int]:
    """Pids of qemu processes whose command line mentions marker (a workdir or run dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            continue
        if cmd and b"qemu-system" in cmd[0] and any(marker.encode() in part for part in cmd):
            pids.append(int(proc.name))
    return pids


@contextmanager
def booted_guest(image: GuestImage, run_dir: Path, **options: Any) -> Iterator[QemuHost]:
    """A guest booted for a test module (KVM if it works, else TCG); no qemu may outlive it."""
    host = QemuHost(image, accel="auto", run_dir=run_dir, progress=progress, **options)
    try:
        host.start()
        yield host
    finally:
        host.close()
    assert qemu_pids_for(str(run_dir)) == [], "a qemu process outlived its QemuHost"


def ssh_args(vm: QemuHost, image: GuestImage) -> list[str]:
    """The ostune options that reach the running guest as an SSH host, its key pinned."""
    return ["--host", f"ssh://root@127.0.0.1:{vm.port}", "--host-set", f"key_path={image.ssh_key}",
            "--host-set", f"known_hosts_path={image.known_hosts}", "--host-set", f"host_key_alias={image.host_key_alias}"]


def guest_as_ssh_host(vm: QemuHost, image: GuestImage, **options: Any) -> SshHost:
    """The running guest reached the way a real remote machine is: SshHost, its key pinned."""
    return SshHost(f"ssh://root@127.0.0.1:{vm.port}", key_path=str(image.ssh_key),
                   known_hosts_path=str(image.known_hosts), host_key_alias=image.host_key_alias,
                   **{"connect_timeout_s": 20, **options})
