"""Budgets for unattended runs: how many trials, how much time, and when further trials stop
paying off. `Budget.should_stop` plugs into `RunSettings.should_stop` and is asked before every
trial; `Budget.stopped_by` then says which limit ended the run (the CLI maps it to an exit code).

A trial is started only if it can finish inside the time budget, estimated from the durations
of the experiment's earlier trials (the slowest of the recent ones plus the time the last
proposal took): a nightly job never runs past its window to start a trial it cannot finish.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Sequence

from storage.store import TrialRecord
from tuner.errors import BadInputError

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)?", re.IGNORECASE)

#: trials whose durations are used for the estimate (recent ones reflect current conditions)
RECENT_TRIALS = 5
#: multiplier on the estimate: a trial that took 10 s last time may take a little longer now
ESTIMATE_MARGIN = 1.10


def parse_duration(text: str, *, option: str = "--time-budget") -> float:
    """'2h', '90m', '1h30m', '20s', '45' (seconds) → seconds."""
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise BadInputError(f"{option} is empty (e.g. {option} 2h, 90m, 1h30m, 20s)")
    pos, total = 0, 0.0
    while pos < len(raw):
        match = _DURATION_PART.match(raw, pos)
        if not match or match.end() == pos:
            raise BadInputError(f"{option} {text!r} is not a duration (e.g. 2h, 90m, 1h30m, 20s)")
        total += float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
        pos = match.end()
    if total <= 0:
        raise BadInputError(f"{option} {text!r} must be longer than zero")
    if total > MAX_DURATION_S:
        raise BadInputError(f"{option} {text!r} is longer than a year; give at most 366d (8784h)")
    return total


#: a year: a budget past it is a typo, and a deadline far enough out overflows the calendar
MAX_DURATION_S = 366 * 86400.0


def parse_until(text: str, now: datetime | None = None) -> datetime:
    """'06:00' (local time) → the next moment it is 06:00: today if still ahead, else tomorrow."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59 or int(match.group(3) or 0) > 59:
        raise BadInputError(f"--until {text!r} is not a local time of day HH:MM (e.g. --until 06:00)")
    now = now or datetime.now().astimezone()
    target = now.replace(hour=int(match.group(1)), minute=int(match.group(2)),
                         second=int(match.group(3) or 0), microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return target


def median_se(sd: float | None, repetitions: int) -> float:
    """Standard error of a median of `repetitions` values with standard deviation `sd`
    (≈ 1.2533·sd/√n for roughly normal repetitions); 0 when unknown."""
    if sd is None or repetitions < 2 or not math.isfinite(sd):
        return 0.0
    return 1.2533 * sd / math.sqrt(repetitions)


def beats(new: TrialRecord, old: TrialRecord, maximize: bool, z: float = 2.0) -> bool:
    """`new` is better than `old` by more than measurement noise: the difference of the two
    medians exceeds z combined standard errors (from each trial's stored objective_sd)."""
    assert new.objective is not None and old.objective is not None
    delta = (new.objective - old.objective) if maximize else (old.objective - new.objective)
    noise = z * math.hypot(median_se(new.objective_sd, new.repetitions),
                           median_se(old.objective_sd, old.repetitions))
    floor = 1e-9 * max(abs(old.objective), 1e-12)
    return delta > max(noise, floor)


def trials_since_improvement(trials: Sequence[TrialRecord], maximize: bool) -> int:
    """Finished trials after the last one that improved on the best so far beyond noise
    (the first succeeded trial counts as an improvement)."""
    best: TrialRecord | None = None
    since = 0
    for t in trials:
        if t.status not in ("succeeded", "failed", "infeasible"):
            continue
        if t.status == "succeeded" and t.objective is not None and (best is None or beats(t, best, maximize)):
            best, since = t, 0
        else:
            if t.status == "succeeded" and t.objective is not None and best is not None and (
                    (t.objective > best.objective) if maximize else (t.objective < best.objective)):  # type: ignore[operator]
                best = t  # within noise: a new incumbent, but no real progress
            since += 1
    return since


def improved_beyond_noise(trials: Sequence[TrialRecord], maximize: bool) -> bool:
    """Some succeeded trial beats the (succeeded) baseline by more than noise."""
    from tuner.experiment import baseline_trial

    baseline = baseline_trial(trials)
    if baseline is None or baseline.objective is None:
        return False
    return any(t.status == "succeeded" and t.objective is not None and t.id != baseline.id
               and beats(t, baseline, maximize) for t in trials)


def estimate_trial_s(trials: Sequence[TrialRecord]) -> float | None:
    """Seconds the next trial will take: the slowest of the recent finished trials (plus the last
    proposal's time), with a margin. None when no trial has finished yet."""
    finished = [t for t in trials if t.status in ("succeeded", "failed", "infeasible") and t.duration_s is not None]
    if not finished:
        return None
    recent = finished[-RECENT_TRIALS:]
    slowest = max(t.duration_s for t in recent)  # type: ignore[type-var]
    propose_s = max((float(t.proposal.get("propose_ms", 0.0)) / 1000 for t in recent), default=0.0)
    return (slowest + propose_s) * ESTIMATE_MARGIN  # type: ignore[operator]


@dataclass
class Budget:
    """The limits of one `ostune run`. Times are wall-clock (time.time()) so `--until` works."""

    max_trials: int | None = None
    #: absolute deadline (epoch seconds), from --time-budget and/or --until (the earlier wins)
    deadline: float | None = None
    patience: int | None = None
    maximize: bool = False
    started: float = field(default_factory=time.time)
    clock: Callable[[], float] = time.time
    #: set when a limit stopped the run: "max-trials" | "time" | "converged" | "lock-lost"
    stopped_by: str | None = None
    #: extra stop condition (e.g. the host lock was lost); returns a reason or None
    extra: Callable[[], str | None] | None = None
    estimate_s: float | None = None

    @classmethod
    def from_options(cls, *, max_trials: int | None, time_budget: str | None, until: str | None,
                     patience: int | None, maximize: bool, clock: Callable[[], float] = time.time) -> "Budget":
        started = clock()
        deadlines = []
        if time_budget:
            deadlines.append(started + parse_duration(time_budget))
        if until:
            deadlines.append(parse_until(until, datetime.fromtimestamp(started).astimezone()).timestamp())
        return cls(max_trials=max_trials, deadline=min(deadlines) if deadlines else None,
                   patience=patience, maximize=maximize, started=started, clock=clock)

    @property
    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    def trials_left(self, trials: list[TrialRecord]) -> int | None:
        """How many more trials the budget allows (None: unlimited). Racing uses it to finish
        re-measuring the best configuration before a nightly job's time runs out."""
        left: list[int] = []
        if self.max_trials is not None:
            left.append(self.max_trials - sum(1 for t in trials if t.status != "aborted"))
        estimate = estimate_trial_s(trials)
        if self.deadline is not None and estimate:
            left.append(int(max(self.deadline - self.clock(), 0) // estimate))
        return max(min(left), 0) if left else None

    def should_stop(self, trials: list[TrialRecord]) -> str | None:
        if self.extra is not None:
            reason = self.extra()
            if reason:
                self.stopped_by = "lock-lost"
                return reason
        counted = [t for t in trials if t.status != "aborted"]
        if self.max_trials is not None and len(counted) >= self.max_trials:
            self.stopped_by = "max-trials"
            return (f"max trials reached: the experiment has {len(counted)} trial(s), "
                    f"--max-trials {self.max_trials}")
        if self.deadline is not None:
            remaining = self.deadline - self.clock()
            self.estimate_s = estimate_trial_s(trials)
            if remaining <= 0:
                self.stopped_by = "time"
                return "time budget exhausted"
            if self.estimate_s is not None and self.estimate_s > remaining:
                self.stopped_by = "time"
                return (f"time budget exhausted: the next trial needs about {self.estimate_s:.0f} s, "
                        f"{max(remaining, 0):.0f} s left")
        if self.patience is not None:
            since = trials_since_improvement(trials, self.maximize)
            if any(t.status == "succeeded" for t in trials) and since >= self.patience:
                self.stopped_by = "converged"
                return f"converged: no improvement beyond noise in the last {since} trial(s)"
        return None

    def describe(self) -> str:
        parts = []
        if self.max_trials is not None:
            parts.append(f"at most {self.max_trials} trials in the experiment")
        if self.deadline is not None:
            end = datetime.fromtimestamp(self.deadline).astimezone().isoformat(timespec="seconds")
            parts.append(f"until {end}")
        if self.patience is not None:
            parts.append(f"stop after {self.patience} trials without improvement")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "max_trials": self.max_trials,
            "deadline": (datetime.fromtimestamp(self.deadline).astimezone().isoformat(timespec="seconds")
                         if self.deadline is not None else None),
            "patience": self.patience,
            "stopped_by": self.stopped_by,
            "next_trial_estimate_s": round(self.estimate_s, 2) if self.estimate_s is not None else None,
        }
