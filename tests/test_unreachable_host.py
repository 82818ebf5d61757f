"""A host that stops answering, seen from this side: its TCP port still accepts (the kernel's
listen backlog does that even when the machine's userspace or the whole VM is frozen) but nothing
ever speaks. Here that is a real listening socket that never answers, not a stand-in: SSH to it
fails exactly as to a frozen machine. (The frozen QEMU guest itself is in
tests/test_ssh_frozen_host.py, marked vm.)
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from spaces.loader import parse_space
from storage.store import ResultStore
from targets.hosts.ssh import SshHost
from tuner.errors import HostUnreachableError
from tuner.experiment import HOST_UNREACHABLE, cut_off_before
from tuner.host_state import restore_entries


@pytest.fixture
def silent_port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_ssh_to_a_host_that_never_answers_is_unreachable_within_the_connect_timeout(silent_port: int) -> None:
    host = SshHost(f"ssh://root@127.0.0.1:{silent_port}", connect_timeout_s=1, accept_unknown_host_key=True)
    started = time.monotonic()
    with pytest.raises(HostUnreachableError, match=f"root@127.0.0.1:{silent_port}"):
        host.run(["true"], timeout_s=5)
    assert time.monotonic() - started < 10
    assert isinstance(host.unreachable_again(), HostUnreachableError)


def test_restore_stops_trying_a_host_once_it_is_unreachable_and_keeps_every_value_pending(
    silent_port: int, tmp_path: Path,
) -> None:
    """Each attempt at a gone host costs a connect timeout: after the first, the rest are not
    tried (a run's cleanup with 13 knobs took minutes), and none is marked restored, so the next
    command that reaches the host puts all of them back."""
    store = ResultStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    host = SshHost(f"ssh://root@127.0.0.1:{silent_port}", connect_timeout_s=1, accept_unknown_host_key=True)
    run_id = store.start_run(experiment_id=None, command="run", host_key=host.key, pid=1, pid_start_ticks=None,
                             machine="m", boot_id="b", host_facts={})
    names = [f"vm.knob_{i}" for i in range(12)]
    store.journal_originals(run_id, host.key, [
        (name, "sysctl", "/proc/sys/" + name.replace(".", "/"), "1") for name in names])
    started = time.monotonic()
    failures = restore_entries(host, store, store.pending_journal([run_id]))
    elapsed = time.monotonic() - started
    assert len(failures) == len(names)
    assert all("SSH to root@127.0.0.1" in line for line in failures), failures
    assert elapsed < 5, elapsed  # one connection attempt (its banner timeout 1 s), not twelve
    pending = store.pending_journal([run_id])
    assert sorted(e.name for e in pending) == sorted(names)


def test_a_configuration_cut_off_by_its_hosts_silence_twice_is_its_own_failure(tmp_path: Path) -> None:
    """Once, a trial cut off by a host that stopped answering is aborted (a network blip says
    nothing about the configuration). The same configuration cut off again is the configuration's
    doing (it hangs the host): the run stores it failed, or every resume would propose it again."""
    space = parse_space("""
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}
  kernel.sched_autogroup_enabled: {kind: sysctl, type: bool}
""")
    store = ResultStore.open(f"sqlite:///{tmp_path / 'c.db'}")
    experiment = store.create_experiment(name="e", space={}, space_hash="h", target={}, objective="p99_ms",
                                         direction="minimize", seed=1, settings={})

    def trial(params: dict, error: str) -> None:
        started = store.start_trial(experiment_id=experiment.id, run_id=None, params=params, source="optimizer")
        store.finish_trial(started.id, status="aborted", error=error)

    trial({"vm.swappiness": 10, "kernel.sched_autogroup_enabled": True}, HOST_UNREACHABLE + "lost SSH connection")
    trial({"vm.swappiness": 30, "kernel.sched_autogroup_enabled": True}, "interrupted")  # Ctrl-C: not the host
    earlier = store.trials(experiment.id)
    # read back from the database (10.0, 1.0): matched by value, in each parameter's type
    again = cut_off_before(space, {"vm.swappiness": 10, "kernel.sched_autogroup_enabled": True}, earlier)
    assert again is not None and again.number == 1
    assert cut_off_before(space, {"vm.swappiness": 11, "kernel.sched_autogroup_enabled": True}, earlier) is None
    assert cut_off_before(space, {"vm.swappiness": 10, "kernel.sched_autogroup_enabled": False}, earlier) is None
    assert cut_off_before(space, {"vm.swappiness": 30, "kernel.sched_autogroup_enabled": True}, earlier) is None
    assert cut_off_before(space, {"vm.swappiness": 10}, earlier) is None  # another set of knobs
