"""The generic command workload: any shell command that prints metrics as JSON on its last line.

The proposed configuration is passed as a JSON file whose path is in OSTUNE_PARAMS_FILE, so a
command can tune application settings, run a simulation, or benchmark the tuner itself.
"""

from __future__ import annotations

import json
import math
from typing import Mapping

from targets.apps.base import Endpoint
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import WorkloadError

PARAMS_ENV = "OSTUNE_PARAMS_FILE"


def parse_metrics_line(stdout: str) -> dict[str, float]:
    """The last non-empty stdout line as a JSON object of metric name -> number."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise WorkloadError("command printed nothing; its last stdout line must be a JSON object of metrics")
    last = lines[-1].strip()
    try:
        data = json.loads(last)
    except json.JSONDecodeError:
        raise WorkloadError(
            f"command's last stdout line is not JSON: {last[:80]!r} (expected e.g. {{\"p99_ms\": 1.2}})"
        ) from None
    if not isinstance(data, dict) or not data:
        raise WorkloadError(f"command's last stdout line must be a non-empty JSON object, got {last[:80]!r}")
    metrics: dict[str, float] = {}
    for key, value in data.items():
        try:
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        except OverflowError:  # a JSON integer beyond any float
            number = math.inf
        if not math.isfinite(number):
            raise WorkloadError(f"metric {key!r} is not a finite number: {str(value)[:40]!r}")
        metrics[str(key)] = number
    return metrics


class CommandWorkload(Workload):
    name = "command"

    def __init__(self, command: str, *, timeout_s: float = 600.0, warmup: bool = False) -> None:
        if not command.strip():
            raise WorkloadError("--command is empty; give the shell command to run, e.g. --command './bench.sh'")
        self.command = command
        self.timeout_s = timeout_s
        self.run_warmup = warmup

    def _run(self, host: Host, params: Mapping[str, object]) -> dict[str, float]:
        workdir = host.make_workdir("cmd")
        try:
            params_path = f"{workdir}/params.json"
            host.put_file(params_path, json.dumps(dict(params), sort_keys=True))
            result = host.run(["sh", "-c", self.command], timeout_s=self.timeout_s, check=False,
                              env={PARAMS_ENV: params_path})
        finally:
            host.remove_tree(workdir)
        if not result.ok:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [""]
            raise WorkloadError(f"command exited {result.exit_code}: {tail[0][:200] or '(no output)'}")
        metrics = parse_metrics_line(result.stdout)
        if result.cpu_s is not None:
            metrics["_client_cpu_s"] = result.cpu_s
        return metrics

    def warmup(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> None:
        # the command reads its configuration like a measured run does (an empty one would crash
        # or warm up a different configuration)
        if self.run_warmup:
            self._run(host, params)

    def measure(self, host: Host, endpoint: Endpoint, params: Mapping[str, object]) -> dict[str, float]:
        return self._run(host, params)

    def describe(self) -> dict[str, object]:
        return {"workload": "command", "command": self.command}
