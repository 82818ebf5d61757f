"""Start-of-command recovery: restore what a dead ostune process left changed (kill -9, power
loss), close its run and mark its in-flight trial aborted. Every `ostune` command calls this."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.store import ResultStore
from targets.hosts.base import Host
from targets.hosts.local import LocalHost, reap_stale_workdirs
from tuner.host_state import restore_entries
from tuner.ownership import owner_is_alive


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

    @property
    def anything(self) -> bool:
        return bool(self.restored or self.failures or self.crashed_runs or self.remote_pending or self.removed_workdirs)


def dead_runs(store: ResultStore) -> list:  # type: ignore[type-arg]
    return [
        run for run in store.running_runs()
        if owner_is_alive(run.pid, run.pid_start_ticks, run.machine, run.boot_id) is False
    ]


def restore_remote(store: ResultStore, host: Host) -> RecoveryReport:
    """Restore the values dead runs left on a remote host (`ostune restore --host URL`)."""
    report = RecoveryReport()
    # Runs whose owner is alive (or cannot be judged from here) are still working: not touched.
    alive = {run.id for run in store.running_runs()} - {run.id for run in dead_runs(store)}
    entries = [e for e in store.pending_journal() if e.host_key == host.key and e.run_id not in alive]
    report.failures += restore_entries(host, store, entries, report.restored.append)
    return report


def recover(store: ResultStore, local: LocalHost | None = None) -> RecoveryReport:
    report = RecoveryReport()
    local = local or LocalHost()
    for run in dead_runs(store):
        pending = store.pending_journal([run.id])
        local_entries = [e for e in pending if e.host_key == local.key]
        report.failures += restore_entries(local, store, local_entries, report.restored.append)
        for entry in pending:
            if entry.host_key.startswith("qemu:"):
                # The guest ran on a throwaway overlay that died with its owner: nothing to undo.
                store.mark_restored(entry.id)
            elif entry.host_key != local.key:
                report.remote_pending[entry.host_key] = report.remote_pending.get(entry.host_key, 0) + 1
        report.aborted_trials += store.mark_run_crashed(run.id)
        report.crashed_runs.append(run.id)
    report.removed_workdirs = reap_stale_workdirs()
    return report
