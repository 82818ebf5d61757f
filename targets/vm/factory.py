"""`--host qemu`: build (or reuse) the guest image, reap VMs left by dead runs, make a QemuHost."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from targets.vm.image import build_image, default_image_cache_dir

log = logging.getLogger("ostune.qemu")

# --host-set keys that change the machine being measured (as opposed to how long to wait for it):
# trials on a 1 GiB guest and a 4 GiB one, or under TCG and KVM, are not comparable.
MACHINE_SETTINGS = frozenset({"bootloader", "memory_mb", "vcpus", "accel", "boot_mode", "extra_qemu_args"})


def make_qemu_host(
    cache_dir: str | Path | None = None,
    bootloader: str = "direct",
    memory_mb: int = 1024,
    vcpus: int = 2,
    accel: str = "auto",
    boot_timeout_s: float | None = None,
    run_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    **kwargs: object,
):
    """QemuHost on the cached image (built on first use, which needs root and ~2 minutes)."""
    from targets.hosts.qemu import QemuHost, reap_stale_qemu

    say = progress or (lambda msg: log.info("%s", msg))
    killed = reap_stale_qemu(Path(run_dir) if run_dir is not None else None)
    if killed:
        say(f"killed {len(killed)} QEMU process(es) left by dead ostune runs: {killed}")
    image = build_image(
        Path(cache_dir) if cache_dir is not None else default_image_cache_dir(),
        bootloader,  # type: ignore[arg-type]
        progress=say,
    )
    return QemuHost(
        image,
        memory_mb=memory_mb,
        vcpus=vcpus,
        accel=accel,  # type: ignore[arg-type]
        boot_timeout_s=boot_timeout_s,
        run_dir=run_dir,
        progress=say,
        **kwargs,  # type: ignore[arg-type]
    )
