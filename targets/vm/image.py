"""Build (once) and cache the Debian bookworm guest image that QemuHost boots.

The image is built with ``debootstrap --variant=minbase`` from a Debian mirror, configured
offline in a chroot, written into a partitioned raw disk with ``mke2fs -d`` (no loop devices,
no mounts of the image) and converted to qcow2. The kernel and initrd are copied out next to it
for QEMU's direct-kernel boot. The ``grub`` variant is the ``direct`` image plus GRUB installed
to the disk's MBR from inside the guest (one extra boot at build time), so it boots from its own
disk and SshHost can change its command line through ``/etc/default/grub.d``.

Layout (``cache_dir`` defaults to ``~/.cache/ostune/images``)::

    <cache_dir>/<recipe-hash>/          one finished image (manifest.json written last)
        disk.qcow2 vmlinuz initrd.img id_ed25519 id_ed25519.pub known_hosts build.log
    <cache_dir>/<recipe-hash>.lock      flock held while building
    <cache_dir>/debs/                   debootstrap --cache-dir: downloaded .debs, reused

The recipe hash covers the package list, the bootloader, the base command line, the disk size and
BUILDER_VERSION; anything else (mirror, progress) does not force a rebuild.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence
from contextlib import contextmanager

from tuner.errors import BadInputError, HostError

#: bump when the build steps change in a way that changes the image
BUILDER_VERSION = 1
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: host name under which the guest's host key is pinned in the image's known_hosts file
HOST_KEY_ALIAS = "ostune-guest"
DISK_SIZE_MB = 4096
PART_OFFSET_BYTES = 1024 * 1024

#: everything the guest needs; grub-pc is in both variants (the direct image is the grub
#: image's base), it only gets written to the MBR in the grub variant.
PACKAGES: tuple[str, ...] = (
    "systemd-sysv",
    "udev",
    "kmod",
    "initramfs-tools",
    "linux-image-cloud-amd64",
    "e2fsprogs",
    "openssh-server",
    "iproute2",
    "netbase",
    "procps",
    "redis-server",
    "redis-tools",
    "mariadb-server",
    "sysbench",
    "grub-pc",
)

#: kernel command line of every boot; QemuHost appends the proposed boot tokens to it
BASE_CMDLINE = "root=/dev/vda1 rw console=ttyS0,115200n8 net.ifnames=0"

#: units that only cost boot time in a throw-away VM
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "logrotate.timer",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
)
#: ostune's app adapters start their own server processes with their own config
DISABLED_UNITS: tuple[str, ...] = ("redis-server.service", "mariadb.service", "mariadb.socket")

Bootloader = Literal["direct", "grub"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class GuestImage:
    """A finished, cached guest image. Treat the files as read-only: boots use overlays."""

    qcow2: Path
    kernel: Path
    initrd: Path
    ssh_key: Path
    known_hosts: Path
    base_cmdline: str
    recipe_hash: str
    bootloader: str
    host_key_alias: str = HOST_KEY_ALIAS

    @property
    def directory(self) -> Path:
        return self.qcow2.parent

    @classmethod
    def load(cls, directory: Path) -> "GuestImage":
        data = json.loads((directory / "manifest.json").read_text())
        paths = {k: directory / data[k] for k in ("qcow2", "kernel", "initrd", "ssh_key", "known_hosts")}
        return cls(
            **paths,
            base_cmdline=data["base_cmdline"],
            recipe_hash=data["recipe_hash"],
            bootloader=data["bootloader"],
            host_key_alias=data.get("host_key_alias", HOST_KEY_ALIAS),
        )


def default_image_cache_dir() -> Path:
    """``$OSTUNE_CACHE_DIR/images``, else ``$XDG_CACHE_HOME/ostune/images``, else ``~/.cache/…``."""
    root = os.environ.get("OSTUNE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "images"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ostune" / "images"


def recipe(bootloader: str) -> dict[str, object]:
    return {
        "builder_version": BUILDER_VERSION,
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "masked": sorted(MASKED_UNITS),
        "disabled": sorted(DISABLED_UNITS),
        "base_cmdline": BASE_CMDLINE,
        "disk_size_mb": DISK_SIZE_MB,
        "bootloader": bootloader,
    }


def recipe_hash(bootloader: str) -> str:
    blob = json.dumps(recipe(bootloader), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_image(
    cache_dir: Path,
    bootloader: Bootloader = "direct",
    progress: Progress | None = None,
    force: bool = False,
) -> GuestImage:
    """Return the cached image for this recipe, building it first if needed (needs root).

    Concurrent callers wait on a per-recipe lock; the second one finds the finished image.
    """
    if bootloader not in ("direct", "grub"):
        raise BadInputError(f"unknown bootloader {bootloader!r}; valid: 'direct', 'grub'")
    say: Progress = progress or (lambda _msg: None)
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    rhash = recipe_hash(bootloader)
    final = cache_dir / rhash
    if not force and (final / "manifest.json").exists():
        return GuestImage.load(final)
    _check_build_prerequisites(bootloader)
    with _locked(cache_dir / f"{rhash}.lock", say):
        if not force and (final / "manifest.json").exists():
            say(f"image {rhash} was built by another process meanwhile")
            return GuestImage.load(final)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f"{rhash}.tmp-", dir=cache_dir))
        try:
            if bootloader == "direct":
                _build_direct(cache_dir, work, rhash, say)
            else:
                base = build_image(cache_dir, "direct", progress, force=False)
                _build_grub(base, work, rhash, say)
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        image = GuestImage.load(final)
        size_mb = image.qcow2.stat().st_size / 2**20
        say(f"image {rhash} ({bootloader}) ready in {time.monotonic() - started:.0f} s, "
            f"qcow2 {size_mb:.0f} MiB, at {final}")
        return image


@dataclass(frozen=True)
class PrunedEntry:
    path: Path
    size_bytes: int
    why: str


def prune_images(cache_dir: Path) -> list[PrunedEntry]:
    """Remove from the image cache what this version of ostune will not use again: images built
    from other recipes (an older ostune, another package list) and unfinished builds whose builder
    is gone. The current recipes' images, the shared package cache and any build in progress (its
    lock is held) stay."""
    cache_dir = Path(cache_dir).expanduser()
    if not cache_dir.is_dir():
        return []
    current = {recipe_hash("direct"), recipe_hash("grub")}
    pruned: list[PrunedEntry] = []
    for entry in sorted(cache_dir.iterdir()):
        if entry.name == "debs" or entry.suffix == ".lock":
            continue
        rhash, unfinished = entry.name.split(".tmp-")[0], ".tmp-" in entry.name
        if not entry.is_dir() or (rhash in current and not unfinished):
            continue
        with open(cache_dir / f"{rhash}.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            size = _tree_size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            pruned.append(PrunedEntry(entry, size, "unfinished build" if unfinished else "image of another recipe"))
    for lock_path in sorted(cache_dir.glob("*.lock")):
        # the lock of a recipe nothing is left of: no image, no build
        if lock_path.stem not in current and not any(
                p.name.startswith(lock_path.stem) and p.is_dir() for p in cache_dir.iterdir()):
            lock_path.unlink(missing_ok=True)
    return pruned


def _tree_size(path: Path) -> int:
    """Bytes allocated on disk (qcow2 images are sparse: their length overstates them)."""
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_blocks * 512
        except OSError:
            pass
    return total


# -- build steps ------------------------------------------------------------------------------


def _build_direct(cache_dir: Path, work: Path, rhash: str, say: Progress) -> None:
    log = work / "build.log"
    root = work / "rootfs"
    root.mkdir()
    debs = cache_dir / "debs"
    debs.mkdir(exist_ok=True)
    mirror = os.environ.get("OSTUNE_DEBIAN_MIRROR", DEFAULT_MIRROR)
    t0 = time.monotonic()
    say(f"debootstrap {SUITE} (minbase + {len(PACKAGES)} packages) from {mirror}; "
        f"package cache {debs}")
    _run_logged(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--cache-dir={debs}",
            SUITE,
            str(root),
            mirror,
        ],
        log,
        say,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )
    say(f"debootstrap done in {time.monotonic() - t0:.0f} s; configuring guest")
    _configure_rootfs(root, work, log)
    _export_boot_files(root, work)
    _trim_rootfs(root)
    say("writing disk image")
    _make_disk(root, work, log)
    shutil.rmtree(root)
    _write_manifest(work, rhash, "direct")


def _build_grub(base: GuestImage, work: Path, rhash: str, say: Progress) -> None:
    for name in ("kernel", "initrd", "ssh_key", "known_hosts"):
        src: Path = getattr(base, name)
        shutil.copy2(src, work / src.name)
    shutil.copy2(base.ssh_key.with_suffix(".pub"), work / (base.ssh_key.name + ".pub"))
    say("copying the direct image to install GRUB into it")
    subprocess.run(["cp", "--sparse=always", str(base.qcow2), str(work / "disk.qcow2")], check=True)
    _write_manifest(work, rhash, "grub")  # provisional, lets GuestImage.load() describe it
    image = GuestImage.load(work)
    say("booting the image once to run grub-install /dev/vda + update-grub in the guest")
    from targets.hosts.qemu import QemuHost  # local import: qemu.py imports this module

    with QemuHost(image, boot_mode="direct", use_overlay=False, progress=say) as vm:
        vm.start()
        vm.run(["grub-install", "--target=i386-pc", "/dev/vda"], timeout_s=300)
        vm.run(["update-grub"], timeout_s=300)
        vm.run(["sh", "-c", "echo 'grub-pc grub-pc/install_devices multiselect /dev/vda' "
                "| debconf-set-selections"], timeout_s=60)
        vm.shutdown()
    _write_manifest(work, rhash, "grub")


def _configure_rootfs(root: Path, work: Path, log: Path) -> None:
    def write(rel: str, text: str, mode: int = 0o644) -> None:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    write("/etc/hostname", "ostune-guest\n")
    write("/etc/hosts", "127.0.0.1 localhost\n127.0.1.1 ostune-guest\n::1 localhost ip6-localhost\n")
    write("/etc/fstab", "/dev/vda1 / ext4 defaults,noatime 0 0\n")
    write("/etc/machine-id", secrets.token_hex(16) + "\n", 0o444)
    write(
        "/etc/systemd/network/10-eth.network",
        "[Match]\nName=eth* en*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
    )
    # virtio drivers into the initramfs (MODULES=most already has them; be explicit)
    write(
        "/etc/initramfs-tools/modules",
        "virtio_pci\nvirtio_blk\nvirtio_net\nvirtio_scsi\nvirtio_rng\next4\n",
    )
    # GRUB defaults (used by the grub variant; harmless in the direct one)
    write(
        "/etc/default/grub",
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=Debian\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8 net.ifnames=0"\n'
        "GRUB_TERMINAL=serial\n"
        'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
        "GRUB_DISABLE_OS_PROBER=true\n",
    )
    (root / "etc/default/grub.d").mkdir(parents=True, exist_ok=True)
    # SSH: key-only root login, our pinned host key only
    write(
        "/etc/ssh/sshd_config.d/ostune.conf",
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUseDNS no\nHostKey /etc/ssh/ssh_host_ed25519_key\n",
    )
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    _run_logged(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@ostune-guest",
                 "-f", str(host_key)], log)
    client_key = work / "id_ed25519"
    _run_logged(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ostune",
                 "-f", str(client_key)], log)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(client_key.with_suffix(".pub"), ssh_dir / "authorized_keys")
    (ssh_dir / "authorized_keys").chmod(0o600)
    pub = host_key.with_suffix(".pub").read_text().split()
    (work / "known_hosts").write_text(f"{HOST_KEY_ALIAS} {pub[0]} {pub[1]}\n")

    with _chroot_mounts(root):
        chroot = ["chroot", str(root)]
        _run_logged(chroot + ["systemctl", "enable", "systemd-networkd.service"], log)
        _run_logged(chroot + ["systemctl", "mask", *MASKED_UNITS], log)
        _run_logged(chroot + ["systemctl", "disable", *DISABLED_UNITS], log)
        _run_logged(chroot + ["passwd", "--lock", "root"], log)
        _run_logged(chroot + ["update-initramfs", "-u", "-k", "all"], log)


def _export_boot_files(root: Path, work: Path) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise HostError(f"image build produced no kernel/initrd in {root / 'boot'}; see build.log")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    shutil.copy2(initrds[-1], work / "initrd.img")


def _trim_rootfs(root: Path) -> None:
    for rel in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "var/cache/apt", "var/lib/apt/lists"):
        target = root / rel
        if target.exists():
            shutil.rmtree(target)
            target.mkdir()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    for logfile in (root / "var/log").rglob("*"):
        if logfile.is_file():
            logfile.unlink()


def _make_disk(root: Path, work: Path, log: Path) -> None:
    raw = work / "disk.raw"
    with open(raw, "wb") as fh:
        fh.truncate(DISK_SIZE_MB * 2**20)
    _write_mbr(raw, PART_OFFSET_BYTES // 512, (DISK_SIZE_MB * 2**20 - PART_OFFSET_BYTES) // 512)
    fs_kib = (DISK_SIZE_MB * 2**20 - PART_OFFSET_BYTES) // 1024
    _run_logged(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", "ostune-root",
         "-E", f"offset={PART_OFFSET_BYTES},nodiscard", "-d", str(root), str(raw), f"{fs_kib}k"],
        log,
    )
    _run_logged(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                 str(work / "disk.qcow2")], log)
    raw.unlink()


def _write_mbr(raw: Path, start_lba: int, sectors: int) -> None:
    """One bootable Linux partition in a DOS partition table (what sfdisk would write)."""
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start_lba, sectors)
    with open(raw, "r+b") as fh:
        fh.seek(440)
        fh.write(secrets.token_bytes(4) + b"\0\0" + entry + b"\0" * 48 + b"\x55\xaa")


def _write_manifest(work: Path, rhash: str, bootloader: str) -> None:
    data = {
        "qcow2": "disk.qcow2",
        "kernel": "vmlinuz",
        "initrd": "initrd.img",
        "ssh_key": "id_ed25519",
        "known_hosts": "known_hosts",
        "base_cmdline": BASE_CMDLINE,
        "recipe_hash": rhash,
        "bootloader": bootloader,
        "host_key_alias": HOST_KEY_ALIAS,
        "recipe": recipe(bootloader),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = work / "manifest.json.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, work / "manifest.json")


# -- helpers --------------------------------------------------------------------------------

_TOOLS = {
    "debootstrap": "debootstrap",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "ssh-keygen": "openssh-client",
    "chroot": "coreutils",
}


def _check_build_prerequisites(bootloader: str) -> None:
    if os.geteuid() != 0:
        raise HostError(
            "building the ostune guest image needs root (debootstrap and chroot); run the first "
            "build as root (e.g. sudo), later runs reuse the cached image"
        )
    tools = dict(_TOOLS)
    if bootloader == "grub":
        tools["qemu-system-x86_64"] = "qemu-system-x86"
    missing = [f"{tool} (apt install {pkg})" for tool, pkg in tools.items() if not shutil.which(tool)]
    if missing:
        raise HostError("building the guest image needs: " + ", ".join(missing))


@contextmanager
def _locked(path: Path, say: Progress) -> Iterator[None]:
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another ostune process building {path.stem}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _chroot_mounts(root: Path) -> Iterator[None]:
    mounted: list[Path] = []
    try:
        for fstype, rel in (("proc", "proc"), ("sysfs", "sys")):
            target = root / rel
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", fstype, fstype, str(target)], check=True)
            mounted.append(target)
        target = root / "dev"
        subprocess.run(["mount", "--bind", "/dev", str(target)], check=True)
        mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


_PER_PACKAGE = ("I: Retrieving", "I: Validating", "I: Extracting", "I: Unpacking",
                "I: Configuring", "I: Checking component")


def _run_logged(
    argv: Sequence[str],
    log: Path,
    say: Progress | None = None,
    *,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
) -> None:
    """Run a build step, appending its output to build.log; HostError with the log tail on failure."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            env=full_env,
            text=True,
        )
        if input_text is not None:
            assert proc.stdin is not None
            proc.stdin.write(input_text)
            proc.stdin.close()
        assert proc.stdout is not None
        counted = 0
        for line in proc.stdout:
            out.write(line)
            if say and line.startswith("I: "):
                if line.startswith(_PER_PACKAGE):
                    counted += 1
                    if counted % 100 == 0:
                        say(f"debootstrap: {line[3:].strip()} …")
                else:
                    say(f"debootstrap: {line[3:].strip()}")
        code = proc.wait()
    if code != 0:
        lines = log.read_text(errors="replace").splitlines()
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
        err = HostError(f"image build step {' '.join(argv[:2])} failed (exit {code}): {last!r}; "
                        f"full log: {log}")
        err.log_tail = "\n".join(lines[-30:])  # type: ignore[attr-defined]
        raise err
