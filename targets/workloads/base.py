"""The workload contract: drive the application and return one repetition's metrics."""

from __future__ import annotations

import abc
from typing import Mapping

from targets.apps.base import Endpoint
from targets.hosts.base import Host

#: metric names every latency workload reports when it can (milliseconds / operations per second)
STANDARD_METRICS = ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "ops_per_s")


class Workload(abc.ABC):
    name: str = "workload"

    def prepare(self, host: Host, endpoint: Endpoint) -> None:
        """Load the dataset once per application start."""

    def warmup(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> None:
        """A short unmeasured run after parameters change (`params`: the configuration about to be
        measured, for workloads that read it)."""

    @abc.abstractmethod
    def measure(
        self, host: Host, endpoint: Endpoint, params: Mapping[str, object]
    ) -> dict[str, float]:
        """Run one measured repetition; return metric name -> value (see STANDARD_METRICS)."""

    def describe(self) -> dict[str, object]:
        return {"workload": self.name}
