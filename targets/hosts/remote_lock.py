"""The kernel lock of a machine reached over SSH: the same flock on the same file as
tuner/kernel_lock.py, taken by a shell on that machine that lives as long as this process's SSH
channel to it.

Why a held shell: an flock belongs to an open file, and the file must stay open on the remote
machine for as long as this process tunes it. The shell opens the lock file, takes the flock
(flock(1), util-linux), writes its holder's description and then waits on its stdin. When this
process releases the lock it sends RELEASE: the shell empties the file and exits. When this process
dies (kill -9) or its connection drops, sshd closes the shell's stdin, and the shell exits without
emptying the file: the next holder finds the description of a holder that did not release it,
exactly as on this machine. Because the file is the one a local ostune process on that machine
uses, a run from here and a run there exclude each other too: they change one kernel.

A dropped connection need not end the run: the lock file still holds this process's description
until somebody else takes the lock, so taking it again and finding that description (and only
that) proves nobody changed the kernel in between; anything else in it means somebody may have,
and the lock stays lost.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Callable

from tuner.errors import HostError, LockHeldError, OstuneError
from tuner.kernel_lock import DEFAULT_PATH, _parse, describe

if TYPE_CHECKING:
    from targets.hosts.ssh import RemoteHost

# exit 75: held by another process (EX_TEMPFAIL); any other flock failure (no flock at all: 127)
# is an error of its own, not a holder. `read` returns at RELEASE, at RESTORE (a backed-out take
# puts the description it found back, for the next holder to repair after), or at end of input
# (the channel closed: this process or its connection is gone).
_HOLD_SCRIPT = """
f="$1"
command -v flock > /dev/null || { echo "flock: not found" >&2; exit 4; }
mkdir -p "$(dirname "$f")" || exit 3
exec 9<>"$f" || exit 3
flock -n -E 75 9
rc=$?
if [ $rc = 75 ]; then printf 'HELD %s\\n' "$(cat "$f")"; exit 75; fi
if [ $rc != 0 ]; then exit $rc; fi
printf 'PREVIOUS %s\\n' "$(cat "$f")"
printf '%s' "$2" > "$f"
echo "LOCKED $$ $(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
read -r line
case "$line" in
  RELEASE) : > "$f" ;;
  "RESTORE "*) printf '%s' "${line#RESTORE }" > "$f" ;;
esac
"""

ANSWER_TIMEOUT_S = 30.0


class _HeldByOwnShell(LockHeldError):
    """The lock is held under this process's own description: by the shell of its dropped
    connection, which sshd has not ended yet."""

    def __init__(self, host_key: str) -> None:
        super().__init__(f"the kernel lock on {host_key} is still held by the shell of this process's dropped "
                         "SSH connection")


class RemoteKernelLock:
    """KernelLock's interface (acquire, release, previous) plus `lost()`, for a RemoteHost."""

    def __init__(self, host: "RemoteHost", path: str = str(DEFAULT_PATH),
                 on_release: Callable[[], None] | None = None, log: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.path = path
        #: called once released (SshHost forgets it: a later run takes a new one)
        self._on_release = on_release or (lambda: None)
        self._log = log or (lambda _text: None)
        self._channel = None  # paramiko Channel of the holding shell
        self._holder_pid: int | None = None  # of the holding shell, on that machine
        self._boot_id: str | None = None  # of that machine when the lock was taken
        self._doc: dict | None = None
        self._lost: str | None = None
        #: after acquire(): the description a holder that did not release it left, or None
        self.previous: dict | None = None

    def acquire(self, *, command: str, database: str, identity: dict) -> "RemoteKernelLock":
        """Take the lock at once or raise LockHeldError naming its holder. `identity`: who this
        process is (tuner.ownership.ProcessIdentity fields), so the next holder can tell whether
        a holder that did not release the lock is still alive."""
        if self._channel is not None:
            return self
        doc = {**identity, "command": command, "database": database, "host": self.host.key, "since": time.time()}
        self._doc = doc
        self._take(json.dumps(doc))
        return self

    def _take(self, description: str) -> None:
        argv = self.host._command_line(["sh", "-c", _HOLD_SCRIPT, "sh", self.path, description])
        channel = self.host.open_channel(argv)
        lines = channel.makefile("r")  # one buffered reader: a second would miss what the first read ahead
        try:
            channel.settimeout(ANSWER_TIMEOUT_S)
            answer = lines.readline().rstrip("\n")
            confirm, _, held_by = (lines.readline().strip() if answer.startswith("PREVIOUS") else "").partition(" ")
        except OSError as exc:  # socket.timeout included
            channel.close()
            raise HostError(f"no answer taking the kernel lock {self.path} on {self.host.key}: "
                            f"{exc or type(exc).__name__}") from None
        word, _, content = answer.partition(" ")
        if word == "HELD":
            channel.close()
            if (doc := _parse(content.encode())) is not None and doc == self._doc:
                raise _HeldByOwnShell(self.host.key)
            holder = describe(doc) if doc else "another ostune process"
            raise LockHeldError(f"the kernel of {self.host.key} is already being tuned by {holder}; one ostune "
                                "process at a time changes it, whatever its database — wait for it, or stop it")
        if word != "PREVIOUS":
            try:  # the shell has ended (or says nothing more within the timeout): its stderr says why
                error = channel.makefile_stderr("r").read().decode(errors="replace").strip().splitlines()
            except OSError:
                error = []
            finally:
                channel.close()
            reason = error[-1] if error else answer or "no output"
            hint = " (install util-linux there: it has flock)" if "flock" in reason and "not found" in reason else ""
            raise HostError(f"cannot take the kernel lock {self.path} on {self.host.key}: {reason}{hint}")
        self.previous = _parse(content.encode())
        if confirm != "LOCKED":
            channel.close()
            raise HostError(f"cannot take the kernel lock {self.path} on {self.host.key}: the holding shell said "
                            f"{confirm!r}")
        channel.settimeout(None)
        self._channel = channel
        holder_pid, _, boot_id = held_by.partition(" ")
        self._holder_pid = int(holder_pid) if holder_pid.isdigit() else None
        self._boot_id = boot_id or None

    def lost(self) -> str | None:
        """Why the lock is no longer held (the holding shell ended: the connection dropped, the
        machine rebooted; or taking it again after a reboot failed), or None while it is."""
        if self._lost is not None:
            return self._lost
        channel = self._channel
        if channel is None or not (channel.closed or channel.exit_status_ready()):
            return None
        self._lost = self._resume()
        return self._lost

    def _resume(self) -> str | None:
        """After the holding shell ended unasked (a dropped connection): the lock taken again when
        the file shows nobody held it since, else why it is lost. Our own shell may still hold it
        (sshd has not noticed the connection is gone): it is ended first."""
        dropped = f"the kernel lock on {self.host.key} was lost (the SSH channel holding it closed)"
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._doc is None:
            return dropped
        first_previous, orphan, boot_id = self.previous, self._holder_pid, self._boot_id
        try:
            for attempt in range(3):
                try:
                    self._take(json.dumps(self._doc))
                    break
                except _HeldByOwnShell:
                    if orphan is None or attempt == 2:
                        return f"{dropped}, and its old holding shell still holds it"
                    self.host.run(["kill", str(orphan)], check=False, timeout_s=30)
                    time.sleep(0.5)
                except HostError:
                    if attempt == 2:
                        raise
                    time.sleep(1)  # a dropped connection is noticed by the first use; the next reconnects
        except OstuneError as exc:
            return f"{dropped}, and taking it again failed: {str(exc).splitlines()[0]}"
        found, self.previous = self.previous, first_previous
        if boot_id and self._boot_id and boot_id != self._boot_id:
            # every value this run had applied was reset (and /run/lock with them, where it is a
            # tmpfs): a lock file that survived a reboot proves nothing
            self.release(restore=found if found != self._doc else None)
            return f"{dropped}: {self.host.key} rebooted since, resetting what this run had applied"
        if found != self._doc:
            # somebody held it in between: what they changed may still be in the kernel, and what
            # they left for the next holder (their description) is put back for it
            self.release(restore=found)
            held = f"{describe(found)} held it" if found else "another process held it and released it"
            return f"{dropped}, and {held} in between: the kernel may have been changed under this run"
        self._log(f"the SSH channel holding the kernel lock on {self.host.key} closed; the lock was taken "
                  "again (nobody held it in between)")
        return None

    def reacquire(self) -> None:
        """After a reboot (the holding shell died with the machine, /run was emptied): take the
        lock again under the same description. When that fails (another process took it first,
        or no answer), the lock stays lost, `lost()` says why, and HostError is raised."""
        if self._doc is None:
            return
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        try:
            self._take(json.dumps(self._doc))
        except OstuneError as exc:
            self._lost = f"the kernel lock on {self.host.key} could not be taken again after its reboot: {exc}"
            raise HostError(self._lost) from None

    def release(self, *, restore: dict | None = None) -> None:
        """Let go: the lock file emptied (nothing for a next holder to repair), or, backing out of
        a take that found a holder's description (`restore`), that description put back."""
        from paramiko import SSHException

        channel, self._channel = self._channel, None
        self._doc = None  # nothing to take again after a reboot
        self._on_release()
        if channel is None:
            return
        message = b"RESTORE " + json.dumps(restore).encode() + b"\n" if restore else b"RELEASE\n"
        try:
            if not channel.closed:
                channel.sendall(message)
                channel.shutdown_write()
                channel.status_event.wait(10)
        except (OSError, EOFError, SSHException):
            pass  # the connection is gone: the shell ended with it (the next holder repairs)
        finally:
            channel.close()

