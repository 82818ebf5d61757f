"""`ostune verify`: re-measure the baseline, the recommended configuration and the shipped
profiles in randomized interleaved order on the same host, and say which effects are real.

Schedule: N rounds; each round measures every configuration once, in a fresh random order (seeded,
stored), so slow drift of the machine (thermal, background jobs, cache state) hits every
configuration alike instead of the one measured last. A measurement is the trial procedure of
`ostune run` (apply, restart the application if needed, warm-up, R repetitions, median).

Statistics (paired, across rounds): for configuration C and round r, the ratio C_r / baseline_r of
the round medians. The effect is the geometric mean of these ratios, exp(mean(log ratio)); its
95% confidence interval is a paired bootstrap over rounds (whole rounds are resampled, so the
pairing is kept; 10 000 resamples, seeded) read at Hesterberg's *expanded* percentiles: the plain
percentile interval undercovers badly with the handful of rounds a verification has (measured:
86% instead of 95% at 8 rounds), the expansion by sqrt(n/(n-1)) and Student's t fixes that.
The improvement is *established* only when the whole interval is on the better side of 1 (below 1
for latencies and minimized objectives, above 1 for a maximized one). Verify needs at least 3
rounds and defaults to 6.

The host's values are journalled before the first write and restored afterwards, through the same
HostState / restore journal / crash recovery as `ostune run`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sqlalchemy import select, update

from spaces.model import Space, Value
from storage.models import Verification, VerificationResult, VerificationSample, utcnow
from storage.store import ExperimentRecord, ResultStore
from tuner.errors import AppError, BadInputError, HostError, HostUnreachableError, LockHeldError, WorkloadError

RESAMPLES = 10_000
LEVEL = 0.95
MIN_ROUNDS = 3
#: a bound for typos (a round measures every configuration once: 1000 is days of Redis)
MAX_ROUNDS = 1000
DEFAULT_ROUNDS = 6
#: metrics reported besides the experiment's objective, when the workload reports them
EXTRA_METRICS = ("p99_ms", "p999_ms")


# -- statistics ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Effect:
    relative: float
    ci_low: float
    ci_high: float
    rounds: int


def paired_effect(config: Sequence[float], baseline: Sequence[float], *, resamples: int = RESAMPLES,
                  level: float = LEVEL, seed: int = 0) -> Effect | None:
    """Geometric-mean ratio config/baseline over paired rounds, with a CI: the expanded
    percentile bootstrap of the mean log ratio, widened where needed to the Student-t interval.
    None with fewer than 2 usable pairs (positive values in both).

    Why both: a bootstrap of n rounds never reaches past the smallest and largest round, so at 3
    rounds its "95%" interval is [min, max], which holds the true ratio 1 - 2/2^3 = 75% of the
    time (measured: 74%, and 12-14% of unchanged configurations "established"). The t interval
    extrapolates from the spread; the bootstrap keeps a skewed side. Their union covers 94-98% at
    3 to 20 rounds on normal and heavy-tailed (t3) log ratios, 400 simulated verifications each."""
    from scipy import stats

    pairs = [(c, b) for c, b in zip(config, baseline) if c is not None and b is not None and c > 0 and b > 0]
    if len(pairs) < 2:
        return None
    logs = np.array([math.log(c / b) for c, b in pairs])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(logs), size=(resamples, len(logs)))
    means = logs[idx].mean(axis=1)
    tail = expanded_tail(len(logs), level)
    low, high = np.quantile(means, [tail, 1.0 - tail])
    half = stats.t.ppf(1.0 - (1.0 - level) / 2.0, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    low, high = min(low, logs.mean() - half), max(high, logs.mean() + half)
    return Effect(float(math.exp(logs.mean())), float(math.exp(low)), float(math.exp(high)), len(logs))


def expanded_tail(n: int, level: float = LEVEL) -> float:
    """Tail probability for Hesterberg's expanded percentile bootstrap: the plain percentile
    interval of a mean is too narrow for small n (it acts like z with the 1/n variance); using the
    quantiles at Phi(-sqrt(n/(n-1)) * t_{n-1}) corrects both. n=6 at 95%: 0.3% / 99.7%."""
    from scipy import stats

    if n < 2:
        return (1.0 - level) / 2.0
    t = stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1)
    return float(stats.norm.cdf(-math.sqrt(n / (n - 1)) * t))


def established(effect: Effect | None, *, lower_is_better: bool) -> bool:
    """True only when the whole interval shows an improvement (excludes no-change)."""
    if effect is None:
        return False
    return effect.ci_high < 1.0 if lower_is_better else effect.ci_low > 1.0


def lower_is_better(metric: str, experiment: ExperimentRecord) -> bool:
    if metric == experiment.objective:
        return not experiment.maximize
    return not metric.startswith(("ops", "throughput", "tps", "qps"))


def interleaved_schedule(labels: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """A fresh random order of all labels for every round (seeded)."""
    rng = random.Random(seed)
    schedule = []
    for _ in range(rounds):
        order = list(labels)
        rng.shuffle(order)
        schedule.append(order)
    return schedule


# -- storage ---------------------------------------------------------------------------------------
def latest_results(store: ResultStore, experiment_id: int) -> list[dict[str, Any]]:
    """Results of the newest finished verification of an experiment (empty if none)."""
    with store._session() as session:
        row = session.scalars(
            select(Verification).where(Verification.experiment_id == experiment_id,
                                       Verification.status == "finished")
            .order_by(Verification.id.desc()).limit(1)).first()
        if row is None:
            return []
        return [
            {"verification": row.id, "verified_at": row.created_at, "label": r.label, "trial": r.trial_number,
             "metric": r.metric,
             "samples": r.samples, "median": r.median, "relative": r.relative, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "established": bool(r.established), "params": r.params_json}
            for r in session.scalars(select(VerificationResult).where(
                VerificationResult.verification_id == row.id).order_by(VerificationResult.id))
        ]


def _create_verification(store: ResultStore, experiment_id: int, run_id: int | None, rounds: int, metric: str,
                         schedule: list[list[str]]) -> int:
    def create(session):  # type: ignore[no-untyped-def]
        row = Verification(experiment_id=experiment_id, run_id=run_id, rounds=rounds, metric=metric,
                           schedule_json=schedule, status="running", created_at=utcnow())
        session.add(row)
        session.flush()
        return row.id

    return store._write(create)


def _add_samples(store: ResultStore, verification_id: int, round_: int, position: int, label: str,
                 trial: int | None, values: Mapping[str, float]) -> None:
    store._write(lambda s: s.add_all(
        VerificationSample(verification_id=verification_id, round=round_, position=position, label=label,
                           trial_number=trial, metric=k, value=float(v)) for k, v in values.items()))


def _finish(store: ResultStore, verification_id: int, status: str, results: Sequence[dict[str, Any]] = ()) -> None:
    def finish(session):  # type: ignore[no-untyped-def]
        session.execute(update(Verification).where(Verification.id == verification_id).values(status=status))
        session.add_all(VerificationResult(verification_id=verification_id, **r) for r in results)

    store._write(finish)


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Contender:
    label: str
    params: dict[str, Value]
    trial: int | None = None
    #: metric -> value per round (None where the measurement failed)
    values: dict[str, list[float | None]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    verification_id: int
    schedule: list[list[str]]
    contenders: list[Contender]
    results: list[dict[str, Any]]
    restored: list[str] = field(default_factory=list)
    restore_failures: list[str] = field(default_factory=list)


class NothingToVerify(Exception):
    """Not an error: the recommendation is to change nothing and no profile is left to measure.
    A nightly job that ends here has done its work, so the CLI says so and exits 0."""


def contenders_for(store: ResultStore, experiment: ExperimentRecord, space: Space,
                   *, profiles: bool = True) -> list[Contender]:
    """baseline (the experiment's baseline trial), recommended, and the shipped profiles."""
    from tuner.experiment import baseline_trial
    from tuner.profiles import profile_configs
    from tuner.racing import typed_params
    from tuner.recommend import recommend

    trials = store.trials(experiment.id)
    baseline = baseline_trial(trials)
    if baseline is None:
        raise BadInputError(f"experiment {experiment.name!r} has no succeeded baseline trial to compare with")
    choice = recommend(store, experiment)
    if choice is None:
        raise BadInputError(f"experiment {experiment.name!r} has no succeeded trial yet")
    base = typed_params(space, baseline.params)
    out = [Contender("baseline", base, baseline.number)]
    if not choice.is_baseline:
        out.append(Contender("recommended", {k: v for k, v in choice.params.items() if k in space},
                             choice.trial.number))
    if choice.minimal is not None:
        # the model's smallest change keeping the improvement: a prediction until measured here
        out.append(Contender("minimal", {k: v for k, v in choice.minimal.params.items() if k in space}, None))
    if profiles:
        configs, _notes = profile_configs(space, base)
        for config in configs:
            trial = next((t.number for t in trials if t.source == config.label), None)
            out.append(Contender(config.label, config.params, trial))
    if len(out) == 1:
        raise NothingToVerify(
            f"experiment {experiment.name!r}: the best configuration found is its baseline (the host's own "
            "values), so there is nothing to verify" + ("" if profiles else " (--no-profiles leaves out the profiles)"))
    return out


def merge_identical(contenders: Sequence[Contender], space: Space,
                    available: set[str]) -> tuple[list[Contender], list[tuple[Contender, Contender]]]:
    """The contenders that differ on this host, and (dropped, same) pairs: configurations that
    differ only in knobs this host cannot set (a profile's skipped knob) are one configuration
    here, and measuring it twice under two names spends rounds on nothing and can report it both
    established and not. A dropped one gets the measurements of its twin (alias_lines)."""
    from tuner.racing import config_key

    here = space.subset([p.name for p in space.parameters if p.name in available])

    def key(cand: Contender) -> tuple:
        return config_key(here, {k: v for k, v in cand.params.items() if k in available})

    kept: list[Contender] = []
    aliases: list[tuple[Contender, Contender]] = []
    for cand in contenders:
        same = next((k for k in kept if key(k) == key(cand)), None)
        if same is None:
            kept.append(cand)
        else:
            aliases.append((cand, same))
    return kept, aliases


def alias_lines(aliases: Sequence[tuple[Contender, Contender]]) -> list[str]:
    return [f"{dropped.label} sets the same values as {same.label} on this host (its other knobs cannot be set "
            f"here): measured once, as {same.label}, and reported under both names" for dropped, same in aliases]


class Verifier:
    """Runs the interleaved schedule on one host, reusing ExperimentRunner's setup, trial
    procedure and cleanup (probe, journal, apply, restart, warm-up, repetitions, restore)."""

    def __init__(self, store: ResultStore, host, app, workload, experiment: ExperimentRecord,  # type: ignore[no-untyped-def]
                 *, rounds: int, repetitions: int, seed: int, reporter, profiles: bool = True,
                 warmup: bool = True, strict: bool = False) -> None:
        if rounds < MIN_ROUNDS:
            raise BadInputError(f"--rounds {rounds}: a confidence interval needs at least {MIN_ROUNDS} rounds")
        self.store, self.host, self.app, self.workload = store, host, app, workload
        self.experiment = experiment
        self.rounds, self.repetitions, self.seed = rounds, repetitions, seed
        self.reporter, self.profiles, self.warmup, self.strict = reporter, profiles, warmup, strict
        #: the verification's row in `runs` once it exists (the host lock's heartbeat names it)
        self.run_id: int | None = None
        #: why the host's locks are no longer held (HostLocks.check), asked before every round:
        #: measuring on would measure under another process's changes
        self.lock_lost: Callable[[], str | None] = lambda: None
        #: what the cleanup put back, could not put back, and how to put that back
        self.restored: list[str] = []
        self.restore_failures: list[str] = []
        self.restore_hint = ""

    def run(self) -> VerifyReport:
        from tuner.experiment import ExperimentRunner, RunSettings, RunSummary
        from tuner.host_state import HostState
        from tuner.measure import aggregate, measure_repetitions
        from tuner.experiment import stored_space
        from tuner.ownership import ProcessIdentity
        from tuner.recovery import recover_before_use

        experiment = self.experiment
        space = stored_space(experiment)
        contenders = contenders_for(self.store, experiment, space, profiles=self.profiles)
        if "recommended" not in {c.label for c in contenders}:
            self.reporter.message("the recommended configuration is the baseline (the host's own values): "
                                  "measuring the profiles against it")
        settings = RunSettings(experiment=experiment.name, trials=0, objective=experiment.objective,
                               maximize=experiment.maximize, repetitions=self.repetitions,
                               warmup=self.warmup, strict=self.strict)
        # The runner is used for what it already does right: probing, app start, cleanup+restore.
        runner = ExperimentRunner(self.store, self.host, self.app, self.workload, space, settings,
                                  self.reporter, experiment.target)
        metrics = [experiment.objective] + [m for m in EXTRA_METRICS if m != experiment.objective]
        summary = RunSummary(experiment.name, 0, 0, None, None)
        verification_id: int | None = None
        run_id: int | None = None
        status = "failed"
        try:
            self.host.start()
            recover_before_use(self.store, self.host, self.reporter.message, self.app.workdir_parents())
            # As in `ostune run`: the application starts first (some parameter paths depend on it).
            endpoint = self.app.start(self.host)
            report = runner._probe()
            if report.skipped:
                self.reporter.skipped(report.skipped)
            contenders, aliases = merge_identical(contenders, space, set(report.available))
            for line in alias_lines(aliases):
                self.reporter.message(line)
            if len(contenders) == 1:
                raise NothingToVerify(f"experiment {experiment.name!r}: every configuration to verify sets the "
                                      "baseline's values on this host")
            schedule = interleaved_schedule([c.label for c in contenders], self.rounds, self.seed)
            by_label = {c.label: c for c in contenders}
            self.workload.prepare(self.host, endpoint)
            me = ProcessIdentity.current()
            run_id = self.store.start_run(
                experiment_id=experiment.id, command="verify", host_key=self.host.key, pid=me.pid,
                pid_start_ticks=me.start_ticks, machine=me.machine, boot_id=me.boot_id, machine_id=me.machine_id,
                host_facts=self.host.facts().as_dict() if self.host.applies_kernel_params else {},
                skipped=report.skipped,
            )
            runner.run_id = self.run_id = run_id
            state = None
            if self.host.applies_kernel_params:
                state = runner.state = HostState(self.host, getattr(runner, "host_space", space), self.store,
                                                 run_id, report)
                state.journal()
            verification_id = _create_verification(self.store, experiment.id, run_id, self.rounds,
                                                    experiment.objective, schedule)
            self.reporter.message(f"verify {experiment.name}: {len(contenders)} configurations x {self.rounds} "
                                  f"rounds, {self.repetitions} repetitions each, interleaved (seed {self.seed})")
            for r, order in enumerate(schedule, start=1):
                self.reporter.message(f"round {r}: {' '.join(order)}")
            available = set(report.available)
            for r, order in enumerate(schedule, start=1):
                lost = self.lock_lost()
                if lost:
                    raise LockHeldError(f"verification stopped before round {r}: {lost}")
                for position, label in enumerate(order, start=1):
                    cand = by_label[label]
                    params = {k: v for k, v in cand.params.items() if k in available}
                    try:
                        if state is not None:
                            outcome = state.apply(params)
                            if outcome.restart_for or not self.app.is_healthy():
                                endpoint = self.app.restart(self.host)
                                self.workload.prepare(self.host, endpoint)
                        elif not self.app.is_healthy():
                            endpoint = self.app.restart(self.host)
                            self.workload.prepare(self.host, endpoint)
                        if self.warmup:
                            self.workload.warmup(self.host, endpoint, params)
                        reps = measure_repetitions(self.host, self.app, endpoint, self.workload, params,
                                                   self.repetitions)
                        result = aggregate(reps, experiment.objective)
                    except (HostError, AppError, WorkloadError) as exc:
                        back = None
                        if isinstance(exc, HostUnreachableError):
                            back = self.host.stop_unless_answering(exc, f"verification stopped in round {r}")
                        cand.errors.append(f"round {r}: {exc}")
                        for m in metrics:
                            cand.values.setdefault(m, []).append(None)
                        self.reporter.message(f"round {r} {label}: failed: {str(exc).splitlines()[0][:160]}")
                        if back is not None:
                            self.reporter.message(f"{self.host.key} {back}: going on")
                        continue
                    values = {m: result.metrics[m] for m in metrics if m in result.metrics}
                    for m in metrics:
                        cand.values.setdefault(m, []).append(values.get(m))
                    _add_samples(self.store, verification_id, r, position, label, cand.trial, values)
                    self.reporter.message(f"round {r} {label}: " + " ".join(f"{k}={v:.4g}" for k, v in values.items()))
            for dropped, same in aliases:  # one configuration here: its twin's measurements are its own
                dropped.values, dropped.errors = same.values, same.errors
            contenders += [dropped for dropped, _same in aliases]
            results = self._results(contenders, metrics)
            _finish(self.store, verification_id, "finished", results)
            status = "finished"
            return VerifyReport(verification_id, schedule, contenders, results, summary.restored,
                                summary.restore_failures)
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if verification_id is not None and status != "finished":
                _finish(self.store, verification_id, "aborted" if status == "interrupted" else "failed")
            runner._cleanup(summary)
            if run_id is not None:
                self.store.end_run(run_id, status)
            self.restored, self.restore_failures = summary.restored, summary.restore_failures
            self.restore_hint = summary.restore_hint
            if status != "finished":  # the CLI reports a finished verification's restore
                for line in summary.restore_failures:
                    self.reporter.message(f"restore failed: {line}")
                if summary.restore_hint:
                    self.reporter.message(summary.restore_hint)

    def _results(self, contenders: list[Contender], metrics: list[str]) -> list[dict[str, Any]]:
        baseline = contenders[0]
        out = []
        for cand in contenders:
            for metric in metrics:
                values = cand.values.get(metric, [])
                if not any(v is not None for v in values):
                    continue
                present = [v for v in values if v is not None]
                effect = None if cand is baseline else paired_effect(
                    values, baseline.values.get(metric, []), seed=self.seed)
                out.append({
                    "label": cand.label, "trial_number": cand.trial, "params_json": _jsonable(cand.params),
                    "metric": metric, "samples": len(present), "median": float(np.median(present)),
                    "relative": effect.relative if effect else (1.0 if cand is baseline else None),
                    "ci_low": effect.ci_low if effect else None, "ci_high": effect.ci_high if effect else None,
                    "established": established(effect, lower_is_better=lower_is_better(metric, self.experiment)),
                })
        return out


def _jsonable(params: Mapping[str, Value]) -> dict[str, Any]:
    return {k: v for k, v in params.items()}


def render(report: VerifyReport, experiment: ExperimentRecord) -> list[str]:
    """The verdict table as lines of text."""
    lines = [f"{'configuration':<28} {'metric':<9} {'rounds':>6} {'median':>10} {'vs baseline':>12} {'95% CI':>17}  verdict"]
    for r in report.results:
        if r["label"] == "baseline":
            lines.append(f"{r['label']:<28} {r['metric']:<9} {r['samples']:>6} {r['median']:>10.4g} {'1':>12} {'':>17}  reference")
            continue
        if r["ci_low"] is None:
            lines.append(f"{r['label']:<28} {r['metric']:<9} {r['samples']:>6} {r['median']:>10.4g} {'-':>12} {'-':>17}  too few rounds")
            continue
        better = lower_is_better(r["metric"], experiment)
        if r["established"]:
            verdict = "improvement established"
        elif (r["ci_low"] > 1.0 if better else r["ci_high"] < 1.0):
            verdict = "worse than baseline"
        else:
            verdict = "not established (CI includes no change)"
        change = f"x{r['relative']:.3f}"
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        lines.append(f"{r['label']:<28} {r['metric']:<9} {r['samples']:>6} {r['median']:>10.4g} {change:>12} {ci:>17}  {verdict}")
    return lines
