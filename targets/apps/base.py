"""The application contract: something ostune starts (or finds) on a host and keeps serving."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Collection, Mapping

from targets.hosts.base import Host


def config_overrides(app: str, config: object, reserved: Collection[str], example: str) -> dict[str, object]:
    """An app's `config` setting (extra directives for its config file), checked: a mapping of
    directive -> plain value, none of them one ostune manages itself."""
    from tuner.errors import BadInputError

    if config is None:
        return {}
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        raise BadInputError(f"{app} config={config!r} is not a mapping of directives, e.g. --app-set 'config={example}'")
    odd = next((k for k, v in config.items() if isinstance(v, (Mapping, list)) or v is None), None)
    if odd is not None:
        raise BadInputError(f"{app} config {odd}: give a plain value (text or a number), e.g. --app-set 'config={example}'")
    bad = sorted(k for k in config if k.lower() in reserved)
    if bad:
        raise BadInputError(f"{app} config may not set {', '.join(bad)}: ostune manages them ({', '.join(sorted(reserved))})")
    return dict(config)


@dataclass(frozen=True)
class Endpoint:
    """Where a workload reaches the application, as seen from the host it runs on."""

    address: str
    port: int
    socket_path: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Placeholder:
    """The value of a ``{name}`` placeholder in a parameter's path on one host (e.g.
    ``/sys/block/{datadir_device}/queue/scheduler``), or None with the reason it has none."""

    value: str | None
    reason: str = ""
    #: what the value was derived from, for the run's log (e.g. "datadir /tmp/x/data")
    source: str = ""


class App(abc.ABC):
    """An application under test. Lifecycle methods are idempotent."""

    name: str = "app"
    #: False for servers ostune did not start (external DSN): never start/stop/reconfigure them
    managed: bool = True

    @abc.abstractmethod
    def start(self, host: Host) -> Endpoint:
        """Start (or attach to) the application and wait until it answers."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop what start() started and remove its private files (unless asked to keep them)."""

    def restart(self, host: Host) -> Endpoint:
        self.stop()
        return self.start(host)

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        ...

    def pids(self) -> list[int]:
        """Process ids of the application on its host (excluded from 'other CPU time')."""
        return []

    def placeholders(self, host: Host) -> dict[str, Placeholder]:
        """Values for ``{name}`` placeholders in the space's parameter paths, asked after start()
        (the block device of a datadir is only known then). Parameters whose placeholder is not
        listed, or has no value, are skipped with the reason."""
        return {}

    def workdir_parents(self) -> tuple[str, ...]:
        """Directories besides the host's temp dir that this app makes work dirs in (a
        datadir_parent): a run cleans up there too after a killed one."""
        return ()

    def describe(self) -> dict[str, object]:
        """What is stored as the experiment's target description (never secrets)."""
        return {"app": self.name}

    def failure_context(self) -> str:
        """A tail of the app's log, stored with a failed trial."""
        return ""
