"""What a work directory says about who made it, so a later ostune command can clean up after an
owner killed with -9 (no cleanup of its own ran).

Two files inside every work directory ostune makes: the owner record (the ostune process's
identity: pid, start ticks, machine, boot id, machine id) and, on remote hosts, one line per server process
started in it (pid and start ticks on that host). Locally a server dies with its owner
(PR_SET_PDEATHSIG); over SSH it does not, so the process lines are what lets the next command stop
it, and the start ticks make sure a recycled pid is never signalled.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from tuner.ownership import ProcessIdentity

WORKDIR_OWNER_FILE = ".ostune-owner.json"
WORKDIR_PROCESSES_FILE = ".ostune-processes"


def owner_record(identity: ProcessIdentity) -> str:
    return json.dumps(dataclasses.asdict(identity))


def parse_owner(text: str) -> ProcessIdentity:
    """Raises ValueError for anything that is not an owner record."""
    try:
        return ProcessIdentity(**json.loads(text))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not an owner record: {text[:80]!r}") from exc


@dataclass(frozen=True)
class RemoteWorkdir:
    path: str
    owner: ProcessIdentity
    #: (pid, start ticks) of the server processes started in it, on its host
    processes: tuple[tuple[int, int], ...]


def parse_listing(text: str) -> list[RemoteWorkdir]:
    """The listing RemoteHost.reap_stale_workdirs' script prints: per line the directory, its owner
    record and its process lines ("pid ticks;pid ticks"), tab-separated. Lines that do not parse
    (a directory someone else made, a half-written record) are left out: only what ostune
    certainly made is ever removed."""
    out: list[RemoteWorkdir] = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].startswith("/"):
            continue
        try:
            owner = parse_owner(parts[1])
        except ValueError:
            continue
        # a process that exited at once has no start ticks: nothing of it to stop
        fields = [entry.split() for entry in parts[2].split(";")]
        processes = tuple((int(f[0]), int(f[1])) for f in fields if len(f) == 2 and f[0].isdigit() and f[1].isdigit())
        out.append(RemoteWorkdir(parts[0], owner, processes))
    return out
