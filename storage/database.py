"""Open a result database: create the engine, set SQLite pragmas, migrate to the newest schema."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import weakref
from pathlib import Path
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError as AlembicError
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from storage.models import Base
from tuner.errors import StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_DB_URL = "sqlite:///ostune.db"
#: the pip package of a database driver module SQLAlchemy asks for, where the names differ
PIP_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets `sqlite3 ostune.db` read while a run writes; busy_timeout rides out short locks.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_read_only_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # no journal_mode: switching it is a write; the file keeps the mode its writer set
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def sqlite_read_only_reason(url_text: str) -> str | None:
    """Why an existing SQLite database can be read but not written here (an archived copy, a
    read-only mount, another user's file), or None when it can be written or is not a SQLite file."""
    try:
        url = make_url(url_text)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    if not path.is_file():
        return None
    if not os.access(path, os.W_OK):
        return f"file {path} is not writable"
    parent = path.resolve().parent  # a symlink's target's: SQLite's -wal and -shm go there
    if not os.access(parent, os.W_OK):
        # SQLite creates the -wal and -shm files next to the database, even to read a WAL file
        return f"directory {parent} is not writable"
    return None


class _ReadOnlyConnector:
    """Connections to a SQLite file that cannot write it, and write nothing next to it; how is
    decided at each connect, from the files next to the real file (a symlink's target's):

    - no -wal: no writer is mid-transaction; read as immutable (SQLite creates nothing);
    - -wal and -shm: a writer may be live; read through them (mode=ro);
    - -wal without -shm: no writer is live (it would have its -shm), but SQLite would create the
      -shm to read the -wal, as this user and with the database's mode, which can lock the file's
      owner out of it: the database and its -wal are copied to a private directory, read there.
    """

    def __init__(self, path: Path) -> None:
        self.real = path.resolve()
        self._copy_dir: str | None = None

    def _sibling(self, suffix: str) -> Path:
        return self.real.with_name(self.real.name + suffix)

    def __call__(self) -> sqlite3.Connection:
        target, immutable = self.real, False
        if not self._sibling("-wal").exists():
            immutable = True
        elif not self._sibling("-shm").exists():
            target = self._private_copy()
        uri = f"file:{quote(str(target))}?mode=ro" + ("&immutable=1" if immutable else "")
        return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)

    def _private_copy(self) -> Path:
        if self._copy_dir is None:
            self._copy_dir = tempfile.mkdtemp(prefix="ostune-readonly-")
            for suffix in ("", "-wal"):
                shutil.copyfile(self._sibling(suffix), Path(self._copy_dir) / (self.real.name + suffix))
        return Path(self._copy_dir) / self.real.name

    def close(self) -> None:
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            self._copy_dir = None


def _check_sqlite_path(url_text: str, database: str | None) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database)
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StorageError(f"database {url_text}: file {path} is not writable")
        return
    if not parent.is_dir():
        raise StorageError(f"database {url_text}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise StorageError(f"database {url_text}: directory {parent} is not writable")


def open_engine(url_text: str = DEFAULT_DB_URL, *, create: bool = True, read_only: bool = False) -> Engine:
    """An engine on a migrated database. With create=False a missing SQLite file is an error
    (read-only commands must not leave empty databases behind). read_only: an existing SQLite
    file opened so that nothing can be written (see sqlite_read_only_reason); it must already
    have the newest schema."""
    try:
        url = make_url(url_text)
    except ArgumentError:
        raise StorageError(
            f"database {url_text!r} is not a SQLAlchemy URL (e.g. sqlite:///ostune.db)"
        ) from None
    # the URL as given, without its password: errors end up in cron mail and journals
    shown = re.sub(r"^([^:/]+://[^:/@]*):[^@/]*@", r"\1:***@", url_text)
    is_sqlite = url.get_backend_name() == "sqlite"
    if is_sqlite:
        if not create and url.database and url.database != ":memory:" and not Path(url.database).exists():
            raise StorageError(f"database {url_text}: no such file (run `ostune run` first)")
        if not read_only:
            _check_sqlite_path(url_text, url.database)
    read_only = read_only and is_sqlite and bool(url.database) and url.database != ":memory:"
    try:
        if read_only:
            connector = _ReadOnlyConnector(Path(str(url.database)))
            engine = create_engine(url, creator=connector)
            weakref.finalize(engine, connector.close)
        else:
            engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {})
    except ImportError as exc:
        # a server database whose Python driver is not installed (ostune depends on SQLite only)
        module = exc.name or "its driver"
        package = PIP_PACKAGES.get(module, module)
        raise StorageError(
            f"database {shown!r}: the {url.get_backend_name()} driver is not installed ({module}); "
            f"install it into ostune's environment (e.g. pip install '{package}') or use sqlite:///PATH"
        ) from None
    except ArgumentError as exc:
        raise StorageError(f"database {shown!r}: {_first_line(exc)}") from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_read_only_pragmas if read_only else _sqlite_pragmas)
    try:
        if read_only:
            _check_schema_current(engine, shown)
        else:
            migrate(engine, shown)
    except OperationalError as exc:
        raise StorageError(f"database {shown}: {_first_line(exc.orig)}") from None
    except SQLAlchemyError as exc:
        raise StorageError(f"database {shown}: {exc.__class__.__name__}: {_first_line(getattr(exc, 'orig', None) or exc)}") from None
    return engine


def _first_line(error: object) -> str:
    """A driver's message without the SQL statement and the hints on further lines (psycopg's
    connection errors and SQLAlchemy's statement dumps are several lines long)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else error.__class__.__name__


def _check_schema_current(engine: Engine, shown: str) -> None:
    """A database that cannot be written cannot be migrated: read it only at the newest schema."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise StorageError(f"database {shown} cannot be written here and has schema revision {current!r}, not "
                           f"{head!r}: open it once where it can be written (any ostune command upgrades it), "
                           "or read a writable copy")


def migrate(engine: Engine, shown: str | None = None) -> None:
    """Bring the database to the newest schema. Refused, with the database untouched: a schema
    revision this ostune does not know (written by a newer one: migrating would fail half way),
    and a SQLite file that holds other tables but no ostune schema (another program's database:
    ostune would add its own tables to it, or stop half way on a name both use)."""
    cfg = _alembic_config()
    scripts = ScriptDirectory.from_config(cfg)
    head = scripts.get_current_head()
    shown = shown or engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        tables = set(inspect(conn).get_table_names()) if current is None else set()
    if current == head:
        return
    if current is not None:
        try:
            scripts.get_revision(current)
        except AlembicError:
            raise StorageError(f"database {shown} has schema revision {current!r}, which this ostune does not know "
                               f"(it knows up to {head!r}): it was written by a newer ostune; upgrade ostune to "
                               "read it") from None
    elif tables and (engine.url.get_backend_name() == "sqlite" or tables & set(Base.metadata.tables)):
        listed = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
        raise StorageError(f"database {shown} is not an ostune database (it has tables {listed} and no ostune "
                           "schema); give a new file, or an empty database")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
