"""The `ostune` command line. This is the one place where errors become messages and exit codes.

Exit codes: 0 success · 1 internal error (a bug: rerun with OSTUNE_DEBUG=1 for the traceback) ·
2 bad input · 3 database problem · 4 host unreachable or refused · 5 application or workload
failed · 6 another run holds the host's lock (or took it over from this one) · 7 nothing improved:
a budgeted run ended and no configuration beats the baseline beyond noise · 8 budget exhausted:
--time-budget/--until/--max-trials ended a budgeted run before its --trials (or before any trial)
· 130 interrupted (host restored). Codes 7 and 8 come only from runs given a budget option
(--max-trials, --time-budget, --until, --patience); see tuner/outcome.py.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from tuner.errors import BadInputError, HostError, OstuneError, WorkloadError

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ostune errors into one red line and an exit code; never a traceback for bad input."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def failed(message: str, code: int) -> NoReturn:
            if kwargs.get("as_json"):
                _echo_json_error(message, code)
            sys.exit(code)

        try:
            return fn(*args, **kwargs)
        except OstuneError as exc:
            # escaped: a message is text, and "pip install 'ostune[report]'" lost its [report]
            # to rich's markup parser
            _stderr().print(f"[red]error:[/red] {escape(str(exc))}", markup=True, soft_wrap=True)
            failed(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            message = "interrupted: the host was restored; a running trial or verification is marked aborted"
            _stderr().print(message, soft_wrap=True)  # one line, whatever the width (cron mail, journals)
            failed(message, EXIT_INTERRUPTED)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            if os.environ.get("OSTUNE_DEBUG"):
                raise
            detail = f"{exc.__class__.__name__}: {exc} (rerun with OSTUNE_DEBUG=1 for the traceback)"
            _stderr().print(f"[red]internal error:[/red] {escape(detail)}", soft_wrap=True)
            failed(f"internal error: {detail}", EXIT_INTERNAL)

    return wrapper


def _echo_json_error(message: str, code: int) -> None:
    """The --json document of a failed command: a script reading the output gets one whatever
    happened, not empty input."""
    click.echo(json.dumps({"error": message, "exit_code": code}))


class _SignalGuard:
    """SIGTERM/SIGHUP behave like Ctrl-C (restore, then exit 130); once cleanup has begun,
    further signals are ignored so a second Ctrl-C cannot cut a restore in half."""

    def __init__(self) -> None:
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        raise KeyboardInterrupt

    def __enter__(self) -> "_SignalGuard":
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


host_settings_option = click.option(
    "--host-set", "host_settings", multiple=True, metavar="KEY=VALUE",
    help="A host setting, e.g. --host-set accel=tcg --host-set memory_mb=2048 (qemu), "
         "key_path=… known_hosts_path=… (ssh).")


def open_store(db: str, *, create: bool = True, console: Console | None = None,
               readable: bool = False):  # type: ignore[no-untyped-def]
    """Open the database and repair what a dead ostune process left behind. readable: the
    command only reads, so a SQLite file this user cannot write (an archived copy, a read-only
    mount) is read as it is, without the repair (which writes)."""
    from storage.database import sqlite_read_only_reason
    from storage.store import ResultStore
    from tuner.recovery import dead_runs, recover, remote_restore_hint

    read_only_reason = sqlite_read_only_reason(db) if readable else None
    if read_only_reason:
        store = ResultStore.open(db, create=False, read_only=True)
        dead = dead_runs(store)
        if dead:
            (console or _stderr()).print(
                f"database {escape(db)} is read-only here ({escape(read_only_reason)}): the {len(dead)} run(s) in it "
                "whose process died were not recovered (values they changed are not put back); run an ostune "
                "command where the file can be written to do it", highlight=False)
        return store
    store = ResultStore.open(db, create=create)
    report = recover(store)
    if report.anything:
        out = console or _stderr()
        for line in report.restored:
            out.print(f"recovered from an interrupted run: {escape(line)}", highlight=False)
        for line in report.failures:
            out.print(f"[red]recovery failed:[/red] {escape(line)}")
        if report.aborted_trials:
            out.print(f"marked {report.aborted_trials} interrupted trial(s) aborted")
        for line in report.removal_lines():
            out.print(escape(line), highlight=False)
        for run_id, holder in report.deferred.items():
            out.print(f"run {run_id} died leaving values changed on this machine; they are put back once {escape(holder)} "
                      "is done (by the next ostune command)", highlight=False)
        for host_key, count in report.remote_pending.items():
            out.print(remote_restore_hint(host_key, count), highlight=False)
    return store


MAX_STORED_SEED = 2**31 - 1


def _tries(texts: tuple[str, ...], space, store, name: str) -> tuple[dict, ...]:  # type: ignore[no-untyped-def]
    """--try configurations, checked against the space before anything is stored."""
    if not texts:
        return ()
    from spaces.model import parse_assignment

    if space is None:
        from tuner.experiment import stored_space

        existing = store.get_experiment(name)
        if existing is None:
            raise BadInputError(f"experiment {name!r} does not exist; give --space to create it")
        space = stored_space(existing)
    parsed = []
    for text in texts:
        try:
            values = parse_assignment(space, text)
        except ValueError as exc:
            raise BadInputError(f"--try {text!r}: {exc}") from None
        # relations whose sides are all given; the others are checked with the host's values
        for relation in space.satisfies(values):
            raise BadInputError(f"--try {text!r} breaks the space's relation {relation}; give values for which it holds")
        parsed.append(values)
    return tuple(parsed)


def _run_failure(summary) -> str | None:  # type: ignore[no-untyped-def]
    """Why a finished run counts as failed (exit 5), or None: its set-up broke, or every trial it
    ran failed."""
    if summary.broken_setup:
        return f"run stopped: {summary.broken_setup}"
    if summary.nothing_succeeded:
        return (f"every trial of this run failed ({summary.trials_run}); the errors are stored with them "
                f"(`ostune show {summary.experiment}`)")
    return None


def _not_put_back(failures: list[str]) -> str:
    """One line for values a run or verify could not restore (each failure starts with its name)."""
    names = ", ".join(line.split(":", 1)[0] for line in failures)
    return f"{len(failures)} kernel value(s) not put back ({names}): the host is left changed"


def _discard_new_database(store, new_file: Path | None) -> None:  # type: ignore[no-untyped-def]
    """Bad input on a first run: a SQLite file this command created and stored no experiment in
    is removed, not left behind empty."""
    if new_file is not None and not store.experiment_names():
        store.close()
        for suffix in ("", "-wal", "-shm"):
            new_file.with_name(new_file.name + suffix).unlink(missing_ok=True)


def _check_new_experiment_name(name: str) -> None:
    """A name is what every other command takes and what tables and SQL show: printable text on
    one line, without spaces at either end. (Checked for new experiments only: one an older
    version stored keeps working.)"""
    if name != name.strip() or any(not ch.isprintable() for ch in name) or len(name) > 200:
        raise BadInputError(f"--experiment {name!r}: a name is up to 200 printable characters on one line, "
                            "without spaces at either end")


def _new_sqlite_file(db: str) -> Path | None:
    """The SQLite file a URL names, if it does not exist yet."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db)
    except Exception:  # noqa: BLE001 - open_store reports bad URLs
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return None if path.exists() else path


def _is_interactive() -> bool:
    return sys.stdout.isatty()


db_option = click.option(
    "--db", default="sqlite:///ostune.db", show_default=True, envvar="OSTUNE_DB",
    help="SQLAlchemy URL of the result database.",
)


class _OneLineErrors(click.Group):
    """click's own usage errors (an option's bad value, a missing argument, an unknown command)
    as one line like every other ostune error: `error: …` and where the valid ones are listed,
    instead of click's usage block. Exit codes stay click's (2)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[no-untyped-def, override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `ostune`: the help, as click prints it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            where = (f" (see `{exc.ctx.command_path} --help`)"
                     if isinstance(exc, click.UsageError) and exc.ctx is not None else "")
            _stderr().print(f"[red]error:[/red] {escape(exc.format_message())}{where}", soft_wrap=True)
            if "--json" in (sys.argv[1:] if args is None else args):
                _echo_json_error(exc.format_message() + where, exc.exit_code)
            sys.exit(exc.exit_code)
        except click.Abort:
            _stderr().print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ostune")
def main() -> None:
    """ostune: find the kernel parameters that make one application fastest."""
    # paramiko logs a lost connection with its traceback (through logging's last-resort handler,
    # to stderr) before raising what ostune turns into one line
    logging.getLogger("paramiko").addHandler(logging.NullHandler())


#: settings taken as raw text, never YAML-parsed (a DSN's password may hold ' #', ': ', '%', ...)
_RAW_SETTINGS = {"dsn"}


def _parse_settings(pairs: tuple[str, ...], flag: str = "--set") -> dict[str, Any]:
    import yaml

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            shown = repr(pair) if "://" not in pair else "(a URL; value not shown)"
            raise BadInputError(f"{flag} {shown} is not KEY=VALUE (e.g. {flag} clients=2)")
        key = key.replace("-", "_")
        if key in _RAW_SETTINGS:
            settings[key] = value
            continue
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            # the value is not echoed: it may be a secret
            raise BadInputError(f"{flag} {key}=...: the value is not valid YAML (quote it)") from None
    return settings


def _dsn_from_environment() -> bool:
    """Whether --dsn's value came from OSTUNE_DSN: exported for the MySQL experiments of a shell
    or a job, it must not break the commands and experiments it does not apply to."""
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source("dsn") == ParameterSource.ENVIRONMENT


def _app_settings(app: str, pairs: tuple[str, ...], dsn: str | None) -> dict[str, Any]:
    """--app-set pairs plus --dsn (external MySQL server; its password is never printed or stored)."""
    settings = _parse_settings(pairs, flag="--app-set")
    if dsn is not None and app not in ("mysql", "mariadb") and _dsn_from_environment():
        dsn = None
    if dsn is not None:
        if app not in ("mysql", "mariadb"):
            raise BadInputError(f"--dsn is for --app mysql (or mariadb), not --app {app}")
        if "dsn" in settings:
            raise BadInputError("give the DSN once: --dsn or --app-set dsn=..., not both")
        settings["dsn"] = dsn
    return settings


@main.command()
@click.option("--space", "space_spec", default=None,
              help="Space file, or a shipped space name (default: redis-latency; `ostune spaces` lists them).")
@click.option("--app", default="redis", show_default=True, type=click.Choice(["redis", "command", "mariadb", "mysql"]))
@click.option("--command", "command", default=None, help="Shell command for --app command.")
@click.option("--host", "host_spec", default=None,
              help="local | none | qemu | ssh://user@host[:port]  [default: local; a resumed experiment's own host]")
@click.option("--trials", default=None, type=click.IntRange(min=1),
              help="Trials to run now [default: 10; with a budget option: until the budget ends].")
@click.option("--experiment", "experiment_name", default=None, help="Experiment name (default: APP-SPACE).")
@db_option
@click.option("--seed", default=None, type=click.IntRange(0, 2**32 - 1), help="Optimizer seed (stored; default random).")
@click.option("--objective", default="p99_ms", show_default=True, help="Metric to optimize.")
@click.option("--maximize", is_flag=True, help="Maximize the objective instead of minimizing it.")
@click.option("--repetitions", default=5, show_default=True, type=click.IntRange(min=1),
              help="Measured repetitions per trial (the median is the trial's value).")
@click.option("--no-warmup", is_flag=True, help="Skip the unmeasured warm-up run of each trial.")
@click.option("--strict", is_flag=True, help="Refuse parameters the host lacks instead of skipping them.")
@click.option("--engine", default="skopt", show_default=True, type=click.Choice(["skopt", "random"]))
@click.option("--guard", "guards", multiple=True, metavar="EXPR",
              help="Metric guard, e.g. 'ops_per_s>=0.95*baseline' or 'errors==0'; breaking one makes a trial infeasible.")
@click.option("--no-profiles", is_flag=True, help="Do not measure the shipped tuned profiles after the baseline.")
@click.option("--try", "tries", multiple=True, metavar="NAME=VALUE[,NAME=VALUE…]",
              help="A configuration to measure right after the baseline (others keep the baseline's values); repeatable.")
@click.option("--clients", type=click.IntRange(min=1), default=None, help="Workload clients/threads.")
@click.option("--requests", type=click.IntRange(min=1), default=None, help="redis-benchmark requests per repetition.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Another workload setting, e.g. --set pipeline=4 --set commands=get,set.")
@click.option("--app-set", "app_settings", multiple=True, metavar="KEY=VALUE",
              help="An application setting, e.g. --app-set binary=/opt/redis/bin/redis-server.")
@click.option("--dsn", default=None, envvar="OSTUNE_DSN", metavar="mysql://USER:PASS@HOST:PORT/DB",
              help="An external MySQL/MariaDB server to tune under (--app mysql); ostune never starts, "
                   "stops or reconfigures it. The password is never printed or stored; prefer "
                   "OSTUNE_DSN over argv, which other users can see.")
@host_settings_option
@click.option("--max-trials", type=click.IntRange(min=1), default=None,
              help="Cap on the experiment's total trials across all runs (a nightly re-run never exceeds it).")
@click.option("--time-budget", default=None, metavar="DURATION",
              help="Wall-clock budget, e.g. 2h, 90m, 20s; a trial that cannot finish inside it is not started.")
@click.option("--until", default=None, metavar="HH:MM", help="Finish by this local time (e.g. 06:00).")
@click.option("--patience", type=click.IntRange(min=1), default=None, metavar="K",
              help="Stop when the last K trials brought no improvement beyond noise (converged).")
@click.option("--lock-timeout", default="2m", show_default=True, metavar="DURATION",
              help="A host lock without heartbeat for this long is stale and taken over.")
@click.option("--log-file", default=None, type=click.Path(dir_okay=False),
              help="Also append every progress line, timestamped, to this file.")
@click.option("--quiet", is_flag=True, help="Only errors and the final summary.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout at the end.")
@handle_errors
def run(space_spec: str | None, app: str, command: str | None, host_spec: str | None, trials: int | None,
        experiment_name: str | None, db: str, seed: int | None, objective: str, maximize: bool,
        repetitions: int, no_warmup: bool, strict: bool, engine: str, clients: int | None,
        requests: int | None, settings: tuple[str, ...], app_settings: tuple[str, ...],
        host_settings: tuple[str, ...], max_trials: int | None, time_budget: str | None, until: str | None, patience: int | None,
        guards: tuple[str, ...], no_profiles: bool, tries: tuple[str, ...],
        lock_timeout: str, log_file: str | None, quiet: bool, as_json: bool, dsn: str | None = None) -> None:
    """Tune the kernel under an application; resumes the experiment if it exists."""
    from spaces.loader import load_space
    import dataclasses

    from tuner.experiment import ExperimentRunner, RunSettings, refuse_other_app, refuse_other_host
    from tuner.factory import TargetOptions, host_spec_for, make_app_and_workload, make_host
    from tuner.budget import Budget
    from tuner.lock import HostLocks, parse_timeout
    from tuner.outcome import EXIT_BUDGET_EXHAUSTED, EXIT_NOTHING_IMPROVED, file_console, make_console, summary_doc
    from tuner.progress import UNBOUNDED_TRIALS, ConsoleReporter
    from tuner.recommend import recommend, summary_line
    from tuner.stored_settings import resumed_options, settings_to_store

    out = make_console(stderr=as_json)
    parsed_guards = _guards(guards)  # bad input before anything is opened or stored
    budget = Budget.from_options(max_trials=max_trials, time_budget=time_budget, until=until,
                                 patience=patience, maximize=maximize)
    budgeted = any(v is not None for v in (max_trials, time_budget, until, patience))
    lock_timeout_s = parse_timeout(lock_timeout)
    explicit_trials = trials is not None
    if trials is None:
        trials = UNBOUNDED_TRIALS if budgeted else 10
    workload_settings = _parse_settings(settings)
    for flag, given in (("--clients", clients), ("--requests", requests)):
        if given is not None and app == "command":
            raise BadInputError(f"{flag}: the command workload has no {flag[2:]} setting (its command makes the "
                                "load; pass such numbers in --command itself)")
    if clients is not None:
        workload_settings["clients"] = clients
    if requests is not None:
        workload_settings["requests"] = requests
    if app == "command" and not space_spec and not experiment_name:
        raise BadInputError("--app command needs --space FILE describing the parameters the command takes")
    # Without --space: a new experiment gets the app's shipped space, an existing one its own.
    default_space = {"mysql": "mysql-latency", "mariadb": "mysql-latency"}.get(app, "redis-latency")
    space = load_space(space_spec or default_space) if (space_spec or not experiment_name) else None
    options = TargetOptions(app=app, command=command, host=host_spec or "local", workload=workload_settings,
                            app_settings=_app_settings(app, app_settings, dsn),
                            host_settings=_parse_settings(host_settings, flag="--host-set"))
    # a resumed command experiment may leave its --command out (the stored one is reused)
    defer_workload = app == "command" and not command and experiment_name is not None
    if not defer_workload:
        app_obj, workload = make_app_and_workload(options)
    if experiment_name is not None and not experiment_name.strip():
        raise BadInputError("--experiment: give a name (e.g. redis-nightly)")
    name = experiment_name or f"{app}-{space.name if space else 'space'}"
    new_file = _new_sqlite_file(db)
    store = open_store(db, console=out)
    try:  # bad input found here leaves no new, empty database behind
        existing = store.get_experiment(name)
        if existing is not None:  # measured under its stored set-up, whatever this command line leaves out
            refuse_other_app(existing, "mysql" if app == "mariadb" else app)  # before its set-up is looked at
            if host_spec is None:  # not this machine by default: the trials so far were measured there
                options = dataclasses.replace(options, host=host_spec_for(str(existing.target.get("host"))))
            options = resumed_options(options, existing, dsn_from_environment=_dsn_from_environment())
            app_obj, workload = make_app_and_workload(options)
        else:
            if defer_workload:
                make_app_and_workload(options)  # refuses: a new command experiment needs its --command
            _check_new_experiment_name(name)
            if seed is not None and seed > MAX_STORED_SEED:
                # a signed 32-bit column on every database (PostgreSQL's integer); experiments
                # created before this check may hold larger seeds and stay resumable with them
                raise BadInputError(f"--seed {seed}: a new experiment's seed is at most {MAX_STORED_SEED}")
            if space is None:
                if app == "command":
                    raise BadInputError(f"experiment {name!r} does not exist; give --space to create it")
                space = load_space(default_space)
        parsed_tries = _tries(tries, space, store, name)
        host = make_host(options)
        if existing is not None:
            stored_host = existing.target.get("host")
            refuse_other_host(existing, host.key, tuning_machine_ids=[
                run["machine_id"] for run in store.runs_for(existing.id)
                if run["command"] == "run" and run["host_key"] == stored_host])
        target = {"app": "mysql" if app == "mariadb" else app, "host": host.key,
                  **{k: v for k, v in app_obj.describe().items() if k != "app"}, **workload.describe()}
        reporter = ConsoleReporter(out, interactive=_is_interactive() and not as_json, quiet=quiet,
                                   log_file=file_console(log_file) if log_file else None)
        if not app_obj.managed and app in ("mysql", "mariadb"):
            reporter.message(f"external server {app_obj.describe().get('dsn', '')}: ostune never starts, stops, "
                             "restarts or reconfigures it (parameters marked restart take effect when you restart it)")
        run_settings = RunSettings(
            experiment=name, trials=trials, objective=objective, maximize=maximize, seed=seed,
            repetitions=repetitions, warmup=not no_warmup, strict=strict, engine=engine,
            should_stop=budget.should_stop, trials_left=budget.trials_left, guards=parsed_guards,
            profiles=not no_profiles, tries=parsed_tries,
        )
        runner = ExperimentRunner(store, host, app_obj, workload, space, run_settings, reporter, target,
                                  extra_settings=settings_to_store(workload=options.workload,
                                                                   app_settings=options.app_settings,
                                                                   host_settings=options.host_settings))
    except OstuneError:
        _discard_new_database(store, new_file)
        raise
    # One run per host: taken before anything else happens, so a second job exits at once.
    lock = HostLocks(store, host, command="run", timeout_s=lock_timeout_s, run_id=lambda: runner.run_id,
                     log=reporter.message)
    budget.extra = lock.check
    if budget.describe():
        reporter.message(f"budget: {budget.describe()}")
    with _SignalGuard() as guard:
        try:
            lock.acquire()
            summary = runner.run()
        except OstuneError:
            lock.release()  # before the cleanup removes the database file
            _discard_new_database(store, new_file)
            raise
        finally:
            guard.stopping = True
            lock.release()
    record = store.get_experiment(summary.experiment)
    choice = recommend(store, record) if record is not None else None
    if choice is not None:  # what ostune recommends, after the luckiest single trial
        reporter.summary_line(summary_line(record, choice))
    doc = summary_doc(store, record, trials_run=summary.trials_run, stop_reason=summary.stop_reason,
                      stopped_by=budget.stopped_by, budget=budget.as_dict(),
                      elapsed_s=budget.clock() - budget.started, run_id=runner.run_id,
                      skipped=summary.skipped, explicit_trials=explicit_trials,
                      choice=choice) if record is not None else None
    # Outcome codes (7 nothing improved, 8 budget exhausted) are for budgeted runs; a plain
    # `--trials N` run that ran its trials exits 0 as it always did.
    code = doc["exit_code"] if doc is not None and (budgeted or budget.stopped_by == "lock-lost") else 0
    failure = _run_failure(summary) if budget.stopped_by != "lock-lost" else None
    if failure:  # it measured nothing: not a success, not "nothing improved" (a nightly unit counts 7 as fine)
        code = WorkloadError.exit_code
        _stderr().print(f"error: {escape(failure)}", highlight=False, soft_wrap=True)
    if summary.restore_failures and code in (0, EXIT_NOTHING_IMPROVED, EXIT_BUDGET_EXHAUSTED):
        # a host left changed outranks how the tuning went: a nightly job must not report it fine
        code = HostError.exit_code
        _stderr().print(f"error: {escape(_not_put_back(summary.restore_failures))}", highlight=False, soft_wrap=True)
    if doc is not None:
        doc["exit_code"] = code
        doc["restore_failures"] = summary.restore_failures
    if as_json and doc is not None:
        click.echo(json.dumps(doc, default=str))
    if code:
        sys.exit(code)
    if as_json and doc is None:
        best = summary.best
        click.echo(json.dumps({
            "experiment": summary.experiment, "trials_run": summary.trials_run,
            "total_trials": summary.total_trials, "objective": objective,
            "best": {"trial": best.number, "objective": best.objective, "params": best.params} if best else None,
            "baseline_objective": summary.baseline.objective if summary.baseline else None,
            "improvement": summary.improvement, "stop_reason": summary.stop_reason,
            "skipped": summary.skipped,
        }, default=str))


@main.command()
@db_option
@handle_errors
def experiments(db: str) -> None:
    """List experiments in the database."""
    from rich import box
    from rich.table import Table

    from tuner.outcome import make_console

    from tuner.verify import latest_results

    store = open_store(db, create=False, readable=True)
    summaries = store.summaries()
    verified = {s.name: _verify_cell(store, s, latest_results(store, s.id)) for s in summaries}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    # The name is what every other command takes and the best value is the point: never cut,
    # whatever the terminal's width (80 columns off a terminal); the other columns give way.
    table.add_column("experiment", no_wrap=True, min_width=max((len(s.name) for s in summaries), default=10))
    table.add_column("app", overflow="ellipsis", no_wrap=True)
    table.add_column("host", overflow="ellipsis", no_wrap=True)
    table.add_column("ok/trials", no_wrap=True, justify="right", min_width=9)
    table.add_column("objective", overflow="ellipsis", no_wrap=True)
    # "best trial" is the lowest single noisy trial (cheap to list); what ostune recommends, and
    # whether `ostune verify` established it, is the verified column and `ostune best`
    table.add_column("best trial", no_wrap=True, justify="right",
                     min_width=max((len(f"{s.best:.4g}") for s in summaries if s.best is not None), default=1))
    table.add_column("verified", no_wrap=True, min_width=max((len(v) for v in verified.values()), default=1))
    table.add_column("updated", overflow="ellipsis", no_wrap=True)
    for s in summaries:
        table.add_row(escape(s.name), str(s.target.get("app", "")), str(s.target.get("host", "")), f"{s.succeeded}/{s.trials}",
                      f"{s.direction[:3]} {s.objective}", f"{s.best:.4g}" if s.best is not None else "-",
                      verified[s.name], s.updated_at.strftime("%m-%d %H:%M") if s.updated_at else "")
    make_console().print(table)


def _verify_cell(store, summary, results: list[dict]) -> str:  # type: ignore[no-untyped-def]
    """The latest verification of the recommended configuration, in a few characters: its ratio
    to the baseline and whether the 95% interval excludes no change. Trials run since may have
    moved the recommendation to a configuration that verification did not measure: then (only
    then, it costs a model fit) the recommendation is worked out again, as `ostune best` does."""
    result = next((r for r in results if r["label"] == "recommended" and r["metric"] == summary.objective), None)
    if result is None or result["relative"] is None:
        return "-"
    if any(t.started_at > result["verified_at"] for t in store.trials(summary.id)):
        from tuner.recommend import recommend

        experiment = store.get_experiment(summary.name)
        choice = recommend(store, experiment) if experiment is not None else None
        if choice is None:
            return "-"
        result = choice.verification
        if choice.is_baseline:
            return "- (baseline best)"  # nothing to deploy, nothing to verify
        if result is None or result.get("relative") is None:
            return f"- (trial {choice.trial.number} not verified)"
    verdict = "yes" if result["established"] else "no"
    return f"{verdict} x{result['relative']:.3f}"


def _experiment(store, name: str):  # type: ignore[no-untyped-def]
    record = store.get_experiment(name)
    if record is None:
        known = store.experiment_names()
        hint = f"known: {', '.join(known[:10])}" if known else "the database has no experiments yet"
        raise BadInputError(f"no experiment named {name!r} ({hint})")
    return record


@main.command()
@click.argument("name")
@db_option
@handle_errors
def show(name: str, db: str) -> None:
    """A table of an experiment's trials."""
    from tuner.experiment import best_trial
    from tuner.outcome import make_console
    from tuner.progress import fitting_trials_table

    store = open_store(db, create=False, readable=True)
    experiment = _experiment(store, name)
    trials = store.trials(experiment.id)
    best = best_trial(trials, experiment.maximize)
    names = list(experiment.space.get("parameters", {}))
    console = make_console()  # off a terminal (a pipe, a file): as wide as the table, nothing cut
    console.print(f"[bold]{escape(experiment.name)}[/bold]: {experiment.direction} {escape(experiment.objective)}, "
                  f"{len(trials)} trials, seed {experiment.seed}, target {escape(str(experiment.target.get('app')))} "
                  f"on {escape(str(experiment.target.get('host')))}")
    console.print(fitting_trials_table(console, trials, experiment.objective, best.number if best else None, names))
    from tuner.report import best_so_far, sparkline

    curve = [value for _, value in best_so_far(trials, experiment.maximize)]
    if curve:
        console.print(f"best-so-far {experiment.objective}: {sparkline(curve, experiment.maximize)} "
                      f"{curve[0]:.4g} → {curve[-1]:.4g} over {len(curve)} succeeded trials", highlight=False)
        from tuner.recommend import recommend, summary_line

        choice = recommend(store, experiment)
        if choice is not None:
            console.print(summary_line(experiment, choice), markup=False, highlight=False)


@main.command()
@click.argument("name")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--minimal", is_flag=True,
              help="Only the knobs the model says carry the improvement (the rest stay as they are).")
@handle_errors
def best(name: str, db: str, as_json: bool, minimal: bool = False) -> None:
    """The recommended configuration, as /etc/sysctl.d lines plus sysfs/debugfs/boot settings."""
    from tuner.experiment import stored_space
    from tuner.export import deployable_space, minimal_summary, render_sysctl_d, unresolved_lines
    from tuner.recommend import describe_minimal, recommend, recommendation_doc

    store = open_store(db, create=False, readable=True)
    experiment = _experiment(store, name)
    space = stored_space(experiment)
    choice = recommend(store, experiment)
    if choice is None:
        raise BadInputError(f"experiment {name!r} has no succeeded trial yet")
    trial = choice.trial
    if as_json:
        click.echo(json.dumps(recommendation_doc(experiment, space, choice), default=str))
        return
    host_space, unresolved = deployable_space(store, experiment, space, choice_run_ids(store, experiment, choice))
    if minimal:
        change = _minimal_or_refuse(experiment.name, choice)
        values = change.changes()
        click.echo("\n".join([render_sysctl_d(host_space, values, header=minimal_summary(experiment, choice)),
                              *unresolved_lines(unresolved, values)]))
        return
    text = "\n".join([render_sysctl_d(host_space, choice.params, header=(
        f"ostune experiment {experiment.name}, trial {trial.number} ({choice.measurements} measurement(s)): "
        f"{experiment.objective} median {choice.objective:.4g} ({choice.reason})")),
        *unresolved_lines(unresolved, choice.params)])
    if choice.minimal is not None:
        text += "\n# " + describe_minimal(choice.minimal, experiment.name)
    click.echo(text)


def choice_run_ids(store, experiment, choice) -> list[int]:  # type: ignore[no-untyped-def]
    """The runs that measured the recommended configuration, its first trial's first."""
    by_number = {t.number: t for t in store.trials(experiment.id)}
    ids = [by_number[n].run_id for n in choice.trials if n in by_number and by_number[n].run_id is not None]
    return list(dict.fromkeys(ids))


def _minimal_or_refuse(name: str, choice):  # type: ignore[no-untyped-def]
    if choice.minimal is None:
        why = ("the recommended configuration is the baseline" if choice.is_baseline else
               "the model is not confident that any changed knob can go back, or has too few trials to say")
        raise BadInputError(f"--minimal: experiment {name!r} has no smaller change than its recommendation "
                            f"({why}); leave --minimal out")
    return choice.minimal


def _guards(texts: tuple[str, ...]) -> tuple:
    from tuner.guards import parse_guards

    return parse_guards(texts)


@main.command()
@click.argument("name")
@db_option
@click.option("--rounds", default=6, show_default=True, type=int, help="Interleaved rounds (at least 3).")
@click.option("--repetitions", default=3, show_default=True, type=click.IntRange(min=1),
              help="Repetitions per measurement (the round's value is their median).")
@click.option("--seed", default=None, type=click.IntRange(0, 2**32 - 1),
              help="Seed of the randomized order (default random; stored).")
@click.option("--host", "host_spec", default=None, help="Host to verify on (default: the experiment's).")
@host_settings_option
@click.option("--dsn", default=None, envvar="OSTUNE_DSN", metavar="mysql://USER:PASS@HOST:PORT/DB",
              help="The external MySQL/MariaDB server the experiment tuned (its password is never stored).")
@click.option("--no-profiles", is_flag=True, help="Only baseline and recommended.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
@handle_errors
def verify(name: str, db: str, rounds: int, repetitions: int, seed: int | None, host_spec: str | None,
           host_settings: tuple[str, ...],
           no_profiles: bool, as_json: bool, dsn: str | None = None) -> None:
    """Re-measure baseline, recommended, its minimal change and profiles, interleaved, with 95% CIs."""
    import random as _random

    from tuner.factory import make_app_and_workload, make_host
    from tuner.lock import HostLocks
    from tuner.outcome import make_console
    from tuner.progress import ConsoleReporter
    from tuner.stored_settings import verify_options
    from tuner.verify import MAX_ROUNDS, MIN_ROUNDS, NothingToVerify, Verifier, render

    if rounds < MIN_ROUNDS:
        raise BadInputError(f"--rounds {rounds}: a confidence interval needs at least {MIN_ROUNDS} rounds")
    if rounds > MAX_ROUNDS:
        # the whole schedule is drawn up front: a typo'd 10**20 rounds filled memory for minutes
        raise BadInputError(f"--rounds {rounds}: at most {MAX_ROUNDS} (each round measures every configuration once)")
    out = make_console(stderr=as_json)
    store = open_store(db, create=False, console=out)
    experiment = _experiment(store, name)
    options = verify_options(experiment, host_spec=host_spec, dsn=dsn, dsn_from_environment=_dsn_from_environment(),
                             host_settings=_parse_settings(host_settings, flag="--host-set"))
    app_obj, workload = make_app_and_workload(options)
    host = make_host(options)
    reporter = ConsoleReporter(out, interactive=False, quiet=False)
    verifier = Verifier(store, host, app_obj, workload, experiment, rounds=rounds, repetitions=repetitions,
                        seed=seed if seed is not None else _random.randrange(2**31), reporter=reporter,
                        profiles=not no_profiles)
    # the host is changed as by a run: not while a run (or another verify) changes it
    lock = HostLocks(store, host, command="verify", run_id=lambda: verifier.run_id, log=reporter.message)
    verifier.lock_lost = lock.check
    nothing: NothingToVerify | None = None
    with _SignalGuard() as guard:
        try:
            lock.acquire()
            report = verifier.run()
        except NothingToVerify as exc:
            nothing = exc
        finally:
            guard.stopping = True
            lock.release()  # (a failure here is the one error printed: nothing was said yet)
    if nothing is not None:
        if as_json:
            click.echo(json.dumps({"verification": None, "schedule": [], "results": [],
                                   "nothing_to_verify": str(nothing)}))
        else:
            out.print(escape(str(nothing)), highlight=False, soft_wrap=True)
        return
    if verifier.restored:
        names = ", ".join(line.removeprefix("restored ") for line in verifier.restored)
        out.print(f"restored {len(verifier.restored)} kernel value(s): {escape(names)}", highlight=False)
    for line in verifier.restore_failures:
        out.print(f"restore failed: {escape(line)}", highlight=False)
    if verifier.restore_hint:
        out.print(escape(verifier.restore_hint), highlight=False)
    if as_json:
        click.echo(json.dumps({"verification": report.verification_id, "schedule": report.schedule,
                               "results": report.results, "restore_failures": verifier.restore_failures},
                              default=str))
    else:
        for line in render(report, experiment):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    if verifier.restore_failures:
        _stderr().print(f"error: {escape(_not_put_back(verifier.restore_failures))}", highlight=False, soft_wrap=True)
        sys.exit(HostError.exit_code)


@main.command()
@db_option
@click.option("--host", "host_spec", default=None,
              help="Also restore values left on this remote host (ssh://user@host[:port]).")
@host_settings_option
@handle_errors
def restore(db: str, host_spec: str | None, host_settings: tuple[str, ...]) -> None:
    """Restore kernel values left changed by an ostune process that died (kill -9, crash).

    Values a dead process left on this machine are restored by every ostune command; remote hosts
    need --host (a run or verify on that host does it too). Values a run could not put back when
    it ended (the kernel refused them then) are tried again here. On a remote host this also stops
    the dead process's servers and removes its work directories."""
    from tuner.factory import TargetOptions, make_host
    from tuner.outcome import make_console
    from targets.hosts.local import LocalHost
    from tuner.recovery import kernel_lock_held, recover_host, restore_ended_runs

    console = make_console()  # one line per value, unwrapped in a cron mail or a journal
    store = open_store(db, create=False, console=console)
    failures: list[str] = []
    local = LocalHost()
    running = {run.id for run in store.running_runs()}  # the dead ones were closed by open_store
    tried = {local.key}
    report = restore_ended_runs(store, local, lambda line: console.print(escape(line)))
    for line in report.restored:
        console.print(f"{local.key}: {escape(line)}")
    failures += report.failures
    if host_spec:
        host = make_host(TargetOptions(host=host_spec, host_settings=_parse_settings(host_settings, flag="--host-set")))
        try:
            # under its kernel lock: values put back under another database's live run would
            # spoil its measurements, and its own restore would undo them
            if isinstance(host, LocalHost):
                report = recover_host(store, host)  # nothing: every command already recovered this machine
            else:
                with kernel_lock_held(host, "restore", store, lambda line: console.print(escape(line))):
                    report = recover_host(store, host)
        finally:
            host.close()
        tried.add(host.key)
        for line in report.restored:
            console.print(f"{host.key}: {escape(line)}")
        for line in report.removal_lines():
            console.print(escape(line))
        failures += report.failures
    for line in failures:
        console.print(f"[red]restore failed:[/red] {escape(line)}")
    # what is still pending on a host tried here failed just now, and is said above
    untouched = [e for e in store.pending_journal() if e.run_id in running or e.host_key not in tried]
    if untouched:
        hosts = sorted({e.host_key for e in untouched})
        console.print(f"{len(untouched)} value(s) on {', '.join(hosts)} belong to runs still in progress "
                      "(or on hosts not given with --host); not touched")
    elif not failures:
        console.print("nothing left to restore")
    if failures:
        _stderr().print(f"error: {escape(_not_put_back(failures))}", highlight=False, soft_wrap=True)
        sys.exit(HostError.exit_code)


@main.group()
def vm() -> None:
    """The QEMU guest image used by --host qemu."""


@vm.command("build")
@click.option("--bootloader", default="direct", show_default=True, type=click.Choice(["direct", "grub"]),
              help="direct: QEMU boots the kernel with -kernel/-append; grub: the disk boots through GRUB.")
@click.option("--force", is_flag=True, help="Rebuild even if the cached image matches the recipe.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Where images are cached [default: ~/.cache/ostune/images].")
@handle_errors
def vm_build(bootloader: str, force: bool, cache_dir: str | None) -> None:
    """Build (or reuse) the Debian guest image from Debian's packages; needs root."""
    from pathlib import Path

    from targets.vm.image import build_image, default_image_cache_dir
    from tuner.outcome import make_console

    console = make_console()
    with console.status("building guest image") as status:
        image = build_image(Path(cache_dir) if cache_dir else default_image_cache_dir(), bootloader,  # type: ignore[arg-type]
                            progress=lambda text: status.update(text), force=force)
    size_mb = image.qcow2.stat().st_size / 2**20
    console.print(f"guest image ready: {image.qcow2} ({size_mb:.0f} MiB, recipe {image.recipe_hash[:12]}, "
                  f"bootloader {image.bootloader})")


@vm.command("prune")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Where images are cached [default: ~/.cache/ostune/images].")
@handle_errors
def vm_prune(cache_dir: str | None) -> None:
    """Remove cached guest images this version will not use again (other recipes, unfinished builds)."""
    from pathlib import Path

    from targets.vm.image import default_image_cache_dir, prune_images
    from tuner.outcome import make_console

    console = make_console()
    directory = Path(cache_dir) if cache_dir else default_image_cache_dir()
    pruned = prune_images(directory)
    for entry in pruned:
        console.print(f"removed {entry.path} ({entry.why}, {entry.size_bytes / 2**20:.0f} MiB)")
    freed_mb = sum(e.size_bytes for e in pruned) / 2**20
    console.print(f"{len(pruned)} removed, {freed_mb:.0f} MiB freed in {directory}" if pruned
                  else f"nothing to remove in {directory}")


def _read_space_on(host, space, *, write_back: bool):  # type: ignore[no-untyped-def]
    """`spaces --host`: each parameter read there (tuner.host_state.read_parameters). A write-back
    races a run's own writes (read 10, the run writes 60, 10 written back), so it holds that
    machine's kernel lock, repairing first what a holder that died with it left, as a run would."""
    from tuner.host_state import read_parameters
    from tuner.recovery import kernel_lock_held

    if not write_back:
        return read_parameters(host, space, write_back=False)
    with kernel_lock_held(host, "spaces --write-back", None, lambda line: _stderr().print(
            escape(line), highlight=False, soft_wrap=True)):
        return read_parameters(host, space, write_back=True)


@main.command()
@click.argument("space_spec", metavar="[SPACE]", required=False)
@click.option("--host", "host_spec", default=None,
              help="Also read each parameter's current value on this host (local | ssh://user@host[:port]); reads only.")
@click.option("--host-set", "host_settings", multiple=True, metavar="KEY=VALUE", help="An ssh host setting, e.g. key_path=…")
@click.option("--write-back", is_flag=True,
              help="With --host: also write each value read back, as a run does before its first trial, to find "
                   "knobs the kernel lets root read but not write.")
@handle_errors
def spaces(space_spec: str | None, host_spec: str | None, host_settings: tuple[str, ...], write_back: bool) -> None:
    """List the shipped parameter spaces, or one space's parameters (and their values on a host)."""
    from rich.table import Table

    from tuner.outcome import make_console

    from spaces.loader import catalog_names, load_space

    if space_spec is None:
        if host_spec is not None or write_back:
            raise BadInputError("--host goes with a space: `ostune spaces SPACE --host local` (`ostune spaces` lists them)")
        table = Table()
        for col in ("space", "parameters", "description"):
            table.add_column(col)
        for name in catalog_names():
            space = load_space(name)
            table.add_row(name, str(len(space)), space.description)
        make_console().print(table)
        return
    from tuner.cli_reports import space_table
    from tuner.factory import TargetOptions, make_host

    space = load_space(space_spec)
    readings = None
    if write_back and host_spec is None:
        raise BadInputError("--write-back goes with --host: `ostune spaces SPACE --host local --write-back`")
    if host_spec is not None:
        if host_spec in ("none", "qemu"):
            raise BadInputError(f"--host {host_spec}: no kernel to read here (local or ssh://…; a qemu guest boots "
                                "only for a run: its values are in the run's skipped/baseline output)")
        with make_host(TargetOptions(host=host_spec,
                                     host_settings=_parse_settings(host_settings, flag="--host-set"))) as host:
            host.start()
            readings = _read_space_on(host, space, write_back=write_back)
            host_key = host.key
    console = make_console()
    console.print(space_table(space, readings, host_key if readings is not None else None))
    if readings is not None:
        unavailable = sum(1 for r in readings.values() if not r.available)
        console.print(f"{len(space) - unavailable} of {len(space)} parameters can be tuned on {host_key}"
                      + (f"; {unavailable} cannot (reasons above)" if unavailable else ""), markup=False, highlight=False)


from tuner.cli_reports import register as _register_report_commands  # noqa: E402

_register_report_commands(main)

if __name__ == "__main__":
    main(prog_name="ostune")  # `python -m tuner.cli` is ostune too, in messages
