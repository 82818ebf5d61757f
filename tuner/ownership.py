"""Who owns a run: enough identity to tell, after a kill -9, that the owner is gone for good."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22 of /proc/pid/stat); None when there is no
    such process or it has exited (a zombie is only waiting to be reaped)."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").strip()


def machine_id() -> str:
    """The installation's id (systemd's /etc/machine-id): two machines named alike (cloned VMs,
    "debian" everywhere) differ here, so neither takes the other's live process for a dead one."""
    return (_read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")).strip()


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_ticks: int | None
    machine: str
    boot_id: str
    #: empty in records written before it was kept
    machine_id: str = ""

    @classmethod
    def current(cls) -> "ProcessIdentity":
        pid = os.getpid()
        return cls(pid, process_start_ticks(pid), socket.gethostname(), boot_id(), machine_id())

    def is_alive(self) -> bool | None:
        return owner_is_alive(self.pid, self.start_ticks, self.machine, self.boot_id or "", self.machine_id)


def owner_is_alive(
    pid: int, start_ticks: int | None, machine: str, owner_boot_id: str, owner_machine_id: str = "",
) -> bool | None:
    """True/False for owners on this machine; None when it cannot be told (another machine)."""
    if machine != socket.gethostname() or (owner_machine_id and owner_machine_id != machine_id()):
        return None
    if owner_boot_id and owner_boot_id != boot_id():
        return False
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    return start_ticks is None or ticks == start_ticks
