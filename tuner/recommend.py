"""Which configuration ostune recommends for an experiment."""

from __future__ import annotations

from dataclasses import dataclass

from storage.store import ExperimentRecord, ResultStore, TrialRecord
from tuner.experiment import best_trial


@dataclass(frozen=True)
class Recommendation:
    trial: TrialRecord
    verified: bool
    reason: str


def recommend(store: ResultStore, experiment: ExperimentRecord) -> Recommendation | None:
    trials = store.trials(experiment.id)
    best = best_trial(trials, experiment.maximize)
    if best is None:
        return None
    return Recommendation(best, False, "lowest observed median; improvement not established by `ostune verify`")
