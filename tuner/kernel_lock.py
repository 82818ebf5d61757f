"""One ostune process at a time changes this machine's kernel, whatever database each one uses.

The host lock (tuner/lock.py) lives in the result database, so two runs with different databases
(`sqlite:///ostune.db` is a different file in every directory) never see each other's: both would
write the same sysctls, measure each other's changes, and the one finishing last would "restore"
the other's trial values as the machine's own. This lock is an flock(2) on a file in /run/lock:
the kernel releases it when its holder exits or is killed (kill -9 included), so it can never be
stale. The file holds the holder's description for the message a second process prints, and
is emptied on release: a description found by the next holder is that of a process that died
while it held the lock, whose database names what it may have left changed (see
tuner/recovery.py, recover_previous_holder).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path

from tuner.errors import HostError, LockHeldError
from tuner.ownership import ProcessIdentity

#: on tmpfs: emptied at boot, when every holder is gone anyway
DEFAULT_PATH = Path("/run/lock/ostune-kernel.lock")


class KernelLock:
    def __init__(self, path: Path = DEFAULT_PATH) -> None:
        self.path = path
        self._fd: int | None = None
        #: after acquire(): the description a holder that died with the lock left (pid,
        #: command, database, since), or None when the last holder released it
        self.previous: dict | None = None

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HostError(f"cannot open the kernel lock {self.path}: {exc.strerror} (changing this machine's "
                            "kernel needs root)") from None

    def acquire(self, *, command: str, database: str) -> "KernelLock":
        """Take the lock at once or raise LockHeldError naming its holder."""
        if self._fd is not None:
            return self
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LockHeldError(f"this machine's kernel is already being tuned by {holder}; one ostune process "
                                "at a time changes it, whatever its database — wait for it, or stop it") from None
        self.previous = _parse(os.pread(fd, 4096, 0))
        # who holds it, with enough identity for another machine's ostune (tuning this one over
        # SSH, targets/hosts/remote_lock.py) to tell whether a holder that left it is alive
        doc = {**asdict(ProcessIdentity.current()), "command": command, "database": database, "host": "local",
               "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(doc).encode(), 0)
        self._fd = fd
        return self

    def release(self, *, restore: dict | None = None) -> None:
        """Let go: the file emptied (nothing for a next holder to repair), or, backing out of a
        take that found a holder's description (`restore`), that description put back."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            if restore:
                os.pwrite(fd, json.dumps(restore).encode(), 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def lost(self) -> str | None:
        """Never lost while held: the kernel keeps an flock until its holder lets go or dies (the
        interface RemoteKernelLock shares, whose SSH channel can drop)."""
        return None

    def holder(self) -> str | None:
        """Who holds the lock now (another process), or None: a probe that takes nothing."""
        if self._fd is not None:
            return None
        fd = self._open()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _describe(os.pread(fd, 4096, 0))
            return None
        finally:
            os.close(fd)


def _parse(content: bytes) -> dict | None:
    try:
        doc = json.loads(content.decode() or "null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc else None


def describe(doc: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(doc.get("since", 0))))
    machine = doc.get("machine")
    where = f" on {machine}" if machine and machine != socket.gethostname() else ""
    return f"pid {doc.get('pid')}{where} (ostune {doc.get('command')}, database {doc.get('database')}, since {since})"


def _describe(content: bytes) -> str:
    doc = _parse(content)
    return describe(doc) if doc else "another ostune process"
