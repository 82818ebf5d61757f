"""Hosts reached over SSH: SshHost (a real machine, boot parameters via GRUB) and the shared
RemoteHost runtime that QemuHost reuses.

Every runtime primitive goes over one persistent fabric Connection (paramiko). Commands are argv
lists quoted with shlex.join, so values can never inject shell syntax. A command's environment and
stdin travel in private files (SshSession.stage), never on a command line. Host keys are pinned:
unknown keys are refused unless the caller opts in.
"""

from __future__ import annotations

import getpass
import logging
import re
import shlex
import socket
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Mapping, Sequence
from urllib.parse import urlsplit

from targets.hosts.base import CommandResult, Host, HostFacts, SpawnedProcess
from targets.hosts.remote_lock import RemoteKernelLock
from targets.hosts.workdir_records import WORKDIR_OWNER_FILE, WORKDIR_PROCESSES_FILE, owner_record, parse_listing
from tuner.errors import (ApplyError, BadInputError, HostError, HostOperationError, HostUnreachableError,
                          KnobUnavailableError)
from tuner.ownership import ProcessIdentity

#: characters allowed in one kernel command-line token we pass on (QEMU -append, GRUB drop-in)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.,:=/+@%~\-\[\]]+$")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: where a command's private files (its environment, its stdin) are staged
_STAGING_ROOT = "/tmp"

# `sh -c _ENV_WRAPPER sh ENV_FILE PROGRAM ARGS...`, run inside sudo (whose env_reset would drop
# variables set before it): the values reach PROGRAM's environment without being on any command
# line, where every user of the host sees them (ps, /proc/PID/cmdline) and sudo logs them. The
# file is opened and unlinked before anything in it takes effect, so a PATH or LD_PRELOAD it sets
# cannot change which rm runs; it is then read through the open descriptor. A file that cannot be
# read is exit 125, env(1)'s own failure: a missing program stays 127 and the program's code its own.
_ENV_WRAPPER = 'command exec 3< "$1" && rm -f -- "$1" || exit 125; shift; . /proc/self/fd/3; exec "$@" 3<&-'


def _env_file_text(env: Mapping[str, str]) -> str:
    """The lines _ENV_WRAPPER sources: one export per variable, the value shell-quoted."""
    lines = []
    for name, value in env.items():
        # fullmatch: `$` would let a trailing newline through, and the name onto a line of its own
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            raise BadInputError(f"bad environment variable name {name!r}; use letters, digits and _, "
                                "not starting with a digit")
        text = str(value)
        if "\0" in text:
            raise BadInputError(f"environment variable {name} holds a NUL byte, which no environment can carry")
        lines.append(f"export {name}={shlex.quote(text)}\n")
    return "".join(lines)

GRUB_DROPIN = "/etc/default/grub.d/99-ostune.cfg"
#: the first words of every drop-in ostune writes
DROPIN_MARK = "# Written by ostune"


def is_ostune_dropin(text: str | None) -> bool:
    return text is not None and text.startswith(DROPIN_MARK)


def check_boot_tokens(tokens: Sequence[str]) -> tuple[str, ...]:
    """Validate kernel command-line tokens; they must be safe inside a double-quoted shell string."""
    out: list[str] = []
    for token in tokens:
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise BadInputError(
                f"boot token {token!r} is not a plain kernel parameter; valid: one word of "
                "letters, digits and _.,:=/+@%~-[] such as 'mitigations=off' or "
                "'sysctl.vm.swappiness=10'"
            )
        out.append(token)
    return tuple(out)


def _workdir_root(parent: str | None) -> str:
    """The directory work dirs go in, without its trailing slash ('' for /)."""
    if parent is None:
        return "/tmp"
    if not parent.startswith("/"):
        raise BadInputError(f"work directory parent {parent!r} on a remote host must be an absolute path")
    return parent.rstrip("/")


#: a command given no timeout of its own still ends after this long: on a host that froze (its
#: kernel hung, its VM paused) nothing else would ever end it
DEFAULT_COMMAND_TIMEOUT_S = 3600.0
#: a command that ran past its timeout is ended on the host this much later (closing its channel
#: here does not end it there)
REMOTE_GRACE_S = 5.0
#: SSH keepalive interval: NAT and firewalls drop a connection idle for a long trial otherwise
KEEPALIVE_S = 15
#: an SFTP request (staging a command's private files) unanswered for this long: the host is gone
SFTP_TIMEOUT_S = 60.0
#: a staging directory this old is a leftover (see RemoteHost._reap_stale_staging)
STALE_STAGING_S = 24 * 3600.0


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class _Deadline:
    """Closes the session's connection when the block outlasts `seconds`, and then raises
    HostUnreachableError. A backstop for paramiko's waits that have no timeout of their own (a
    command's start, an SFTP handshake): on a host that froze at that moment they would wait
    forever; closing the transport wakes them."""

    def __init__(self, session: "SshSession", seconds: float, what: str) -> None:
        self.session, self.seconds, self.what = session, seconds, what
        self._expired = threading.Event()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> "_Deadline":
        conn = self.session._conn
        transport = conn.client.get_transport() if conn is not None else None
        if transport is not None:
            def expire() -> None:
                self._expired.set()
                transport.close()

            self._timer = threading.Timer(self.seconds, expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if self._timer is not None:
            self._timer.cancel()
        if self._expired.is_set():
            self.session.close()
            raise HostUnreachableError(f"{self.session.label} did not answer within {self.seconds:g} s "
                                       f"({self.what})") from exc


def _ended_on_the_host_after(command: str, limit_s: float) -> str:
    """`command` under the host's `timeout` (coreutils or busybox), which ends it with its process
    group `limit_s` after it starts (KILL 5 s after TERM); as it is where there is none. A command
    left running past its timeout keeps loading the host the next trials measure, and holds one of
    sshd's sessions on the connection (MaxSessions, 10 by default), refusing new commands."""
    quoted = shlex.quote(command)
    return (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {limit_s:g} \"${{SHELL:-sh}}\" -c {quoted}; "
            f"else exec sh -c {quoted}; fi")


class SshSession:
    """One persistent SSH connection with pinned host keys (wraps fabric.Connection)."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        *,
        key_path: str | None = None,
        known_hosts_path: str | None = None,
        host_key_alias: str | None = None,
        accept_unknown_host_key: bool = False,
        load_system_host_keys: bool = True,
        use_ssh_config: bool = True,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key_path = key_path
        self.known_hosts_path = known_hosts_path
        self.host_key_alias = host_key_alias
        self.accept_unknown_host_key = accept_unknown_host_key
        self.load_system_host_keys = load_system_host_keys and host_key_alias is None
        self.use_ssh_config = use_ssh_config
        self.connect_timeout_s = connect_timeout_s
        self._conn = None  # fabric.Connection
        self._sftp_ready = False  # its SFTP channel's timeout set

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def _new_connection(self, timeout_s: float):
        import fabric
        import paramiko

        config = fabric.Config(overrides={"load_ssh_configs": self.use_ssh_config})
        connect_kwargs: dict[str, object] = {
            "banner_timeout": timeout_s,
            "auth_timeout": timeout_s,
            "look_for_keys": self.key_path is None,
            "allow_agent": self.key_path is None,
        }
        if self.key_path:
            connect_kwargs["key_filename"] = [self.key_path]
        conn = fabric.Connection(
            self.host,
            user=self.user,
            port=self.port,
            config=config,
            connect_timeout=max(1, int(timeout_s)),
            connect_kwargs=connect_kwargs,
        )
        client = conn.client
        if self.load_system_host_keys:
            try:
                client.load_system_host_keys()
            except (OSError, paramiko.SSHException):
                pass
        host_keys = client.get_host_keys()
        if self.known_hosts_path:
            try:
                # HostKeys.load, not client.load_host_keys: never rewrite the user's file
                host_keys.load(self.known_hosts_path)
            except (OSError, paramiko.SSHException) as exc:
                raise HostError(f"cannot read known_hosts file {self.known_hosts_path}: {exc}") from exc
        if self.host_key_alias:
            pinned = host_keys.lookup(self.host_key_alias)
            if not pinned:
                raise HostError(
                    f"host_key_alias {self.host_key_alias!r}: no key under that name in "
                    f"{self.known_hosts_path or 'the known_hosts files'}; add the host's key under it "
                    "(ssh-keyscan HOST, the name replaced by the alias) or give the alias its file holds "
                    "(for ostune's QEMU guest: rebuild the image, whose known_hosts is made with it)"
                )
            name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
            for keytype, key in pinned.items():
                host_keys.add(name, keytype, key)
        client.set_missing_host_key_policy(
            paramiko.AutoAddPolicy() if self.accept_unknown_host_key else paramiko.RejectPolicy()
        )
        return conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_connected

    def open(self, timeout_s: float | None = None) -> None:
        """Connect (no-op if connected). Raises HostError with the reason on failure."""
        if self.connected:
            return
        import paramiko

        self.close()
        timeout = timeout_s if timeout_s is not None else self.connect_timeout_s
        conn = self._new_connection(timeout)
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            conn.close()
            raise HostError(
                f"host key of {self.label} does not match the pinned key (possible "
                f"man-in-the-middle, or the machine was reinstalled): {exc}"
            ) from exc
        except paramiko.SSHException as exc:
            conn.close()
            if "not found in known_hosts" in str(exc) or "known_hosts" in str(exc):
                raise HostError(
                    f"host key of {self.label} is unknown; add it to known_hosts (ssh-keyscan) "
                    "or pass accept_unknown_host_key=True"
                ) from exc
            if isinstance(exc, paramiko.AuthenticationException) and "timeout" not in str(exc).lower():
                # refused credentials; an unanswered login ("Authentication timeout.") is a host
                # too busy or gone to answer
                raise HostError(f"SSH to {self.label} failed: {exc or type(exc).__name__}") from exc
            raise HostUnreachableError(f"SSH to {self.label} failed: {exc or type(exc).__name__}") from exc
        except (OSError, EOFError, socket.timeout) as exc:
            conn.close()
            raise HostUnreachableError(f"cannot connect to {self.label}: {exc or type(exc).__name__}") from exc
        transport = conn.client.get_transport()
        if transport is not None:
            # paramiko waits an hour for a new channel by default, and every command opens one:
            # a frozen host would hold each command that long
            transport.channel_timeout = self.channel_timeout_s
            transport.set_keepalive(KEEPALIVE_S)
        self._conn = conn
        self._sftp_ready = False

    @property
    def channel_timeout_s(self) -> float:
        """How long a new channel (every command opens one) may take before the host counts as
        gone: three connect timeouts, as a loaded host can be slow to answer."""
        return 3 * self.connect_timeout_s

    def _sftp(self):  # type: ignore[no-untyped-def]
        """The connection's SFTP client, whose requests time out (paramiko's wait forever)."""
        assert self._conn is not None
        sftp = self._conn.sftp()
        if not self._sftp_ready:
            sftp.get_channel().settimeout(SFTP_TIMEOUT_S)
            self._sftp_ready = True
        return sftp

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def stage(self, files: Mapping[str, str]) -> str:
        """A new directory that only this SSH user can enter (0700), holding `files` (name ->
        text, each 0600); returns its path. Hand it to exec(staged=...), which removes it.

        Made over SFTP, not by a command, so the contents are never on a command line; the
        random name is created exclusively, so nobody can have prepared it or a file in it."""
        self.open()
        path = f"{_STAGING_ROOT}/ostune-private-{uuid.uuid4().hex}"
        self._sftp_do(f"make a private directory in {_STAGING_ROOT}", lambda sftp: sftp.mkdir(path, 0o700))
        try:
            for name, text in files.items():
                self._upload(f"{path}/{name}", text)
        except HostError:
            self._discard(path)
            raise
        return path

    def _upload(self, path: str, text: str) -> None:
        def upload(sftp) -> None:  # type: ignore[no-untyped-def]
            with sftp.open(path, "wx") as handle:
                handle.chmod(0o600)  # before the first byte: the server's umask may leave it 0644
                handle.write(text.encode())

        self._sftp_do(f"upload {path}", upload)

    def _sftp_do(self, what: str, action: Callable[[object], None]) -> None:
        """`action(sftp_client)`; an unanswered request or a dropped connection is the host gone
        (HostUnreachableError), anything else the operation refused (HostError)."""
        import paramiko

        assert self._conn is not None
        try:
            with _Deadline(self, SFTP_TIMEOUT_S + self.channel_timeout_s + 10, f"SFTP: {what}"):
                action(self._sftp())
        except socket.timeout as exc:
            self.close()
            raise HostUnreachableError(f"{self.label} did not answer an SFTP request within {SFTP_TIMEOUT_S:g} s "
                                       f"(trying to {what})") from exc
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(exc) from exc
        except OSError as exc:
            raise HostOperationError(f"cannot {what} on {self.label}: {exc or type(exc).__name__}") from exc

    def _discard(self, staged: str) -> None:
        """Remove a staged directory that its command line will not remove (it never ran, or was
        given up on). Best effort: with the connection gone nothing can be done from here."""
        if not self.connected:
            return
        assert self._conn is not None
        try:
            self._conn.run(f"rm -rf -- {shlex.quote(staged)}", hide=True, warn=True, pty=False,
                           in_stream=False, timeout=30)
        except Exception:
            pass

    def exec(
        self,
        command: str,
        *,
        timeout_s: float | None = None,
        input_text: str | None = None,
        staged: str | None = None,
        shown: str | None = None,
    ) -> tuple[int, str, str]:
        """Run one shell command line; returns (exit_code, stdout, stderr).

        `staged`: a directory from stage() that the command reads, removed as soon as the command
        ends (or fails to start). `shown` stands for the command in messages (the command line
        without the plumbing that carries its environment)."""
        import paramiko
        from invoke.exceptions import CommandTimedOut

        shown = (shown or command)[:160]
        try:
            self.open()
        except HostError:
            if staged is not None:
                self._discard(staged)
            raise
        assert self._conn is not None
        redirect = ""
        try:
            if input_text is not None:
                # invoke never sends EOF after an in_stream, so `redis-cli --pipe` and friends would
                # wait for more input until the timeout: upload the input and redirect from it. In
                # a private directory: the input can be a config file holding a password.
                if staged is None:
                    staged = self.stage({})
                stdin = f"{staged}/stdin"
                self._upload(stdin, input_text)
                redirect = f" < {shlex.quote(stdin)}"
        except HostError:
            if staged is not None:
                self._discard(staged)
            raise
        if staged is not None:
            command = f"{{ {command} ; }}{redirect}; rc=$?; rm -rf -- {shlex.quote(staged)}; exit $rc"
        limit_s = timeout_s if timeout_s is not None else DEFAULT_COMMAND_TIMEOUT_S
        command = _ended_on_the_host_after(command, limit_s + REMOTE_GRACE_S)
        started = time.monotonic()
        try:
            # the command's own timeout runs from its start; opening its channel may take another
            with _Deadline(self, limit_s + self.channel_timeout_s + 10, shown):
                result = self._conn.run(
                    command,
                    hide=True,
                    warn=True,
                    pty=False,
                    in_stream=False,
                    timeout=limit_s,
                )
        except CommandTimedOut as exc:
            raise self._timed_out(limit_s, shown, staged) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from exc
        if result.return_code in (None, -1):
            # paramiko's -1: the channel closed without an exit status
            if time.monotonic() - started >= limit_s:
                # invoke's timer closed it, and was still closing it when the wait ended, so
                # invoke saw no timeout (its own race)
                raise self._timed_out(limit_s, shown, staged)
            if not self._answers():
                # a command killed by a signal leaves -1 too, but only a dead connection leaves
                # no new channel
                raise self._lost(EOFError(f"the connection closed under a command ({shown})"))
        code = result.return_code if result.return_code is not None else 255
        return code, result.stdout, result.stderr

    def _timed_out(self, limit_s: float, shown: str, staged: str | None) -> HostError:
        """The error for a command that ran past its `limit_s`: the host's, when no new channel
        opens either."""
        if not self._answers():
            self.close()
            return HostUnreachableError(f"{self.label} stopped answering: a command ran past its "
                                        f"{limit_s:g} s and no new channel opens ({shown})")
        if staged is not None:
            # the command may go on running: its stdin stays readable through the open
            # descriptor, and its environment was read and unlinked when it started
            self._discard(staged)
        return HostOperationError(f"command on {self.label} timed out after {limit_s:g} s: {shown}")

    def _lost(self, exc: BaseException) -> HostUnreachableError:
        """The error for a connection that broke under a call; the connection is closed, so the
        next call makes a new one."""
        self.close()
        return HostUnreachableError(f"lost SSH connection to {self.label}: {exc or type(exc).__name__}")

    def _answers(self) -> bool:
        """Whether the host still opens a channel on this connection (within the channel timeout):
        a command that timed out on a live host is the command's own doing, on a frozen one not."""
        import paramiko

        transport = self._conn.client.get_transport() if self._conn is not None else None
        if transport is None or not transport.is_active():
            return False
        try:
            transport.open_session(timeout=self.channel_timeout_s).close()
        except paramiko.ChannelException:
            # refused, so answering: sshd's MaxSessions, reached when commands that ran past their
            # timeout go on running there (closing a channel does not end its command)
            return True
        except (paramiko.SSHException, OSError, EOFError):
            return False
        return True

    def open_channel(self, command: str):  # type: ignore[no-untyped-def]
        """A command started on its own channel of this connection and left running: the caller
        talks to it (stdin, stdout) and closes it (the kernel lock's holding shell)."""
        import paramiko

        self.open()
        assert self._conn is not None
        try:
            transport = self._conn.client.get_transport()
            if transport is None:
                raise paramiko.SSHException("no transport")
            with _Deadline(self, 2 * self.channel_timeout_s + 10, "starting a command on its own channel"):
                channel = transport.open_session(timeout=self.channel_timeout_s)
                channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._lost(exc) from exc
        return channel


class RemoteHost(Host):
    """Host primitives implemented with shell one-liners over an SshSession.

    Subclasses set ``self._session`` and ``self._sudo`` (prefix ``sudo -n`` when not root).
    """

    _session: SshSession | None = None
    _sudo: bool = False

    # -- plumbing -----------------------------------------------------------------------------
    def _require_session(self) -> SshSession:
        if self._session is None:
            raise HostError(f"host {self.key} is not started; call start() first")
        return self._session

    def _command_line(self, argv: Sequence[str], *, env_file: str | None = None) -> str:
        """The remote command line of argv, under sudo when not root; with `env_file` (written
        by _env_file_text), the program starts with the variables it sets."""
        parts = [str(a) for a in argv]
        if not parts:
            raise BadInputError("empty command; give a program and its arguments")
        if env_file is not None:
            parts = ["sh", "-c", _ENV_WRAPPER, "sh", env_file, *parts]
        if self._sudo:
            parts = ["sudo", "-n", "--", *parts]
        return shlex.join(parts)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float | None = None,
        check: bool = True,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        session = self._require_session()
        command = shown = self._command_line(argv)
        started = time.monotonic()
        staged = None
        if env:
            staged = session.stage({"env": _env_file_text(env)})
            command = self._command_line(argv, env_file=f"{staged}/env")
        code, out, err = session.exec(command, timeout_s=timeout_s, input_text=input_text,
                                      staged=staged, shown=shown)
        result = CommandResult(
            argv=tuple(str(a) for a in argv),
            exit_code=code,
            stdout=out,
            stderr=err,
            duration_s=time.monotonic() - started,
        )
        if check and code != 0:
            raise HostOperationError(
                f"{shlex.join(result.argv)[:160]} failed on {self.key} (exit {code}): "
                f"{_last_line(err) or _last_line(out) or 'no output'}"
            )
        return result

    def open_channel(self, command_line: str):  # type: ignore[no-untyped-def]
        """`command_line` (from _command_line) on a channel of its own, left running."""
        return self._require_session().open_channel(command_line)

    def _sh(self, script: str, *args: str, timeout_s: float | None = 60.0) -> CommandResult:
        return self.run(["sh", "-c", script, "sh", *args], check=False, timeout_s=timeout_s)

    # -- files ----------------------------------------------------------------------------------
    def read_text(self, path: str) -> str:
        result = self.run(["cat", "--", path], check=False, timeout_s=60)
        if not result.ok:
            raise KnobUnavailableError(
                f"cannot read {path} on {self.key}: {_last_line(result.stderr) or 'exit ' + str(result.exit_code)}"
            )
        return result.stdout

    def write_text(self, path: str, text: str) -> None:
        # tee reports the kernel's errno ("Invalid argument", "Permission denied") by name
        result = self._sh('printf %s "$1" | tee -- "$2" > /dev/null', text, path)
        if not result.ok:
            reason = _last_line(result.stderr) or f"exit {result.exit_code}"
            if "No such file or directory" in reason:
                raise KnobUnavailableError(f"{path} does not exist on {self.key}")
            raise ApplyError(f"{self.key} refused {text!r} for {path}: {reason}")

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False, timeout_s=60).ok

    def make_workdir(self, prefix: str, *, parent: str | None = None) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]*$", prefix):
            raise BadInputError(f"bad workdir prefix {prefix!r}; use letters, digits, _ . -")
        root = _workdir_root(parent)
        # the owner record goes in with the directory: a kill -9 between the two would leave a
        # directory no later command could tell from someone else's
        script = 'd=$(mktemp -d "$1") && printf %s "$2" > "$d/$3" && echo "$d"'
        result = self._sh(script, f"{root}/ostune-{prefix}-XXXXXX", owner_record(ProcessIdentity.current()),
                          WORKDIR_OWNER_FILE)
        if not result.ok or not result.stdout.strip().startswith(f"{root}/ostune-"):
            raise HostOperationError(f"cannot make a work directory under {root} on {self.key}: "
                                     f"{_last_line(result.stderr) or 'exit ' + str(result.exit_code)}")
        return result.stdout.strip()

    def keep_workdir(self, path: str) -> None:
        self.run(["rm", "-f", "--", f"{path.rstrip('/')}/{WORKDIR_OWNER_FILE}"], check=False, timeout_s=60)

    def reap_stale_workdirs(self, parent: str | None = None) -> list[str]:
        """Stop the servers and remove the work directories that ostune processes of this machine
        left on this host when they died without cleaning up (kill -9, power loss): a server
        started over SSH outlives its owner, holding its port and memory and adding load to the
        next run's measurements. Directories whose owner is alive, or ran on another machine
        (cannot be judged from here), stay. Returns one line per directory removed."""
        listing = self._sh(
            'for d in "$3"/ostune-*; do f="$d/$1"; [ -f "$f" ] || continue; '
            'printf "%s\t%s\t%s\n" "$d" "$(tr -d "\t\n" < "$f")" '
            '"$(tr "\n" ";" < "$d/$2" 2>/dev/null)"; done',
            WORKDIR_OWNER_FILE, WORKDIR_PROCESSES_FILE, _workdir_root(parent),
        )
        removed: list[str] = []
        for workdir in parse_listing(listing.stdout):
            if workdir.owner.is_alive() is not False:
                continue
            stopped = [pid for pid, ticks in workdir.processes if self._stop_if_same(pid, ticks)]
            self.remove_tree(workdir.path)
            if not self.exists(workdir.path):
                what = f" (stopped pid {', '.join(map(str, stopped))})" if stopped else ""
                removed.append(f"{workdir.path} on {self.key}{what}")
        if parent is None:
            removed += self._reap_stale_staging()
        return removed

    def _reap_stale_staging(self) -> list[str]:
        """Private staging directories (SshSession.stage) a day old: a command's own line removes
        its directory when it ends, so one left is from a connection that dropped between the
        upload and the command (its environment file can hold a database password). No command
        runs anywhere near a day, so none of them is in use."""
        result = self._sh('find "$1" -maxdepth 1 -type d -name "ostune-private-*" -mmin +"$2" '
                          '-print -exec rm -rf -- {} + 2>/dev/null; true',
                          _STAGING_ROOT, str(int(STALE_STAGING_S // 60)))
        return [f"{path} on {self.key} (private files of a command whose connection dropped)"
                for path in result.stdout.split() if path.startswith(f"{_STAGING_ROOT}/ostune-private-")]

    def _stop_if_same(self, pid: int, start_ticks: int) -> bool:
        """`terminate` the process and its session, only if `pid` is still the process that was
        started (same start ticks): a recycled pid is left alone."""
        same = self._sh('[ "$(sed "s/.*) //" /proc/"$1"/stat 2>/dev/null | cut -d" " -f20)" = "$2" ]',
                        str(pid), str(start_ticks)).ok
        if same:
            self.terminate(SpawnedProcess(pid=pid, argv=(), log_path=""))
        return same

    def remove_tree(self, path: str) -> None:
        if path.rstrip("/") in ("", "/") or not path.startswith("/"):
            raise BadInputError(f"refusing to remove {path!r}; give an absolute path below /")
        # the owner record goes last (see targets.hosts.local.remove_owned_tree); kept when
        # anything else could not be removed
        self._sh('find "$1" -mindepth 1 -maxdepth 1 ! -name "$2" -exec rm -rf -- {} + 2>/dev/null; '
                 'if [ -f "$1/$2" ] && [ -n "$(find "$1" -mindepth 1 -maxdepth 1 ! -name "$2" -print -quit)" ]; '
                 'then exit 0; fi; rm -rf -- "$1"', path, WORKDIR_OWNER_FILE, timeout_s=300)

    # -- processes ------------------------------------------------------------------------------
    def spawn(self, argv: Sequence[str], *, log_path: str, cwd: str | None = None) -> SpawnedProcess:
        # Started in an ostune work dir, the process is also recorded there (pid and start ticks),
        # so a later command can stop it if this one dies by kill -9 (reap_stale_workdirs).
        script = (
            'dir=$1; log=$2; owner=$3; processes=$4; shift 4; '
            'if [ -n "$dir" ]; then cd "$dir" || exit 97; fi; '
            'setsid "$@" > "$log" 2>&1 < /dev/null & p=$!; '
            'if [ -n "$dir" ] && [ -f "$dir/$owner" ]; then '
            'echo "$p $(sed "s/.*) //" /proc/$p/stat | cut -d" " -f20)" >> "$dir/$processes"; fi; echo $p'
        )
        result = self._sh(script, cwd or "", log_path, WORKDIR_OWNER_FILE, WORKDIR_PROCESSES_FILE,
                          *[str(a) for a in argv])
        pid_text = result.stdout.strip()
        if not result.ok or not pid_text.isdigit():
            raise HostOperationError(
                f"cannot start {shlex.join(argv)[:120]} on {self.key}: "
                f"{_last_line(result.stderr) or 'exit ' + str(result.exit_code)}"
            )
        return SpawnedProcess(pid=int(pid_text), argv=tuple(argv), log_path=log_path)

    def is_alive(self, proc: SpawnedProcess) -> bool:
        script = 'kill -0 "$1" 2>/dev/null || exit 1; s=$(sed "s/.*) //" /proc/"$1"/stat | cut -c1); [ "$s" != Z ]'
        return self._sh(script, str(proc.pid)).ok

    def terminate(self, proc: SpawnedProcess, *, timeout_s: float = 10.0) -> None:
        script = (
            'p=$1; n=$2; kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || exit 0; '
            'i=0; while kill -0 "$p" 2>/dev/null; do '
            '  s=$(sed "s/.*) //" /proc/"$p"/stat 2>/dev/null | cut -c1); [ "$s" = Z ] && exit 0; '
            '  i=$((i+1)); if [ "$i" -gt "$n" ]; then kill -KILL -- "-$p" 2>/dev/null; '
            '  kill -KILL "$p" 2>/dev/null; exit 0; fi; sleep 0.1; done'
        )
        self._sh(script, str(proc.pid), str(max(1, int(timeout_s * 10))), timeout_s=timeout_s + 30)

    # -- facts ----------------------------------------------------------------------------------
    _FACTS_SCRIPT = (
        'echo "kernel=$(uname -r)"; echo "hostname=$(uname -n)"; '
        'echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"; '
        'echo "cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2-)"; '
        'echo "mem=$(grep MemTotal /proc/meminfo | tr -s " " | cut -d" " -f2)"; '
        'echo "virt=$(systemd-detect-virt 2>/dev/null || true)"; '
        'echo "cmdline=$(cat /proc/cmdline)"; '
        'echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"'
    )

    def facts(self) -> HostFacts:
        result = self._sh(self._FACTS_SCRIPT)
        values: dict[str, str] = {}
        for line in result.stdout.splitlines():
            name, _, value = line.partition("=")
            values[name] = value.strip()
        return HostFacts(
            hostname=values.get("hostname", ""),
            kernel=values.get("kernel", ""),
            cpu_model=values.get("cpu", ""),
            cpu_count=int(values.get("cpus") or 0),
            memory_mb=int(values.get("mem") or 0) // 1024,
            virtualization=values.get("virt", ""),
            cmdline=values.get("cmdline", ""),
            extra=self._extra_facts(),
        )

    def _extra_facts(self) -> dict[str, str]:
        return {"host_key": self.key}

    def boot_id(self) -> str:
        return self.read_text("/proc/sys/kernel/random/boot_id").strip()

    def cmdline_tokens(self) -> list[str]:
        return self.read_text("/proc/cmdline").split()

    def wait_for_ssh(
        self,
        deadline: float,
        *,
        abort: Callable[[], str | None] | None = None,
        attempt_timeout_s: float = 10.0,
        not_boot_id: str | None = None,
    ) -> str:
        """Poll until a real SSH command works (and the boot id differs from not_boot_id).

        Returns the boot id. ``abort`` returning a message stops waiting (raises HostError with it).
        A bare TCP connect is never taken as readiness: QEMU's user network accepts before the
        guest's sshd is up.
        """
        session = self._require_session()
        # refused/half-open connections are expected while booting: keep paramiko quiet
        transport_log = logging.getLogger("paramiko.transport")
        saved_level = transport_log.level
        transport_log.setLevel(logging.CRITICAL)
        try:
            return self._poll_ssh(session, deadline, abort, attempt_timeout_s, not_boot_id)
        finally:
            transport_log.setLevel(saved_level)

    def _poll_ssh(
        self,
        session: SshSession,
        deadline: float,
        abort: Callable[[], str | None] | None,
        attempt_timeout_s: float,
        not_boot_id: str | None,
    ) -> str:
        last_error = "no attempt yet"
        while True:
            if abort is not None:
                reason = abort()
                if reason:
                    raise HostError(reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HostError(f"{self.key} did not answer SSH in time; last error: {last_error}")
            try:
                session.open(timeout_s=max(1.0, min(attempt_timeout_s, remaining)))
                code, out, err = session.exec(
                    "cat /proc/sys/kernel/random/boot_id", timeout_s=max(1.0, min(30.0, remaining))
                )
                if code == 0 and out.strip() and out.strip() != not_boot_id:
                    return out.strip()
                last_error = "same boot id (not rebooted yet)" if code == 0 else _last_line(err)
                if code == 0:
                    session.close()
            except HostError as exc:
                last_error = str(exc)
                if "does not match the pinned key" in last_error or "is unknown" in last_error:
                    raise
                session.close()
            time.sleep(1.0)


class GrubBoot:
    """Boot parameters through a GRUB drop-in: write, update-grub, reboot, wait, verify."""

    def __init__(self, host: RemoteHost, *, reboot_timeout_s: float = 600.0) -> None:
        self.host = host
        self.reboot_timeout_s = reboot_timeout_s
        self._original: str | None | bool = False  # False = not recorded yet; None = absent
        self.applied: tuple[str, ...] | None = None

    def _read_dropin(self) -> str | None:
        result = self.host.run(["cat", "--", GRUB_DROPIN], check=False, timeout_s=60)
        return result.stdout if result.ok else None

    def _record_original(self) -> None:
        if self._original is False:
            if not self.host.exists("/etc/default/grub"):
                raise KnobUnavailableError(
                    f"{self.host.key} has no /etc/default/grub; boot parameters over SSH need a "
                    "GRUB-booted Debian/Ubuntu-style host (update-grub, /etc/default/grub.d)"
                )
            current = self._read_dropin()
            # ostune's own drop-in is never the host's state to put back: a dead run's leftover
            self._original = None if is_ostune_dropin(current) else current

    def remove_leftover(self) -> bool:
        """Remove the drop-in of a run that died (kill -9) before putting it back, and reboot the
        host into its own command line; True if there was one. Only under the machine's kernel
        lock: then no live run's drop-in can be there. Before a run it matters as the journal
        does for runtime values: the probe would take the dead run's boot values for the host's
        own, measure them as the baseline and "restore" them at the end."""
        if not is_ostune_dropin(self._read_dropin()):
            return False
        self._put_back(None)
        return True

    def _put_back(self, content: str | None) -> None:
        """Install the drop-in state `content` (None: no drop-in), reboot into it, and forget
        what was applied and recorded: the host is back to a state of its own."""
        self._install(content)
        self.reboot()
        self._original = False
        self.applied = None

    @staticmethod
    def dropin_text(tokens: Sequence[str]) -> str:
        joined = " ".join(check_boot_tokens(tokens))
        return (
            f"{DROPIN_MARK}: extra kernel parameters for the trial being measured.\n"
            "# ostune restores the previous state at the end; to undo by hand delete this file\n"
            "# and run update-grub.\n"
            f'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT {joined}"\n'
        )

    def _install(self, content: str | None) -> None:
        if content is None:
            self.host.run(["rm", "-f", "--", GRUB_DROPIN], timeout_s=60)
        else:
            self.host.run(["mkdir", "-p", "/etc/default/grub.d"], timeout_s=60)
            self.host.run(["tee", "--", GRUB_DROPIN], input_text=content, timeout_s=60)
        result = self.host._sh(
            "if command -v update-grub >/dev/null 2>&1; then update-grub; "
            "else grub-mkconfig -o /boot/grub/grub.cfg; fi",
            timeout_s=600,
        )
        if not result.ok:
            raise ApplyError(
                f"update-grub failed on {self.host.key}: {_last_line(result.stderr) or _last_line(result.stdout)}"
            )

    def reboot(self) -> str:
        """Reboot and wait for SSH with a new boot id; returns the new boot id."""
        lock = getattr(self.host, "kernel_lock", None)  # held across the reboot (SshHost.take_kernel_lock)
        lost = lock.lost() if lock is not None else None
        if lost:  # another process may be tuning the machine now: rebooting it would wreck its run
            raise HostError(f"not rebooting {self.host.key}: {lost}")
        old = self.host.boot_id()
        session = self.host._require_session()
        try:
            session.exec(shlex.join((["sudo", "-n"] if self.host._sudo else []) + [
                "sh", "-c", "(sleep 1; systemctl reboot || reboot) >/dev/null 2>&1 &"]), timeout_s=30)
        except HostError:
            pass  # the connection may drop while the command returns
        session.close()
        deadline = time.monotonic() + self.reboot_timeout_s
        try:
            new = self.host.wait_for_ssh(deadline, not_boot_id=old)
        except HostError as exc:
            raise HostError(
                f"{self.host.key} did not come back within {self.reboot_timeout_s:.0f} s after "
                f"reboot: {exc}"
            ) from exc
        if lock is not None:
            lock.reacquire()  # its holding shell died with the old boot (HostError if it cannot be)
        return new

    def apply(self, tokens: Sequence[str]) -> bool:
        tokens = check_boot_tokens(tokens)
        if self.applied is not None and tokens == self.applied:
            return False
        if not tokens and self._original is False:
            # never changed anything here: leave GRUB alone (hosts without GRUB work too)
            self.applied = ()
            return False
        self._record_original()
        assert self._original is not False
        if not tokens:
            wanted: str | None = self._original  # type: ignore[assignment]
        else:
            wanted = self.dropin_text(tokens)
        current = self._read_dropin()
        have = self.host.cmdline_tokens()
        if current == wanted and all(t in have for t in tokens):
            self.applied = tokens
            return False
        self._install(wanted)
        self.applied = None
        self.reboot()
        have = self.host.cmdline_tokens()
        missing = [t for t in tokens if t not in have]
        if missing:
            raise ApplyError(
                f"{self.host.key} rebooted but /proc/cmdline lacks {' '.join(missing)} "
                f"(is GRUB's default entry the one that boots? cmdline: {' '.join(have)[:200]})"
            )
        self.applied = tokens
        return True

    def restore(self) -> bool:
        """Put the drop-in back as it was before the first apply and reboot if it changed."""
        if self._original is False:
            return False
        original = self._original if isinstance(self._original, str) else None
        if self._read_dropin() == original:
            self._original = False
            self.applied = None
            return False
        self._put_back(original)
        return True


def parse_ssh_url(url: str) -> tuple[str, str, int]:
    """'ssh://user@host[:port]' -> (user, host, port). The user defaults to the local user."""
    hint = "expected ssh://user@host[:port], e.g. ssh://root@192.0.2.10:22"
    try:
        parts = urlsplit(url)
        port = parts.port or 22
    except ValueError as exc:
        raise BadInputError(f"bad SSH URL {url!r}: {exc}; {hint}") from exc
    if parts.scheme != "ssh":
        raise BadInputError(f"bad SSH URL {url!r}: scheme must be ssh://; {hint}")
    if not parts.hostname:
        raise BadInputError(f"bad SSH URL {url!r}: no host; {hint}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise BadInputError(f"bad SSH URL {url!r}: only user, host and port are allowed; {hint}")
    user = parts.username or getpass.getuser()
    return user, parts.hostname, port


class SshHost(RemoteHost):
    """A real machine over SSH. Boot parameters via a GRUB drop-in and a reboot."""

    supports_boot = True

    def __init__(
        self,
        url: str,
        key_path: str | None = None,
        accept_unknown_host_key: bool = False,
        known_hosts_path: str | None = None,
        connect_timeout_s: float = 10,
        *,
        host_key_alias: str | None = None,
        reboot_timeout_s: float = 600.0,
    ) -> None:
        user, host, port = parse_ssh_url(url)
        if key_path is not None and not Path(key_path).expanduser().is_file():
            raise BadInputError(f"SSH key {key_path} does not exist; give a private key file")
        self.user = user
        self.key = f"ssh://{user}@{host}:{port}"
        self._session = SshSession(
            host,
            port,
            user,
            key_path=str(Path(key_path).expanduser()) if key_path else None,
            known_hosts_path=known_hosts_path,
            host_key_alias=host_key_alias,
            accept_unknown_host_key=accept_unknown_host_key,
            connect_timeout_s=connect_timeout_s,
        )
        self._sudo = user != "root"
        self._checked = False
        self.grub = GrubBoot(self, reboot_timeout_s=reboot_timeout_s)
        #: held while a run or verify tunes this machine (take_kernel_lock)
        self.kernel_lock: RemoteKernelLock | None = None

    def take_kernel_lock(self, *, command: str, database: str,
                         log: Callable[[str], None] | None = None) -> RemoteKernelLock:
        """This machine's kernel lock (targets/hosts/remote_lock.py), shared with every ostune
        process tuning it, here or on other machines; kept across the reboots of boot changes
        and, when nobody took it in between, across a dropped connection (said through `log`)."""
        if self.kernel_lock is None:
            lock = RemoteKernelLock(self, on_release=self._forget_kernel_lock, log=log)
            self.kernel_lock = lock.acquire(command=command, database=database,
                                            identity=asdict(ProcessIdentity.current()))
        return self.kernel_lock

    def _forget_kernel_lock(self) -> None:
        self.kernel_lock = None

    def _require_session(self) -> SshSession:
        session = super()._require_session()
        if not self._checked:
            self._checked = True
            self._check_sudo(session)
        return session

    def _check_sudo(self, session: SshSession) -> None:
        if not self._sudo:
            return
        code, _out, err = session.exec("sudo -n true", timeout_s=30)
        if code != 0:
            self._checked = False
            raise HostError(
                f"user {self.user} on {self.key} needs passwordless sudo for kernel settings "
                f"(sudo -n true: {_last_line(err) or 'exit ' + str(code)}); add a NOPASSWD "
                "sudoers rule or connect as root"
            )

    def start(self, boot_tokens: Sequence[str] = ()) -> None:
        self._require_session().open()
        if boot_tokens:
            self.ensure_boot(boot_tokens)

    def ensure_boot(self, boot_tokens: Sequence[str]) -> bool:
        return self.grub.apply(boot_tokens)

    def restore_boot(self) -> bool:
        return self.grub.restore()

    def close(self) -> None:
        try:
            if self.kernel_lock is not None:
                self.kernel_lock.release()  # released, not dropped: the next holder would repair after us
        finally:
            if self._session is not None:
                self._session.close()
