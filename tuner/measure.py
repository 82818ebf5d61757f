"""One trial's measurement: warm up, run R repetitions, attribute noise, aggregate.

Pure aggregation (median and spread) is separate from the I/O so it is testable on numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping, Sequence

from targets.apps.base import App, Endpoint
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import ObjectiveNotReported, WorkloadError

NOISE_METRICS = ("cpu_busy_s", "app_cpu_s", "client_cpu_s", "other_cpu_s", "wall_s")


@dataclass(frozen=True)
class Aggregate:
    metrics: dict[str, float]
    objective: float
    objective_sd: float | None


def aggregate(repetitions: Sequence[Mapping[str, float]], objective: str) -> Aggregate:
    """Median of every metric across repetitions; the objective's sample standard deviation.

    The median resists the occasional repetition disturbed by a background burst, which on a
    shared machine moves p99 by several times.
    """
    if not repetitions:
        raise WorkloadError("no repetition produced metrics")
    names = sorted({name for rep in repetitions for name in rep})
    metrics = {
        name: float(statistics.median([rep[name] for rep in repetitions if name in rep])) for name in names
    }
    if objective not in metrics:
        raise ObjectiveNotReported(objective, [n for n in names if not n.startswith("_")])
    values = [rep[objective] for rep in repetitions if objective in rep]
    sd = statistics.stdev(values) if len(values) > 1 else None
    return Aggregate(metrics, metrics[objective], sd)


def measure_repetitions(
    host: Host, app: App, endpoint: Endpoint, workload: Workload, params: Mapping[str, object],
    repetitions: int,
) -> list[dict[str, float]]:
    """Run the workload `repetitions` times, recording per repetition the CPU time the rest of the
    machine used (busy − app − client), so a noisy repetition can be recognized afterwards."""
    results = []
    for _ in range(repetitions):
        busy_before = host.cpu_busy_s()
        app_before = host.process_cpu_s(app.pids())
        metrics = dict(workload.measure(host, endpoint, params))
        busy_after = host.cpu_busy_s()
        app_after = host.process_cpu_s(app.pids())
        if busy_before is not None and busy_after is not None:
            busy = busy_after - busy_before
            app_cpu = max(app_after - app_before, 0.0)
            client = float(metrics.pop("_client_cpu_s", 0.0))
            metrics.update(
                cpu_busy_s=busy, app_cpu_s=app_cpu, client_cpu_s=client,
                other_cpu_s=max(busy - app_cpu - client, 0.0),
            )
        results.append(metrics)
    return results
