"""Shared test helpers: run the real CLI, snapshot real kernel knobs, dump a database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from spaces.model import Space
from targets.hosts.local import LocalHost
from targets.knobs import family_for

REPO = Path(__file__).resolve().parent.parent

# A command-workload objective with a known optimum, used by several tests.
QUADRATIC_SPACE = """
parameters:
  x.a:
    kind: sysctl
    type: int
    range: [0, 10]
    default: 5
  x.b:
    kind: sysctl
    type: float
    range: [0.1, 100.0]
    log: true
    default: 1.0
  x.c:
    kind: sysctl
    type: categorical
    choices: [p, q, r]
    default: p
"""

QUADRATIC_COMMAND = (
    f"{sys.executable} -c \"import json,os,math;"
    "p=json.load(open(os.environ['OSTUNE_PARAMS_FILE']));"
    "print(json.dumps({'p99_ms': 1+(p['x.a']-3)**2+abs(math.log10(p['x.b'])-1)+(p['x.c']!='q'),"
    "'ops_per_s': 1000.0}))\""
)


def ostune(*args: str, timeout_s: float = 600, env: dict | None = None, cwd: Path | None = None,
           ) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args], capture_output=True, text=True, timeout=timeout_s,
        env={**os.environ, **(env or {})}, cwd=cwd or REPO,
    )


def spawn_ostune(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd or REPO,
    )


def snapshot(space: Space) -> dict[str, str]:
    """The raw kernel text of every runtime parameter of the space that this host has."""
    host = LocalHost()
    values = {}
    for param in space.parameters:
        if param.kind == "boot":
            continue
        availability = family_for(param).probe(host, param)
        if availability.available:
            values[param.name] = availability.current
    return values


def dump_db(path: Path) -> list[tuple]:
    """Every row of every table: equal dumps mean an unchanged database."""
    if not path.exists():
        return []
    # immutable: read without creating -shm/-wal files, so a read-only filesystem works too
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        rows = []
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table' order by name")]
        for table in tables:
            rows += [(table, *r) for r in conn.execute(f"select * from {table}")]
        return rows
    finally:
        conn.close()


def query(path: Path, sql: str, *params: object) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def try_query(path: Path, sql: str) -> list[tuple]:
    """query() for polling a database another process may still be creating."""
    if not path.exists():
        return []
    try:
        return query(path, sql)
    except sqlite3.OperationalError:
        return []


def wait_for(predicate, timeout_s: float = 60, interval_s: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def last_json_line(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.strip()][-1])
