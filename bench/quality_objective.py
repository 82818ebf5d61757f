"""Noisy synthetic objectives shaped like kernel knobs, for bench/quality.py.

Run as a command (the command workload): reads the configuration from OSTUNE_PARAMS_FILE and
prints {"p99_ms": noisy value, "ops_per_s": ...}. Noise is drawn from a stream named by
QUALITY_NOISE_SEED and a per-run counter file (QUALITY_COUNTER), so every tool sees the same
noise sequence for the same seed (common random numbers).

Each function: base latency x product of knob effects. Shapes: a sigmoid "polling window" that
cuts latency then costs a little (like guest_halt_poll_ns), a log-scale optimum (scheduler slices,
read-ahead), an interaction (two knobs whose ratio matters), a cliff (a region where latency
triples: CPU starvation from busy polling, write stalls from a tiny dirty ratio), small
categorical effects, and parameters that do nothing. Noise: log-normal (CV ~20%, like Redis p99
run to run) times an occasional heavy-tailed burst (Pareto, like background load).
Parameter names are bench-specific so the shipped tuned profiles do not apply here.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys

SPACES = {
    "haltpoll": """
name: q-haltpoll
parameters:
  q.halt_poll_ns: {kind: sysctl, type: int, range: [0, 400000], default: 0}
  q.busy_read: {kind: sysctl, type: int, range: [0, 100], default: 0}
  q.busy_poll: {kind: sysctl, type: int, range: [0, 100], default: 0}
  q.thp: {kind: sysctl, type: categorical, choices: [always, madvise, never], default: always}
  q.thp_defrag: {kind: sysctl, type: categorical, choices: [always, defer, defer+madvise, madvise, never], default: madvise}
  q.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  q.overcommit: {kind: sysctl, type: categorical, choices: ["0", "1"], default: "0"}
  q.somaxconn: {kind: sysctl, type: int, range: [128, 65535], log: true, default: 4096}
  q.syn_backlog: {kind: sysctl, type: int, range: [128, 65535], log: true, default: 1024}
  q.fastopen: {kind: sysctl, type: categorical, choices: ["0", "1", "3"], default: "1"}
  q.numa_balancing: {kind: sysctl, type: bool, default: true}
  q.autogroup: {kind: sysctl, type: bool, default: true}
  q.base_slice_ns: {kind: sysctl, type: int, range: [100000, 6000000], log: true, default: 3000000}
""",
    "writeback": """
name: q-writeback
parameters:
  q.dirty_ratio: {kind: sysctl, type: int, range: [1, 60], default: 20}
  q.dirty_background_ratio: {kind: sysctl, type: int, range: [1, 50], default: 10}
  q.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  q.read_ahead_kb: {kind: sysctl, type: int, range: [8, 4096], log: true, default: 128}
  q.scheduler: {kind: sysctl, type: categorical, choices: [none, mq-deadline, kyber, bfq], default: mq-deadline}
  q.migration_cost_ns: {kind: sysctl, type: int, range: [50000, 5000000], log: true, default: 500000}
  q.expire_centisecs: {kind: sysctl, type: int, range: [100, 6000], log: true, default: 3000}
  q.thp: {kind: sysctl, type: categorical, choices: [always, madvise, never], default: always}
  q.nr_requests: {kind: sysctl, type: int, range: [4, 2048], log: true, default: 256}
  q.autogroup: {kind: sysctl, type: bool, default: true}
""",
    "needle": """
name: q-needle
parameters:
  q.slice_ns: {kind: sysctl, type: float, range: [1000.0, 10000000.0], log: true, default: 3000000.0}
  q.governor: {kind: sysctl, type: categorical, choices: [powersave, schedutil, ondemand, performance], default: schedutil}
  q.a: {kind: sysctl, type: int, range: [0, 100], default: 50}
  q.b: {kind: sysctl, type: int, range: [0, 100], default: 50}
  q.c: {kind: sysctl, type: float, range: [0.0, 1.0], default: 0.5}
  q.d: {kind: sysctl, type: int, range: [16, 65536], log: true, default: 1024}
  q.e: {kind: sysctl, type: categorical, choices: [x, y, z], default: x}
  q.f: {kind: sysctl, type: bool, default: false}
  q.g: {kind: sysctl, type: bool, default: true}
  q.h: {kind: sysctl, type: int, range: [1, 1000], log: true, default: 100}
  q.i: {kind: sysctl, type: categorical, choices: ["0", "1", "2", "3"], default: "0"}
  q.j: {kind: sysctl, type: float, range: [0.0, 10.0], default: 5.0}
""",
}

FUNCTIONS = tuple(SPACES)


def _on(v: object) -> float:
    return 1.0 if (v is True or str(v).lower() in ("1", "1.0", "true")) else 0.0


# Each function is split into independent factor groups so its optimum is exact: the product of
# each group's minimum over a grid of its own knobs (see optimum()).
def _hp_poll(h: float) -> float:
    return 0.4 + 0.6 / (1.0 + math.exp(min((h - 120000.0) / 20000.0, 700.0))) + 0.15 * (h / 400000.0) ** 2


def _hp_busy(br: float, bp: float) -> float:
    busy = 1.0 - 0.12 * min(br, 50.0) / 50.0 - 0.05 * min(bp, 40.0) / 40.0
    return busy * (3.0 if br + bp > 140.0 else 1.0)  # both busy-poll windows wide: CPU starvation


def haltpoll(p: dict) -> float:
    thp = {"always": 1.08, "madvise": 1.02, "never": 1.0}[str(p["q.thp"])]
    defrag = {"always": 1.12, "defer": 1.0, "defer+madvise": 1.01, "madvise": 1.03, "never": 1.0}[str(p["q.thp_defrag"])]
    numa = 1.0 + 0.04 * _on(p["q.numa_balancing"])
    s = math.log10(float(p["q.base_slice_ns"]))
    slice_ = 1.0 + 0.25 * (s - math.log10(700000.0)) ** 2
    return (0.13 * _hp_poll(float(p["q.halt_poll_ns"])) * _hp_busy(float(p["q.busy_read"]), float(p["q.busy_poll"]))
            * thp * defrag * numa * slice_)


def _wb_dirty(dr: float, dbr: float) -> float:
    # interaction: background writeback should start at about a third of the throttle point
    ratio = 1.0 + 0.125 * (math.log(max(dbr, 1.0) / max(dr, 1.0)) - math.log(1 / 3)) ** 2
    level = 1.0 + 0.3 * ((dr - 15.0) / 45.0) ** 2
    return ratio * level * (3.0 if dr < 6.0 else 1.0)  # tiny dirty limit: writers stall


def writeback(p: dict) -> float:
    sw = 1.0 + 0.1 * (float(p["q.swappiness"]) / 100.0 - 0.1) ** 2
    ra = 1.0 + 0.02 * (math.log2(float(p["q.read_ahead_kb"])) - 8.0) ** 2
    sched = {"none": 1.05, "mq-deadline": 1.0, "kyber": 0.9, "bfq": 1.3}[str(p["q.scheduler"])]
    mig = 1.0 + 0.15 * (math.log10(float(p["q.migration_cost_ns"])) - math.log10(250000.0)) ** 2
    thp = {"always": 1.06, "madvise": 1.0, "never": 1.0}[str(p["q.thp"])]
    return 2.0 * _wb_dirty(float(p["q.dirty_ratio"]), float(p["q.dirty_background_ratio"])) * sw * ra * sched * mig * thp


def needle(p: dict) -> float:
    s = math.log10(float(p["q.slice_ns"]))
    slice_ = 1.0 + 1.5 * (1.0 - math.exp(-((s - 4.5) ** 2) / (2 * 0.5 ** 2)))
    gov = {"powersave": 1.5, "schedutil": 1.15, "ondemand": 1.2, "performance": 1.0}[str(p["q.governor"])]
    return 0.05 * slice_ * gov


TRUE = {"haltpoll": haltpoll, "writeback": writeback, "needle": needle}


def optimum(name: str) -> float:
    """The exact noise-free minimum (every other factor reaches 1.0, or its listed minimum)."""
    if name == "haltpoll":
        poll = min(_hp_poll(h) for h in range(0, 400001, 50))
        busy = min(_hp_busy(br, bp) for br in range(101) for bp in range(101))
        return 0.13 * poll * busy  # thp never, defrag defer/never, numa off, slice 700000: all 1.0
    if name == "writeback":
        dirty = min(_wb_dirty(dr, dbr) for dr in range(1, 61) for dbr in range(1, 51))
        return 2.0 * dirty * 0.9  # kyber; swappiness 10, read-ahead 256, migration 250000: 1.0
    if name == "needle":
        return 0.05
    raise KeyError(name)


def noisy(value: float, rng: random.Random) -> float:
    noise = math.exp(rng.gauss(0.0, 0.2))
    if rng.random() < 0.1:  # a background burst: heavy (Pareto) upper tail
        noise *= 1.0 + 0.5 * (rng.paretovariate(1.5) - 1.0)
    return value * noise


def main() -> None:
    name = sys.argv[1]
    with open(os.environ["OSTUNE_PARAMS_FILE"]) as fh:
        params = json.load(fh)
    counter = os.environ["QUALITY_COUNTER"]
    try:
        with open(counter) as fh:
            n = int(fh.read() or 0)
    except FileNotFoundError:
        n = 0
    with open(counter, "w") as fh:
        fh.write(str(n + 1))
    rng = random.Random(f"{os.environ['QUALITY_NOISE_SEED']}:{n}")
    true = TRUE[name](params)
    print(json.dumps({"p99_ms": noisy(true, rng), "ops_per_s": 1000.0 / true}))


if __name__ == "__main__":
    main()
