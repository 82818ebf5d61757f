"""What a finished `ostune run` amounts to: its exit code and its machine-readable summary
(`--json`), both derived from the database so scripts see what is stored.

Exit codes of a run that ended normally (errors have theirs in tuner/errors.py):
  0  success: the experiment's best configuration beats its baseline beyond noise
  7  nothing improved: the run ended but no configuration beats the baseline beyond noise
  8  budget exhausted: --time-budget / --until / --max-trials ended the run before the --trials
     asked for were done, or left no room for a single trial (e.g. the cap was already reached)
Without an explicit --trials, a budget ending the run is its normal end (0 or 7), as is
convergence (--patience). A run whose host lock was taken over ends with 6.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from sqlalchemy import select

from storage.models import Verification, VerificationResult
from storage.store import ExperimentRecord, ResultStore, TrialRecord

if TYPE_CHECKING:
    from tuner.recommend import Recommendation

EXIT_OK = 0
EXIT_NOTHING_IMPROVED = 7
EXIT_BUDGET_EXHAUSTED = 8

BUDGET_STOPS = ("time", "max-trials")


def make_console(*, stderr: bool = False) -> Console:
    """A rich Console that writes plain text (no colours, no cursor movement, no wrapping at 80
    columns) unless its stream is a terminal — even when FORCE_COLOR or TTY_COMPATIBLE is set."""
    stream = sys.stderr if stderr else sys.stdout
    if _isatty(stream):
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, force_terminal=False, force_interactive=False,
                   no_color=True, color_system=None, width=10_000, soft_wrap=True)


def file_console(path: str) -> Console:
    """A plain-text Console appending to a log file (for --log-file)."""
    from tuner.errors import BadInputError

    try:
        handle = open(path, "a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise BadInputError(f"--log-file {path}: {exc.strerror}") from None
    return Console(file=handle, force_terminal=False, force_interactive=False, no_color=True,
                   color_system=None, width=10_000, soft_wrap=True, highlight=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@dataclass(frozen=True)
class VerificationInfo:
    verification_id: int
    status: str
    rounds: int
    created_at: str
    results: list[dict[str, Any]]

    def result_for(self, trial_number: int) -> dict[str, Any] | None:
        return next((r for r in self.results if r["trial"] == trial_number), None)


def latest_verification(store: ResultStore, experiment_id: int) -> VerificationInfo | None:
    """The newest verification of the experiment (`ostune verify`), or None if there is none —
    or if this database predates the verification tables."""
    try:
        with store._session() as session:
            row = session.scalars(
                select(Verification).where(Verification.experiment_id == experiment_id)
                .where(Verification.status.notin_(("running", "aborted", "failed")))
                .order_by(Verification.id.desc()).limit(1)).first()
            if row is None:
                return None
            results = [
                {"label": r.label, "trial": r.trial_number, "metric": r.metric, "samples": r.samples,
                 "median": r.median, "relative": r.relative, "ci_low": r.ci_low, "ci_high": r.ci_high,
                 "established": bool(r.established), "params": r.params_json}
                for r in session.scalars(select(VerificationResult).where(
                    VerificationResult.verification_id == row.id).order_by(VerificationResult.id))
            ]
            return VerificationInfo(row.id, row.status, row.rounds, row.created_at.isoformat(), results)
    except Exception:  # noqa: BLE001 - an older schema without the tables: nothing verified
        return None


def is_verified(store: ResultStore, experiment: ExperimentRecord, trial_number: int | None) -> bool:
    if trial_number is None:
        return False
    info = latest_verification(store, experiment.id)
    if info is None:
        return False
    result = info.result_for(trial_number)
    return bool(result and result["established"])


def exit_code(stopped_by: str | None, improved: bool, *, explicit_trials: bool, trials_run: int) -> int:
    from tuner.errors import LockHeldError

    if stopped_by == "lock-lost":
        return LockHeldError.exit_code
    if stopped_by in BUDGET_STOPS and (explicit_trials or trials_run == 0):
        return EXIT_BUDGET_EXHAUSTED
    return EXIT_OK if improved else EXIT_NOTHING_IMPROVED


def _trial_doc(t: TrialRecord | None, space) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    from tuner.racing import typed_params

    if t is None:
        return None
    # values in their parameters' types (8192, true), as `best --json` gives them, not the
    # database's floats (8192.0, 1.0)
    return {"trial": t.number, "objective": t.objective, "objective_sd": t.objective_sd,
            "repetitions": t.repetitions, "source": t.source, "params": typed_params(space, t.params),
            "metrics": t.metrics}


def summary_doc(store: ResultStore, experiment: ExperimentRecord, *, trials_run: int, stop_reason: str,
                stopped_by: str | None, budget: dict[str, Any], elapsed_s: float, run_id: int | None,
                skipped: dict[str, str], explicit_trials: bool = True,
                choice: "Recommendation | None" = None) -> dict[str, Any]:
    """The --json summary, read back from the database after the run. `choice`: the
    recommendation, when the caller has it already (it costs a model fit)."""
    from tuner.budget import improved_beyond_noise
    from tuner.experiment import baseline_trial, best_trial, stored_space
    from tuner.recommend import minimal_doc, recommend, recommendation_doc

    trials = store.trials(experiment.id)
    best = best_trial(trials, experiment.maximize)
    baseline = baseline_trial(trials)
    improved = improved_beyond_noise(trials, experiment.maximize)
    improvement = None
    if best is not None and baseline is not None and baseline.objective:
        improvement = (best.objective - baseline.objective) / baseline.objective  # type: ignore[operator]
    if choice is None:
        choice = recommend(store, experiment)
    recommended = choice.trial.number if choice is not None else None
    verified = bool(choice is not None and choice.verified) or is_verified(store, experiment, recommended)
    info = latest_verification(store, experiment.id)
    code = exit_code(stopped_by, improved, explicit_trials=explicit_trials, trials_run=trials_run)
    this_run = [t for t in trials if run_id is not None and t.run_id == run_id]
    space = stored_space(experiment)
    return {
        "experiment": experiment.name,
        "objective": experiment.objective,
        "direction": experiment.direction,
        "trials_run": trials_run,
        "total_trials": len(trials),
        "statuses_this_run": {s: sum(1 for t in this_run if t.status == s) for s in sorted({t.status for t in this_run})},
        "best": _trial_doc(best, space),
        "baseline": _trial_doc(baseline, space),
        "baseline_objective": baseline.objective if baseline else None,
        "improvement": improvement,
        "improved": improved,
        "recommended_trial": recommended,
        "recommended": recommendation_doc(experiment, space, choice) if choice is not None else None,
        "minimal": minimal_doc(choice) if choice is not None else None,
        "verified": verified,
        "verification": ({"id": info.verification_id, "rounds": info.rounds, "created_at": info.created_at,
                          "result": info.result_for(recommended) if recommended is not None else None}
                         if info is not None else None),
        "stop_reason": stop_reason,
        "stopped_by": stopped_by,
        "budget": budget,
        "elapsed_s": round(elapsed_s, 2),
        "run_id": run_id,
        "skipped": skipped,
        "exit_code": code,
    }
