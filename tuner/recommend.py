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
from tuner.minimal import MinimalChange, minimal_change


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
    #: the model's smallest change keeping the improvement (tuner/minimal.py); None when it is the
    #: recommended configuration itself, or there is no model or no improvement to attribute
    minimal: MinimalChange | None = None
    #: the latest verification's result for the minimal change, if it measured it
    minimal_verification: dict[str, Any] | None = None

    @property
    def measurements(self) -> int:
        return len(self.trials)


def choose(space: Space, trials: list[TrialRecord], *, seed: int,
           maximize: bool) -> tuple[racing.Candidate | None, Any]:
    """The incumbent of a history (see the module docstring) and the engine fitted to it (None
    without enough observations for a model)."""
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
    return racing.incumbent(ranked), engine


def estimate_to_objective(estimate: float | None, candidate: racing.Candidate, maximize: bool,
                          log: bool) -> float | None:
    if estimate is None:
        return None
    value = -estimate if maximize else estimate
    return math.exp(value) if log else value


def recommend(store: ResultStore, experiment: ExperimentRecord) -> Recommendation | None:
    from tuner.verify import latest_results

    trials = store.trials(experiment.id)
    space = stored_space(experiment)
    best, engine = choose(space, trials, seed=experiment.seed, maximize=experiment.maximize)
    if best is None:
        return None
    by_number = {t.number: t for t in trials}
    first = by_number[best.trials[0]]
    log = all(t.objective > 0 for t in trials if t.status == "succeeded" and t.objective is not None)  # type: ignore[operator]
    estimate = estimate_to_objective(best.estimate, best, experiment.maximize, log)
    baseline = baseline_trial(trials)
    is_baseline = baseline is not None and racing.config_key(space, baseline.params) == best.key
    verified_results = latest_results(store, experiment.id)  # read once: the recommendation and its minimal change
    result = None if is_baseline else verification_for(verified_results, experiment, space, best.key)
    verified = bool(result and result["established"])
    if is_baseline:
        reason = "the baseline (the host's own values) is the best configuration found: nothing to change"
    else:
        reason = verification_status(result)
    if best.measurements < racing.MIN_MEASUREMENTS:
        reason += f"; only {best.measurements} measurement(s) of this configuration"
    minimal = None
    if not is_baseline and baseline is not None and engine is not None and engine.has_model:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            minimal = minimal_change(engine.posterior, space, best.params,
                                     racing.typed_params(space, baseline.params))
    return Recommendation(first, verified, reason, dict(best.params), tuple(best.trials), best.median,
                          estimate, result, is_baseline, minimal,
                          minimal_verification=(verification_for(verified_results, experiment, space,
                                                                 racing.config_key(space, minimal.params))
                                                if minimal is not None else None))


def verification_status(result: dict[str, Any] | None, *,
                        unmeasured: str = "improvement not established: run `ostune verify`") -> str:
    """What the latest verification says of a configuration, in words."""
    if result is None:
        return unmeasured
    interval = f"95% CI {result['ci_low']:.3f}-{result['ci_high']:.3f}"
    if result["established"]:
        return f"verified: {result['metric']} x{result['relative']:.3f} of baseline ({interval})"
    return (f"improvement not established: `ostune verify` measured x{result['relative']:.3f} of baseline, "
            f"{interval} includes no change")


def verification_for(results: list[dict[str, Any]], experiment: ExperimentRecord, space: Space,
                     key: tuple) -> dict[str, Any] | None:
    """This configuration's result (objective metric) among the latest finished verification's
    results (tuner.verify.latest_results)."""
    for result in results:
        if result["ci_low"] is None:  # the baseline's own row (the reference), or too few rounds
            continue
        if result["metric"] == experiment.objective and racing.config_key(space, result["params"]) == key:
            return result
    return None


def recommendation_doc(experiment: ExperimentRecord, space: Space, choice: Recommendation) -> dict[str, Any]:
    """The recommendation for --json output: `ostune best --json` prints it, and a run's --json
    summary carries it as `recommended`, so a script reads one shape from either."""
    return {
        "experiment": experiment.name, "trial": choice.trial.number, "trials": list(choice.trials),
        "measurements": choice.measurements,
        "params": {k: space[k].coerce(v) if k in space else v for k, v in choice.params.items()},
        "objective": choice.objective, "estimate": choice.estimate, "metric": experiment.objective,
        "metrics": choice.trial.metrics, "verified": choice.verified, "reason": choice.reason,
        "is_baseline": choice.is_baseline, "verification": choice.verification, "minimal": minimal_doc(choice),
    }


def minimal_doc(choice: Recommendation) -> dict[str, Any] | None:
    """The minimal change for --json output: only the kept knobs' values, and how far verified."""
    change = choice.minimal
    if change is None:
        return None
    result = choice.minimal_verification
    return {"params": change.changes(), "kept": list(change.kept), "reverted": list(change.reverted),
            "share_kept": round(change.share_kept, 4), "verified": bool(result and result["established"]),
            "verification": result}


def summary_line(experiment: ExperimentRecord, choice: Recommendation) -> str:
    """One line for the end of a run: what ostune recommends (not the luckiest single trial) and,
    when the model puts the improvement on fewer knobs, which ones."""
    if choice.is_baseline:
        return "recommended: nothing to change (the baseline, the host's own values, is the best configuration found)"
    median = f"{choice.objective:.4g}" if choice.objective is not None else "-"
    line = (f"recommended: trial {choice.trial.number} ({choice.measurements} measurement(s), {experiment.objective} "
            f"median {median}; {choice.reason})")
    if choice.minimal is not None:
        line += "; " + describe_minimal(choice.minimal, experiment.name)
    return line


def describe_minimal(change: MinimalChange, experiment: str) -> str:
    """The minimal change in words, naming the shorter of the two lists (kept or put back)."""
    kept, reverted = change.kept, change.reverted
    if len(kept) <= len(reverted):
        what = (f"the model attributes most of the improvement to {', '.join(kept)} ({len(kept)} of "
                f"{change.changed} changed knobs)")
    else:
        what = (f"the model finds no effect of {', '.join(reverted)} ({len(reverted)} of {change.changed} changed knobs "
                "can keep the host's values)")
    return f"{what}: `ostune best {experiment} --minimal` prints the smaller change, `ostune verify` measures it"

