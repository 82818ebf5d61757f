"""This machine. Kernel writes go straight to /proc/sys and /sys; processes are local children."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from targets.hosts.base import CommandResult, Host, HostFacts, SpawnedProcess
from targets.hosts.workdir_records import WORKDIR_OWNER_FILE, owner_record, parse_owner
from tuner.errors import ApplyError, HostError, KnobUnavailableError
from tuner.ownership import ProcessIdentity


def _first_match(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return ""


def _virtualization() -> str:
    try:
        out = subprocess.run(
            ["systemd-detect-virt"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            return "vm" if " hypervisor" in f.read() else "none"
    except OSError:
        return ""


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn making the child receive `sig` when ostune dies, even by kill -9, so no
    server or VM it started outlives it (PR_SET_PDEATHSIG; Linux only, best effort)."""

    def preexec() -> None:  # runs in the child between fork and exec
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - never fail a spawn over this
            pass

    return preexec


class LocalHost(Host):
    supports_boot = False

    def __init__(self) -> None:
        self.key = f"local:{socket.gethostname()}"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        started = time.monotonic()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        full_env = {**os.environ, **env} if env else None
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                input=input_text,
                env=full_env,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise HostError(f"command not found: {argv[0]}") from exc
        except subprocess.TimeoutExpired as exc:
            raise HostError(f"command timed out after {timeout_s:g} s: {' '.join(argv)}") from exc
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
        result = CommandResult(
            tuple(argv), proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started, cpu_s
        )
        if check and not result.ok:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise HostError(f"{argv[0]} exited {proc.returncode}: {tail[0]}")
        return result

    def read_text(self, path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError as exc:
            raise KnobUnavailableError(f"{path} does not exist on {self.key}") from exc
        except OSError as exc:
            raise KnobUnavailableError(f"{path} is not readable on {self.key}: {exc.strerror}") from exc

    def write_text(self, path: str, text: str) -> None:
        # One write() call: kernel knobs parse a single write, and a partial buffered write of a
        # multi-value sysctl would be rejected or half-applied.
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError as exc:
            raise KnobUnavailableError(f"{path} does not exist on {self.key}") from exc
        except OSError as exc:
            raise KnobUnavailableError(f"{path} is not writable on {self.key}: {exc.strerror}") from exc
        try:
            os.write(fd, text.encode())
        except OSError as exc:
            reason = "invalid value" if exc.errno == errno.EINVAL else exc.strerror
            raise ApplyError(f"kernel refused {text!r} for {path}: {reason}") from exc
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def spawn(self, argv: Sequence[str], *, log_path: str, cwd: str | None = None) -> SpawnedProcess:
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
            except FileNotFoundError as exc:
                raise HostError(f"command not found: {argv[0]}") from exc
        # Keep the Popen so the child is reaped (no zombie that looks alive to kill -0).
        spawned = SpawnedProcess(proc.pid, tuple(argv), log_path)
        self._children = getattr(self, "_children", {})
        self._children[proc.pid] = proc
        return spawned

    def is_alive(self, proc: SpawnedProcess) -> bool:
        child = getattr(self, "_children", {}).get(proc.pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def terminate(self, proc: SpawnedProcess, *, timeout_s: float = 10.0) -> None:
        child = getattr(self, "_children", {}).pop(proc.pid, None)
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child is not None:
                if child.poll() is not None:
                    return
            elif not self.is_alive(proc):
                return
            time.sleep(0.05)
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if child is not None:
            child.wait(timeout=5)

    def make_workdir(self, prefix: str, *, parent: str | None = None) -> str:
        return owned_tempdir(f"ostune-{prefix}-", parent=parent)

    def remove_tree(self, path: str) -> None:
        remove_owned_tree(path)

    def keep_workdir(self, path: str) -> None:
        Path(path, WORKDIR_OWNER_FILE).unlink(missing_ok=True)

    def reap_stale_workdirs(self, parent: str | None = None) -> list[str]:
        # a local server already died with its owner (PR_SET_PDEATHSIG): only directories are left
        return reap_stale_workdirs(parent)

    def facts(self) -> HostFacts:
        cpuinfo = self.read_text("/proc/cpuinfo")
        meminfo = self.read_text("/proc/meminfo")
        mem_kb = int(_first_match(meminfo, "MemTotal").split()[0] or 0)
        return HostFacts(
            hostname=socket.gethostname(),
            kernel=platform.release(),
            cpu_model=_first_match(cpuinfo, "model name"),
            cpu_count=os.cpu_count() or 0,
            memory_mb=mem_kb // 1024,
            virtualization=_virtualization(),
            cmdline=self.read_text("/proc/cmdline").strip(),
        )

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    def put_file(self, path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)


def owned_tempdir(prefix: str, parent: str | None = None) -> str:
    """A new private directory in `parent` (default the temp dir), carrying this process's
    identity so that `reap_stale_workdirs` can remove it once this process is gone without having
    cleaned up."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    Path(path, WORKDIR_OWNER_FILE).write_text(owner_record(ProcessIdentity.current()))
    return path


def remove_owned_tree(path: str) -> None:
    """Remove a directory tree; a work dir's owner record goes last, so a removal cut short (a
    kill -9 halfway through a large data directory, a busy mount inside) leaves a directory the
    next command still recognizes and finishes, not an anonymous half."""
    if Path(path, WORKDIR_OWNER_FILE).is_file():
        for entry in os.scandir(path):
            if entry.name == WORKDIR_OWNER_FILE:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
        if os.listdir(path) != [WORKDIR_OWNER_FILE]:
            return  # something could not go: keep the record, so it is retried later
    shutil.rmtree(path, ignore_errors=True)


def reap_stale_workdirs(parent: str | None = None) -> list[str]:
    """Remove the work directories (server data, logs) of ostune processes that died without
    cleaning up (kill -9, power loss); return their paths. Only directories carrying an owner
    record whose owner is gone for good are touched: ones in use, and ones ostune did not make,
    stay."""
    removed: list[str] = []
    root = Path(parent or tempfile.gettempdir())
    try:
        entries = sorted(root.glob("ostune-*"))
    except OSError:
        return removed
    for path in entries:
        try:
            alive = parse_owner((path / WORKDIR_OWNER_FILE).read_text()).is_alive()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive is False:
            remove_owned_tree(str(path))
            if not path.exists():
                removed.append(str(path))
    return removed
