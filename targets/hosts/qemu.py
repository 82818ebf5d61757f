"""QemuHost: a throw-away QEMU guest booted from the cached ostune image, driven over SSH.

Each boot gets a fresh qcow2 overlay on the read-only base image, a free loopback port forwarded
to the guest's sshd, and its serial console in a log file. Boot parameters are applied by booting
again: in ``direct`` mode with ``-kernel/-initrd -append "<base cmdline> <tokens>"`` (sysctls on
the command line use the ``sysctl.`` prefix, e.g. ``sysctl.vm.swappiness=10``); in ``disk`` mode
(grub images) through the guest's own GRUB like SshHost does.

No QEMU process outlives its QemuHost: close() kills it, a finalizer kills it at interpreter exit,
qemu gets PR_SET_PDEATHSIG(SIGKILL) so it dies with ostune even on kill -9, and every VM is
recorded in a pidfile under the run dir so reap_stale_qemu() can clean up after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Literal, Sequence

from targets.hosts.local import die_with_parent, owned_tempdir
from targets.hosts.ssh import GrubBoot, RemoteHost, SshSession, check_boot_tokens
from targets.vm.image import GuestImage
from tuner.errors import BadInputError, HostError, HostUnreachableError
from tuner.ownership import process_start_ticks

log = logging.getLogger("ostune.qemu")

Accel = Literal["auto", "kvm", "tcg"]
BootMode = Literal["direct", "disk"]

#: how long "auto" waits for the guest kernel's first console line under KVM before using TCG
KVM_PROBE_TIMEOUT_S = 15.0
DEFAULT_BOOT_TIMEOUT_S = {"kvm": 120.0, "tcg": 300.0}

# process-wide memory of a KVM that was tried and did not start the guest
_kvm_broken: str | None = None


class BootFailedError(HostError):
    """The guest did not become reachable over SSH. ``console_tail`` holds its serial output."""

    def __init__(self, message: str, console_tail: str = "") -> None:
        super().__init__(message)
        self.console_tail = console_tail


def default_run_dir() -> Path:
    root = os.environ.get("OSTUNE_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "run"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ostune" / "run"


# -- process bookkeeping ------------------------------------------------------------------------


def _same_process(pid: int, start_time: int | None) -> bool:
    return pid > 0 and start_time is not None and process_start_ticks(pid) == start_time


def reap_stale_qemu(run_dir: Path | None = None) -> list[int]:
    """Kill QEMU processes recorded by ostune processes that no longer exist; return their pids.

    A record names both processes with their start times, so a recycled pid is never killed.
    Records of live ostune processes are left alone.
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
    killed: list[int] = []
    if not run_dir.is_dir():
        return killed
    for record_path in sorted(run_dir.glob("qemu-*.json")):
        try:
            record = json.loads(record_path.read_text())
            owner, owner_start = int(record["ostune_pid"]), record.get("ostune_start")
            qemu, qemu_start = int(record["qemu_pid"]), record.get("qemu_start")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _same_process(owner, owner_start):
            continue
        if _same_process(qemu, qemu_start):
            try:
                os.kill(qemu, signal.SIGKILL)
                killed.append(qemu)
            except ProcessLookupError:
                pass
        workdir = record.get("workdir")
        if record.get("own_workdir") and workdir and Path(workdir).name.startswith("ostune-qemu-"):
            shutil.rmtree(workdir, ignore_errors=True)  # the overlay and console log of a dead run
        for path in (record_path, record_path.with_suffix(".pid")):
            path.unlink(missing_ok=True)
    return killed


def _kill_process(proc: subprocess.Popen, record: Path | None) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    if record is not None:
        record.unlink(missing_ok=True)
        record.with_suffix(".pid").unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _qemu_path_escape(path: Path) -> str:
    return str(path).replace(",", ",,")


_NOTABLE = re.compile(r"Kernel panic|not syncing|Attempted to kill init|error|fail|Gave up|ALERT", re.I)


def console_tail(text: str, lines: int = 40) -> str:
    """The last lines of a guest's serial output, led by the kernel's panic line when that has
    scrolled out of them: a panic's stack trace under TCG can be longer than the tail, and the
    trace without its headline does not say what went wrong."""
    all_lines = text.replace("\r", "").splitlines()
    tail = all_lines[-lines:]
    panic = next((line for line in reversed(all_lines[:-lines]) if "Kernel panic" in line), None)
    if panic is not None and not any("Kernel panic" in line for line in tail):
        tail = [panic, "..."] + tail
    return "\n".join(tail)


def _console_summary(tail: str) -> str:
    """The most telling console line (a panic reason beats the register dump), else the last ones."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    notable = [ln for ln in lines if _NOTABLE.search(ln)]
    picked = notable[-2:] if notable else lines[-3:]
    return " | ".join(picked)[-400:] or "(no console output)"


def kvm_usable() -> str | None:
    """None if /dev/kvm can be opened read-write, else why not."""
    if _kvm_broken:
        return _kvm_broken
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no read/write access to /dev/kvm (add yourself to the kvm group)"
    return None


def check_extra_qemu_args(value: object) -> None:
    """extra_qemu_args is a list of strings: a string was split into characters ("-: invalid
    option"), a number crashed."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or \
            not all(isinstance(arg, str) for arg in value):
        raise BadInputError(f"--host-set extra_qemu_args={value!r}: give a list of qemu arguments, "
                            "e.g. --host-set 'extra_qemu_args=[-rtc, base=utc]'")


class QemuHost(RemoteHost):
    """A QEMU guest from a cached GuestImage; boot parameters applied by (re)booting it."""

    supports_boot = True

    def __init__(
        self,
        image: GuestImage,
        memory_mb: int = 1024,
        vcpus: int = 2,
        accel: Accel = "auto",
        boot_timeout_s: float | None = None,
        workdir: str | Path | None = None,
        *,
        run_dir: str | Path | None = None,
        boot_mode: BootMode | None = None,
        use_overlay: bool = True,
        progress: Callable[[str], None] | None = None,
        extra_qemu_args: Sequence[str] = (),
        kvm_probe_timeout_s: float = KVM_PROBE_TIMEOUT_S,
    ) -> None:
        if accel not in ("auto", "kvm", "tcg"):
            raise BadInputError(f"unknown accel {accel!r}; valid: auto, kvm, tcg")
        if boot_mode is None:
            boot_mode = "disk" if image.bootloader == "grub" else "direct"
        if boot_mode not in ("direct", "disk"):
            raise BadInputError(f"unknown boot_mode {boot_mode!r}; valid: direct, disk")
        if boot_mode == "disk" and image.bootloader != "grub":
            raise BadInputError("boot_mode='disk' needs an image built with bootloader='grub'")
        check_extra_qemu_args(extra_qemu_args)
        if memory_mb < 256 or vcpus < 1:
            raise BadInputError(f"memory_mb={memory_mb}, vcpus={vcpus}: need at least 256 MB and 1 vCPU")
        for path in (image.qcow2, image.kernel, image.initrd, image.ssh_key, image.known_hosts):
            if not Path(path).exists():
                raise HostError(f"guest image file {path} is missing; rebuild the image")
        if not shutil.which("qemu-system-x86_64"):
            raise HostError("qemu-system-x86_64 not found (apt install qemu-system-x86)")
        self.image = image
        self.memory_mb = memory_mb
        self.vcpus = vcpus
        self.accel = accel
        self.boot_timeout_s = boot_timeout_s
        self.boot_mode: BootMode = boot_mode
        self.use_overlay = use_overlay
        self.extra_qemu_args = tuple(extra_qemu_args)
        self.kvm_probe_timeout_s = kvm_probe_timeout_s
        self.key = f"qemu:{image.recipe_hash[:8]}"
        self._say = progress or (lambda msg: None)
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(owned_tempdir("ostune-qemu-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen | None = None
        self._record: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.RLock()
        self.port: int | None = None
        self.accel_used: str | None = None
        self.current_tokens: tuple[str, ...] | None = None
        self._wanted_tokens: tuple[str, ...] = ()  # what the last ensure_boot asked for (either mode)
        self._replaced = False  # a fresh guest replaced a crashed one since the last ensure_boot
        self.boot_count = 0
        self.last_boot_s: float | None = None
        self.serial_log = self.workdir / "serial.log"
        self._grub = GrubBoot(self, reboot_timeout_s=DEFAULT_BOOT_TIMEOUT_S["tcg"])

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, boot_tokens: Sequence[str] = ()) -> None:
        self.ensure_boot(boot_tokens)

    def ensure_boot(self, boot_tokens: Sequence[str]) -> bool:
        """Boot (or reboot) so the guest runs with exactly these extra tokens. True if it booted."""
        tokens = check_boot_tokens(boot_tokens)
        with self._lock:
            self._wanted_tokens = tokens
            # a guest replaced after a crash booted since the last call too: its runtime values
            # are the image's again
            booted, self._replaced = self._replaced, False
            if self.boot_mode == "disk":
                if not self.running:
                    self._boot(())
                    booted = True
                return self._grub.apply(tokens) or booted
            if self.running and self.current_tokens == tokens:
                return booted
            self._boot(tokens)
            return True

    def restore_boot(self) -> bool:
        """Disk mode: undo the GRUB drop-in (reboot). Direct mode: nothing persists, no-op."""
        if self.boot_mode == "disk" and self.running:
            return self._grub.restore()
        return False

    def crash_report(self) -> str | None:
        # panic=1 with -no-reboot makes qemu exit (direct mode); a disk-mode kernel hangs on
        # after its panic. Either way the console says so, and the serial log is this boot's.
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return None
        panic = next((line.strip() for line in reversed(text.splitlines()) if "Kernel panic" in line), None)
        return f"{panic}\n{console_tail(text)}" if panic is not None else None

    def stop_unless_answering(self, cause: Exception, stopped: str) -> str:
        """The guest is throwaway: one that crashed or stays silent is replaced by a freshly booted
        one with the same command line (the next trial applies its values again), so a
        configuration that brings the kernel down costs a trial, not the run."""
        with self._lock:
            crashed = self.crash_report() is not None
            if self.running and not crashed and self.unreachable_again() is None:
                return "answers again"
            if crashed:
                why = "its kernel panicked"
            elif not self.running:
                why = self._exit_reason() or "qemu exited"
            else:
                why = "it does not answer"
            self._say(f"qemu: the guest is down ({why}): booting a fresh one")
            self._stop_vm()
            try:
                self.ensure_boot(self._wanted_tokens)
            except HostError as exc:
                raise HostUnreachableError(f"{cause}; {stopped}, and a fresh guest did not come up ({exc})") from None
            self._replaced = True
            return f"booted a fresh guest in {self.last_boot_s or 0:.0f} s (the old one: {why})"

    def reap_stale_workdirs(self, parent: str | None = None) -> list[str]:
        # Every guest boots from a fresh overlay: a dead run's guest, its servers and their work
        # dirs died with its qemu, and reap_stale_qemu removes that overlay.
        return []

    def close(self) -> None:
        with self._lock:
            self._stop_vm()
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def shutdown(self, timeout_s: float = 120.0) -> None:
        """Clean poweroff (used when the disk itself must be consistent, e.g. image builds)."""
        with self._lock:
            if not self.running:
                return
            assert self._proc is not None
            try:
                self.run(["sh", "-c", "(sleep 1; systemctl poweroff) >/dev/null 2>&1 &"], timeout_s=30)
            except HostError:
                pass
            if self._session is not None:
                self._session.close()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("guest did not power off within %.0f s; killing qemu", timeout_s)
            self._stop_vm()

    def _stop_vm(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._finalizer is not None:
            self._finalizer()  # kills qemu, removes the pidfile record
            self._finalizer = None
        self._proc = None
        self.current_tokens = None
        self._grub = GrubBoot(self, reboot_timeout_s=self._grub.reboot_timeout_s)

    # -- booting --------------------------------------------------------------------------------
    def _choose_accel(self) -> tuple[str, bool]:
        """(accel, probing): probing means fall back to TCG if KVM shows no console output."""
        if self.accel == "tcg":
            return "tcg", False
        problem = kvm_usable()
        if self.accel == "kvm":
            if problem:
                raise HostError(f"accel=kvm requested but KVM is unusable: {problem}; use accel=tcg or auto")
            return "kvm", False
        if problem:
            self._say(f"qemu: using TCG (software emulation, slow): {problem}")
            return "tcg", False
        return "kvm", True

    def _cmdline(self, tokens: Sequence[str]) -> str:
        # panic=1 + -no-reboot: a guest that panics (e.g. init fails) makes qemu exit at once
        return " ".join([self.image.base_cmdline, "panic=1", *tokens])

    def _qemu_argv(self, accel: str, disk: Path, port: int, pidfile: Path) -> list[str]:
        argv = [
            "qemu-system-x86_64",
            "-name", "ostune-guest",
            "-machine", f"pc,accel={accel}",
            "-cpu", "host" if accel == "kvm" else "max",
            "-smp", str(self.vcpus),
            "-m", str(self.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-chardev", f"file,id=con0,path={_qemu_path_escape(self.serial_log)}",
            "-serial", "chardev:con0",
            "-drive", f"file={_qemu_path_escape(disk)},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            "-pidfile", str(pidfile),
        ]
        if self.boot_mode == "direct":
            argv += [
                "-kernel", str(self.image.kernel),
                "-initrd", str(self.image.initrd),
                "-append", self._cmdline(self.current_tokens or ()),
                "-no-reboot",
            ]
        return argv + list(self.extra_qemu_args)

    def _console_tail(self, lines: int = 40) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return ""
        return console_tail(text, lines)

    def _launch(self, accel: str, tokens: tuple[str, ...]) -> None:
        self.current_tokens = tokens
        disk = self.image.qcow2
        if self.use_overlay:
            disk = self.workdir / "overlay.qcow2"
            disk.unlink(missing_ok=True)
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                 "-b", str(self.image.qcow2.resolve()), str(disk)],
                check=True, capture_output=True,
            )
        self.serial_log.write_bytes(b"")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stem = f"qemu-{os.getpid()}-{id(self):x}-{self.boot_count}"
        pidfile = self.run_dir / f"{stem}.pid"
        record = self.run_dir / f"{stem}.json"
        port = _free_port()
        argv = self._qemu_argv(accel, disk, port, pidfile)
        stderr_path = self.workdir / "qemu.stderr"
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=die_with_parent(signal.SIGKILL),
                start_new_session=True,  # Ctrl-C in the terminal goes to ostune, not to qemu
                close_fds=True,
            )
        record.write_text(json.dumps({
            "ostune_pid": os.getpid(),
            "ostune_start": process_start_ticks(os.getpid()),
            "qemu_pid": proc.pid,
            "qemu_start": process_start_ticks(proc.pid),
            "port": port,
            "image": str(self.image.qcow2),
            "workdir": str(self.workdir),
            "own_workdir": self._own_workdir,
        }))
        self._proc = proc
        self._record = record
        self._finalizer = weakref.finalize(self, _kill_process, proc, record)
        self.port = port
        self.accel_used = accel
        self.boot_count += 1
        self._session = SshSession(
            "127.0.0.1",
            port,
            "root",
            key_path=str(self.image.ssh_key),
            known_hosts_path=str(self.image.known_hosts),
            host_key_alias=self.image.host_key_alias,
            load_system_host_keys=False,
            use_ssh_config=False,
        )
        log.info("qemu pid %d (%s) booting, ssh on 127.0.0.1:%d, tokens %s", proc.pid, accel, port, tokens)

    def _exit_reason(self) -> str | None:
        if self._proc is not None and self._proc.poll() is not None:
            stderr = ""
            try:
                stderr = (self.workdir / "qemu.stderr").read_text(errors="replace").strip()
            except OSError:
                pass
            return f"qemu exited with code {self._proc.returncode}" + (f": {stderr.splitlines()[-1]}" if stderr else "")
        return None

    def _boot(self, tokens: tuple[str, ...]) -> None:
        global _kvm_broken
        self._stop_vm()
        accel, probing = self._choose_accel()
        started = time.monotonic()
        self._launch(accel, tokens)
        timeout = self.boot_timeout_s or DEFAULT_BOOT_TIMEOUT_S[accel]
        deadline = started + timeout

        def abort() -> str | None:
            nonlocal probing
            reason = self._exit_reason()
            if reason:
                return f"kvm-probe: {reason}" if probing else reason
            if probing and time.monotonic() - started > self.kvm_probe_timeout_s:
                if "Linux version" not in self._console_tail(400):
                    return (f"kvm-probe: KVM showed no guest console output within "
                            f"{self.kvm_probe_timeout_s:.0f} s")
                probing = False
                self._say("qemu: using KVM")
            return None

        while True:
            try:
                boot_id = self.wait_for_ssh(deadline, abort=abort, attempt_timeout_s=5.0)
                break
            except HostError as exc:
                if str(exc).startswith("kvm-probe: "):
                    _kvm_broken = str(exc)[len("kvm-probe: "):]
                    log.info("KVM unusable (%s); falling back to TCG", _kvm_broken)
                    self._say(f"qemu: KVM did not work ({_kvm_broken}); falling back to TCG "
                              "(software emulation, slow)")
                    self._stop_vm()
                    started = time.monotonic()
                    accel, probing = "tcg", False
                    timeout = self.boot_timeout_s or DEFAULT_BOOT_TIMEOUT_S["tcg"]
                    deadline = started + timeout
                    self._launch(accel, tokens)
                    continue
                tail = self._console_tail()
                reason = str(exc)
                self._stop_vm()
                short = _console_summary(tail)
                raise BootFailedError(
                    f"guest boot failed (accel={accel}, tokens={' '.join(tokens) or 'none'}, "
                    f"{time.monotonic() - started:.0f} s): {reason}; console: {short[-300:]}",
                    console_tail=tail,
                ) from None
        if probing:
            self._say("qemu: using KVM")
        self.last_boot_s = time.monotonic() - started
        self._boot_id = boot_id
        self._say(f"qemu: guest up in {self.last_boot_s:.1f} s ({accel}), ssh 127.0.0.1:{self.port}")

    def _require_session(self) -> SshSession:
        if self._session is None or not self.running:
            reason = self._exit_reason() if self._proc is not None else None
            if reason:
                # the guest went away under a run (its kernel panicked, qemu was killed): lost,
                # like a host that stopped answering, whatever command happened to be next
                raise HostUnreachableError(f"VM {self.key} is gone: {reason}")
            raise HostError(f"VM {self.key} is not running; call start()/ensure_boot()")
        return self._session

    def _extra_facts(self) -> dict[str, str]:
        return {
            "host_key": self.key,
            "qemu_accel": self.accel_used or "",
            "image_hash": self.image.recipe_hash,
            "vm_memory_mb": str(self.memory_mb),
            "vm_vcpus": str(self.vcpus),
        }

    def ssh_command(self) -> list[str]:
        """An ssh argv for a person to log into the running guest (debugging)."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.image.ssh_key),
            "-o", f"UserKnownHostsFile={self.image.known_hosts}",
            "-o", f"HostKeyAlias={self.image.host_key_alias}",
            "root@127.0.0.1",
        ]
