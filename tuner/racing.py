"""Honest incumbents: rank evaluated configurations by the model, not by their luckiest run, and
spend part of the budget re-measuring the top ones (racing, in the spirit of SMAC's intensifier).

A configuration is the set of trials with the same parameter values (a re-measurement is a new
trial of source `rerun`). Its estimate is the GP's posterior mean at that point, which pools its
own measurements with what its neighbours say, so one lucky measurement cannot make it the
recommendation. Racing rule, checked before every model-based proposal:

- at the end of a run, as late as possible: the best configuration by estimate is re-measured
  when the trials left are just enough to give it `MIN_MEASUREMENTS` (3); if a newcomer overtakes
  it and can no longer reach 3, the best one that can is re-measured instead;
- before that, while re-measurements are at most `RERUN_SHARE` of the finished trials (0 when the
  run's length is known, `UNKNOWN_LENGTH_SHARE` when it is not), the best configuration is
  re-measured until it has 3 measurements and the two after it until they have 2, best first.

The recommendation is the best estimate among feasible configurations (no failed or infeasible
measurement) with at least `MIN_MEASUREMENTS` measurements; if none has that many yet, the best
estimate overall, and `recommend` says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from spaces.model import Space, Value
from tuner.optimizer import Observation, _fallback, encode

MIN_MEASUREMENTS = 3
#: share of the trials that may re-measure top candidates before the end game. 0 by default:
#: measured on bench/quality.py, a new configuration near the incumbent tells the model as much
#: about the incumbent as a re-measurement (the GP pools neighbours) and also searches, so mid-run
#: re-measurements (0.25 before) made the recommendation worse; the end game still gives the
#: recommendation its MIN_MEASUREMENTS.
RERUN_SHARE = 0.0
#: without a known end (no `remaining`) there is no end game: re-measure along the way instead
UNKNOWN_LENGTH_SHARE = 0.25
#: measurements wanted for the best, second and third configuration by estimate
TARGETS = (MIN_MEASUREMENTS, 2, 2)


@dataclass
class Candidate:
    key: tuple
    params: dict[str, Value]
    trials: list[int] = field(default_factory=list)
    objectives: list[float] = field(default_factory=list)
    feasible: bool = True
    #: posterior mean in engine units (transformed objective, lower is better); None without a model
    estimate: float | None = None

    @property
    def measurements(self) -> int:
        return len(self.objectives)

    @property
    def median(self) -> float | None:
        return float(statistics.median(self.objectives)) if self.objectives else None


def config_key(space: Space, params: Mapping[str, Any]) -> tuple:
    out = []
    for p in space.parameters:
        coordinate = encode(p, params[p.name] if p.name in params else _fallback(p))
        out.append(round(float(coordinate), 9) if isinstance(coordinate, (int, float)) else coordinate)
    return tuple(out)


def typed_params(space: Space, params: Mapping[str, Any]) -> dict[str, Value]:
    """Stored values (floats and text) back in each parameter's Python type."""
    return {p.name: p.coerce(params[p.name]) for p in space.parameters if p.name in params}


def group(space: Space, observations: Sequence[Observation]) -> list[Candidate]:
    """Finished observations grouped by configuration, in order of first appearance."""
    groups: dict[tuple, Candidate] = {}
    for o in observations:
        if o.status not in ("succeeded", "failed", "infeasible"):
            continue
        key = config_key(space, o.params)
        cand = groups.get(key)
        if cand is None:
            cand = groups[key] = Candidate(key, typed_params(space, o.params))
        if o.number is not None:
            cand.trials.append(o.number)
        if o.status == "succeeded" and o.objective is not None:
            cand.objectives.append(float(o.objective))
        else:
            cand.feasible = False
    return list(groups.values())


def rank(space: Space, candidates: list[Candidate], engine: Any, *, maximize: bool) -> list[Candidate]:
    """Feasible measured candidates, best first: by the engine's posterior mean when it has a model,
    else by the (transformed) median of their measurements."""
    usable = [c for c in candidates if c.feasible and c.measurements]
    if not usable:
        return []
    if engine is not None and getattr(engine, "has_model", False):
        means = engine.posterior_mean([c.params for c in usable])
        for cand, mean in zip(usable, means):
            cand.estimate = float(mean)
    else:
        log = all(v > 0 for c in usable for v in c.objectives)
        for cand in usable:
            value = cand.median
            assert value is not None
            value = math.log(value) if log else value
            cand.estimate = -value if maximize else value
    return sorted(usable, key=lambda c: c.estimate)  # type: ignore[arg-type,return-value]


def next_rerun(
    ranked: Sequence[Candidate], observations: Sequence[Observation], *, share: float = RERUN_SHARE,
    targets: Sequence[int] = TARGETS, remaining: int | None = None,
) -> Candidate | None:
    """The configuration to re-measure now, or None to let the optimizer propose a new one.

    `remaining` (trials left in this run, this one included) triggers the end game: when the
    best configuration still lacks measurements and the run is about to end, it is re-measured
    whatever the share, so the run ends with a recommendation measured MIN_MEASUREMENTS times."""
    if not ranked:
        return None
    if remaining is not None:
        # The end game, as late as possible: the best configuration by estimate is re-measured
        # when the trials left are just enough to give it MIN_MEASUREMENTS; if it can no longer
        # reach them (a newcomer overtook the one being re-measured), the best one that still
        # can is re-measured instead, so the run ends with a recommendation measured that often.
        top, wanted = ranked[0], targets[0]
        if top.measurements < wanted and remaining <= wanted - top.measurements:
            if remaining == wanted - top.measurements:
                return top
            reachable = [c for c in ranked if c.measurements + remaining >= wanted]
            if reachable and reachable[0].measurements < wanted:
                return reachable[0]
    if remaining is None:
        share = max(share, UNKNOWN_LENGTH_SHARE)
    finished = [o for o in observations if o.status in ("succeeded", "failed", "infeasible")]
    reruns = sum(1 for o in finished if o.source == "rerun")
    if reruns + 1 > share * (len(finished) + 1):
        return None
    for cand, wanted in zip(ranked, targets):
        if cand.measurements < wanted:
            return cand
    return None


def incumbent(ranked: Sequence[Candidate], min_measurements: int = MIN_MEASUREMENTS) -> Candidate | None:
    """The best-estimated configuration with enough measurements (else the best estimate)."""
    if not ranked:
        return None
    proven = [c for c in ranked if c.measurements >= min_measurements]
    return proven[0] if proven else ranked[0]
