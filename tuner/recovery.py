"""Start-of-command recovery: restore what a dead ostune process left changed (kill -9, power
loss), close its run and mark its in-flight trial aborted. Every `ostune` command calls this."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from storage.store import ResultStore
from targets.hosts.base import Host
from targets.hosts.local import LocalHost
from tuner.errors import HostError
from tuner.host_state import restore_entries
from tuner.ownership import owner_is_alive


def remote_restore_hint(host_key: str, count: int) -> str:
    """What to do about values left changed on a host this process could not reach."""
    return (f"{count} value(s) on {host_key} still need restoring: run `ostune restore --host {host_key}` "
            "(a run or verify on that host does it first)")


@dataclass
class RecoveryReport:
    restored: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    crashed_runs: list[int] = field(default_factory=list)
    aborted_trials: int = 0
    #: journal entries of dead runs on hosts this process cannot reach by itself
    remote_pending: dict[str, int] = field(default_factory=dict)
    #: work directories (server data and logs) of dead ostune processes, removed
    removed_workdirs: list[str] = field(default_factory=list)
    #: dead runs whose values on this machine wait: another ostune process (described) is
    #: changing its kernel now, and writing under it would corrupt both
    deferred: dict[int, str] = field(default_factory=dict)

    def removal_lines(self) -> list[str]:
        return [f"removed {path}, the work directory of a dead ostune process" for path in self.removed_workdirs]

    @property
    def anything(self) -> bool:
        return bool(self.restored or self.failures or self.crashed_runs or self.remote_pending or self.removed_workdirs
                    or self.deferred)


def dead_runs(store: ResultStore) -> list:  # type: ignore[type-arg]
    return [
        run for run in store.running_runs()
        if owner_is_alive(run.pid, run.pid_start_ticks, run.machine, run.boot_id, run.machine_id) is False
    ]


def restore_remote(store: ResultStore, host: Host, *, host_key: str | None = None) -> RecoveryReport:
    """Restore the values dead runs left on a remote host (`ostune restore --host URL`).
    `host_key`: the key they journalled it under, when that is another URL of the same machine."""
    report = RecoveryReport()
    # Runs whose owner is alive (or cannot be judged from here) are still working: not touched.
    alive = {run.id for run in store.running_runs()} - {run.id for run in dead_runs(store)}
    key = host_key or host.key
    entries = [e for e in store.pending_journal() if e.host_key == key and e.run_id not in alive]
    report.failures += restore_entries(host, store, entries, report.restored.append)
    return report


def restore_ended_runs(store: ResultStore, local: LocalHost, message: Callable[[str], None]) -> RecoveryReport:
    """Values on this machine that runs which ended could not put back (the kernel refused them
    then, e.g. a disk's nr_requests while its scheduler was `none`), tried once more under this
    machine's kernel lock (taken only when there is any): `ostune restore` does it, not every
    command's `recover`, or a value that can never go back would fail each of them. A QEMU
    guest's values died with its overlay."""
    report = RecoveryReport()
    running = {run.id for run in store.running_runs()}
    ended = [e for e in store.pending_journal()
             if e.run_id not in running and (e.host_key == local.key or e.host_key.startswith("qemu:"))]
    if not ended:
        return report
    with kernel_lock_held(local, "restore", store, message):
        for entry in ended:
            if entry.host_key.startswith("qemu:"):
                store.mark_restored(entry.id)
        report.failures += restore_entries(local, store, [e for e in ended if e.host_key == local.key],
                                           report.restored.append)
    return report


def recover_host(store: ResultStore, host: Host) -> RecoveryReport:
    """What `recover` does for this machine, for the host a run or verification is about to use
    (`ostune restore --host` too): put back the values dead runs left changed there, stop their
    servers and remove their work directories. Before a new run it matters twice: a probe would
    take the dead run's values for the host's own (a wrong baseline, then "restored" to them), and
    its server would load the host during the measurements."""
    from targets.hosts.ssh import GRUB_DROPIN, SshHost

    if isinstance(host, LocalHost):
        return RecoveryReport()  # every command's `recover` already did this machine
    report = restore_remote(store, host)
    report.removed_workdirs = host.reap_stale_workdirs()
    if isinstance(host, SshHost) and host.grub.remove_leftover():
        report.restored.append(f"boot parameters: removed {GRUB_DROPIN}, left by a dead ostune run, and rebooted "
                               f"{host.key} into its own kernel command line")
    return report


def recover_before_use(store: ResultStore, host: Host, message: Callable[[str], None],
                       workdir_parents: Sequence[str] = ()) -> None:
    """`recover_host` at the start of a run or verification, reported through `message`, and
    dead runs' work dirs removed from `workdir_parents` too (an app's own data directory parent).
    A value that cannot be put back stops it: measuring on would take that value for the host's
    own."""
    report = recover_host(store, host)
    for parent in workdir_parents:
        report.removed_workdirs += host.reap_stale_workdirs(parent)
    for line in report.restored:
        message(f"recovered from an interrupted run on {host.key}: {line}")
    for line in report.removal_lines():
        message(line)
    if report.failures:
        raise HostError(
            f"a dead run left values changed on {host.key} that could not be put back ({report.failures[0]}); "
            f"a new run would take them for the host's own: fix that, then run `ostune restore --host {host.key}`"
        )


def recover(store: ResultStore, local: LocalHost | None = None, *,
            kernel_holder: Callable[[], str | None] | None = None) -> RecoveryReport:
    """`kernel_holder`: who else is changing this machine's kernel now (tuner/kernel_lock.py); a
    dead run with values to put back here waits for it, left as it is for the next command. Had
    it been restored under a live run, that run would measure the restored values and, finishing,
    write its own recorded "originals" (the dead run's leftovers) back over them."""
    from tuner.kernel_lock import KernelLock

    report = RecoveryReport()
    local = local or LocalHost()
    holder: list[str | None] = []  # asked once, and only when there is something to restore here
    for run in dead_runs(store):
        pending = store.pending_journal([run.id])
        local_entries = [e for e in pending if e.host_key == local.key]
        if local_entries:
            if not holder:
                holder.append((kernel_holder or KernelLock().holder)())
            if holder[0] is not None:
                report.deferred[run.id] = holder[0]
                continue
        report.failures += restore_entries(local, store, local_entries, report.restored.append)
        for entry in pending:
            if entry.host_key.startswith("qemu:"):
                # The guest ran on a throwaway overlay that died with its owner: nothing to undo.
                store.mark_restored(entry.id)
            elif entry.host_key != local.key:
                report.remote_pending[entry.host_key] = report.remote_pending.get(entry.host_key, 0) + 1
        report.aborted_trials += store.mark_run_crashed(run.id)
        report.crashed_runs.append(run.id)
    report.removed_workdirs = local.reap_stale_workdirs()
    return report


def recover_previous_holder(previous: dict, own: ResultStore | None, message: Callable[[str], None]) -> None:
    """The kernel lock's last holder died holding it (tuner/kernel_lock.py): what it changed on
    this machine is journalled in its database, which may not be ours (any directory's
    ./ostune.db). Put that back before this process reads the host's values, or it would take
    the dead process's trial values for the host's own. A database that cannot be opened from
    here (a server URL whose password is never written down, a deleted file) is named instead."""
    from tuner.kernel_lock import describe

    url = str(previous.get("database") or "")
    if not url:
        return  # a holder without a database (`spaces --write-back`) wrote back only what it read
    who = describe(previous)
    if str(previous.get("host") or "local") != "local":
        # another machine's ostune tuned this one over SSH: its database is there
        message(_elsewhere_hint(previous, who, str(previous.get("host"))))
        return
    _repair_from_database(url, own, who, message, replay=lambda store: recover(store, kernel_holder=lambda: None),
                          changing="this machine's kernel", on="", restore_line="ostune restore --db URL")


def take_kernel_lock(command: str, own: ResultStore | None, message: Callable[[str], None]):  # type: ignore[no-untyped-def]
    """This machine's kernel lock (tuner/kernel_lock.py), taken at once or LockHeldError; what a
    holder that died with it left is repaired first (recover_previous_holder). `own`: the
    database of this command, if it has one (it journals nothing without)."""
    from tuner.kernel_lock import KernelLock

    lock = KernelLock().acquire(command=command, database=own.describe() if own is not None else "")
    try:
        if lock.previous is not None:
            recover_previous_holder(lock.previous, own, message)
    except BaseException:
        lock.release(restore=lock.previous)  # still unrepaired: the next holder must find it
        raise
    return lock


def _elsewhere_hint(previous: dict, who: str, host_key: str) -> str:
    machine = previous.get("machine") or "the machine it ran on"
    return (f"{who} did not release the kernel lock of {host_key} (killed, or its connection dropped): if it left "
            f"values changed there, `ostune restore --host {host_key} --db URL` with its database, on {machine}, puts "
            "them back")


def recover_previous_remote_holder(previous: dict, own: ResultStore | None, host: Host,
                                   message: Callable[[str], None]) -> None:
    """`recover_previous_holder` for a machine tuned over SSH (targets/hosts/remote_lock.py): the
    holder that did not release its kernel lock is judged from its identity. Alive (its connection
    dropped), it still owns its values and will put them back itself: tuning under it is refused.
    Dead on this machine: its journal for that host is replayed from its database. Anywhere else:
    named, with how to restore."""
    from tuner.errors import LockHeldError
    from tuner.kernel_lock import describe

    who = describe(previous)
    url = str(previous.get("database") or "")
    if str(previous.get("host") or "local") == "local":
        # an ostune running on that machine itself (or a lock file from before holders named
        # their host): its database is there, and `ostune restore` there puts its values back
        if url:
            message(f"{who}, an ostune on {host.key} itself, did not release its kernel lock: if it left values "
                    f"changed, `ostune restore --db URL` with its database, run there, puts them back")
        return
    pid = previous.get("pid")
    alive = owner_is_alive(int(pid), previous.get("start_ticks"), str(previous.get("machine") or ""),
                           str(previous.get("boot_id") or ""), str(previous.get("machine_id") or "")) \
        if isinstance(pid, int) else None
    if alive:
        raise LockHeldError(f"{who} lost its connection to {host.key} but is still running, and will put its values "
                            "back when it stops: stop it, or wait for it")
    held_as = str(previous.get("host"))  # the URL it reached the machine by (user, name, port may differ)
    if alive is None or not url:
        if url:
            message(_elsewhere_hint(previous, who, held_as))
        return
    _repair_from_database(url, own, who, message, replay=lambda store: restore_remote(store, host, host_key=held_as),
                          changing=f"the kernel of {host.key}", on=f" on {held_as}",
                          restore_line=f"ostune restore --host {held_as} --db URL")


def take_remote_kernel_lock(host, command: str, own: ResultStore | None,  # type: ignore[no-untyped-def]
                            message: Callable[[str], None]):
    """The kernel lock of a machine tuned over SSH (SshHost.take_kernel_lock), taken at once or
    LockHeldError; what a holder that did not release it left is repaired first."""
    lock = host.take_kernel_lock(command=command, database=own.describe() if own is not None else "", log=message)
    try:
        if lock.previous is not None:
            recover_previous_remote_holder(lock.previous, own, host, message)
    except BaseException:
        # still unrepaired (or its holder alive): the next attempt must find it, not an empty file
        lock.release(restore=lock.previous)
        raise
    return lock


def take_host_kernel_lock(host: Host, command: str, own: ResultStore | None,  # type: ignore[no-untyped-def]
                          message: Callable[[str], None]):
    """The kernel lock of the machine `host` changes (this one's, or an SSH host's), with what a
    holder that died with it left repaired first; None for a host whose kernel nobody else can
    be tuning: the `none` host (changes nothing) and a QEMU guest (a run's own overlay). Either
    lock has release() and lost()."""
    from targets.hosts.ssh import SshHost

    if isinstance(host, LocalHost) and host.applies_kernel_params:
        return take_kernel_lock(command, own, message)
    if isinstance(host, SshHost):
        return take_remote_kernel_lock(host, command, own, message)
    return None


@contextmanager
def kernel_lock_held(host: Host, command: str, own: ResultStore | None, message: Callable[[str], None]) -> Iterator[None]:
    """take_host_kernel_lock for a command that writes to a host outside a run (`spaces
    --write-back`, `restore --host`), released when it is done."""
    lock = take_host_kernel_lock(host, command, own, message)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _repair_from_database(url: str, own: ResultStore | None, who: str, message: Callable[[str], None], *,
                          replay: Callable[[ResultStore], RecoveryReport], changing: str, on: str,
                          restore_line: str) -> None:
    """A dead kernel-lock holder's values put back from its journal (`replay` on its database,
    ours when it is the same): said line by line; one that cannot be put back stops this command,
    which would otherwise take it for the host's own. A database that cannot be opened from here
    (a server URL whose password is never written down, a deleted file) is named instead."""
    from tuner.errors import OstuneError

    store = own if own is not None and url == own.describe() else None
    if store is None:
        try:
            store = ResultStore.open(url, create=False)
        except OstuneError as exc:
            message(f"{who} died while changing {changing}, and its database cannot be opened from here "
                    f"({str(exc).splitlines()[0]}): if it left values changed, `{restore_line}` with that database "
                    "puts them back")
            return
    try:
        report = replay(store)
    finally:
        if store is not own:
            store.close()
    for line in report.restored:
        message(f"recovered what {who} left changed{on}: {line}")
    if report.failures:
        raise HostError(f"{who} died leaving values changed in {changing} that could not be put back "
                        f"({report.failures[0]}); a new run would take them for the host's own")
