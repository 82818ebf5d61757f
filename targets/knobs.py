"""Knob families: each kind of kernel parameter knows how to locate, read, write and verify itself.

Shaped after Red Hat tuned's plugins (sysctl, sysfs, scheduler, bootloader), written against the
Host contract so the same family works locally, over SSH and inside a QEMU guest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spaces.model import Parameter, Value, normalize_text, values_equal
from targets.hosts.base import Host
from tuner.errors import ApplyError, HostOperationError, KnobUnavailableError

_SELECTED = re.compile(r"\[([^\]]+)\]")
DEBUGFS_MOUNT = "/sys/kernel/debug"


def parse_knob_text(text: str) -> str:
    """The current value in a knob file: the [bracketed] choice of selector files
    (THP, I/O scheduler), else the whitespace-normalized content."""
    match = _SELECTED.search(text)
    if match:
        return match.group(1)
    return normalize_text(text)


@dataclass(frozen=True)
class Availability:
    name: str
    available: bool
    reason: str = ""
    current: str | None = None


class KnobFamily:
    """Runtime knobs that are files: sysctl (/proc/sys), sysfs, debugfs."""

    kind = ""

    def path(self, param: Parameter) -> str:
        assert param.path is not None
        return param.path

    def prepare(self, host: Host) -> None:
        """Make the family's files reachable (e.g. mount debugfs)."""

    def read_raw(self, host: Host, param: Parameter) -> str:
        return parse_knob_text(host.read_text(self.path(param)))

    def read(self, host: Host, param: Parameter) -> Value:
        return param.coerce(self.read_raw(host, param))

    def write_raw(self, host: Host, param: Parameter, text: str) -> None:
        host.write_text(self.path(param), text)

    def apply(self, host: Host, param: Parameter, value: Value) -> None:
        """Write, then read back: the kernel may clamp or silently ignore a value."""
        self.write_raw(host, param, param.render(value))
        actual = self.read_raw(host, param)
        if not values_equal(param, value, actual):
            raise ApplyError(
                f"{param.name}: wrote {param.render(value)!r} but the kernel reports {actual!r}"
            )

    def probe(self, host: Host, param: Parameter) -> Availability:
        try:
            self.prepare(host)
            current = self.read_raw(host, param)
        except HostOperationError as exc:
            return Availability(param.name, False, str(exc))
        return Availability(param.name, True, current=current)


class SysctlKnobs(KnobFamily):
    kind = "sysctl"

    def path(self, param: Parameter) -> str:
        return "/proc/sys/" + param.name.replace(".", "/")


class SysfsKnobs(KnobFamily):
    kind = "sysfs"

    def write_raw(self, host: Host, param: Parameter, text: str) -> None:
        try:
            super().write_raw(host, param, text)
        except ApplyError as exc:
            raise ApplyError(f"{exc}{queue_depth_hint(host, self.path(param))}") from None


_NR_REQUESTS = re.compile(r"^/sys/block/([^/]+)/queue/nr_requests$")


def queue_depth_hint(host: Host, path: str) -> str:
    """Why a disk refused an nr_requests, when the reason is the usual one: under the scheduler
    `none` the kernel caps it at the disk's tag depth (an elevator takes more). "" otherwise."""
    match = _NR_REQUESTS.match(path)
    if match is None:
        return ""
    disk = f"/sys/block/{match.group(1)}"
    try:
        if parse_knob_text(host.read_text(f"{disk}/queue/scheduler")) != "none":
            return ""
        depth = host.read_text(f"{disk}/mq/0/nr_tags").strip()
    except HostOperationError:
        return ""
    return f" (under the scheduler `none` the disk takes at most its tag depth, {depth})"


class DebugfsKnobs(KnobFamily):
    """Scheduler knobs under /sys/kernel/debug/sched. Kernel lockdown forbids even reading them
    (EPERM), in which case probe() reports them unavailable with that reason."""

    kind = "debugfs"

    def prepare(self, host: Host) -> None:
        if host.exists(f"{DEBUGFS_MOUNT}/sched") or not host.exists(DEBUGFS_MOUNT):
            return
        result = host.run(["mount", "-t", "debugfs", "debugfs", DEBUGFS_MOUNT], check=False)
        if not result.ok:
            raise KnobUnavailableError(
                f"debugfs is not mounted and mounting it failed: {result.stderr.strip()}"
            )


class BootKnobs:
    """Kernel command-line parameters. The host applies them by rebooting; here they are read
    back from /proc/cmdline. A missing token means the kernel default (the parameter's default)."""

    kind = "boot"

    def read(self, host: Host, param: Parameter) -> Value | None:
        tokens = host.read_text("/proc/cmdline").split()
        for token in tokens:
            key, _, value = token.partition("=")
            if key == param.name:
                return True if param.type == "bool" else param.coerce(value)
        return False if param.type == "bool" else param.default


RUNTIME_FAMILIES: dict[str, KnobFamily] = {
    family.kind: family for family in (SysctlKnobs(), SysfsKnobs(), DebugfsKnobs())
}


def family_for(param: Parameter) -> KnobFamily:
    try:
        return RUNTIME_FAMILIES[param.kind]
    except KeyError:
        raise KnobUnavailableError(f"{param.name}: kind {param.kind} is not a runtime knob") from None
