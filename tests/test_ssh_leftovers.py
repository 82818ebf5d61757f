"""After a kill -9 of ostune working on an SSH host, the next command that reaches that host puts
back the values the dead run left changed, stops the Redis it left running there (a server
started over SSH does not die with its owner) and removes its work directory. Against a real QEMU
guest reached as an SSH host (TCG unless KVM works): plumbing, not latency. Marked vm.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from storage.store import ResultStore
from targets.hosts.qemu import QemuHost
from targets.vm.image import GuestImage
from tests.conftest_vm import booted_guest, get_image, guest_as_ssh_host, ssh_args
from tests.helpers import REPO, ostune, query, spawn_ostune, try_query
from tuner.errors import HostUnreachableError

pytestmark = pytest.mark.vm

LOCK_FILE = "/run/lock/ostune-kernel.lock"

SPACE = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 4096], log: true}
"""

# A stand-in for an ostune process: makes a work dir on the host, starts a Redis in it, says where,
# and waits to be killed.
OWNER_SCRIPT = """
import sys, time
from targets.hosts.ssh import SshHost
url, key, known_hosts, alias, port = sys.argv[1:6]
parent = sys.argv[6] if len(sys.argv) > 6 else None
host = SshHost(url, key_path=key, known_hosts_path=known_hosts, host_key_alias=alias, connect_timeout_s=20)
workdir = host.make_workdir("redis", parent=parent)
proc = host.spawn(["redis-server", "--port", port, "--save", ""], log_path=workdir + "/redis.log", cwd=workdir)
print(workdir, proc.pid, flush=True)
time.sleep(3600)
"""


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return get_image("direct")


@pytest.fixture(scope="module")
def guest(image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuHost]:
    with booted_guest(image, tmp_path_factory.mktemp("qemu-run"), memory_mb=1024, vcpus=2) as vm:
        yield vm


def running(vm: QemuHost, pid: int) -> bool:
    return vm.run(["kill", "-0", str(pid)], check=False).ok


def redis_pids(vm: QemuHost) -> list[int]:
    out = vm.run(["sh", "-c", "pgrep -x redis-server || true"]).stdout
    return [int(p) for p in out.split()]


def holder_shell_pid(vm: QemuHost) -> int:
    [pid] = vm.run(["pgrep", "-f", f"^sh -c .* sh {LOCK_FILE} "]).stdout.split()
    return int(pid)


def parent_pid(vm: QemuHost, pid: int) -> int:
    return int(vm.read_text(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1])


def drop_the_connection_mid_run(vm: QemuHost, proc: subprocess.Popen, never: str,
                                pid_on_guest: Callable[[], int | None]) -> tuple[int, str]:
    """Once `pid_on_guest` names a process of the spawned run on the guest, kill -9 the sshd
    process above it (the run's connection dies under it); the run's exit code and all it said,
    on one line. `never`: the failure when no such process shows up within 600 s."""
    try:
        deadline = time.monotonic() + 600
        while (pid := pid_on_guest()) is None:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, never
            time.sleep(0.3)
        while not vm.read_text(f"/proc/{pid}/comm").startswith("sshd"):
            pid = parent_pid(vm, pid)
        vm.run(["kill", "-9", str(pid)])
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, " ".join((err + out).split())


def lose_lock_to_a_rival(vm: QemuHost, controller_pid: int) -> None:
    """The controller's holding shell ends and a rival takes the lock and releases it, all while
    the controller is stopped (so it cannot look in between): what it finds then is an empty file."""
    os.kill(controller_pid, signal.SIGSTOP)
    try:
        vm.run(["pkill", "-f", f"^sh -c .* sh {LOCK_FILE} "])
        vm.run(["flock", "-w", "20", LOCK_FILE, "sh", "-c", f": > {LOCK_FILE}"])
    finally:
        os.kill(controller_pid, signal.SIGCONT)


def test_restore_host_stops_a_dead_owners_server_and_removes_its_workdir_only(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    url = f"ssh://root@127.0.0.1:{guest.port}"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, url, str(image.ssh_key), str(image.known_hosts), image.host_key_alias,
         "6391"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    workdir, pid_text = owner.stdout.readline().split()  # type: ignore[union-attr]
    dead_pid = int(pid_text)
    owner.kill()
    owner.wait()
    # this process owns another work dir with its server; a directory without an owner record
    # is not ostune's to judge
    host = guest_as_ssh_host(guest, image)
    try:
        live_dir = host.make_workdir("redis")
        live = host.spawn(["redis-server", "--port", "6392", "--save", ""], log_path=f"{live_dir}/redis.log",
                          cwd=live_dir)
        guest.run(["mkdir", "-p", "/tmp/ostune-redis-foreign"])
        assert running(guest, dead_pid) and guest.exists(workdir)  # outlived its owner

        db = tmp_path / "r.db"
        ResultStore.open(f"sqlite:///{db}").close()
        result = ostune("restore", "--db", f"sqlite:///{db}", *ssh_args(guest, image), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        said = result.stdout
        # one whole line per step, not wrapped at 80 columns (it goes to cron mail and journals)
        assert any(f"removed {workdir} on {url} (stopped pid {dead_pid})" in line
                   for line in said.splitlines()), said
        assert not running(guest, dead_pid) and not guest.exists(workdir)
        assert host.is_alive(live) and guest.exists(live_dir)
        assert guest.exists("/tmp/ostune-redis-foreign")
        assert live_dir not in said and "foreign" not in said
    finally:
        host.terminate(live, timeout_s=5)
        host.remove_tree(live_dir)
        guest.run(["rm", "-rf", "/tmp/ostune-redis-foreign"])
        host.close()


def test_a_run_after_a_kill_9_restores_the_host_and_clears_the_dead_runs_redis(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    original = guest.read_text("/proc/sys/vm/swappiness").strip()
    tried = "33" if original != "33" else "34"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "k.db"
    common = ["--space", str(space), "--repetitions", "1", "--requests", "300", "--no-profiles",
              "--experiment", "leftovers", "--db", f"sqlite:///{db}", *ssh_args(guest, image)]
    proc = spawn_ostune("run", "--trials", "3", "--try", f"vm.swappiness={tried}", *common, cwd=tmp_path)
    deadline = time.monotonic() + 600
    while not (try_query(db, "select 1 from trials where status='running' and source='try'")
               and guest.read_text("/proc/sys/vm/swappiness").strip() == tried):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the tried configuration was never applied"
        time.sleep(0.5)
    proc.kill()
    proc.wait()
    # the kernel dropped the dead run's remote kernel lock with its connection; the lock file
    # still names it, for the next holder to repair after
    deadline = time.monotonic() + 30
    while not guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok:
        assert time.monotonic() < deadline, "the remote kernel lock outlived its holder's connection"
        time.sleep(0.5)
    assert f'"pid": {proc.pid},' in guest.read_text(LOCK_FILE)
    left = redis_pids(guest)
    workdirs = guest.run(["sh", "-c", "ls -d /tmp/ostune-redis-* 2>/dev/null || true"]).stdout.split()
    assert left and workdirs  # what a kill -9 leaves on an SSH host

    again = ostune("run", "--trials", "1", *common, cwd=tmp_path)
    assert again.returncode == 0, again.stderr + again.stdout
    said = " ".join((again.stderr + again.stdout).split())
    assert f"recovered what pid {proc.pid} (ostune run, database sqlite:///{db}," in said, said
    assert f"restored vm.swappiness = {original}" in said, said
    for workdir in workdirs:
        assert f"removed {workdir} on ssh://root@127.0.0.1:{guest.port}" in said, said
        assert not guest.exists(workdir)
    assert not set(left) & set(redis_pids(guest))  # the dead run's server is gone; the new run stopped its own
    # the second run journalled the host's own value, not the dead run's, and put it back
    runs = query(db, "select id from runs order by id")
    assert len(runs) == 2
    assert query(db, f"select original from restore_journal where run_id = {runs[1][0]} and name = 'vm.swappiness'") \
        == [(original,)]
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]
    assert guest.read_text("/proc/sys/vm/swappiness").strip() == original
    assert query(db, "select status from trials where source = 'try'") == [("aborted",)]
    assert guest.read_text(LOCK_FILE) == ""  # released, not dropped: nothing for a next holder to repair

    # verify reaches the experiment's SSH host without being told its --host-set settings again
    # (stored with the experiment); with the profiles, there is something to verify even when the
    # baseline is the best configuration found
    verified = ostune("verify", "leftovers", "--rounds", "3", "--repetitions", "1", "--db", f"sqlite:///{db}",
                      cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert query(db, "select count(*) from verifications") == [(1,)]
    assert guest.read_text("/proc/sys/vm/swappiness").strip() == original
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]


def test_two_controllers_with_their_own_databases_do_not_tune_one_ssh_host_at_once(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    """The database host lock cannot see a run that uses another database (another directory,
    another machine): the remote kernel lock, an flock on the host itself, does. It is the file a
    local ostune on that machine locks, so that one is kept out too."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"
    common = ["--space", str(space), "--repetitions", "1", "--requests", "300", "--no-profiles", *ssh_args(guest, image)]
    first = spawn_ostune("run", "--trials", "20", "--db", f"sqlite:///{first_db}", *common, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not try_query(first_db, "select 1 from trials where status = 'running'"):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never started a trial"
            time.sleep(0.5)
        second = ostune("run", "--trials", "1", "--db", f"sqlite:///{second_db}", *common, cwd=tmp_path)
        assert second.returncode == 6, second.stderr + second.stdout
        said = " ".join(second.stderr.split())
        assert (f"the kernel of ssh://root@127.0.0.1:{guest.port} is already being tuned by pid {first.pid} "
                f"(ostune run, database sqlite:///{first_db},") in said, said
        assert try_query(second_db, "select count(*) from trials") in ([], [(0,)])
        assert not guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok
        # nor does a restore from another database put values back under the live run
        ResultStore.open(f"sqlite:///{second_db}").close()
        restore = ostune("restore", "--db", f"sqlite:///{second_db}", *ssh_args(guest, image), cwd=tmp_path)
        assert restore.returncode == 6 and f"already being tuned by pid {first.pid} " in restore.stderr, \
            restore.stderr + restore.stdout
        # the shell holding the first run's lock ends (as when its connection drops) and another
        # process takes the lock and lets it go before the first run looks again: the first run can
        # no longer be sure it tunes alone, and stops before its next trial
        lose_lock_to_a_rival(guest, first.pid)
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 6, err + out
    said = " ".join((err + out).split())
    assert f"the kernel lock on ssh://root@127.0.0.1:{guest.port} was lost" in said, said
    assert "another process held it and released it in between" in said, said
    assert query(first_db, "select count(*) from restore_journal where restored_at is null") == [(0,)]
    assert query(first_db, "select count(*) from trials where status = 'succeeded'")[0][0] < 20


def test_a_dead_owners_workdir_under_an_apps_own_parent_is_removed_there(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    """A MariaDB datadir_parent on the remote host: not the temp dir, so only a run that names it
    (the app's workdir_parents) looks there."""
    from targets.hosts.workdir_records import WORKDIR_OWNER_FILE
    from tuner.recovery import recover_before_use

    url = f"ssh://root@127.0.0.1:{guest.port}"
    parent = "/var/tmp/ostune-test-bigdisk"
    guest.run(["mkdir", "-p", parent])
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, url, str(image.ssh_key), str(image.known_hosts), image.host_key_alias,
         "6393", parent + "/"], stdout=subprocess.PIPE, text=True, cwd=REPO)
    workdir, pid_text = owner.stdout.readline().split()  # type: ignore[union-attr]
    owner.kill()
    owner.wait()
    host = guest_as_ssh_host(guest, image)
    store = ResultStore.open(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        assert workdir.startswith(f"{parent}/ostune-redis-") and running(guest, int(pid_text))
        assert host.reap_stale_workdirs() == []  # the temp dir has nothing of it
        # a removal cut short (a busy mount inside) keeps the owner record, so it is finished later
        guest.run(["sh", "-c", f"mkdir {workdir}/data && mount -t tmpfs -o size=1m tmpfs {workdir}/data"])
        assert host.reap_stale_workdirs(parent) == []
        assert sorted(guest.run(["ls", "-A", workdir]).stdout.split()) == sorted([WORKDIR_OWNER_FILE, "data"])
        guest.run(["umount", f"{workdir}/data"])
        said: list[str] = []
        recover_before_use(store, host, said.append, (parent,))
        assert said == [f"removed {workdir} on {url}, the work directory of a dead ostune process"]
        assert not guest.exists(workdir) and not running(guest, int(pid_text))
    finally:
        store.close()
        host.close()
        guest.run(["rm", "-rf", parent])


def test_a_remote_kernel_lock_that_cannot_be_taken_is_one_host_error_naming_why(
    guest: QemuHost, image: GuestImage,
) -> None:
    from dataclasses import asdict

    from targets.hosts.remote_lock import RemoteKernelLock
    from tuner.errors import HostError
    from tuner.ownership import ProcessIdentity

    host = guest_as_ssh_host(guest, image)
    try:
        lock = RemoteKernelLock(host, path="/proc/ostune-nowhere/kernel.lock")
        with pytest.raises(HostError) as caught:
            lock.acquire(command="run", database="x", identity=asdict(ProcessIdentity.current()))
        said = str(caught.value)
        assert said.startswith(f"cannot take the kernel lock /proc/ostune-nowhere/kernel.lock on {host.key}: ")
        assert "No such file or directory" in said and "\n" not in said, said
        assert lock.lost() is None  # nothing held
    finally:
        host.close()


def test_the_remote_kernel_lock_when_things_go_wrong(guest: QemuHost, image: GuestImage) -> None:
    """Three ways it can go wrong, each kept safe: a holder that lost its connection but lives is
    waited for, and its description survives the refusal (a second attempt must refuse too); a
    machine without flock says so instead of "already being tuned"; a lock that cannot be taken
    again after a reboot stays lost, and a lost lock reboots nothing."""
    from dataclasses import asdict

    from tuner.errors import HostError, LockHeldError
    from tuner.ownership import ProcessIdentity
    from tuner.recovery import take_remote_kernel_lock

    host = guest_as_ssh_host(guest, image)
    said: list[str] = []
    try:
        # 1. this test process stands for a live holder whose connection dropped
        alive = {**asdict(ProcessIdentity.current()), "command": "run", "database": "sqlite:////tmp/a.db",
                 "host": host.key, "since": time.time()}
        guest.write_text(LOCK_FILE, json.dumps(alive))
        for _attempt in range(2):
            with pytest.raises(LockHeldError, match="lost its connection to .* but is still running"):
                take_remote_kernel_lock(host, "run", None, said.append)
            assert json.loads(guest.read_text(LOCK_FILE)) == alive
        guest.write_text(LOCK_FILE, "")

        # 2. no flock on the machine
        guest.run(["mv", "/usr/bin/flock", "/usr/bin/flock.away"])
        try:
            with pytest.raises(HostError, match=r"flock: not found \(install util-linux there: it has flock\)"):
                host.take_kernel_lock(command="run", database="x")
        finally:
            guest.run(["mv", "/usr/bin/flock.away", "/usr/bin/flock"])

        # 3. the holding shell dies (as at a reboot) and a rival gets the lock first
        lock = host.take_kernel_lock(command="run", database="x")
        guest.run(["pkill", "-f", f"^sh -c .* sh {LOCK_FILE} "])
        # -o: the lock stays with the flock process, so killing it (below) frees the lock
        guest.run(["sh", "-c", f"nohup flock -n -o {LOCK_FILE} sleep 123 > /dev/null 2>&1 &"])
        time.sleep(1)
        with pytest.raises(HostError, match="could not be taken again after its reboot"):
            lock.reacquire()
        assert "could not be taken again" in (lock.lost() or "")
        boot_id = guest.read_text("/proc/sys/kernel/random/boot_id")
        with pytest.raises(HostError, match=f"not rebooting {host.key}: "):
            host.grub.reboot()
        assert guest.read_text("/proc/sys/kernel/random/boot_id") == boot_id
    finally:
        guest.run(["pkill", "-f", f"flock -n -o {LOCK_FILE} sleep 123"], check=False)
        guest.run(["pkill", "-f", "^sleep 123$"], check=False)
        host.close()
        guest.write_text(LOCK_FILE, "")
    assert guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok  # nothing of this test holds it


def test_a_verify_that_loses_the_kernel_lock_stops_before_its_next_round(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "v.db"
    made = ostune("run", "--trials", "2", "--space", str(space), "--repetitions", "1", "--requests", "300",
                  "--experiment", "v", "--db", f"sqlite:///{db}", *ssh_args(guest, image), cwd=tmp_path)
    assert made.returncode == 0, made.stderr + made.stdout
    proc = spawn_ostune("verify", "v", "--rounds", "30", "--repetitions", "1", "--db", f"sqlite:///{db}", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while not try_query(db, "select 1 from verification_samples"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the verification never measured"
            time.sleep(0.5)
        lose_lock_to_a_rival(guest, proc.pid)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 6, err + out
    assert "verification stopped before round " in " ".join(err.split()), err
    assert query(db, "select status from verifications") == [("failed",)]
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]


def test_a_run_whose_ssh_connection_drops_takes_its_kernel_lock_again_and_goes_on(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    """The connection drops (its sshd process on the host dies) in the middle of a run: the lock
    file still names this run, so nobody held the lock in between, and the run takes it again
    and finishes instead of stopping."""
    original = guest.read_text("/proc/sys/vm/swappiness").strip()
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "drop.db"
    proc = spawn_ostune("run", "--trials", "5", "--space", str(space), "--repetitions", "1", "--requests", "300",
                        "--no-profiles", "--experiment", "drop", "--db", f"sqlite:///{db}", *ssh_args(guest, image),
                        cwd=tmp_path)
    code, said = drop_the_connection_mid_run(
        guest, proc, "the run never reached its second trial",
        lambda: holder_shell_pid(guest) if try_query(db, "select 1 from trials where number = 2 and status = 'running'")
        else None)
    assert code in (0, 7), said
    assert (f"the SSH channel holding the kernel lock on ssh://root@127.0.0.1:{guest.port} closed; the lock was "
            "taken again (nobody held it in between)") in said, said
    assert query(db, "select count(*) from trials") == [(5,)]
    assert query(db, "select count(*) from trials where status = 'succeeded'")[0][0] >= 4  # at most the one cut off
    # ... which is aborted, not failed: the connection, not its configuration, went wrong
    cut_off = query(db, "select number, status, substr(error, 1, 18) from trials where status != 'succeeded'")
    assert all(status == "aborted" and error == "host unreachable: " for _n, status, error in cut_off), cut_off
    for number, _status, _error in cut_off:
        assert f"answers again after trial {number} was cut off: going on" in said, said
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]
    assert guest.read_text("/proc/sys/vm/swappiness").strip() == original
    assert guest.read_text(LOCK_FILE) == ""  # released at the end, by the shell that took it again


# kills the nearest sshd process above the command: the connection it runs on
KILL_OWN_CONNECTION = ("p=$$; while [ \"$p\" -gt 1 ]; do case $(cat /proc/$p/comm) in sshd*) kill -9 $p; break;; esac; "
                       "p=$(cut -d' ' -f4 /proc/$p/stat); done; sleep 20")


def test_a_command_whose_connection_dies_under_it_is_the_host_lost_not_the_command_failing(
    guest: QemuHost, image: GuestImage,
) -> None:
    """The channel of a command whose connection dies closes without an exit status, which paramiko
    reports as -1, as it does for a command killed by a signal. Only the first is the host lost:
    a read that met it was stored as a trial failed ('cannot read /proc/...'), not aborted."""
    host = guest_as_ssh_host(guest, image)
    try:
        with pytest.raises(HostUnreachableError, match="lost SSH connection to .*: the connection closed under"):
            host.run(["sh", "-c", KILL_OWN_CONNECTION], check=False, timeout_s=60)
        assert host.run(["echo", "again"], timeout_s=60).stdout == "again\n"  # a new connection
        killed = host.run(["sh", "-c", "kill -9 $$"], check=False, timeout_s=60)  # on a live connection
        assert killed.exit_code in (-1, 128 + 9)  # -1: sshd saw the signal itself (no shell between)
    finally:
        host.close()


def test_a_connection_lost_under_the_benchmark_cuts_the_trial_off_and_the_run_goes_on(
    guest: QemuHost, image: GuestImage, tmp_path: Path,
) -> None:
    """The connection dies while redis-benchmark runs on the host: the host, not the workload,
    went wrong, so the trial is aborted (not stored failed for the model to learn from), and the
    run reconnects and finishes. The workload used to wrap the error as 'did not finish'."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "bench-drop.db"
    proc = spawn_ostune("run", "--trials", "3", "--space", str(space), "--repetitions", "1", "--requests", "20000",
                        "--no-profiles", "--no-warmup", "--experiment", "bench-drop", "--db", f"sqlite:///{db}",
                        *ssh_args(guest, image), cwd=tmp_path)

    def benchmark_pid() -> int | None:
        found = guest.run(["sh", "-c", "pgrep -x redis-benchmark || true"]).stdout.split()
        return int(found[0]) if found else None

    code, said = drop_the_connection_mid_run(guest, proc, "redis-benchmark never ran on the guest", benchmark_pid)
    assert code in (0, 7), said
    statuses = query(db, "select number, status, substr(error, 1, 18) from trials order by number")
    assert [s for _n, s, _e in statuses].count("aborted") == 1, statuses
    [(number, error)] = [(n, e) for n, s, e in statuses if s == "aborted"]
    assert error == "host unreachable: " and f"answers again after trial {number} was cut off" in said, said
    assert all(s == "succeeded" for _n, s, _e in statuses if _n != number), statuses
    assert query(db, "select count(*) from restore_journal where restored_at is null") == [(0,)]


def test_the_shell_of_a_dropped_connection_still_holding_the_lock_is_ended_and_the_lock_taken_again(
    guest: QemuHost, image: GuestImage,
) -> None:
    """sshd may not notice a dead connection for a long time; meanwhile the old holding shell keeps
    the lock under this process's own description. Here its sshd process is stopped (it cannot see
    the connection close) and this side's connection closed."""
    host = guest_as_ssh_host(guest, image)
    said: list[str] = []
    stopped = None
    try:
        lock = host.take_kernel_lock(command="run", database="x", log=said.append)
        old_shell = holder_shell_pid(guest)
        stopped = parent_pid(guest, old_shell)
        guest.run(["kill", "-STOP", str(stopped)])
        host._session.close()
        assert lock.lost() is None, said
        assert said == [f"the SSH channel holding the kernel lock on {host.key} closed; the lock was taken again "
                        "(nobody held it in between)"]
        # ended by the new holder (a zombie until its stopped parent reaps it)
        assert not guest.exists(f"/proc/{old_shell}") or \
            guest.read_text(f"/proc/{old_shell}/stat").rsplit(")", 1)[1].split()[0] == "Z"
        assert holder_shell_pid(guest) != old_shell
        assert not guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok
        lock.release()
        assert guest.read_text(LOCK_FILE) == ""
    finally:
        if stopped is not None:
            guest.run(["kill", "-CONT", str(stopped)], check=False)
        host.close()
    assert guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok


def test_a_lock_file_that_outlived_a_reboot_proves_nothing(guest: QemuHost, image: GuestImage) -> None:
    """Where /run/lock is not a tmpfs the file still names this process after an unplanned reboot,
    but every value the run applied was reset: the boot id the lock was taken under says so. (The
    reboot is stood for by the boot id recorded at the take; rebooting the module's guest would
    cost every later test its boot.)"""
    host = guest_as_ssh_host(guest, image)
    try:
        lock = host.take_kernel_lock(command="run", database="x")
        assert lock._boot_id == guest.read_text("/proc/sys/kernel/random/boot_id").strip()
        lock._boot_id = "00000000-0000-0000-0000-000000000000"  # taken before the "reboot"
        guest.run(["pkill", "-f", f"^sh -c .* sh {LOCK_FILE} "])
        deadline = time.monotonic() + 30
        while guest.run(["pgrep", "-f", f"^sh -c .* sh {LOCK_FILE} "], check=False).ok:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        said = lock.lost() or ""
        assert said.endswith(f"{host.key} rebooted since, resetting what this run had applied"), said
        assert guest.read_text(LOCK_FILE) == ""  # given back, for nobody to repair after
    finally:
        host.close()
    assert guest.run(["flock", "-n", LOCK_FILE, "true"], check=False).ok
