"""What ostune starts on this machine for a measurement goes when ostune stops it — the command
and everything it started: on SIGTERM, on Ctrl-C (at ostune alone or typed at the terminal), on
the command's timeout. Real processes on the `none` host; nothing touches the kernel."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.hosts.local import STOP_GRACE_S, LocalHost
from tests.helpers import QUADRATIC_SPACE, REPO, ostune, query, wait_for
from tuner.errors import HostError


def background_sleeper(pidfile: Path, prelude: str = "") -> str:
    """A shell command whose benchmark runs in the background, as load generators do: sh ignores
    SIGINT for it and nothing but its process group reaches it."""
    return f"{prelude}sleep 300 & echo $! > {shlex.quote(str(pidfile))}; wait"


def running(pid: int) -> bool:
    """A zombie counts as gone: where PID 1 does not reap orphans (containers) it stays one."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def gone_soon(pid: int, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pid_in(pidfile: Path, timeout_s: float = 60.0) -> int:
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout_s=timeout_s)
    return int(pidfile.read_text())


@pytest.fixture
def pidfile(tmp_path):
    """Where a test's command writes its background child's pid; the child is killed afterwards
    whatever happened, so a failing test leaves no sleeper behind."""
    path = tmp_path / "grandchild.pid"
    yield path
    if path.exists() and path.read_text().strip():
        kill_with_children(int(path.read_text()))


def kill_with_children(pid: int) -> None:
    """By pid, never by group: on the old code a leftover was in pytest's own process group."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for victim in [*map(int, children), pid]:
        if running(victim):
            os.kill(victim, signal.SIGKILL)


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(QUADRATIC_SPACE)
    return path


def run_args(space_file: Path, db: Path, command: str, *extra: str) -> list[str]:
    return ["run", "--app", "command", "--host", "none", "--space", str(space_file), "--command", command,
            "--trials", "1", "--repetitions", "1", "--no-warmup", "--experiment", "cleanup",
            "--db", f"sqlite:///{db}", *extra]


def start_ostune(args: list[str], *, own_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=own_session)


def assert_interrupted(proc: subprocess.Popen, db: Path) -> None:
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert query(db, "select status from trials where number = 1") == [("aborted",)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_ostune_stops_what_the_command_started(tmp_path, space_file, pidfile, sig):
    db = tmp_path / "sig.db"
    proc = start_ostune(run_args(space_file, db, background_sleeper(pidfile)))
    grandchild = pid_in(pidfile)
    assert running(grandchild)
    proc.send_signal(sig)
    assert_interrupted(proc, db)
    assert gone_soon(grandchild), f"the command's background child {grandchild} outlived ostune"


def test_ctrl_c_at_the_terminal_stops_what_the_command_started(tmp_path, space_file, pidfile):
    """The terminal sends SIGINT to its foreground process group, ostune's. The command is in a
    group of its own, so it is ostune that has to stop it; before, the shell died of the SIGINT
    and left its background child running."""
    db = tmp_path / "tty.db"
    proc = start_ostune(run_args(space_file, db, background_sleeper(pidfile)), own_session=True)
    grandchild = pid_in(pidfile)
    os.killpg(proc.pid, signal.SIGINT)  # ostune's group, as a shell job's
    assert_interrupted(proc, db)
    assert gone_soon(grandchild), f"the command's background child {grandchild} outlived ostune"


def test_a_command_past_its_timeout_is_stopped_with_what_it_started(tmp_path, space_file, pidfile):
    db = tmp_path / "timeout.db"
    started = time.monotonic()
    result = ostune(*run_args(space_file, db, background_sleeper(pidfile), "--set", "timeout_s=2"), timeout_s=120)
    assert result.returncode == 5, result.stderr  # its only trial failed
    assert time.monotonic() - started < 60
    [(status, error)] = query(db, "select status, error from trials where number = 1")
    assert status == "failed" and "timed out after 2 s" in error
    grandchild = int(pidfile.read_text())
    assert gone_soon(grandchild), f"the command's background child {grandchild} outlived its timeout"


def test_a_timed_out_group_that_ignores_sigterm_is_killed_after_the_grace(pidfile):
    """LocalHost.run, which every local workload goes through (the command, redis-benchmark,
    sysbench): SIGTERM first, SIGKILL for what is left after the grace."""
    started = time.monotonic()
    with pytest.raises(HostError, match="timed out after 1 s"):
        LocalHost().run(["sh", "-c", background_sleeper(pidfile, prelude="trap '' TERM; ")], timeout_s=1)
    grandchild = int(pidfile.read_text())
    assert gone_soon(grandchild, timeout_s=3), f"{grandchild} ignored SIGTERM and was never killed"
    assert time.monotonic() - started < 1 + STOP_GRACE_S + 5


def test_a_child_in_a_process_group_of_its_own_is_stopped_too(pidfile):
    """GNU timeout moves itself and its command to a process group of their own, as a shell with
    job control does its jobs: stopping the shell's group alone would miss them."""
    command = f"timeout 300 sleep 300 & echo $! > {shlex.quote(str(pidfile))}; wait"
    with pytest.raises(HostError, match="timed out after 1 s"):
        LocalHost().run(["sh", "-c", command], timeout_s=1)
    timeout_pid = int(pidfile.read_text())
    assert gone_soon(timeout_pid), f"timeout ({timeout_pid}), in a group of its own, outlived the command"


def test_terminating_a_spawned_server_stops_what_it_left_behind(tmp_path):
    """A managed server (redis-server, mariadbd) is stopped on its own first; a child it leaves
    (a snapshot child of a killed redis) goes with its process group."""
    host = LocalHost()
    log = tmp_path / "server.log"
    server = host.spawn(["sh", "-c", "sleep 300 & echo $!; wait"], log_path=str(log))
    wait_for(lambda: log.read_text().strip(), timeout_s=10)
    child = int(log.read_text())
    try:
        host.terminate(server, timeout_s=5)
        assert not host.is_alive(server)
        assert gone_soon(child), f"the server's child {child} outlived it"
    finally:
        kill_with_children(child)


def test_run_still_passes_input_and_captures_output_and_exit_code():
    result = LocalHost().run(["sh", "-c", "cat; echo oops >&2; exit 3"], input_text="hello\n", check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "hello\n", "oops\n")
    with pytest.raises(HostError, match="sh exited 3: oops"):
        LocalHost().run(["sh", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(HostError, match="command not found: no-such-program-ostune"):
        LocalHost().run(["no-such-program-ostune"])


def test_run_leaves_the_signal_handlers_as_they_were():
    """Stop signals are held only while a child starts; ostune's own handlers are back after."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    LocalHost().run(["true"])
    assert {sig: signal.getsignal(sig) for sig in before} == before
