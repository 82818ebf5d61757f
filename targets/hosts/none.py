"""The `none` host: runs workloads locally but applies nothing to any kernel.

With the command workload this tunes any black-box objective (and benchmarks the tuner itself).
"""

from __future__ import annotations

from targets.hosts.local import LocalHost


class NoneHost(LocalHost):
    applies_kernel_params = False

    def __init__(self) -> None:
        super().__init__()
        self.key = "none"
