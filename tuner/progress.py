"""What a run shows while it works: a rich progress bar on a terminal, timestamped log lines
otherwise (nightly jobs, pipes), nothing but errors with --quiet."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from spaces.model import Value
from storage.store import ExperimentRecord, TrialRecord
from tuner.experiment import RunSummary

#: `trials` at or above this means "until a budget ends" (--time-budget/--until/--max-trials/--patience)
UNBOUNDED_TRIALS = 1_000_000


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(params: Mapping[str, Value], limit: int = 6) -> str:
    items = [f"{k}={format_value(v)}" for k, v in params.items()]
    more = f" …+{len(items) - limit}" if len(items) > limit else ""
    return " ".join(items[:limit]) + more


class ConsoleReporter:
    """Progress for people. `interactive` picks the live bar; otherwise plain timestamped lines
    with no terminal control codes."""

    def __init__(self, console: Console, *, interactive: bool, quiet: bool = False,
                 log_file: Console | None = None) -> None:
        self.console = console
        #: --log-file: every line, timestamped, whatever --quiet says
        self.log_file = log_file
        self.interactive = interactive and not quiet
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task = None
        self._objective = "objective"

    def _log(self, text: str, always: bool = False) -> None:
        if self.log_file is not None:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            self.log_file.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)
        if self.quiet and not always:
            return
        if self.interactive:
            self.console.print(text, markup=False)
        else:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            self.console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)

    def summary_line(self, text: str) -> None:
        """Part of the final summary: printed even with --quiet."""
        self._log(text, always=True)

    def message(self, text: str) -> None:
        self._log(text)

    def skipped(self, skipped: Mapping[str, str]) -> None:
        for name, reason in skipped.items():
            self._log(f"skipping {name}: {reason}")

    def run_started(self, experiment: ExperimentRecord, trials: int, done_before: int) -> None:
        self._objective = experiment.objective
        resumed = f", resuming after {done_before} trials" if done_before else ""
        unbounded = trials >= UNBOUNDED_TRIALS
        self._log(f"experiment {experiment.name}: {'trials until a budget ends' if unbounded else f'{trials} trials'} of {experiment.direction} "
                  f"{experiment.objective} (seed {experiment.seed}{resumed})")
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                TextColumn("{task.fields[best]}"), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(experiment.name, total=None if unbounded else trials, best="")

    def trial_started(self, number: int, params: Mapping[str, Value], source: str) -> None:
        self._log(f"trial {number} ({source}): {format_params(params)}")

    def trial_finished(self, trial: TrialRecord, best: TrialRecord | None) -> None:
        if trial.status == "succeeded":
            sd = f" ± {trial.objective_sd:.3g}" if trial.objective_sd is not None else ""
            text = f"trial {trial.number} {trial.status}: {self._objective} = {trial.objective:.4g}{sd}"
        else:
            text = f"trial {trial.number} {trial.status}: {(trial.error or '').splitlines()[0][:160]}"
        if best is not None and best.objective is not None:
            text += f"  (best {best.objective:.4g} at trial {best.number})"
        self._log(text)
        if self._progress is not None and self._task is not None:
            best_text = f"best {self._objective} {best.objective:.4g}" if best and best.objective is not None else ""
            self._progress.update(self._task, advance=1, best=best_text)

    def run_finished(self, summary: RunSummary) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if summary.restored:
            names = ", ".join(line.removeprefix("restored ") for line in summary.restored)
            self._log(f"restored {len(summary.restored)} kernel value(s): {names}")
        for line in summary.restore_failures:
            self.console.print(f"[red]restore failed:[/red] {escape(line)}")
            if self.log_file is not None:
                self.log_file.print(f"restore failed: {line}", markup=False)
        if summary.restore_hint:
            self._log(summary.restore_hint, always=True)
        if summary.best is not None and summary.best.objective is not None:
            change = summary.improvement
            vs = f" ({change:+.1%} vs baseline)" if change is not None else ""
            self._log(f"best {self._objective} = {summary.best.objective:.4g} at trial {summary.best.number}{vs}; "
                      f"{summary.trials_run} trials this run, {summary.total_trials} in total", always=True)
        if summary.stop_reason and summary.stop_reason != "trials done":
            self._log(f"stopped: {summary.stop_reason}", always=True)


def trials_table(trials: list[TrialRecord], objective: str, best_number: int | None, param_names: list[str],
                 *, baseline: Mapping[str, Any] | None = None) -> Table:
    """A row per trial; numbers (trial, objective, metrics) are never cut. With `baseline` (for
    narrow terminals) the layout is compact: status joins the source, the sd joins the objective,
    and the parameters are one folded column of what differs from the baseline, instead of a
    column per parameter squeezed to nothing."""
    metrics = [m for m in ("p50_ms", "p999_ms", "ops_per_s") if m != objective and any(m in t.metrics for t in trials)]
    compact = baseline is not None
    rows = []
    for t in trials:
        value = format_value(t.objective) if t.objective is not None else "-"
        sd = format_value(t.objective_sd) if t.objective_sd is not None else "-"
        if compact:
            cells = [str(t.number), t.source + ("" if t.status == "succeeded" else f" {t.status}"),
                     value + (f" ±{sd}" if t.objective_sd is not None else "")]
        else:
            cells = [str(t.number), t.status, t.source, value, sd]
        cells += [format_value(t.metrics[m]) if m in t.metrics else "-" for m in metrics]
        if compact:
            assert baseline is not None
            changed = [f"{n}={format_value(t.params[n])}" for n in param_names
                       if n in t.params and format_value(t.params[n]) != format_value(baseline.get(n, ""))]
            cells.append(" ".join(changed) or "(as baseline)")
        else:
            cells += [format_value(t.params.get(n, "")) for n in param_names]
        rows.append((t, cells))
    headers = (["#", "trial", objective] if compact else ["#", "status", "source", objective, "±sd"]) + metrics

    def width(i: int) -> int:
        return max([len(headers[i]), *(len(cells[i]) for _, cells in rows)])

    table = Table(title=None, show_lines=False)
    for i, header in enumerate(headers):
        if header in ("status", "source", "trial"):
            table.add_column(header, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=width(i))
    for header in (["changed from the baseline"] if compact else param_names):
        table.add_column(header, overflow="fold", ratio=1 if compact else None)
    for t, cells in rows:
        style = "bold green" if t.number == best_number else ("red" if t.status == "failed" else None)
        table.add_row(*cells, style=style)
    return table


def fitting_trials_table(console: Console, trials: list[TrialRecord], objective: str, best_number: int | None,
                         param_names: list[str]) -> Table:
    """A column per parameter when that fits the console, else the compact layout."""
    from rich.measure import Measurement

    table = trials_table(trials, objective, best_number, param_names)
    baseline = next((t for t in trials if t.source == "baseline"), None)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if baseline is None or natural <= console.width:
        return table
    return trials_table(trials, objective, best_number, param_names, baseline=baseline.params)
