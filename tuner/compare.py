"""`ostune compare A B`: two experiments side by side (e.g. last night vs the night before)."""

from __future__ import annotations

from typing import Any

from storage.store import ExperimentRecord, ResultStore


def _side(store: ResultStore, experiment: ExperimentRecord) -> dict[str, Any]:
    from tuner.budget import improved_beyond_noise
    from tuner.experiment import baseline_trial, best_trial, stored_space
    from tuner.outcome import is_verified
    from tuner.racing import typed_params
    from tuner.recommend import recommend

    trials = store.trials(experiment.id)
    best = best_trial(trials, experiment.maximize)
    baseline = baseline_trial(trials)
    choice = recommend(store, experiment)
    facts = next((r["host_facts"] for r in reversed(store.runs_for(experiment.id)) if r.get("host_facts")), {})
    improvement = None
    if best and baseline and baseline.objective:
        improvement = (best.objective - baseline.objective) / baseline.objective  # type: ignore[operator]
    return {
        "experiment": experiment.name, "objective": f"{experiment.direction} {experiment.objective}",
        "metric": experiment.objective, "maximize": experiment.maximize,
        "trials": len(trials), "succeeded": sum(t.status == "succeeded" for t in trials),
        "baseline_objective": baseline.objective if baseline else None,
        "best_objective": best.objective if best else None, "best_trial": best.number if best else None,
        "best_sd": best.objective_sd if best else None, "improvement": improvement,
        "improved": improved_beyond_noise(trials, experiment.maximize),
        "verified": bool(choice and choice.verified) or is_verified(store, experiment, choice.trial.number if choice else None),
        "host": experiment.target.get("host"), "kernel": facts.get("kernel"),
        "best_params": typed_params(stored_space(experiment), best.params) if best else {},
        # what `ostune best` recommends and `ostune export` deploys: not the luckiest single trial
        "recommended_trial": choice.trial.number if choice else None,
        "recommended_objective": choice.objective if choice else None,
        "recommended_measurements": choice.measurements if choice else None,
        "recommended_params": choice.params if choice else {},
        "minimal_kept": list(choice.minimal.kept) if choice and choice.minimal else None,
    }


def compare_experiments(store_a: ResultStore, a: ExperimentRecord, store_b: ResultStore,
                        b: ExperimentRecord) -> dict[str, Any]:
    side_a, side_b = _side(store_a, a), _side(store_b, b)
    names = list(dict.fromkeys([*a.space.get("parameters", {}), *b.space.get("parameters", {})]))
    params = []  # the recommended configurations, knob by knob
    for name in names:
        va, vb = side_a["recommended_params"].get(name), side_b["recommended_params"].get(name)
        params.append({"name": name, "a": va, "b": vb, "differs": va != vb})
    same_objective = side_a["objective"] == side_b["objective"]
    comparable = same_objective and side_a["host"] == side_b["host"]
    # a ratio of two different metrics (ops/s over ms) means nothing, whatever the caveat: none
    return {"a": side_a, "b": side_b, "params": params, "comparable": comparable, "same_objective": same_objective,
            "best_ratio": _ratio(side_a["best_objective"], side_b["best_objective"]) if same_objective else None,
            "recommended_ratio": (_ratio(side_a["recommended_objective"], side_b["recommended_objective"])
                                  if same_objective else None),
            "same_space": a.space_hash == b.space_hash}


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None
