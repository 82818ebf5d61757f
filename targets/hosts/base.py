"""The Host contract: the few primitives every place ostune tunes must offer.

Knob families (targets/knobs.py), applications and workloads are written only against this
interface, so the same Redis app or sysctl knob works on the local machine, over SSH and inside
a QEMU guest. Commands are argv lists, never shell strings: a remote host quotes them itself.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    #: CPU seconds the command itself used, where the host can tell (local: rusage)
    cpu_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class SpawnedProcess:
    """A long-running process started on a host (an application server)."""

    pid: int
    argv: tuple[str, ...]
    log_path: str


@dataclass(frozen=True)
class HostFacts:
    """What is stored with every trial so results from different machines are not mixed up."""

    hostname: str
    kernel: str
    cpu_model: str
    cpu_count: int
    memory_mb: int
    virtualization: str = ""
    cmdline: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "hostname": self.hostname,
            "kernel": self.kernel,
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "memory_mb": self.memory_mb,
            "virtualization": self.virtualization,
            "cmdline": self.cmdline,
            **self.extra,
        }


class Host(abc.ABC):
    """A machine whose kernel ostune tunes and on which the application runs."""

    #: stable identity used for locks and stored with experiments, e.g. "local:vm", "ssh://root@h:22"
    key: str = "host"
    #: whether this host can apply `boot` parameters (reboot with a new kernel command line)
    supports_boot: bool = False
    #: whether kernel writes are real (False for the `none` host)
    applies_kernel_params: bool = True

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, boot_tokens: Sequence[str] = ()) -> None:
        """Make the host ready, booted with these extra kernel command-line tokens if supported."""

    def ensure_boot(self, boot_tokens: Sequence[str]) -> bool:
        """Reboot with these tokens if they differ from the current boot. Returns True if rebooted.

        Hosts without boot support raise KnobUnavailableError when tokens are non-empty.
        """
        if boot_tokens:
            from tuner.errors import KnobUnavailableError

            raise KnobUnavailableError(
                f"host {self.key} cannot apply boot parameters (use --host qemu or ssh://…)"
            )
        return False

    def close(self) -> None:
        """Release connections and stop anything the host itself started (VMs)."""

    def unreachable_again(self) -> Exception | None:
        """After a HostUnreachableError: None once a trivial command works again (a dropped
        connection reconnects), else the error saying why it does not."""
        from tuner.errors import HostError

        try:
            self.run(["true"], timeout_s=60, check=False)
        except HostError as exc:
            return exc
        return None

    def stop_unless_answering(self, cause: Exception, stopped: str) -> str:
        """After `cause` (a HostUnreachableError): return how the host came back when it answers
        again, else raise HostUnreachableError saying what `stopped` (a trial, a verification
        round) and why."""
        from tuner.errors import HostUnreachableError

        again = self.unreachable_again()
        if again is not None:
            raise HostUnreachableError(f"{cause}; {stopped}, and the host does not answer again ({again})") from None
        return "answers again"

    def crash_report(self) -> str | None:
        """After a HostUnreachableError: the host's own record of its kernel crashing (a VM's
        console showing a panic), which makes the loss the configuration's doing rather than the
        connection's; None when nothing says so. Its first line says what happened, the rest is
        the evidence."""
        return None

    # -- primitives -------------------------------------------------------------------------
    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run a command to completion. With check=True a non-zero exit raises HostError.

        A command cut short (its timeout, an interrupt, an error) must not outlive the call, nor
        may what it started (a `sh -c` workload's benchmark): a measurement left running spoils
        the next one. Where the host can, it is stopped as a whole (LocalHost: its session).
        """

    @abc.abstractmethod
    def read_text(self, path: str) -> str:
        """Read a file; raises KnobUnavailableError if missing or unreadable."""

    @abc.abstractmethod
    def write_text(self, path: str, text: str) -> None:
        """Write a file (a kernel knob); raises ApplyError if the kernel refuses."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        ...

    @abc.abstractmethod
    def spawn(self, argv: Sequence[str], *, log_path: str, cwd: str | None = None) -> SpawnedProcess:
        """Start a background process that outlives this call; output goes to log_path."""

    @abc.abstractmethod
    def is_alive(self, proc: SpawnedProcess) -> bool:
        ...

    @abc.abstractmethod
    def terminate(self, proc: SpawnedProcess, *, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after timeout_s; what it started (its process group or session) goes too."""

    @abc.abstractmethod
    def make_workdir(self, prefix: str, *, parent: str | None = None) -> str:
        """Create a private directory for app data and logs, named ostune-PREFIX-…, in `parent`
        (default: the host's temp dir); returns its path on the host."""

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None:
        ...

    def keep_workdir(self, path: str) -> None:
        """A work directory that is to outlive this process on purpose (an app's `keep`): stop
        claiming it, so no later ostune command removes it as a dead run's leftover."""

    def reap_stale_workdirs(self, parent: str | None = None) -> list[str]:
        """Clean up after ostune processes that died without doing so (kill -9): the work
        directories they made here (in `parent`, default the temp dir), and servers of theirs still
        running. One line per directory."""
        return []

    def release_workdir(self, path: str, *, keep: bool) -> None:
        """The end of a work directory's use: removed, or kept for the user."""
        if keep:
            self.keep_workdir(path)
        else:
            self.remove_tree(path)

    @abc.abstractmethod
    def facts(self) -> HostFacts:
        ...

    def put_file(self, path: str, text: str) -> None:
        """Create or replace a regular file (configs, params). Kernel knobs use write_text."""
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], input_text=text)

    def which(self, program: str) -> str | None:
        result = self.run(["sh", "-c", 'command -v "$1"', "sh", program], check=False)
        path = result.stdout.strip()
        return path or None

    def cpu_busy_s(self) -> float | None:
        """Busy CPU seconds of the whole host since boot (all CPUs), from /proc/stat."""
        try:
            fields = self.read_text("/proc/stat").splitlines()[0].split()[1:8]
        except Exception:
            return None
        values = [int(v) for v in fields]
        # user nice system idle iowait irq softirq: everything but idle and iowait is busy
        return (sum(values) - values[3] - values[4]) / 100.0

    def process_cpu_s(self, pids: Sequence[int]) -> float:
        """CPU seconds (user + system) used so far by these processes; vanished ones count 0."""
        total = 0
        for pid in pids:
            try:
                stat = self.read_text(f"/proc/{pid}/stat")
            except Exception:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / 100.0

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
