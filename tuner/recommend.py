"""Which configuration ostune recommends for an experiment, and whether that is verified.

Not the lowest noisy observation: the configuration with the best model estimate (the GP's
posterior mean at the evaluated points, see tuner/racing.py) among feasible ones measured at
least three times. It is `verified` only when the latest `ostune verify` of this experiment
measured that same configuration and its 95% interval relative to the baseline lies entirely on
the better side of 1 (tuner/verify.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from spaces.model import Space
from storage.store import ExperimentRecord, ResultStore, TrialRecord
from tuner import racing
from tuner.experiment import baseline_trial, stored_space


@dataclass(frozen=True)
class Recommendation:
    #: the trial that first measured the recommended configuration
    trial: TrialRecord
    verified: bool
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    #: every trial that measured this configuration (first, then re-measurements)
    trials: tuple[int, ...] = ()
    #: median of the objective over those trials
    objective: float | None = None
    #: the model's estimate of the objective there (None without a model)
    estimate: float | None = None
    verification: dict[str, Any] | None = None
    #: the recommended configuration is the baseline's (the host's own values): nothing to change
    is_baseline: bool = False

    @property
    def measurements(self) -> int:
        return len(self.trials)


def choose(space: Space, trials: list[TrialRecord], *, seed: int, maximize: bool) -> racing.Candidate | None:
    """The incumbent of a history: see the module docstring."""
    from tuner.optimizer import Observation, SkoptOptimizer, model_targets
    from threadpoolctl import threadpool_limits

    observations = [Observation(t.params, t.status, t.objective, t.source, t.number) for t in trials
                    if t.status in ("succeeded", "failed", "infeasible")]
    candidates = racing.group(space, observations)
    engine = None
    with threadpool_limits(limits=1):
        pairs = model_targets(observations, maximize=maximize)
        if len(pairs) >= 3:
            engine = SkoptOptimizer(space, seed=seed,
                                    warm_theta=next((t.proposal["theta"] for t in reversed(trials)
                                                     if "theta" in t.proposal), None))
            engine.tell_many(pairs)
        ranked = racing.rank(space, candidates, engine, maximize=maximize)
    return racing.incumbent(ranked)


def estimate_to_objective(estimate: float | None, candidate: racing.Candidate, maximize: bool,
                          log: bool) -> float | None:
    if estimate is None:
        return None
    value = -estimate if maximize else estimate
    return math.exp(value) if log else value


def recommend(store: ResultStore, experiment: ExperimentRecord) -> Recommendation | None:
    trials = store.trials(experiment.id)
    space = stored_space(experiment)
    best = choose(space, trials, seed=experiment.seed, maximize=experiment.maximize)
    if best is None:
        return None
    by_number = {t.number: t for t in trials}
    first = by_number[best.trials[0]]
    log = all(t.objective > 0 for t in trials if t.status == "succeeded" and t.objective is not None)  # type: ignore[operator]
    estimate = estimate_to_objective(best.estimate, best, experiment.maximize, log)
    baseline = baseline_trial(trials)
    is_baseline = baseline is not None and racing.config_key(space, baseline.params) == best.key
    result = None if is_baseline else verification_for(store, experiment, space, best.key)
    verified = bool(result and result["established"])
    if is_baseline:
        reason = "the baseline (the host's own values) is the best configuration found: nothing to change"
    elif verified:
        reason = (f"verified: {result['metric']} x{result['relative']:.3f} of baseline "  # type: ignore[index]
                  f"(95% CI {result['ci_low']:.3f}-{result['ci_high']:.3f})")  # type: ignore[index]
    elif result is not None:
        reason = (f"improvement not established: `ostune verify` measured x{result['relative']:.3f} of baseline, "
                  f"95% CI {result['ci_low']:.3f}-{result['ci_high']:.3f} includes no change")
    else:
        reason = "improvement not established: run `ostune verify`"
    if best.measurements < racing.MIN_MEASUREMENTS:
        reason += f"; only {best.measurements} measurement(s) of this configuration"
    return Recommendation(first, verified, reason, dict(best.params), tuple(best.trials), best.median,
                          estimate, result, is_baseline)


def verification_for(store: ResultStore, experiment: ExperimentRecord, space: Space, key: tuple) -> dict[str, Any] | None:
    """The latest finished verification's result for this configuration (objective metric)."""
    from tuner.verify import latest_results

    for result in latest_results(store, experiment.id):
        if result["ci_low"] is None:  # the baseline's own row (the reference), or too few rounds
            continue
        if result["metric"] == experiment.objective and racing.config_key(space, result["params"]) == key:
            return result
    return None
