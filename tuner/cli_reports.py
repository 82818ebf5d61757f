"""Commands for reading results: `ostune report`, `ostune export`, `ostune compare`.
Registered on the main group by tuner/cli.py; errors become messages there (`handle_errors`)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from tuner.errors import BadInputError


def _write(path: str, text: str, store) -> None:  # type: ignore[no-untyped-def]
    target = Path(path)
    if any(_same_file(target, f) for f in store.files()):
        raise BadInputError(f"--output {path} is the result database being read (or its journal); give another file")
    try:
        target.write_text(text)
    except OSError as exc:
        raise BadInputError(f"--output {path}: {exc.strerror}") from None


def _same_file(target: Path, database_file: Path) -> bool:
    try:
        return target.resolve() == database_file or (target.exists() and database_file.exists()
                                                     and os.path.samefile(target, database_file))
    except OSError:
        return False


def _chosen_trial(store, experiment, trial_number: int | None):  # type: ignore[no-untyped-def]
    """The trial to export, why, and its objective as `ostune best` gives it (the median over
    every measurement of the recommended configuration, not its first trial's)."""
    from tuner.cli import choice_run_ids
    from tuner.recommend import recommend

    if trial_number is not None:
        trial = next((t for t in store.trials(experiment.id) if t.number == trial_number), None)
        if trial is None:
            raise BadInputError(f"experiment {experiment.name!r} has no trial {trial_number}")
        if trial.status != "succeeded":
            raise BadInputError(f"trial {trial_number} of {experiment.name!r} did not succeed ({trial.status})")
        runs = [trial.run_id] if trial.run_id is not None else []
        return trial, f"trial {trial_number} (chosen with --trial)", f"{trial.objective:.4g}", runs
    choice = recommend(store, experiment)
    if choice is None:
        raise BadInputError(f"experiment {experiment.name!r} has no succeeded trial yet")
    objective = choice.objective if choice.objective is not None else choice.trial.objective
    spread = f" median of {choice.measurements}" if choice.measurements > 1 else ""
    return choice.trial, choice.reason, f"{objective:.4g}{spread}", choice_run_ids(store, experiment, choice)


def describe_values(param) -> str:  # type: ignore[no-untyped-def]
    """A parameter's values as the space file gives them: [low, high] (log), a|b|c, or bool."""
    if param.type in ("int", "float"):
        low, high = (int(param.low), int(param.high)) if param.type == "int" else (param.low, param.high)
        return f"[{low}, {high}]" + (" log" if param.log else "")
    if param.type == "bool":
        return "bool"
    return "|".join(str(c) for c in param.choices)


def space_table(space, readings=None, host_key: str | None = None) -> Table:  # type: ignore[no-untyped-def]
    """One row per parameter of a space; with readings (tuner.host_state.read_parameters), the
    host's current value or why a run would skip the parameter there."""
    from rich.markup import escape

    title = f"{space.name}: {len(space)} parameters" + (f" ({escape(space.description)})" if space.description else "")
    table = Table(title=title, title_justify="left")
    # shipped spaces leave defaults out (the baseline is the host's own value): no empty column
    with_defaults = any(p.default is not None for p in space.parameters)
    for column in ("parameter", "kind", "values", *(("default",) if with_defaults else ())):
        table.add_column(column, overflow="fold")
    if readings is not None:
        table.add_column(f"on {escape(str(host_key))}", overflow="fold")
    for param in space.parameters:
        flags = "".join(f" ({flag})" for flag, on in (("restart", param.restart), ("optional", param.optional)) if on)
        row = [escape(param.name), param.kind + flags, escape(describe_values(param))]
        if with_defaults:
            row.append("host's" if param.default is None else escape(param.render(param.coerce(param.default))))
        if readings is not None:
            reading = readings[param.name]
            if reading.available:
                row.append(escape(str(reading.current)))
            elif "does not exist" in reading.reason and not param.optional:
                row.append(f"[bold]missing: a run refuses it[/bold] (mark it `optional: true` to skip it): "
                           f"{escape(reading.reason)}")
            else:
                row.append(f"[dim]skipped: {escape(reading.reason)}[/dim]")
        table.add_row(*row)
    for relation in space.relations:
        table.caption = (table.caption + "; " if table.caption else "relations: ") + escape(str(relation))
    return table


def register(main: click.Group) -> None:
    from tuner.cli import _experiment, db_option, handle_errors, open_store

    @main.command()
    @click.argument("name")
    @db_option
    @click.option("--output", "-o", default=None, help="HTML file to write [default: NAME.html].")
    @handle_errors
    def report(name: str, db: str, output: str | None) -> None:
        """A self-contained HTML report of an experiment (plots embedded)."""
        from tuner import report as rep

        store = open_store(db, create=False, readable=True)
        experiment = _experiment(store, name)
        data = rep.load(store, experiment)
        path = output or f"{name}.html"
        _write(path, rep.render(data), store)
        click.echo(f"wrote {path} ({os.path.getsize(path) // 1024} KiB, {len(data.trials)} trials)")

    @main.command()
    @click.argument("name")
    @db_option
    @click.option("--format", "fmt", required=True,
                  type=click.Choice(["sysctl.d", "grub", "tuned", "json", "csv"]),
                  help="sysctl.d drop-in, GRUB_CMDLINE_LINUX line, tuned profile directory, or the trials.")
    @click.option("--output", "-o", default=None,
                  help="File to write (a directory for --format tuned) [default: stdout; tuned: ./ostune-NAME].")
    @click.option("--trial", "trial_number", type=int, default=None,
                  help="Export this trial's configuration instead of the recommended one.")
    @click.option("--minimal", is_flag=True,
                  help="Only the knobs the model says carry the recommendation's improvement.")
    @handle_errors
    def export(name: str, db: str, fmt: str, output: str | None, trial_number: int | None,
               minimal: bool = False) -> None:
        """Export the recommended configuration (sysctl.d, grub, tuned) or all trials (json, csv)."""
        from tuner import export as ex
        from tuner.cli import _minimal_or_refuse, choice_run_ids
        from tuner.experiment import stored_space
        from tuner.recommend import recommend

        if minimal and (trial_number is not None or fmt in ex.TRIAL_FORMATS):
            raise BadInputError(f"--minimal goes with the recommended configuration in sysctl.d, grub or tuned "
                                f"format, not with {'--trial' if trial_number is not None else '--format ' + fmt}")
        store = open_store(db, create=False, readable=True)
        experiment = _experiment(store, name)
        space = stored_space(experiment)
        if fmt in ex.TRIAL_FORMATS:
            trials = store.trials(experiment.id)
            text = (ex.render_trials_json(experiment, trials, space) if fmt == "json"
                    else ex.render_trials_csv(trials, space))
        else:
            if minimal:
                choice = recommend(store, experiment)
                if choice is None:
                    raise BadInputError(f"experiment {experiment.name!r} has no succeeded trial yet")
                values = _minimal_or_refuse(experiment.name, choice).changes()
                summary = ex.minimal_summary(experiment, choice)
                run_ids = choice_run_ids(store, experiment, choice)
            else:
                trial, reason, objective, run_ids = _chosen_trial(store, experiment, trial_number)
                values = trial.params
                summary = f"ostune {experiment.name} trial {trial.number}: {experiment.objective} = {objective} ({reason})"
            space, unresolved = ex.deployable_space(store, experiment, space, run_ids)
            left_out = "".join(line + "\n" for line in ex.unresolved_lines(unresolved, values))
            if fmt == "sysctl.d":
                text = ex.render_sysctl_d(space, values, header=summary) + "\n" + left_out
            elif fmt == "grub":
                try:
                    text = ex.render_grub(space, values, header=summary) + "\n"
                except ValueError as exc:
                    raise BadInputError(str(exc)) from None
            else:
                # the default is one directory here named after the experiment: a `/` in the name
                # made nested ones, and tuned profile names are plain words
                directory = Path(output or "ostune-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment.name).strip("-."))
                if directory.exists() and not directory.is_dir():
                    raise BadInputError(f"--output {directory}: exists and is not a directory (tuned profiles are directories)")
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise BadInputError(f"--output {directory}: {exc.strerror}") from None
                _write(str(directory / "tuned.conf"), ex.render_tuned(space, values, summary=summary) + left_out, store)
                click.echo(f"wrote tuned profile {directory}/tuned.conf (install: cp -r {shlex.quote(str(directory))} "
                           f"/etc/tuned/; tuned-adm profile {shlex.quote(directory.name)})")
                return
        if output:
            _write(output, text, store)
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text, nl=False)

    @main.command()
    @click.argument("a")
    @click.argument("b")
    @db_option
    @click.option("--db-b", default=None, help="Database of B, if not the same as A's.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @handle_errors
    def compare(a: str, b: str, db: str, db_b: str | None, as_json: bool) -> None:
        """Compare two experiments: trials, baseline, the recommended configurations, the best single trials."""
        from tuner.compare import compare_experiments

        store_a = open_store(db, create=False, readable=True)
        store_b = open_store(db_b, create=False, readable=True) if db_b else store_a
        doc = compare_experiments(store_a, _experiment(store_a, a), store_b, _experiment(store_b, b))
        if as_json:
            click.echo(json.dumps(doc, default=str))
            return
        _print_compare(doc)


def _print_compare(doc: dict[str, Any]) -> None:
    from rich.markup import escape

    from tuner.outcome import make_console
    from tuner.progress import format_value

    console = make_console()  # off a terminal: whole lines, as wide as the tables
    a, b = doc["a"], doc["b"]
    table = Table(title=f"{escape(a['experiment'])} vs {escape(b['experiment'])}")
    table.add_column("")
    table.add_column(escape(a["experiment"]), justify="right")
    table.add_column(escape(b["experiment"]), justify="right")
    rows = [("objective", "objective"), ("trials", "trials"), ("succeeded", "succeeded"),
            ("baseline", "baseline_objective"),
            ("recommended (median)", "recommended_objective"), ("recommended trial", "recommended_trial"),
            ("measurements", "recommended_measurements"), ("verified", "verified"),
            ("knobs that matter", "minimal_kept"),
            ("best single trial", "best_objective"), ("best trial", "best_trial"),
            ("best ± sd", "best_sd"), ("change vs baseline", "improvement"),
            ("host", "host"), ("kernel", "kernel")]
    for label, key in rows:
        def cell(side: dict[str, Any]) -> str:
            value = side.get(key)
            if key == "improvement" and value is not None:
                return f"{value:+.1%}"
            if key == "minimal_kept":  # none: no model yet, or every changed knob counts
                return escape(", ".join(value)) if value else "-"
            return "-" if value is None else escape(format_value(value))
        table.add_row(label, cell(a), cell(b))
    console.print(table)
    if doc["params"]:
        params = Table(title="recommended configurations")
        params.add_column("parameter")
        params.add_column(escape(a["experiment"]))
        params.add_column(escape(b["experiment"]))
        for row in doc["params"]:
            style = "bold" if row["differs"] else None
            params.add_row(escape(row["name"]), escape(format_value(row["a"])) if row["a"] is not None else "-",
                           escape(format_value(row["b"])) if row["b"] is not None else "-", style=style)
        console.print(params)
    names = f"{escape(b['experiment'])} / {escape(a['experiment'])}"
    if not doc["same_objective"]:
        console.print(f"no ratio: {escape(a['experiment'])} optimizes {a['objective']}, {escape(b['experiment'])} "
                      f"{b['objective']}", highlight=False)
        return
    caveat = "" if doc["comparable"] else " (measured on different hosts)"
    if doc.get("recommended_ratio") is not None:
        console.print(f"recommended {a['objective']} (medians): {names} = {doc['recommended_ratio']:.3f}{caveat}",
                      highlight=False)
    if doc.get("best_ratio") is not None:
        console.print(f"best single trial {a['objective']}: {names} = {doc['best_ratio']:.3f}{caveat}", highlight=False)
