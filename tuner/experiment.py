"""Experiment orchestration: resolve the experiment, then propose → apply → measure → store,
restoring the host whatever happens."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from spaces.model import Space, Value, values_equal
from spaces.placeholders import expand
from storage.store import ExperimentRecord, ResultStore, TrialRecord
from targets.apps.base import App, Endpoint
from targets.hosts.base import Host
from targets.hosts.local import LocalHost
from targets.workloads.base import Workload
from tuner.errors import (AppError, BadInputError, HostError, HostUnreachableError, ObjectiveNotReported,
                          OstuneError, WorkloadError, WrongObjectiveError)
from tuner.host_state import HostState, ProbeReport, probe
from tuner.measure import aggregate, measure_repetitions
from tuner.optimizer import Observation, Proposal, propose
from tuner.ownership import ProcessIdentity
from tuner.recovery import recover_before_use, remote_restore_hint


@dataclass
class RunSettings:
    experiment: str
    trials: int
    objective: str = "p99_ms"
    maximize: bool = False
    seed: int | None = None
    repetitions: int = 5
    warmup: bool = True
    strict: bool = False
    engine: str = "skopt"
    #: stop early when this returns a reason (time budgets, convergence); checked before each trial
    should_stop: Callable[[list[TrialRecord]], str | None] | None = None
    #: how many more trials a budget allows (None: no limit besides `trials`)
    trials_left: Callable[[list[TrialRecord]], int | None] | None = None
    #: metric guards (tuner/guards.py): a trial breaking one is stored infeasible
    guards: tuple = ()
    #: measure the shipped tuned profiles (tuner/profiles.py) right after the baseline
    profiles: bool = True
    #: re-measure the top candidates (tuner/racing.py) when the engine has a model
    racing: bool = True
    #: configurations the user asked to try (`--try`), measured right after the baseline, in
    #: order, each once per run; parameters they leave out keep the baseline's values
    tries: tuple[dict[str, Value], ...] = ()


@dataclass
class RunSummary:
    experiment: str
    trials_run: int
    total_trials: int
    best: TrialRecord | None
    baseline: TrialRecord | None
    stop_reason: str = ""
    restored: list[str] = field(default_factory=list)
    restore_failures: list[str] = field(default_factory=list)
    #: how to put back what could not be restored (a remote host that stopped answering), or ""
    restore_hint: str = ""
    skipped: dict[str, str] = field(default_factory=dict)
    #: why the run's trials cannot succeed whatever their configuration (see broken_setup), or None
    broken_setup: str | None = None
    #: statuses of this run's finished trials, in order
    statuses: list[str] = field(default_factory=list)

    @property
    def nothing_succeeded(self) -> bool:
        """Trials ran and every one failed or was cut off by its host: the run measured nothing
        (a guard's infeasible trial was measured fine)."""
        return self.trials_run > 0 and not any(s in ("succeeded", "infeasible") for s in self.statuses)

    @property
    def improvement(self) -> float | None:
        """Relative change of the objective, best vs baseline (negative = lower)."""
        if not self.best or not self.baseline or not self.baseline.objective:
            return None
        return (self.best.objective - self.baseline.objective) / self.baseline.objective  # type: ignore[operator]


class Reporter(Protocol):
    def message(self, text: str) -> None: ...
    def skipped(self, skipped: Mapping[str, str]) -> None: ...
    def run_started(self, experiment: ExperimentRecord, trials: int, done_before: int) -> None: ...
    def trial_started(self, number: int, params: Mapping[str, Value], source: str) -> None: ...
    def trial_finished(self, trial: TrialRecord, best: TrialRecord | None) -> None: ...
    def run_finished(self, summary: RunSummary) -> None: ...


def better(a: float, b: float, maximize: bool) -> bool:
    return a > b if maximize else a < b


def best_trial(trials: list[TrialRecord], maximize: bool) -> TrialRecord | None:
    done = [t for t in trials if t.status == "succeeded" and t.objective is not None]
    if not done:
        return None
    return max(done, key=lambda t: t.objective) if maximize else min(done, key=lambda t: t.objective)  # type: ignore[arg-type,return-value]


def baseline_trial(trials: list[TrialRecord]) -> TrialRecord | None:
    """The experiment's succeeded baseline trial (the host's own values), if there is one."""
    return next((t for t in trials if t.source == "baseline" and t.status == "succeeded"), None)


def stored_space(experiment: ExperimentRecord) -> Space:
    """The space an experiment was created with, from the copy stored in the database."""
    from spaces.loader import space_from_document

    return space_from_document(experiment.space, source=f"experiment {experiment.name}", stored=True)


def resolve_experiment(
    store: ResultStore, *, name: str, space: Space | None, target: dict[str, Any], settings: RunSettings,
) -> tuple[ExperimentRecord | None, Space]:
    """The stored experiment of this name (checked against the given space), or None with the
    space to create it from. Nothing is written here: bad input leaves the database unchanged."""
    existing = store.get_experiment(name)
    if existing is None:
        if space is None:
            raise BadInputError(f"experiment {name!r} does not exist; give --space to create it")
        return None, space
    stored = stored_space(existing)
    if space is not None and space.hash() != existing.space_hash:
        raise BadInputError(
            f"experiment {name!r} was created with another space (hash {existing.space_hash}, "
            f"this one {space.hash()}); use a new --experiment name or the original space"
        )
    if settings.objective != existing.objective or (settings.maximize != existing.maximize):
        raise BadInputError(
            f"experiment {name!r} optimizes {existing.direction} {existing.objective}; "
            f"got {'maximize' if settings.maximize else 'minimize'} {settings.objective}"
        )
    refuse_other_app(existing, str(target.get("app")))
    stored_command = existing.target.get("command")
    if stored_command is not None and target.get("command") != stored_command:
        # the command is the workload: another one measures something else under the same name
        raise BadInputError(
            f"--command {target.get('command')!r}: experiment {name!r} measures {stored_command!r}; another "
            "command makes its trials incomparable (use a new --experiment name, or leave --command out)")
    if settings.seed is not None and settings.seed % 2**32 != existing.seed % 2**32:
        raise BadInputError(f"--seed {settings.seed}: experiment {name!r} keeps the seed it was created with "
                            f"({existing.seed}); leave --seed out")
    return existing, stored


#: how the error of a trial cut off by its host's silence begins
HOST_UNREACHABLE = "host unreachable: "

#: failed trials in a row, failing the same way, after which the baseline is measured to tell a
#: broken set-up from a region of bad configurations (see failure_streak)
BROKEN_SETUP_FAILURES = 3


def _failure_shape(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return re.sub(r"\d+", "#", lines[0]) if lines else ""


def failure_streak(trials: list[TrialRecord], run_id: int | None) -> list[TrialRecord]:
    """This run's last finished trials while they all failed the way the last one did (its first
    error line, numbers aside)."""
    mine = [t for t in trials if t.run_id == run_id and t.status in ("succeeded", "failed", "infeasible")]
    streak: list[TrialRecord] = []
    for t in reversed(mine):
        if t.status != "failed" or (streak and _failure_shape(t.error) != _failure_shape(streak[0].error)):
            break
        streak.append(t)
    return streak[::-1]


def cut_off_before(space: Space, params: Mapping[str, Value], earlier: list[TrialRecord]) -> TrialRecord | None:
    """An earlier trial of the same configuration that its host's silence cut off too (stored
    aborted, its error starting HOST_UNREACHABLE)."""
    for t in earlier:
        if (t.status == "aborted" and (t.error or "").startswith(HOST_UNREACHABLE) and t.params.keys() == params.keys()
                and all(values_equal(space[name], params[name], t.params[name]) for name in params)):
            return t
    return None


def health_check_due(trials: list[TrialRecord], run_id: int | None) -> bool:
    """Trials keep failing the same way: measure the baseline next. The host's own values run in
    production; if they fail too, the set-up is broken (broken_setup), else the failures were the
    configurations' own and the search goes on."""
    streak = failure_streak(trials, run_id)
    return len(streak) >= BROKEN_SETUP_FAILURES and not any(t.source == "baseline" for t in streak)


def broken_setup(trials: list[TrialRecord], run_id: int | None) -> str | None:
    """Why this run should stop because its set-up is broken (a server that went away, a
    benchmark that crashes at start), or None: trials failed the same way in a row, the baseline
    among them. Going on would only store failures the model then avoids, and exit as if the run
    had measured something."""
    streak = failure_streak(trials, run_id)
    if len(streak) < BROKEN_SETUP_FAILURES or not any(t.source == "baseline" for t in streak):
        return None
    error = (streak[-1].error or "").strip().splitlines()
    return (f"the last {len(streak)} trials failed the same way, the baseline (the host's own values) among them "
            f"({error[0] if error else 'no error text'}): the set-up looks broken, not the configurations; "
            "fix it and run again to resume")


def refuse_other_app(existing: ExperimentRecord, app: str) -> None:
    """A resumed experiment is measured on the app it tunes (as stored: mariadb is "mysql")."""
    if existing.target.get("app") != app:
        raise BadInputError(f"experiment {existing.name!r} tunes app {existing.target.get('app')!r}, not {app!r}")


def refuse_other_host(existing: ExperimentRecord, host_key: str, *, tuning_machine_ids: Sequence[str] = ()) -> None:
    """A resumed experiment is measured on the machine it was tuned on: trials of two machines in
    one model rank configurations by machine. (A QEMU guest is booted afresh for every run; what
    makes it another machine, its memory, vCPUs and image settings, is checked with the host
    settings.) For this machine the hostname in the key is not the last word: the machine ids of
    the experiment's tuning runs (`tuning_machine_ids`, of runs on its stored host) tell this
    machine under a new name (it goes on) from a clone or another machine with the same name."""
    from tuner.factory import host_spec_for
    from tuner.ownership import ProcessIdentity

    stored = str(existing.target.get("host"))
    if stored.startswith("qemu:") and host_key.startswith("qemu:"):
        return
    refusal = (f"--host {host_spec_for(host_key)}: experiment {existing.name!r} was tuned on {stored}; another "
               "machine makes its trials incomparable (use a new --experiment name, or leave --host out)")
    if stored.startswith("local:") and host_key.startswith("local:"):
        known, mine = set(tuning_machine_ids) - {""}, ProcessIdentity.current().machine_id
        if known and mine:
            if mine in known:
                return
            raise BadInputError(refusal.replace("; another machine", " (machine id "
                                                f"{sorted(known)[0][:12]}…, this one {mine[:12]}…); another machine"))
    if stored != host_key:
        raise BadInputError(refusal)


class ExperimentRunner:
    def __init__(
        self, store: ResultStore, host: Host, app: App, workload: Workload, space: Space,
        settings: RunSettings, reporter: Reporter, target: dict[str, Any],
        extra_settings: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.app = app
        self.workload = workload
        self.space = space
        self.settings = settings
        self.reporter = reporter
        self.target = target
        self.extra_settings = extra_settings or {}
        self.run_id: int | None = None
        #: the space with this host's placeholder values substituted into paths (see _probe)
        self.host_space: Space = space
        self.state: HostState | None = None
        self._endpoint: Endpoint | None = None
        self._current_trial: TrialRecord | None = None
        #: a trial failed: restart the application before the next one measures anything
        self._app_stale = False

    # -- setup ------------------------------------------------------------------------------
    def _probe(self) -> ProbeReport:
        if not self.host.applies_kernel_params:
            report = ProbeReport(available=self.space.names)
            report.current = {p.name: _default_value(p) for p in self.space.parameters}
            return report
        # {placeholders} in paths (e.g. /sys/block/{datadir_device}/...) come from the running
        # app; the stored space and its hash keep the placeholder text.
        expansion = expand(self.space, self.app.placeholders(self.host), app_name=self.app.name)
        self.host_space = expansion.space
        for name, (value, source) in expansion.used.items():
            self.reporter.message(f"{{{name}}} = {value}" + (f" ({source})" if source else ""))
        # Every runtime knob is written back with the value just read: the baseline trial writes
        # exactly that anyway, and a knob the kernel lets root read but not write (user.* sysctls
        # here) is skipped with its reason instead of failing every trial, the baseline included.
        writable = [p.name for p in expansion.space.parameters if p.kind != "boot"]
        return probe(self.host, expansion.space, strict=self.settings.strict,
                     check_writable=writable, skipped=expansion.skipped)

    def run(self) -> RunSummary:
        existing, space = resolve_experiment(
            self.store, name=self.settings.experiment, space=self.space, target=self.target,
            settings=self.settings,
        )
        self.space = space
        summary = RunSummary(self.settings.experiment, 0, 0, None, None)
        status = "failed"
        experiment: ExperimentRecord | None = None
        try:
            self.host.start()
            recover_before_use(self.store, self.host, self.reporter.message, self.app.workdir_parents())
            # Start the application before anything is stored: a missing binary or a server that
            # does not come up is bad input, and bad input leaves the database unchanged. It
            # starts before the probe because some parameter paths depend on it (its datadir's disk).
            self._endpoint = self.app.start(self.host)
            report = self._probe()
            summary.skipped = report.skipped
            if report.skipped:
                self.reporter.skipped(report.skipped)
                for number, tried in enumerate(self.settings.tries, start=1):
                    dropped = [f"{name}={tried[name]}" for name in tried if name in report.skipped]
                    if dropped:
                        self.reporter.message(f"--try {number}: {', '.join(dropped)} cannot be set on this host "
                                              "(skipped above); that configuration is measured without it")
            _check_tries_against_relations(space.subset(report.available), self.settings.tries, report.current)
            self.workload.prepare(self.host, self._endpoint)
            experiment = existing or self.store.create_experiment(
                name=self.settings.experiment, space=_space_doc(space), space_hash=space.hash(),
                target=self.target, objective=self.settings.objective,
                direction="maximize" if self.settings.maximize else "minimize",
                seed=self.settings.seed if self.settings.seed is not None else random.randrange(2**31),
                settings={"repetitions": self.settings.repetitions, **self.extra_settings},
            )
            me = ProcessIdentity.current()
            self.run_id = self.store.start_run(
                experiment_id=experiment.id, command="run", host_key=self.host.key, pid=me.pid,
                pid_start_ticks=me.start_ticks, machine=me.machine, boot_id=me.boot_id, machine_id=me.machine_id,
                host_facts=self.host.facts().as_dict() if self.host.applies_kernel_params else {},
                skipped=report.skipped,
            )
            if self.host.applies_kernel_params:
                self.state = HostState(self.host, self.host_space, self.store, self.run_id, report)
                self.state.journal()
            before = self.store.trials(experiment.id)
            self.reporter.run_started(experiment, self.settings.trials, len(before))
            summary.stop_reason = self._loop(experiment, space.subset(report.available), report, summary)
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except WrongObjectiveError:
            if existing is None and experiment is not None:
                # created by this run for an objective nothing reports: not kept, so the same
                # name with the right --objective starts clean
                self.store.delete_experiment(experiment.name)
                experiment = None
            raise
        finally:
            self._abort_current()
            self._cleanup(summary)
            if self.run_id is not None:
                self.store.end_run(self.run_id, status)
            if experiment is not None:
                trials = self.store.trials(experiment.id)
                summary.statuses = [t.status for t in trials if self.run_id is not None and t.run_id == self.run_id
                                    and t.status in ("succeeded", "failed", "infeasible")]
                summary.total_trials = len(trials)
                summary.best = best_trial(trials, experiment.maximize)
                summary.baseline = baseline_trial(trials)
                self.reporter.run_finished(summary)
        return summary

    def _loop(self, experiment: ExperimentRecord, space: Space, report: ProbeReport, summary: RunSummary) -> str:
        for done in range(self.settings.trials):
            trials = self.store.trials(experiment.id)
            self._refuse_unreported_guard(trials)
            # racing finishes re-measuring the best configuration before the run ends
            budget_left = self.settings.trials_left(trials) if self.settings.trials_left else None
            self._remaining = min(self.settings.trials - done, budget_left if budget_left is not None else 2**31)
            if self.settings.should_stop:
                reason = self.settings.should_stop(trials)
                if reason:
                    return reason
            params, source, proposal = self._next_params(experiment, space, report, trials)
            self._run_trial(experiment, params, source, proposal, trials)
            summary.trials_run += 1
            summary.broken_setup = broken_setup(self.store.trials(experiment.id), self.run_id)
            if summary.broken_setup:
                return summary.broken_setup
        return "trials done"

    def _next_params(
        self, experiment: ExperimentRecord, space: Space, report: ProbeReport, trials: list[TrialRecord],
    ) -> tuple[dict[str, Value], str, Proposal | None]:
        baseline = {name: report.current[name] for name in space.names}
        if not any(t.source == "baseline" and t.status == "succeeded" for t in trials) and not any(
            t.source == "baseline" and t.status in ("running", "failed") and t.run_id == self.run_id for t in trials
        ):
            # Trial 1 (and again after a baseline was aborted) measures the host as it is.
            return baseline, "baseline", None
        if health_check_due(trials, self.run_id):
            self.reporter.message(f"the last {BROKEN_SETUP_FAILURES} trials failed the same way: measuring the "
                                  "baseline, to tell a broken set-up from bad configurations")
            return baseline, "baseline", None
        # (a --try trial cut off by a dropped connection is measured again)
        tried = sum(1 for t in trials if t.source == "try" and t.run_id == self.run_id and t.status != "aborted")
        if tried < len(self.settings.tries):
            return {**baseline, **{k: v for k, v in self.settings.tries[tried].items() if k in space}}, "try", None
        profile = self._next_profile(space, baseline, trials)
        if profile is not None:
            return profile.params, profile.label, None
        observations = [
            Observation(t.params, t.status, t.objective, t.source, t.number)
            for t in trials if t.status in ("succeeded", "failed", "infeasible")
        ]
        warm = next((t.proposal["theta"] for t in reversed(trials) if "theta" in t.proposal), None)
        proposal = propose(space, observations, seed=experiment.seed, maximize=experiment.maximize,
                           engine=self.settings.engine, warm_theta=warm, racing=self.settings.racing,
                           remaining=getattr(self, "_remaining", None))
        return proposal.params, proposal.source, proposal

    def _next_profile(self, space: Space, baseline: dict[str, Value], trials: list[TrialRecord]):  # type: ignore[no-untyped-def]
        """The next shipped profile not yet measured in this experiment (tuner/profiles.py).
        Only early in an experiment: a profile is a starting point, not a late guess."""
        if not self.settings.profiles:
            return None
        from tuner.profiles import SHIPPED, profile_configs

        measured = [t for t in trials if t.status != "aborted"]
        if len(measured) > 1 + len(SHIPPED) + 2:
            return None
        configs, notes = profile_configs(space, baseline)
        done = {t.source for t in measured}
        if len(measured) == 1:
            for note in notes:
                self.reporter.message(note)
        return next((c for c in configs if c.label not in done), None)

    def _run_trial(
        self, experiment: ExperimentRecord, params: dict[str, Value], source: str, proposal: Proposal | None,
        earlier: list[TrialRecord],
    ) -> TrialRecord:
        trial = self.store.start_trial(
            experiment_id=experiment.id, run_id=self.run_id, params=params, source=source,
            proposal=_proposal_doc(proposal),
        )
        self._current_trial = trial
        self.reporter.trial_started(trial.number, params, source)
        rebooted = False
        try:
            restart = self._app_stale
            if self.state is not None:
                outcome = self.state.apply(params)
                rebooted = outcome.rebooted
                restart = restart or bool(outcome.restart_for)
            if restart or not self.app.is_healthy():
                self._endpoint = self.app.restart(self.host)
                self.workload.prepare(self.host, self._endpoint)
                self._app_stale = False
            assert self._endpoint is not None
            if self.settings.warmup:
                self.workload.warmup(self.host, self._endpoint, params)
            reps = measure_repetitions(self.host, self.app, self._endpoint, self.workload, params,
                                       self.settings.repetitions)
            result = aggregate(reps, experiment.objective)
            broken = self._broken_guards(source, result.metrics, earlier)
        except HostUnreachableError as exc:
            self._current_trial = None
            before = cut_off_before(self.space, params, earlier)
            crash = self.host.crash_report()
            if crash is not None:
                # the kernel itself went down under this configuration: its failure, console and all
                headline, _, evidence = crash.partition("\n")
                finished = self.store.finish_trial(
                    trial.id, status="failed", rebooted=rebooted,
                    error=f"the host's kernel crashed under this configuration: {headline}\n{exc}\n{evidence}")
            elif before is None:
                # the connection, not the configuration, as far as anyone can tell: nothing for
                # the model to learn from
                finished = self.store.finish_trial(trial.id, status="aborted", error=f"{HOST_UNREACHABLE}{exc}",
                                                   rebooted=rebooted)
            else:
                # twice is the configuration's doing (it hangs or crashes the host): learnt as
                # failed, or every resume would propose it again
                finished = self.store.finish_trial(
                    trial.id, status="failed", rebooted=rebooted,
                    error=f"the host stopped answering while this configuration was measured, as in trial "
                          f"{before.number}: {exc}")
            self._app_stale = True
            # the run goes on only if the host answers again (a dropped connection, reconnected; a
            # throwaway guest, rebooted); one that stays gone stops it here, its values left for
            # the next run to put back
            back = self.host.stop_unless_answering(exc, f"trial {trial.number} aborted")
            self.reporter.message(f"{self.host.key} {back} after trial {trial.number} was cut off: going on")
        except (HostError, AppError, WorkloadError) as exc:
            context = self.app.failure_context() if isinstance(exc, AppError) else getattr(exc, "console_tail", "")
            error = str(exc) + (f"\n{context}" if context else "")
            self._current_trial = None
            finished = self.store.finish_trial(trial.id, status="failed", error=error, rebooted=rebooted)
            if isinstance(exc, ObjectiveNotReported) and not any(t.status == "succeeded" for t in earlier):
                # Nothing has ever reported it: a wrong --objective, not a bad configuration.
                # Every further trial would fail the same way.
                raise WrongObjectiveError(f"--objective {exc.objective}: the workload does not report it "
                                          f"(it reports: {', '.join(exc.reported)})") from None
            # Restart lazily, after the next trial's apply: a host that failed to boot is only
            # reachable again once that trial reboots it.
            self._app_stale = True
        else:
            self._current_trial = None
            finished = self.store.finish_trial(
                trial.id, status="infeasible" if broken else "succeeded", objective=result.objective,
                objective_sd=result.objective_sd, metrics=result.metrics, repetitions=reps,
                rebooted=rebooted, error="; ".join(broken) or None,
            )
        self.reporter.trial_finished(finished, best_trial([*earlier, finished], experiment.maximize))
        return finished

    def _refuse_unreported_guard(self, trials: list[TrialRecord]) -> None:
        """A guard on a metric the workload does not report would make every trial infeasible:
        stop before the next trial (a resumed run: before any), keeping what was measured."""
        from tuner.guards import unreported_guard

        reported = {name for t in trials if t.status in ("succeeded", "infeasible") for name in t.metrics}
        guard = unreported_guard(self.settings.guards, reported) if reported else None
        if guard is not None:
            raise BadInputError(f"--guard '{guard.text}': the workload does not report {guard.metric} "
                                f"(it reports: {', '.join(sorted(reported))})")

    def _broken_guards(self, source: str, metrics: dict[str, float], earlier: list[TrialRecord]) -> list[str]:
        if not self.settings.guards:
            return []
        from tuner.guards import broken_guards

        base = baseline_trial(earlier)
        baseline = base.metrics if base is not None else None
        if source == "baseline":
            # (a guard on a metric not reported at all is refused before the next trial)
            broken = broken_guards([g for g in self.settings.guards if not g.relative and g.metric in metrics],
                                   metrics, None)
            for message in broken:
                self.reporter.message(f"the baseline itself breaks a guard: {message}")
            return []
        return broken_guards(self.settings.guards, metrics, baseline)

    def _abort_current(self) -> None:
        if self._current_trial is not None:
            self.store.finish_trial(self._current_trial.id, status="aborted", error="interrupted")
            self._current_trial = None

    def _cleanup(self, summary: RunSummary) -> None:
        try:
            self.app.stop()
        except OstuneError as exc:
            self.reporter.message(f"stopping {self.app.name} failed: {exc}")
        if self.state is not None:
            summary.restore_failures = self.state.restore(summary.restored.append)
            left = len(self.store.pending_journal([self.state.run_id])) if summary.restore_failures else 0
            if left and self.host.key.startswith("ssh://"):
                # a QEMU guest's died with its overlay; an SSH host's only a command that reaches
                # it puts back
                summary.restore_hint = remote_restore_hint(self.host.key, left)
            elif left and isinstance(self.host, LocalHost):
                summary.restore_hint = (f"{left} value(s) on this machine still need restoring: `ostune restore "
                                        f"--db {self.store.describe()}` tries them again")
        try:
            self.host.close()
        except OstuneError as exc:
            self.reporter.message(f"closing host failed: {exc}")


def _default_value(param: Any) -> Value:
    from tuner.optimizer import _fallback

    if param.default is not None:
        return param.default
    if param.type in ("int", "float") and param.low is not None:
        mid = (param.low + param.high) / 2
        return int(mid) if param.type == "int" else mid
    return _fallback(param)


def _space_doc(space: Space) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": space.name, "parameters": space.canonical()["parameters"]}
    if space.relations:
        doc["relations"] = [str(r) for r in space.relations]
    if space.description:
        doc["description"] = space.description
    return doc


def _proposal_doc(proposal: Proposal | None) -> dict[str, Any]:
    if proposal is None:
        return {}
    return {"engine": proposal.engine, "observations": proposal.observations,
            "propose_ms": round(proposal.propose_ms, 2), **proposal.notes}


def _check_tries_against_relations(space: Space, tries: Sequence[Mapping[str, Value]],
                                   current: Mapping[str, Value]) -> None:
    """A --try configuration is its values plus the host's current ones for the rest (known only
    now, after the probe): one breaking a relation of the space is refused before anything is
    stored or applied, as the optimizer's proposals never break one."""
    for number, tried in enumerate(tries, start=1):
        # a boot parameter absent from the command line reads None: no side of a relation to judge
        config = {**{n: v for n, v in current.items() if n in space and v is not None},
                  **{k: v for k, v in tried.items() if k in space}}
        for relation in space.satisfies(config):
            sides = ", ".join(f"{n}={config[n]}" + ("" if n in tried else " (the host's current value)")
                              for n in relation.names())
            raise BadInputError(f"--try {number} breaks the space's relation {relation}: {sides}; give values "
                                "for which it holds")
