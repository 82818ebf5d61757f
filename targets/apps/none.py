"""No application: the command workload measures whatever its command does."""

from __future__ import annotations

from targets.apps.base import App, Endpoint
from targets.hosts.base import Host


class NoApp(App):
    name = "none"
    managed = False

    def start(self, host: Host) -> Endpoint:
        return Endpoint(address="", port=0)

    def stop(self) -> None:
        pass

    def is_healthy(self) -> bool:
        return True
