"""A shared PostgreSQL result database (a fleet's nightly jobs writing to one place): the schema
migrates there, and run, resume, best, verify, show, export and the README's SQL work on it as on
SQLite. Against a real PostgreSQL server this test starts for itself (initdb in a temp dir, a
private socket, no TCP port), from Debian's postgresql package; psycopg is the `postgres` extra."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import QUADRATIC_COMMAND, QUADRATIC_SPACE, ostune
from tests.test_constraints_profiles_verify import readme_queries

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


pytestmark = [
    pytest.mark.skipif(not INITDB, reason="PostgreSQL server binaries not installed (apt-get install postgresql)"),
    pytest.mark.skipif(os.geteuid() != 0 or not _has_user("postgres"),
                       reason="runs a server as the postgres user: needs root and that user"),
]


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("psycopg")
    bindir = Path(INITDB[-1]).parent
    root = tmp_path_factory.mktemp("pg")
    root.chmod(0o755)
    for parent in root.parents:  # the server runs as postgres: it must reach its directory
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120)

    as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                f"-k {root} -p 54331 -c listen_addresses=''", "start")
    try:
        as_postgres(str(bindir / "createdb"), "-h", str(root), "-p", "54331", "ostune")
        yield f"postgresql://postgres@/ostune?host={root}&port=54331"
    finally:
        as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


def test_a_postgres_database_serves_every_command(tmp_path: Path, postgres_url: str) -> None:
    space = tmp_path / "q.yaml"
    space.write_text(QUADRATIC_SPACE)
    common = ("--app", "command", "--host", "none", "--command", QUADRATIC_COMMAND, "--experiment", "pgq",
              "--db", postgres_url, "--repetitions", "1", "--no-warmup", "--seed", "4")
    first = ostune("run", "--space", str(space), "--trials", "10", *common)
    assert first.returncode == 0, first.stderr
    resumed = ostune("run", "--trials", "3", *common)
    assert resumed.returncode == 0, resumed.stderr
    best = json.loads(ostune("best", "pgq", "--db", postgres_url, "--json").stdout)
    assert best["measurements"] >= 1 and set(best["params"]) == {"x.a", "x.b", "x.c"}
    verified = ostune("verify", "pgq", "--db", postgres_url, "--rounds", "3", "--repetitions", "1", "--no-profiles")
    assert verified.returncode == 0, verified.stderr
    assert "recommended" in verified.stdout

    shown = ostune("show", "pgq", "--db", postgres_url)
    assert shown.returncode == 0 and "baseline" in shown.stdout
    listed = ostune("experiments", "--db", postgres_url)
    assert "13/13" in listed.stdout, listed.stdout
    exported = ostune("export", "pgq", "--db", postgres_url, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [int(r["trial"]) for r in rows] == list(range(1, 14))

    # the README's SQL, on PostgreSQL's stricter grammar (GROUP BY, one type per column)
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            answers = [conn.execute(text(sql)).fetchall() for sql in readme_queries()]
            params = conn.execute(text("select value from trial_params where experiment = 'pgq' and param = 'x.a'"
                                       " and trial = 1")).fetchall()
    finally:
        engine.dispose()
    assert [row[0] for row in answers[4]] == ["pgq"]  # improvement over the baseline
    # what survived verification: the recommended configuration, and its minimal change when the
    # model puts the improvement on fewer knobs (both measured by verify)
    survived = {(row[0], row[1], row[2]) for row in answers[5]}
    assert ("pgq", "recommended", "p99_ms") in survived
    assert survived <= {("pgq", "recommended", "p99_ms"), ("pgq", "minimal", "p99_ms")}
    assert params == [("5",)]  # the baseline's x.a, as text in a text column


def test_a_postgres_url_that_cannot_be_reached_is_one_line_without_its_password(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "postgres:Pg-Secret-4711@").replace("54331", "1")
    result = ostune("experiments", "--db", url)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: database postgresql://")
    assert "Pg-Secret-4711" not in result.stderr and ":***@" in lines[0]
