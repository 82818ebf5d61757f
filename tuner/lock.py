"""One tuning run per host, enforced in the result database (table `host_locks`, keyed by the
host's key), so it works for remote hosts too and survives a crashed holder.

The holder refreshes `heartbeat_at` from a background thread. A lock is stale — and taken over
by the next run — when its heartbeat is older than the lock timeout, or at once when its holder
ran on this machine and that process is gone (pid, start time and boot id of its run, the same
test crash recovery uses). A holder that finds its lock taken over stops before its next trial.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from storage.models import HostLock, Run, utcnow
from storage.store import ResultStore
from tuner.errors import LockHeldError, StorageError
from tuner.ownership import ProcessIdentity, owner_is_alive, process_start_ticks

DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LockInfo:
    host_key: str
    run_id: int | None
    holder_pid: int
    holder_machine: str
    acquired_at: datetime
    heartbeat_at: datetime


class HostLockGuard:
    """Acquire with `acquire()` (raises LockHeldError at once if another live run holds it),
    then `release()`; usable as a context manager."""

    def __init__(self, store: ResultStore, host_key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 run_id: Callable[[], int | None] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.host_key = host_key
        self.timeout_s = timeout_s
        self.heartbeat_s = max(0.2, min(timeout_s / 4, 30.0))
        self._run_id = run_id or (lambda: None)
        self._log = log or (lambda _text: None)
        self._me = ProcessIdentity.current()
        self._acquired_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None
        self.took_over: LockInfo | None = None

    # -- database ---------------------------------------------------------------------------
    def _mine(self):  # type: ignore[no-untyped-def]
        return (HostLock.host_key == self.host_key, HostLock.holder_pid == self._me.pid,
                HostLock.holder_machine == self._me.machine, HostLock.acquired_at == self._acquired_at)

    def current(self) -> LockInfo | None:
        with self.store._session() as session:
            row = session.get(HostLock, self.host_key)
            if row is None:
                return None
            return LockInfo(row.host_key, row.run_id, row.holder_pid, row.holder_machine,
                            row.acquired_at, row.heartbeat_at)

    def _holder_dead(self, info: LockInfo) -> bool:
        """The holder ran on this machine and is gone."""
        if info.run_id is None:
            # Killed before its run row existed: on this machine a vanished pid is decisive (a
            # reused pid only makes us wait for the timeout, the safe direction).
            return info.holder_machine == self._me.machine and process_start_ticks(info.holder_pid) is None
        with self.store._session() as session:
            run = session.get(Run, info.run_id)
            if run is None:
                return False
            if run.status != "running":
                return True
            return owner_is_alive(run.pid, run.pid_start_ticks, run.machine, run.boot_id, run.machine_id) is False

    def _stale(self, info: LockInfo, now: datetime) -> str | None:
        age = (now - info.heartbeat_at).total_seconds()
        if age > self.timeout_s:
            return f"no heartbeat for {age:.0f} s (lock timeout {self.timeout_s:g} s)"
        if self._holder_dead(info):
            return f"its process {info.holder_pid} on {info.holder_machine} is gone"
        return None

    def acquire(self) -> "HostLockGuard":
        now = utcnow()
        try:
            with self.store._session() as session, session.begin():
                row = session.get(HostLock, self.host_key)
                if row is None:
                    session.add(HostLock(host_key=self.host_key, run_id=None, holder_pid=self._me.pid,
                                         holder_machine=self._me.machine, acquired_at=now, heartbeat_at=now))
                else:
                    info = LockInfo(row.host_key, row.run_id, row.holder_pid, row.holder_machine,
                                    row.acquired_at, row.heartbeat_at)
                    why = self._stale(info, now)
                    if why is None:
                        raise LockHeldError(_held_message(info, now))
                    # compare-and-swap on the old heartbeat: of two runs taking over, one wins
                    result = session.execute(
                        update(HostLock).where(HostLock.host_key == self.host_key,
                                               HostLock.heartbeat_at == info.heartbeat_at,
                                               HostLock.holder_pid == info.holder_pid)
                        .values(run_id=None, holder_pid=self._me.pid, holder_machine=self._me.machine,
                                acquired_at=now, heartbeat_at=now))
                    if result.rowcount != 1:
                        raise LockHeldError(f"host {self.host_key} is being taken over by another run")
                    self.took_over = info
                    self._log(f"took over the lock on host {self.host_key} from pid {info.holder_pid} "
                              f"on {info.holder_machine}: {why}")
        except IntegrityError:
            info = self.current()
            raise LockHeldError(_held_message(info, now) if info else
                                f"host {self.host_key} was locked by another run just now") from None
        except SQLAlchemyError as exc:
            raise StorageError(f"host lock: {exc.__class__.__name__}: {exc}") from None
        self._acquired_at = now
        self._thread = threading.Thread(target=self._beat, name="ostune-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def heartbeat(self) -> bool:
        """Refresh the heartbeat (and the run id once known). False if the lock is no longer ours."""
        values: dict[str, object] = {"heartbeat_at": utcnow()}
        run_id = self._run_id()
        if run_id is not None:
            values["run_id"] = run_id
        with self.store._session() as session, session.begin():
            result = session.execute(update(HostLock).where(*self._mine()).values(**values))
            return result.rowcount == 1

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self.heartbeat():
                    self.lost = f"the lock on host {self.host_key} was taken over by another run"
                    return
            except SQLAlchemyError:
                continue  # a busy database: try again at the next beat; staleness needs many misses

    def check(self) -> str | None:
        """For Budget.extra: a reason to stop when the lock was lost."""
        return self.lost

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._acquired_at is None:
            return
        try:
            with self.store._session() as session, session.begin():
                session.execute(delete(HostLock).where(*self._mine()))
        except SQLAlchemyError as exc:
            raise StorageError(f"host lock release: {exc}") from None
        finally:
            self._acquired_at = None

    def __enter__(self) -> "HostLockGuard":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class HostLocks:
    """What a run or verify holds while it may change a host: the host lock in the database and
    the kernel lock of the machine it changes, which every ostune process tuning that machine
    shares whatever its database (tuner/recovery.py take_host_kernel_lock). The kernel lock is
    taken first: it never waits."""

    def __init__(self, store: ResultStore, host, *, command: str, timeout_s: float = DEFAULT_TIMEOUT_S,  # type: ignore[no-untyped-def]
                 run_id: Callable[[], int | None] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.store, self.command, self._machine = store, command, host
        self._log = log or (lambda _text: None)
        self.kernel = None
        self.host = HostLockGuard(store, host.key, timeout_s=timeout_s, run_id=run_id, log=log)

    def acquire(self) -> "HostLocks":
        from tuner.recovery import take_host_kernel_lock

        self.kernel = take_host_kernel_lock(self._machine, self.command, self.store, self._log)
        try:
            self.host.acquire()
        except BaseException:
            self.release()
            raise
        return self

    def check(self) -> str | None:
        return (self.kernel.lost() if self.kernel is not None else None) or self.host.check()

    def release(self) -> None:
        try:
            self.host.release()
        finally:
            if self.kernel is not None:
                self.kernel.release()
            self.kernel = None


def _held_message(info: LockInfo, now: datetime) -> str:
    age = max(0.0, (now - info.heartbeat_at).total_seconds())
    since = info.acquired_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    run = f" (run {info.run_id})" if info.run_id is not None else ""
    return (f"host {info.host_key} is already being tuned by pid {info.holder_pid} on "
            f"{info.holder_machine}{run} since {since}, last heartbeat {age:.0f} s ago; "
            f"one run per host — wait for it, or stop it")


def parse_timeout(text: str) -> float:
    from tuner.budget import parse_duration

    return parse_duration(text, option="--lock-timeout")

