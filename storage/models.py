"""SQLAlchemy 2.0 ORM schema. Schema changes go through Alembic (storage/migrations/versions).

Numbers are stored in float columns and categorical values in text columns, so SQL over the
result database can compare and aggregate without casting.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, UniqueConstraint, Index
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    space_json: Mapped[dict] = mapped_column(JSON)
    space_hash: Mapped[str] = mapped_column(String(64))
    target_json: Mapped[dict] = mapped_column(JSON)
    objective: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(10))  # minimize | maximize
    seed: Mapped[int] = mapped_column(Integer)
    settings_json: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    trials: Mapped[list["Trial"]] = relationship(back_populates="experiment", order_by="Trial.number")


class Run(Base):
    """One `ostune` process working on an experiment: who it was, so a dead one can be detected."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"))
    command: Mapped[str] = mapped_column(String(50))
    host_key: Mapped[str] = mapped_column(String(300))
    pid: Mapped[int] = mapped_column(Integer)
    #: the process start time (clock ticks since boot) so a reused pid is not mistaken for it
    pid_start_ticks: Mapped[int | None] = mapped_column(Integer)
    machine: Mapped[str] = mapped_column(String(200))
    boot_id: Mapped[str] = mapped_column(String(64), default="")
    #: /etc/machine-id: two controllers with one hostname (cloned VMs) sharing a database must not
    #: judge each other's runs; empty for runs stored before it was kept
    machine_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    host_facts_json: Mapped[dict] = mapped_column(JSON, default=dict)
    skipped_json: Mapped[dict] = mapped_column(JSON, default=dict)


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("experiment_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    number: Mapped[int] = mapped_column(Integer)
    #: running | succeeded | failed | aborted | infeasible
    status: Mapped[str] = mapped_column(String(20))
    #: baseline | optimizer | profile:<name> | rerun
    source: Mapped[str] = mapped_column(String(100), default="optimizer")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()
    duration_s: Mapped[float | None] = mapped_column(Float)
    objective: Mapped[float | None] = mapped_column(Float)
    #: standard deviation of the objective across this trial's repetitions
    objective_sd: Mapped[float | None] = mapped_column(Float)
    repetitions: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    rebooted: Mapped[bool] = mapped_column(default=False)
    #: how the configuration was proposed: engine, observations the model was given, time taken
    proposal_json: Mapped[dict] = mapped_column(JSON, default=dict)

    experiment: Mapped[Experiment] = relationship(back_populates="trials")
    params: Mapped[list["TrialParam"]] = relationship(cascade="all, delete-orphan")
    metrics: Mapped[list["TrialMetric"]] = relationship(cascade="all, delete-orphan")


class TrialParam(Base):
    __tablename__ = "trial_param_values"
    __table_args__ = (UniqueConstraint("trial_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(300))
    value_num: Mapped[float | None] = mapped_column(Float)
    value_text: Mapped[str | None] = mapped_column(Text)


class TrialMetric(Base):
    """The aggregate (median over repetitions) of one metric of a trial."""

    __tablename__ = "trial_metric_values"
    __table_args__ = (UniqueConstraint("trial_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class RepetitionMetric(Base):
    __tablename__ = "repetition_metrics"
    __table_args__ = (Index("ix_repetition_metrics_trial", "trial_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    repetition: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class JournalEntry(Base):
    """An original kernel value, recorded before ostune first changes it, until restored."""

    __tablename__ = "restore_journal"
    __table_args__ = (Index("ix_restore_journal_pending", "restored_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    host_key: Mapped[str] = mapped_column(String(300))
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    original: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    restored_at: Mapped[datetime | None] = mapped_column()
    restore_error: Mapped[str | None] = mapped_column(Text)


class HostLock(Base):
    """One tuning run per host: held by a run, refreshed by heartbeats, taken over when stale."""

    __tablename__ = "host_locks"

    host_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    holder_pid: Mapped[int] = mapped_column(Integer)
    holder_machine: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class Verification(Base):
    """An interleaved re-measurement of several configurations (`ostune verify`)."""

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rounds: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(100))
    #: the order configurations were measured in, one list of labels per round
    schedule_json: Mapped[list] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default="running")


class VerificationSample(Base):
    __tablename__ = "verification_samples"
    __table_args__ = (Index("ix_verification_samples_verification", "verification_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    verification_id: Mapped[int] = mapped_column(ForeignKey("verifications.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(200))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class VerificationResult(Base):
    """A configuration's verified effect relative to the baseline, with a bootstrap 95% CI."""

    __tablename__ = "verification_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    verification_id: Mapped[int] = mapped_column(ForeignKey("verifications.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    params_json: Mapped[dict] = mapped_column(JSON, default=dict)
    metric: Mapped[str] = mapped_column(String(100))
    samples: Mapped[int] = mapped_column(Integer)
    median: Mapped[float | None] = mapped_column(Float)
    #: median ratio to the baseline (0.8 = 20% lower) and its 95% confidence interval
    relative: Mapped[float | None] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    established: Mapped[bool] = mapped_column(default=False)
