"""Honest incumbents: rank evaluated configurations by the model, not by their luckiest run, and
spend part of the budget re-measuring the top ones (racing, in the spirit of SMAC's intensifier).

A configuration is the set of trials with the same parameter values (a re-measurement is a new
trial of source `rerun`). Its estimate is the GP's posterior mean at that point, which pools its
own measurements with what its neighbours say, so one lucky measurement cannot make it the
recommendation. Racing rule, checked before every model-based proposal:

- in the last `ENDGAME` (4) trials of a run, only re-measurements: the best configuration by
  estimate that can still reach `MIN_MEASUREMENTS` (3) is re-measured until it has them, then the
  best challenger that can (so it may overtake); if a re-measurement drops the best one, the next
  takes over. When both have their measurements, the trials left go to them too (a new
  configuration measured once at the very end could never be recommended). (Re-measuring as late
  as possible instead, bench/quality.py at 20 seeds, sometimes ended with a configuration its
  re-measurements had shown bad as the only one measured 3 times.)
- before that, while re-measurements are at most `RERUN_SHARE` of the finished trials (0 when the
  run's length is known, `UNKNOWN_LENGTH_SHARE` when it is not), the best configuration is
  re-measured until it has 3 measurements and the two after it until they have 2, best first.

The recommendation is the best estimate among feasible configurations (no failed or infeasible
measurement; a failure of the baseline after it has succeeded does not count, see
optimizer.environment_failures) with at least `MIN_MEASUREMENTS` measurements; if none has that
many yet, the best estimate overall, and `recommend` says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from spaces.model import Space, Value
from tuner.optimizer import Observation, _fallback, encode, environment_failures

MIN_MEASUREMENTS = 3
#: share of the trials that may re-measure top candidates before the end game. 0 by default:
#: measured on bench/quality.py, a new configuration near the incumbent tells the model as much
#: about the incumbent as a re-measurement (the GP pools neighbours) and also searches, so mid-run
#: re-measurements (0.25 before) made the recommendation worse; the end game still gives the
#: recommendation its MIN_MEASUREMENTS.
RERUN_SHARE = 0.0
#: without a known end (no `remaining`) there is no end game: re-measure along the way instead
UNKNOWN_LENGTH_SHARE = 0.25
#: the last trials of a run, spent on re-measurements so the recommendation has MIN_MEASUREMENTS
ENDGAME = 4
#: trials left when the end game's model-best proposal (SkoptOptimizer.exploit) is made; 0: never
EXPLOIT_AT = ENDGAME + 1
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
    ignored = environment_failures(observations)
    for i, o in enumerate(observations):
        if o.status not in ("succeeded", "failed", "infeasible") or i in ignored:
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

    `remaining` (trials left in this run, this one included) triggers the end game (see the
    module docstring), so the run ends with a recommendation measured MIN_MEASUREMENTS times."""
    if not ranked or not rerun_due(observations, share=share, remaining=remaining):
        return None
    if remaining is not None and remaining <= ENDGAME:
        # The end game (the last ENDGAME trials): re-measurements only. The best configuration by
        # estimate that can still reach MIN_MEASUREMENTS is re-measured until it has them, then
        # the best challenger that can, so it may overtake (racing); if a re-measurement drops
        # the best one, the next takes over with enough trials left to be confirmed.
        reachable = [c for c in ranked if c.measurements + remaining >= targets[0]]
        due = next((c for c in reachable[:2] if c.measurements < targets[0]), None)
        if due is None and reachable:
            # Both leaders have their measurements, and a new configuration could no longer get
            # them (it could never be recommended): settle between the two instead, the less
            # measured one first, the leader on a tie.
            due = min(reachable[:2], key=lambda c: c.measurements)
        return due
    for cand, wanted in zip(ranked, targets):
        if cand.measurements < wanted:
            return cand
    return None


def rerun_due(observations: Sequence[Observation], *, share: float = RERUN_SHARE,
              remaining: int | None = None) -> bool:
    """Whether racing may re-measure now (the end game, or re-measurements under their share):
    the cheap half of `next_rerun`, so a proposal ranks configurations only when it may use them."""
    if remaining is not None and remaining <= ENDGAME:
        return True
    if remaining is None:
        share = max(share, UNKNOWN_LENGTH_SHARE)
    finished = [o for o in observations if o.status in ("succeeded", "failed", "infeasible")]
    reruns = sum(1 for o in finished if o.source == "rerun")
    return reruns + 1 <= share * (len(finished) + 1)


def incumbent(ranked: Sequence[Candidate], min_measurements: int = MIN_MEASUREMENTS) -> Candidate | None:
    """The best-estimated configuration with enough measurements (else the best estimate)."""
    if not ranked:
        return None
    proven = [c for c in ranked if c.measurements >= min_measurements]
    return proven[0] if proven else ranked[0]
