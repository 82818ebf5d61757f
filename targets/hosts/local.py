"""This machine. Kernel writes go straight to /proc/sys and /sys; processes are local children."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Sequence

from targets.hosts.base import CommandResult, Host, HostFacts, SpawnedProcess
from targets.hosts.workdir_records import WORKDIR_OWNER_FILE, owner_record, parse_owner
from tuner.errors import ApplyError, HostOperationError, KnobUnavailableError
from tuner.ownership import ProcessIdentity


def _first_match(text: str, prefix: str) -> str:
    for line in text.splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return ""


def _virtualization() -> str:
    try:
        out = subprocess.run(
            ["systemd-detect-virt"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            return "vm" if " hypervisor" in f.read() else "none"
    except OSError:
        return ""


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A preexec_fn making the child receive `sig` when ostune dies, even by kill -9, so no
    server or VM it started outlives it (PR_SET_PDEATHSIG; Linux only, best effort)."""

    def preexec() -> None:  # runs in the child between fork and exec
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - never fail a spawn over this
            pass

    return preexec


class LocalHost(Host):
    supports_boot = False

    def __init__(self) -> None:
        self.key = f"local:{socket.gethostname()}"

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run a command to completion in a session of its own. Stopped early (its timeout, an
        interrupt, an error), it is stopped together with everything it started: see own_session."""
        started = time.monotonic()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        full_env = {**os.environ, **env} if env else None
        try:
            with own_session(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                text=True,
                env=full_env,
            ) as proc:
                try:
                    stdout, stderr = proc.communicate(input_text, timeout=timeout_s)
                except subprocess.TimeoutExpired as exc:
                    raise HostOperationError(f"command timed out after {timeout_s:g} s: {' '.join(argv)}") from exc
        except FileNotFoundError as exc:
            raise HostOperationError(f"command not found: {argv[0]}") from exc
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
        result = CommandResult(
            tuple(argv), proc.returncode, stdout, stderr, time.monotonic() - started, cpu_s
        )
        if check and not result.ok:
            tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
            raise HostOperationError(f"{argv[0]} exited {proc.returncode}: {tail[0]}")
        return result

    def read_text(self, path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError as exc:
            raise KnobUnavailableError(f"{path} does not exist on {self.key}") from exc
        except OSError as exc:
            raise KnobUnavailableError(f"{path} is not readable on {self.key}: {exc.strerror}") from exc

    def write_text(self, path: str, text: str) -> None:
        # One write() call: kernel knobs parse a single write, and a partial buffered write of a
        # multi-value sysctl would be rejected or half-applied.
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError as exc:
            raise KnobUnavailableError(f"{path} does not exist on {self.key}") from exc
        except OSError as exc:
            raise KnobUnavailableError(f"{path} is not writable on {self.key}: {exc.strerror}") from exc
        try:
            os.write(fd, text.encode())
        except OSError as exc:
            reason = "invalid value" if exc.errno == errno.EINVAL else exc.strerror
            raise ApplyError(f"kernel refused {text!r} for {path}: {reason}") from exc
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def spawn(self, argv: Sequence[str], *, log_path: str, cwd: str | None = None) -> SpawnedProcess:
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
            except FileNotFoundError as exc:
                raise HostOperationError(f"command not found: {argv[0]}") from exc
        # Keep the Popen so the child is reaped (no zombie that looks alive to kill -0).
        spawned = SpawnedProcess(proc.pid, tuple(argv), log_path)
        self._children = getattr(self, "_children", {})
        self._children[proc.pid] = proc
        return spawned

    def is_alive(self, proc: SpawnedProcess) -> bool:
        child = getattr(self, "_children", {}).get(proc.pid)
        if child is not None:
            return child.poll() is None
        try:
            os.kill(proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def terminate(self, proc: SpawnedProcess, *, timeout_s: float = 10.0) -> None:
        child = getattr(self, "_children", {}).pop(proc.pid, None)
        if child is None:
            _terminate_by_pid(proc.pid, timeout_s)
        else:
            _terminate_server(child, timeout_s)

    def make_workdir(self, prefix: str, *, parent: str | None = None) -> str:
        return owned_tempdir(f"ostune-{prefix}-", parent=parent)

    def remove_tree(self, path: str) -> None:
        remove_owned_tree(path)

    def keep_workdir(self, path: str) -> None:
        Path(path, WORKDIR_OWNER_FILE).unlink(missing_ok=True)

    def reap_stale_workdirs(self, parent: str | None = None) -> list[str]:
        # a local server already died with its owner (PR_SET_PDEATHSIG): only directories are left
        return reap_stale_workdirs(parent)

    def facts(self) -> HostFacts:
        cpuinfo = self.read_text("/proc/cpuinfo")
        meminfo = self.read_text("/proc/meminfo")
        mem_kb = int(_first_match(meminfo, "MemTotal").split()[0] or 0)
        return HostFacts(
            hostname=socket.gethostname(),
            kernel=platform.release(),
            cpu_model=_first_match(cpuinfo, "model name"),
            cpu_count=os.cpu_count() or 0,
            memory_mb=mem_kb // 1024,
            virtualization=_virtualization(),
            cmdline=self.read_text("/proc/cmdline").strip(),
        )

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    def put_file(self, path: str, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)


#: how long a command stopped early gets, with everything it started, to exit on SIGTERM
#: before SIGKILL
STOP_GRACE_S = 5.0
#: how long to wait for SIGKILLed processes to be gone (only one stuck in uninterruptible
#: sleep takes longer)
_KILL_WAIT_S = 2.0
#: the signals tuner/cli.py turns into a KeyboardInterrupt (an orderly stop)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _StopSignalsHeld:
    """Within the block SIGINT, SIGTERM and SIGHUP are noted, and delivered when it is left.

    Around the start of a child: the KeyboardInterrupt ostune raises for them, landing between
    the fork and the caller holding the Popen, would leave a child that nobody stops. Handlers
    (and so that exception) only ever run in the main thread: elsewhere there is nothing to hold.
    """

    def __init__(self) -> None:
        self._held: list[int] = []
        self._previous: dict[int, Any] = {}

    def _hold(self, signum: int, _frame: FrameType | None) -> None:
        self._held.append(signum)

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            for sig in _STOP_SIGNALS:
                previous = signal.getsignal(sig)
                if previous is None:
                    continue  # a handler from outside Python: it could not be put back
                # noted before the swap: an interrupt right after it still finds it restored
                self._previous[sig] = previous
                signal.signal(sig, self._hold)
        except BaseException:
            self._restore()
            raise

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
        for sig in dict.fromkeys(self._held):
            signal.raise_signal(sig)  # its own handler now: ostune's raises KeyboardInterrupt


@contextlib.contextmanager
def own_session(argv: list[str], **popen_kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """A child started in a session of its own, for the block to wait for. If the block raises
    (a timeout, an interrupt, an error) the session is stopped before the exception goes on.

    Its own session, because ostune stops it, not the terminal: a `sh -c` command's benchmark,
    and what that started in the background (where sh ignores SIGINT) or in a process group of
    its own (GNU timeout makes one), would outlive a stop that reached only the shell. A Ctrl-C
    typed at the terminal reaches ostune alone, which stops the session here. And it has no
    controlling terminal to block on."""
    proc: subprocess.Popen[Any] | None = None
    try:
        with _StopSignalsHeld():
            proc = subprocess.Popen(argv, start_new_session=True, **popen_kwargs)
        yield proc
    except BaseException:
        if proc is not None:
            stop_session(proc)
        raise
    finally:
        if proc is not None:
            _close_pipes(proc)


def stop_session(proc: subprocess.Popen[Any], grace_s: float = STOP_GRACE_S) -> None:
    """Stop a child started by own_session and every process of its session: SIGTERM, SIGKILL to
    what is left after grace_s, then reap the child.

    A process gets into a session only by being forked in it, so the session holds the child's
    descendants: all but those that made sessions of their own (daemons). The child is reaped
    last: until then its pid, the session's id, cannot be given to another process."""
    sid = proc.pid
    gone = False
    try:
        _signal_all(_session_members(sid), signal.SIGTERM)
        gone = _session_gone_within(sid, grace_s)
    finally:  # also when a second interrupt cuts the grace short
        if not gone:
            _session_gone_within(sid, _KILL_WAIT_S, kill=True)
        proc.wait()


def _terminate_server(child: subprocess.Popen[Any], timeout_s: float) -> None:
    """Stop a server started by spawn: SIGTERM to the server alone (its own shutdown stops its
    helpers in order), SIGKILL after timeout_s; then SIGKILL to whatever is left in its session,
    such as the snapshot child of a redis-server that had to be killed."""
    if child.returncode is not None:
        return  # reaped long ago: its pid, and so its session id, may be another process's by now
    try:
        os.kill(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _exits_within(child.pid, timeout_s)
    # not reaped yet (a zombie at most), so the session id is still the server's
    _session_gone_within(child.pid, _KILL_WAIT_S, kill=True)
    child.wait()


def _terminate_by_pid(pid: int, timeout_s: float) -> None:
    """Stop a process this object did not start (no Popen to reap it, no session known to be its)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _exits_within(pid: int, timeout_s: float) -> bool:
    """Whether this child exits within timeout_s; it is left unreaped (WNOWAIT), keeping its pid."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True  # already reaped
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _session_gone_within(sid: int, timeout_s: float, *, kill: bool = False) -> bool:
    """Wait for the session's processes to be gone. kill: SIGKILL them, again at every look, so
    that none forked in the meantime is missed (SIGTERM goes once: a second one can cut short the
    clean exit the first asked for)."""
    deadline = time.monotonic() + timeout_s
    while members := _session_members(sid):
        if kill:
            _signal_all(members, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _session_members(sid: int) -> list[int]:
    """The running processes of a session. Zombies do not count: where PID 1 does not reap
    orphans (many containers) an exited grandchild stays a zombie for good."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # gone since it was listed
        except PermissionError:
            pass  # it runs as another user (a setuid program): beyond ostune's reach


def _pid_alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (state, ppid, pgrp, session, …); empty once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):  # stdin may still hold input for a dead reader
                stream.close()


def owned_tempdir(prefix: str, parent: str | None = None) -> str:
    """A new private directory in `parent` (default the temp dir), carrying this process's
    identity so that `reap_stale_workdirs` can remove it once this process is gone without having
    cleaned up."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    Path(path, WORKDIR_OWNER_FILE).write_text(owner_record(ProcessIdentity.current()))
    return path


def remove_owned_tree(path: str) -> None:
    """Remove a directory tree; a work dir's owner record goes last, so a removal cut short (a
    kill -9 halfway through a large data directory, a busy mount inside) leaves a directory the
    next command still recognizes and finishes, not an anonymous half."""
    if Path(path, WORKDIR_OWNER_FILE).is_file():
        for entry in os.scandir(path):
            if entry.name == WORKDIR_OWNER_FILE:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
        if os.listdir(path) != [WORKDIR_OWNER_FILE]:
            return  # something could not go: keep the record, so it is retried later
    shutil.rmtree(path, ignore_errors=True)


def reap_stale_workdirs(parent: str | None = None) -> list[str]:
    """Remove the work directories (server data, logs) of ostune processes that died without
    cleaning up (kill -9, power loss); return their paths. Only directories carrying an owner
    record whose owner is gone for good are touched: ones in use, and ones ostune did not make,
    stay."""
    removed: list[str] = []
    root = Path(parent or tempfile.gettempdir())
    try:
        entries = sorted(root.glob("ostune-*"))
    except OSError:
        return removed
    for path in entries:
        try:
            alive = parse_owner((path / WORKDIR_OWNER_FILE).read_text()).is_alive()
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive is False:
            remove_owned_tree(str(path))
            if not path.exists():
                removed.append(str(path))
    return removed
