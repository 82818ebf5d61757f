"""Typed ostune errors. The CLI is the one place that turns them into messages and exit codes."""

from __future__ import annotations


class OstuneError(Exception):
    """Base of every error ostune reports to a user as one line."""

    exit_code = 2


class BadInputError(OstuneError):
    """The user gave something invalid: a space file, a flag, a name."""

    exit_code = 2


class SpaceError(BadInputError):
    """A space file is malformed or violates a rule."""


class WrongObjectiveError(BadInputError):
    """--objective names a metric the workload never reports."""


class StorageError(OstuneError):
    """The result database cannot be opened, written or is inconsistent."""

    exit_code = 3


class HostError(OstuneError):
    """A host cannot be reached or refused an operation."""

    exit_code = 4


class HostUnreachableError(HostError):
    """The connection to a host was lost or cannot be made (it froze, rebooted, left the
    network): says nothing about the configuration being measured."""


class HostOperationError(HostError):
    """The host answered, but an operation on it failed: a command timed out, exited non-zero or
    was not found, a file could not be read or written, the kernel refused a value. Callers that
    turn a failing command into their own error catch this, so a lost host
    (HostUnreachableError) always reaches the trial as what it is."""


class KnobUnavailableError(HostOperationError):
    """A parameter does not exist or is not readable/writable on this host."""


class ApplyError(HostOperationError):
    """The kernel did not take a value (write failed, or read-back differs)."""


class AppError(OstuneError):
    """The application under test failed to start, answer or stop."""

    exit_code = 5


class WorkloadError(OstuneError):
    """The workload failed or printed something that cannot be parsed."""

    exit_code = 5


class ObjectiveNotReported(WorkloadError):
    """The workload's measurements lack the objective metric (a wrong --objective)."""

    def __init__(self, objective: str, reported: list[str]) -> None:
        super().__init__(f"objective metric {objective!r} was not reported (reported: {', '.join(reported)})")
        self.objective = objective
        self.reported = reported


class LockHeldError(OstuneError):
    """Another ostune run holds the lock for this host."""

    exit_code = 6


class Interrupted(OstuneError):
    """Ctrl-C or SIGTERM: the run stopped after restoring the host."""

    exit_code = 130
