"""The storage contract ostune's tuner uses. Everything crossing it is a plain dataclass, so the
loop never holds ORM objects or sessions, and another backend could implement the same methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.database import DEFAULT_DB_URL, open_engine
from storage.models import (
    Experiment, JournalEntry, RepetitionMetric, Run, Trial, TrialMetric, TrialParam, Verification, utcnow,
)
from tuner.errors import StorageError

FINISHED = ("succeeded", "failed", "infeasible")


@dataclass(frozen=True)
class ExperimentRecord:
    id: int
    name: str
    space: dict[str, Any]
    space_hash: str
    target: dict[str, Any]
    objective: str
    direction: str
    seed: int
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


@dataclass(frozen=True)
class TrialRecord:
    id: int
    number: int
    status: str
    source: str
    params: dict[str, Any]
    objective: float | None
    objective_sd: float | None
    metrics: dict[str, float]
    repetitions: int
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    error: str | None
    run_id: int | None = None
    proposal: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    id: int
    experiment_id: int | None
    command: str
    host_key: str
    pid: int
    pid_start_ticks: int | None
    machine: str
    boot_id: str
    status: str
    started_at: datetime
    machine_id: str = ""


@dataclass(frozen=True)
class JournalRecord:
    id: int
    run_id: int
    host_key: str
    name: str
    kind: str
    path: str
    original: str


@dataclass
class ExperimentSummary:
    name: str
    trials: int
    succeeded: int
    best: float | None
    objective: str
    direction: str
    target: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    id: int = 0


def _param_row(name: str, value: Any) -> TrialParam:
    if isinstance(value, bool):
        return TrialParam(name=name, value_num=float(value), value_text=None)
    if isinstance(value, (int, float)):
        return TrialParam(name=name, value_num=float(value), value_text=None)
    return TrialParam(name=name, value_num=None, value_text=str(value))


class ResultStore:
    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str = DEFAULT_DB_URL, *, create: bool = True, read_only: bool = False) -> "ResultStore":
        return cls(open_engine(url, create=create, read_only=read_only), read_only=read_only)

    def close(self) -> None:
        self.engine.dispose()

    def describe(self) -> str:
        """The database for messages to other processes: no password, a SQLite path made absolute
        (sqlite:///ostune.db means a different file in every directory)."""
        url = self.engine.url
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return f"sqlite:///{Path(url.database).resolve()}"
        return url.render_as_string(hide_password=True)

    def files(self) -> list[Path]:
        """The files a SQLite database lives in (the database and its journals), none for a server:
        what an output file must never be."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            return []
        main = Path(url.database).resolve()
        return [main, *(main.with_name(main.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]

    def _session(self) -> Session:
        return self._sessions()

    def _write(self, fn):  # type: ignore[no-untyped-def]
        if self.read_only:
            raise StorageError(f"database {self.describe()} is opened read-only here: this command cannot write to it")
        try:
            with self._session() as session, session.begin():
                return fn(session)
        except IntegrityError as exc:
            raise StorageError(f"database constraint violated: {exc.orig}") from None
        except SQLAlchemyError as exc:
            raise StorageError(f"database write failed: {exc.__class__.__name__}: {exc}") from None

    # -- experiments ------------------------------------------------------------------------
    @staticmethod
    def _experiment_record(row: Experiment) -> ExperimentRecord:
        return ExperimentRecord(
            row.id, row.name, row.space_json, row.space_hash, row.target_json, row.objective,
            row.direction, row.seed, row.settings_json or {}, row.created_at, row.updated_at,
        )

    def get_experiment(self, name: str) -> ExperimentRecord | None:
        with self._session() as session:
            row = session.scalar(select(Experiment).where(Experiment.name == name))
            return self._experiment_record(row) if row else None

    def create_experiment(
        self, *, name: str, space: dict[str, Any], space_hash: str, target: dict[str, Any],
        objective: str, direction: str, seed: int, settings: dict[str, Any],
    ) -> ExperimentRecord:
        def create(session: Session) -> ExperimentRecord:
            row = Experiment(
                name=name, space_json=space, space_hash=space_hash, target_json=target,
                objective=objective, direction=direction, seed=seed, settings_json=settings,
            )
            session.add(row)
            session.flush()
            return self._experiment_record(row)

        return self._write(create)

    def experiment_names(self) -> list[str]:
        with self._session() as session:
            return list(session.scalars(select(Experiment.name).order_by(Experiment.name)))

    def summaries(self) -> list[ExperimentSummary]:
        with self._session() as session:
            out = []
            for exp in session.scalars(select(Experiment).order_by(Experiment.created_at)):
                counts = dict(
                    session.execute(
                        select(Trial.status, func.count()).where(Trial.experiment_id == exp.id)
                        .group_by(Trial.status)
                    ).all()
                )
                agg = func.max if exp.direction == "maximize" else func.min
                best = session.scalar(
                    select(agg(Trial.objective)).where(
                        Trial.experiment_id == exp.id, Trial.status == "succeeded"
                    )
                )
                out.append(ExperimentSummary(
                    exp.name, sum(counts.values()), counts.get("succeeded", 0), best,
                    exp.objective, exp.direction, exp.target_json, exp.updated_at, exp.id,
                ))
            return out

    # -- runs -------------------------------------------------------------------------------
    def start_run(
        self, *, experiment_id: int | None, command: str, host_key: str, pid: int,
        pid_start_ticks: int | None, machine: str, boot_id: str, host_facts: Mapping[str, Any],
        skipped: Mapping[str, str] | None = None, machine_id: str = "",
    ) -> int:
        def start(session: Session) -> int:
            row = Run(
                experiment_id=experiment_id, command=command, host_key=host_key, pid=pid,
                pid_start_ticks=pid_start_ticks, machine=machine, boot_id=boot_id, machine_id=machine_id,
                host_facts_json=dict(host_facts), skipped_json=dict(skipped or {}),
            )
            session.add(row)
            session.flush()
            return row.id

        return self._write(start)

    def update_run(self, run_id: int, **fields: Any) -> None:
        mapping = {"host_facts": "host_facts_json", "skipped": "skipped_json"}
        values = {mapping.get(k, k): v for k, v in fields.items()}
        self._write(lambda s: s.execute(update(Run).where(Run.id == run_id).values(**values)))

    def end_run(self, run_id: int, status: str) -> None:
        self.update_run(run_id, status=status, ended_at=utcnow())

    def running_runs(self) -> list[RunRecord]:
        with self._session() as session:
            rows = session.scalars(select(Run).where(Run.status == "running"))
            return [
                RunRecord(r.id, r.experiment_id, r.command, r.host_key, r.pid, r.pid_start_ticks,
                          r.machine, r.boot_id, r.status, r.started_at, r.machine_id)
                for r in rows
            ]

    def run_facts(self, run_id: int) -> dict[str, Any]:
        with self._session() as session:
            row = session.get(Run, run_id)
            return dict(row.host_facts_json) if row else {}

    def runs_for(self, experiment_id: int) -> list[dict[str, Any]]:
        with self._session() as session:
            rows = session.scalars(select(Run).where(Run.experiment_id == experiment_id).order_by(Run.id))
            return [
                {"id": r.id, "command": r.command, "host_key": r.host_key, "machine_id": r.machine_id,
                 "status": r.status,
                 "started_at": r.started_at,
                 "ended_at": r.ended_at, "host_facts": r.host_facts_json, "skipped": r.skipped_json}
                for r in rows
            ]

    def mark_run_crashed(self, run_id: int) -> int:
        """The run's process died without cleaning up: close it and abort its running trials and
        verifications (a verification left 'running' would read as in progress forever).
        Returns how many trials were aborted."""

        def crash(session: Session) -> int:
            session.execute(update(Run).where(Run.id == run_id).values(status="crashed", ended_at=utcnow()))
            session.execute(update(Verification).where(Verification.run_id == run_id, Verification.status == "running")
                            .values(status="aborted"))
            result = session.execute(
                update(Trial).where(Trial.run_id == run_id, Trial.status == "running")
                .values(status="aborted", ended_at=utcnow(), error="ostune process died during the trial")
            )
            return result.rowcount or 0

        return self._write(crash)

    # -- restore journal --------------------------------------------------------------------
    def journal_originals(self, run_id: int, host_key: str, entries: Iterable[tuple[str, str, str, str]]) -> None:
        """Record (name, kind, path, original) before anything is written. A value already
        journalled and not yet restored by this run is kept (the first original wins)."""

        def record(session: Session) -> None:
            known = set(session.scalars(select(JournalEntry.path).where(
                JournalEntry.run_id == run_id, JournalEntry.restored_at.is_(None))))
            for name, kind, path, original in entries:
                if path in known:
                    continue
                session.add(JournalEntry(run_id=run_id, host_key=host_key, name=name, kind=kind,
                                         path=path, original=original))
                known.add(path)

        self._write(record)

    def pending_journal(self, run_ids: Sequence[int] | None = None) -> list[JournalRecord]:
        with self._session() as session:
            query = select(JournalEntry).where(JournalEntry.restored_at.is_(None))
            if run_ids is not None:
                query = query.where(JournalEntry.run_id.in_(list(run_ids)))
            return [
                JournalRecord(j.id, j.run_id, j.host_key, j.name, j.kind, j.path, j.original)
                for j in session.scalars(query.order_by(JournalEntry.id))
            ]

    def journal_paths(self, run_ids: Sequence[int]) -> dict[str, str]:
        """Parameter name -> the real path runs changed it at (placeholders resolved), the first
        of `run_ids` that journalled it winning."""
        with self._session() as session:
            rows = session.execute(select(JournalEntry.run_id, JournalEntry.name, JournalEntry.path)
                                   .where(JournalEntry.run_id.in_(list(run_ids))).order_by(JournalEntry.id)).all()
        order = {run_id: i for i, run_id in enumerate(run_ids)}
        paths: dict[str, str] = {}
        for run_id, name, path in sorted(rows, key=lambda row: order[row[0]]):
            paths.setdefault(name, path)
        return paths

    def mark_restored(self, journal_id: int, error: str | None = None) -> None:
        values: dict[str, Any] = {"restore_error": error}
        if error is None:
            values["restored_at"] = utcnow()
        self._write(lambda s: s.execute(update(JournalEntry).where(JournalEntry.id == journal_id).values(**values)))

    # -- trials -----------------------------------------------------------------------------
    def next_trial_number(self, experiment_id: int) -> int:
        with self._session() as session:
            current = session.scalar(select(func.max(Trial.number)).where(Trial.experiment_id == experiment_id))
            return (current or 0) + 1

    def start_trial(
        self, *, experiment_id: int, run_id: int | None, params: Mapping[str, Any], source: str,
        proposal: Mapping[str, Any] | None = None,
    ) -> TrialRecord:
        def start(session: Session) -> TrialRecord:
            number = (session.scalar(
                select(func.max(Trial.number)).where(Trial.experiment_id == experiment_id)) or 0) + 1
            row = Trial(experiment_id=experiment_id, run_id=run_id, number=number, status="running",
                        source=source, started_at=utcnow(), proposal_json=dict(proposal or {}))
            row.params = [_param_row(k, v) for k, v in params.items()]
            session.add(row)
            session.execute(update(Experiment).where(Experiment.id == experiment_id).values(updated_at=utcnow()))
            session.flush()
            return TrialRecord(row.id, number, "running", source, dict(params), None, None, {}, 0,
                               row.started_at, None, None, None, run_id)

        return self._write(start)

    def finish_trial(
        self, trial_id: int, *, status: str, objective: float | None = None,
        objective_sd: float | None = None, metrics: Mapping[str, float] | None = None,
        repetitions: Sequence[Mapping[str, float]] = (), error: str | None = None,
        rebooted: bool = False,
    ) -> TrialRecord:
        def finish(session: Session) -> TrialRecord:
            row = session.get(Trial, trial_id)
            if row is None:
                raise StorageError(f"trial id {trial_id} vanished from the database")
            ended = utcnow()
            row.status = status
            row.ended_at = ended
            row.duration_s = (ended - row.started_at).total_seconds()
            row.objective = objective
            row.objective_sd = objective_sd
            row.error = error
            row.rebooted = rebooted
            row.repetitions = len(repetitions)
            row.metrics = [TrialMetric(name=k, value=float(v)) for k, v in (metrics or {}).items()]
            session.add_all(
                RepetitionMetric(trial_id=trial_id, repetition=i + 1, name=k, value=float(v))
                for i, rep in enumerate(repetitions) for k, v in rep.items()
            )
            return TrialRecord(
                row.id, row.number, status, row.source,
                {p.name: (p.value_text if p.value_text is not None else p.value_num) for p in row.params},
                objective, objective_sd, {k: float(v) for k, v in (metrics or {}).items()},
                len(repetitions), row.started_at, ended, row.duration_s, error, row.run_id,
                dict(row.proposal_json or {}),
            )

        return self._write(finish)

    def trials(self, experiment_id: int, statuses: Sequence[str] | None = None) -> list[TrialRecord]:
        """All trials of an experiment with params and aggregate metrics. Core queries, not ORM
        objects: this runs before every proposal and must stay cheap at hundreds of trials."""
        t, p, m = Trial.__table__, TrialParam.__table__, TrialMetric.__table__
        where = [t.c.experiment_id == experiment_id]
        if statuses is not None:
            where.append(t.c.status.in_(list(statuses)))
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(*where).order_by(t.c.number)).all()
            ids = select(t.c.id).where(*where).scalar_subquery()
            params: dict[int, dict[str, Any]] = {}
            for trial_id, name, num, text in conn.execute(
                select(p.c.trial_id, p.c.name, p.c.value_num, p.c.value_text).where(p.c.trial_id.in_(ids))
            ):
                params.setdefault(trial_id, {})[name] = text if text is not None else num
            metrics: dict[int, dict[str, float]] = {}
            for trial_id, name, value in conn.execute(
                select(m.c.trial_id, m.c.name, m.c.value).where(m.c.trial_id.in_(ids))
            ):
                metrics.setdefault(trial_id, {})[name] = value
        return [
            TrialRecord(
                r.id, r.number, r.status, r.source, params.get(r.id, {}), r.objective, r.objective_sd,
                metrics.get(r.id, {}), r.repetitions, r.started_at, r.ended_at, r.duration_s, r.error,
                r.run_id, dict(r.proposal_json or {}),
            )
            for r in rows
        ]

    def repetition_values(self, trial_id: int, metric: str) -> list[float]:
        with self._session() as session:
            return list(session.scalars(
                select(RepetitionMetric.value).where(
                    RepetitionMetric.trial_id == trial_id, RepetitionMetric.name == metric)
                .order_by(RepetitionMetric.repetition)))

    def delete_experiment(self, name: str) -> None:
        def remove(session: Session) -> None:
            exp = session.scalar(select(Experiment).where(Experiment.name == name))
            if exp is None:
                return
            trial_ids = select(Trial.id).where(Trial.experiment_id == exp.id)
            for model in (TrialParam, TrialMetric, RepetitionMetric):
                session.execute(delete(model).where(model.trial_id.in_(trial_ids)))
            session.execute(delete(Trial).where(Trial.experiment_id == exp.id))
            session.execute(update(Run).where(Run.experiment_id == exp.id).values(experiment_id=None))
            session.delete(exp)

        self._write(remove)
