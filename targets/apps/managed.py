"""What managed servers (Redis, MariaDB) share: finding a free loopback port, reading a log
tail, and the health and pid bookkeeping of one server process that ostune started."""

from __future__ import annotations

import abc
import random

from targets.apps.base import App, Endpoint
from targets.hosts.base import Host, SpawnedProcess
from tuner.errors import AppError


def _listening_ports(host: Host) -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = host.read_text(table)
        except Exception:
            continue
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3:
                try:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
                except (IndexError, ValueError):
                    continue
    return ports


def free_loopback_port(host: Host, *, low: int = 20000, high: int = 32000, avoid: set[int] | None = None) -> int:
    """A TCP port no socket on the host uses (any state, from /proc/net/tcp{,6}).

    Chosen below the usual ephemeral range (32768-60999) so outgoing connections do not take it
    between the check and the server's bind; callers still retry on "address in use".
    """
    used = _listening_ports(host) | (avoid or set())
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(low, high)
        if port not in used:
            return port
    raise AppError(f"no free TCP port found in {low}-{high} on {host.key}")


def log_tail(host: Host, path: str, lines: int = 20) -> str:
    try:
        text = host.read_text(path)
    except Exception:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class AddressInUse(Exception):
    """The server lost the race for its port; start() retries with another one."""


class ManagedServer(App):
    """A server process ostune starts in a private work directory on the host."""

    _host: Host | None = None
    _proc: SpawnedProcess | None = None
    _workdir: str | None = None
    _endpoint: Endpoint | None = None

    @abc.abstractmethod
    def _ping(self, host: Host, endpoint: Endpoint) -> bool:
        """True when the server answers a trivial request."""

    def is_healthy(self) -> bool:
        if self._host is None or self._proc is None or self._endpoint is None:
            return False
        return self._host.is_alive(self._proc) and self._ping(self._host, self._endpoint)

    def pids(self) -> list[int]:
        if self._host is not None and self._proc is not None and self._host.is_alive(self._proc):
            return [self._proc.pid]
        return []

    @property
    def workdir(self) -> str | None:
        return self._workdir

    @property
    def endpoint(self) -> Endpoint | None:
        return self._endpoint
