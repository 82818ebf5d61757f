"""MySQL-family targets: a managed private MariaDB server, or an external server given by a DSN.

Managed (:class:`MariaDBApp`): ``mariadb-install-db`` initialises a datadir in a private work
directory, a generated my.cnf (sized for the machine, overridable) starts ``mariadbd`` on a free
loopback port and a private unix socket, an ``--init-file`` creates the benchmark database and
user (random password, held in memory only) and gives root a random password. stop() shuts the
server down with SIGTERM (InnoDB's clean shutdown), SIGKILL after ``stop_timeout_s``, and removes
the work directory unless ``keep=True``. A server found dead is reported as an AppError with the
tail of its error log. When ostune runs as root the server runs as root too (``user=root``): the
work directory is private to root (mode 0700), so handing it to the mysql user would need chown
of the whole tree and a traversable parent; running as root avoids both.

External (:class:`ExternalMySQL`, ``managed=False``): ``mysql://user:pass@host:port/db``. ostune
never starts, stops, restarts or reconfigures it; it only checks that it answers, and the
workload creates/uses the sbtest tables in ``db`` (use a dedicated database). The password is
never put in argv (clients get it via MYSQL_PWD / a 0600 config file), in describe() or in
error messages.

:func:`datadir_block_device` resolves the block device under a path (partition -> its disk,
loop and virtio devices included) for the queue knobs in /sys/block/<dev>/queue.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import time
from typing import Mapping
from urllib.parse import unquote, urlsplit

from targets.apps.base import App, Endpoint, Placeholder, config_overrides
from targets.apps.managed import AddressInUse, ManagedServer, free_loopback_port, log_tail
from targets.hosts.base import Host, SpawnedProcess
from targets.workloads.sysbench import credentials_problem, mask_password
from tuner.errors import AppError, BadInputError, HostError, HostOperationError

#: my.cnf keys ostune sets itself (paths, network, identity)
_RESERVED = {"datadir", "port", "socket", "bind-address", "bind_address", "pid-file", "pid_file",
             "log-error", "log_error", "user", "init-file", "init_file", "skip-networking",
             "skip_networking"}

_MIB = 1024 * 1024


def _first(host: Host, names: list[str]) -> str | None:
    for name in names:
        if "/" in name:
            if host.exists(name):
                return name
            continue
        path = host.which(name)
        if path:
            return path
        for prefix in ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin"):
            if host.exists(f"{prefix}/{name}"):
                return f"{prefix}/{name}"
    return None


def find_client(host: Host, configured: str | None = None) -> str | None:
    return _first(host, [configured] if configured else ["mariadb", "mysql"])


_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d\s+\d+:\d\d:\d\d\s+\d+\s+")


def _sql_error(text: str) -> str:
    """The most telling line of a mysql client / server error output (timestamps dropped)."""
    lines = [_LOG_PREFIX.sub("", line.strip()) for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if re.search(r"ERROR \d+|\[ERROR\]", line) and not line.endswith("[ERROR] Aborting"):
            return line
    for line in lines:
        if re.search(r"No space left|Read-only file system|Permission denied|Errcode", line):
            return line
    return lines[-1] if lines else "(no output)"


def path_problem(path: str) -> str | None:
    """Why the server's work directory cannot live at ``path`` (as a phrase), or None.

    Its paths go into my.cnf and through mariadb-install-db, a shell script that expands
    ``--defaults-file=...`` and the options it reads back from my.cnf unquoted: at whitespace the
    path falls apart (the bootstrap server then fails with a misleading "Can't create test file").
    my.cnf itself reads the rest of a line from '#' as a comment and a backslash as an escape
    (``\\s`` is a space)."""
    if re.search(r"\s", path):
        return "it contains whitespace, at which mariadb-install-db splits the paths it is given"
    if "#" in path:
        return "it contains '#', after which my.cnf reads the rest of a line as a comment"
    if "\\" in path:
        return "it contains a backslash, which my.cnf reads as an escape (\\s is a space)"
    return None


def size_config(memory_mb: int, cpu_count: int) -> dict[str, str]:
    """my.cnf defaults for a machine (documented rules, all overridable).

    * innodb_buffer_pool_size: 25 % of RAM, at least 128 MiB, at most 1 GiB (the default dataset
      is a few MB; more only costs memory on a shared box), rounded down to 128 MiB chunks. Raise
      it (config) together with table_size for larger datasets.
    * innodb_log_file_size: a quarter of the buffer pool, 48 .. 256 MiB (checkpoint pressure
      should not dominate short write benchmarks; the file is allocated in the datadir).
    * innodb_flush_method=O_DIRECT (no double caching; fsync behaviour still follows the kernel
      and device, which is what is being tuned); innodb_flush_log_at_trx_commit=1 (durable).
    * max_connections: 64 + 8 per CPU (room for sysbench threads plus admin connections).
    """
    pool = max(128, min(1024, memory_mb // 4)) // 128 * 128
    log = max(48, min(256, pool // 4))
    return {
        "innodb_buffer_pool_size": f"{pool}M",
        "innodb_log_file_size": f"{log}M",
        "innodb_flush_method": "O_DIRECT",
        "innodb_flush_log_at_trx_commit": "1",
        "max_connections": str(64 + 8 * max(1, cpu_count)),
    }


class MariaDBApp(ManagedServer):
    """Settings: binary, install_db, client, port, config (my.cnf overrides), database, user,
    datadir_parent (directory to create the private work dir in; default: the host's temp dir;
    its path without whitespace, '#' or backslash: see :func:`path_problem`), keep,
    start_timeout_s, stop_timeout_s."""

    name = "mariadb"
    managed = True

    def __init__(
        self,
        *,
        binary: str | None = None,
        install_db: str | None = None,
        client: str | None = None,
        port: int | None = None,
        config: Mapping[str, object] | None = None,
        database: str = "sbtest",
        user: str = "sbtest",
        datadir_parent: str | None = None,
        keep: bool = False,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        config = config_overrides("mariadb", config, _RESERVED, "{innodb_buffer_pool_size: 256M}")
        for label, value in (("database", database), ("user", user)):
            if not re.fullmatch(r"[A-Za-z0-9_]{1,32}", value or ""):
                raise BadInputError(f"mariadb {label}={value!r} is invalid; use 1-32 letters, digits or _")
        if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
            raise BadInputError(f"mariadb port={port!r} is invalid; give 1-65535 or leave it unset")
        if datadir_parent is not None:
            if not isinstance(datadir_parent, str) or not datadir_parent:
                raise BadInputError(f"mariadb datadir_parent={datadir_parent!r} is invalid; give a directory path")
            problem = path_problem(datadir_parent)
            if problem:
                raise BadInputError(f"mariadb datadir_parent={datadir_parent!r} cannot hold the datadir: {problem}; "
                                    "choose a directory whose path has no whitespace, '#' or backslash")
        self.binary = binary
        self.install_db = install_db
        self.client = client
        self.port = port
        self.config = config
        self.database = database
        self.user = user
        self.datadir_parent = datadir_parent
        self.keep = keep
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._host: Host | None = None
        self._proc: SpawnedProcess | None = None
        self._workdir: str | None = None
        self._endpoint: Endpoint | None = None
        self._password = secrets.token_urlsafe(18)
        self._root_password = secrets.token_urlsafe(18)
        self._effective: dict[str, str] = {}
        self._version = ""
        self._last_tail = ""
        self._port_in_use = 0

    # -- paths -----------------------------------------------------------------------------
    @property
    def datadir(self) -> str | None:
        return f"{self._workdir}/data" if self._workdir else None

    @property
    def error_log(self) -> str | None:
        return f"{self._workdir}/error.log" if self._workdir else None

    # -- config ----------------------------------------------------------------------------
    def render_config(self, host: Host, workdir: str, port: int, as_root: bool) -> str:
        try:
            facts = host.facts()
            sized = size_config(facts.memory_mb, facts.cpu_count)
        except Exception:
            sized = size_config(1024, 1)
        settings: dict[str, str] = {
            "datadir": f"{workdir}/data",
            "port": str(port),
            "bind-address": "127.0.0.1",
            "socket": f"{workdir}/mysqld.sock",
            "pid-file": f"{workdir}/mysqld.pid",
            "log-error": f"{workdir}/error.log",
            "init-file": f"{workdir}/init.sql",
            "skip-name-resolve": "",
            "innodb_buffer_pool_load_at_startup": "OFF",
            "innodb_buffer_pool_dump_at_shutdown": "OFF",
            **sized,
        }
        if as_root:
            settings["user"] = "root"
        for key, value in self.config.items():
            settings[str(key)] = "ON" if value is True else "OFF" if value is False else str(value)
        self._effective = {k: v for k, v in settings.items()
                           if k not in ("datadir", "socket", "pid-file", "log-error", "init-file")}
        lines = ["# generated by ostune; private to one experiment", "[mariadbd]"]
        lines += [f"{k}={v}" if v != "" else k for k, v in settings.items()]
        lines += ["", "[client]", f"socket={workdir}/mysqld.sock"]
        return "\n".join(lines) + "\n"

    def _init_sql(self) -> str:
        db, user, pw, root_pw = self.database, self.user, self._password, self._root_password
        return "\n".join([
            f"CREATE DATABASE IF NOT EXISTS `{db}`;",
            f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{pw}';",
            f"CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{pw}';",
            f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'127.0.0.1';",
            f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'localhost';",
            f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{root_pw}';",
            "",
        ])

    # -- lifecycle -------------------------------------------------------------------------
    def _resolve(self, host: Host) -> tuple[str, str]:
        server = _first(host, [self.binary] if self.binary else ["mariadbd", "mysqld"])
        if not server:
            raise AppError(
                f"{self.binary or 'mariadbd'} not found on PATH or in /usr/sbin; install mariadb-server "
                "(apt-get install mariadb-server) or set app.binary"
            )
        install = _first(host, [self.install_db] if self.install_db else ["mariadb-install-db", "mysql_install_db"])
        if not install:
            raise AppError(
                f"{self.install_db or 'mariadb-install-db'} not found; install mariadb-server "
                "(apt-get install mariadb-server) or set app.install_db"
            )
        return server, install

    def _make_workdir(self, host: Host) -> str:
        if not self.datadir_parent:
            return host.make_workdir("mariadb")
        # with the owner record like any work dir, so a run killed with -9 leaves no data
        # directory behind there either (the next run with this datadir_parent removes it)
        parent = self.datadir_parent.rstrip("/") or "/"
        try:
            return host.make_workdir("mariadb", parent=parent)
        except OSError as exc:
            raise AppError(f"cannot create the MariaDB data directory under {parent}: {exc.strerror}") from None
        except HostOperationError as exc:
            reason = str(exc).rsplit(": ", 1)[-1]
            raise AppError(f"cannot create the MariaDB data directory under {parent}: {reason}") from None

    def workdir_parents(self) -> tuple[str, ...]:
        return (self.datadir_parent,) if self.datadir_parent else ()

    def start(self, host: Host) -> Endpoint:
        if self._proc is not None and self._host is not None and self._host.is_alive(self._proc):
            assert self._endpoint is not None
            return self._endpoint
        server, install = self._resolve(host)
        self._host = host
        try:
            self._version = host.run([server, "--version"], timeout_s=15, check=False).stdout.strip()
        except HostOperationError:
            self._version = ""
        as_root = host.run(["id", "-u"], timeout_s=10, check=False).stdout.strip() == "0"
        fresh = self._workdir is None
        if fresh:
            self._workdir = self._make_workdir(host)
        try:
            problem = path_problem(self._workdir) if fresh else None
            if problem:  # the host's temp dir (TMPDIR): datadir_parent itself was checked up front
                raise AppError(f"cannot put the MariaDB datadir in {self._workdir}: {problem}; "
                               "set --app-set datadir_parent=DIR to a directory without whitespace, '#' or backslash")
            tried: set[int] = set()
            attempts = 1 if self.port else 3
            for attempt in range(attempts):
                port = self.port or free_loopback_port(host, avoid=tried)
                tried.add(port)
                host.put_file(f"{self._workdir}/my.cnf", self.render_config(host, self._workdir, port, as_root))
                if fresh:
                    self._install(host, install)
                    fresh = False
                try:
                    return self._launch(host, server, port)
                except AddressInUse:
                    if attempt == attempts - 1:
                        raise AppError(f"mariadbd could not bind 127.0.0.1:{port}: address already in use") from None
            raise AssertionError("unreachable")
        except BaseException:
            self._discard()
            raise

    def _install(self, host: Host, install: str) -> None:
        assert self._workdir
        argv = [install, f"--defaults-file={self._workdir}/my.cnf", "--skip-test-db",
                "--auth-root-authentication-method=normal", "--skip-name-resolve"]
        try:
            r = host.run(argv, timeout_s=120, check=False)
        except HostOperationError as exc:
            raise AppError(f"mariadb-install-db did not finish: {exc}") from None
        if not r.ok:
            # with log-error in my.cnf the bootstrap server writes its reason to error.log
            text = self._read_log(host) + "\n" + r.stderr + "\n" + r.stdout
            detail = _sql_error(text)
            if re.search(r"error 28\b|out of disk space|No space left", text):
                detail += " (no space left on device)"
            raise AppError(f"mariadb-install-db failed in {self._workdir}/data (exit {r.exit_code}): {detail[:240]}")

    def _launch(self, host: Host, server: str, port: int) -> Endpoint:
        assert self._workdir
        workdir = self._workdir
        host.put_file(f"{workdir}/init.sql", self._init_sql())
        host.run(["chmod", "600", f"{workdir}/init.sql", f"{workdir}/my.cnf"], timeout_s=10, check=False)
        log_size_before = len(self._read_log(host))
        self._proc = host.spawn([server, f"--defaults-file={workdir}/my.cnf"],
                                log_path=f"{workdir}/stdout.log", cwd=workdir)
        endpoint = Endpoint(
            address="127.0.0.1", port=port, socket_path=f"{workdir}/mysqld.sock",
            extra={"user": self.user, "password": self._password, "database": self.database},
        )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            new_log = self._read_log(host)[log_size_before:]
            if not host.is_alive(self._proc):
                self._proc = None
                self._last_tail = self._tail(host)
                if "Address already in use" in new_log:
                    raise AddressInUse()
                raise AppError(f"mariadbd exited during start: {_sql_error(new_log or self._last_tail)[:240]}")
            if "ready for connections" in new_log and self._ping(host, endpoint):
                break
            if time.monotonic() > deadline:
                self._last_tail = self._tail(host)
                raise AppError(
                    f"mariadbd did not answer on 127.0.0.1:{port} within {self.start_timeout_s:g} s; "
                    f"last log line: {(self._last_tail.splitlines() or ['(empty log)'])[-1][:200]}"
                )
            time.sleep(0.2)
        # the init file holds passwords; it is only needed while the server starts
        host.run(["rm", "-f", f"{workdir}/init.sql"], timeout_s=10, check=False)
        self._endpoint = endpoint
        return endpoint

    def _read_log(self, host: Host) -> str:
        if not self._workdir:
            return ""
        try:
            return host.read_text(f"{self._workdir}/error.log")
        except Exception:
            return ""

    def _tail(self, host: Host, lines: int = 20) -> str:
        if not self._workdir:
            return self._last_tail
        return log_tail(host, f"{self._workdir}/error.log", lines) or log_tail(host, f"{self._workdir}/stdout.log", lines)

    def _ping(self, host: Host, endpoint: Endpoint) -> bool:
        client = find_client(host, self.client)
        if client is None:
            return True  # "ready for connections" was logged; nothing better to check with
        try:
            r = host.run(
                [client, "--protocol=tcp", "--host=127.0.0.1", f"--port={endpoint.port}",
                 f"--user={self.user}", "--connect-timeout=3", "--batch", "-e", "SELECT 1", self.database],
                timeout_s=10, check=False, env={"MYSQL_PWD": self._password},
            )
        except HostOperationError:
            return False
        return r.ok

    def _shutdown(self) -> str | None:
        """Stop the process. Returns a problem description (crash, kill) or None if clean."""
        host, proc = self._host, self._proc
        if host is None or proc is None:
            return None
        self._proc = None
        if not host.is_alive(proc):
            self._last_tail = self._tail(host)
            return f"mariadbd (pid {proc.pid}) had exited before stop (crashed?): {_sql_error(self._last_tail)[:200]}"
        started = time.monotonic()
        try:
            host.terminate(proc, timeout_s=self.stop_timeout_s)
        except HostOperationError as exc:
            return f"mariadbd (pid {proc.pid}) could not be stopped: {exc}"
        self._last_tail = self._tail(host)
        if time.monotonic() - started >= self.stop_timeout_s:
            return f"mariadbd did not shut down within {self.stop_timeout_s:g} s and was killed"
        return None

    def _discard(self) -> None:
        """Best-effort cleanup after a failed start."""
        host = self._host
        if host is not None and self._proc is not None:
            try:
                host.terminate(self._proc, timeout_s=10)
            except HostError:
                pass
        self._proc = None
        if host is not None and self._workdir:
            self._last_tail = self._tail(host) or self._last_tail
            host.release_workdir(self._workdir, keep=self.keep)
        self._workdir = None
        self._endpoint = None

    def stop(self) -> None:
        host = self._host
        if host is None:
            return
        problem = self._shutdown()
        if self._workdir:
            host.release_workdir(self._workdir, keep=self.keep)
        self._workdir = None
        self._endpoint = None
        if problem:
            raise AppError(problem)

    def restart(self, host: Host) -> Endpoint:
        """Restart mariadbd on the same datadir (data survives: no re-prepare needed)."""
        if self._workdir is None:
            return self.start(host)
        self._shutdown()  # a crashed server is restarted all the same (InnoDB recovers)
        self._endpoint = None
        server, _ = self._resolve(host)
        self._host = host
        port = self._port_from_config(host) or free_loopback_port(host)
        try:
            return self._launch(host, server, port)
        except BaseException:
            self._discard()
            raise

    def _port_from_config(self, host: Host) -> int | None:
        try:
            m = re.search(r"^port=(\d+)$", host.read_text(f"{self._workdir}/my.cnf"), re.M)
        except Exception:
            return None
        return int(m.group(1)) if m else None

    def placeholders(self, host: Host) -> dict[str, Placeholder]:
        """``{datadir_device}``: the block device holding the private datadir (after start)."""
        if not self.datadir:
            return {"datadir_device": Placeholder(None, "mariadbd is not running, so its datadir is unknown")}
        return {"datadir_device": device_placeholder(host, self.datadir)}

    def describe(self) -> dict[str, object]:
        doc: dict[str, object] = {"app": "mysql", "server": "mariadb", "managed": True}
        if self._version:
            doc["version"] = self._version
        if self._effective:
            doc["config"] = {k: v for k, v in self._effective.items() if k not in ("port",)}
        elif self.config:
            doc["config_overrides"] = {k: str(v) for k, v in self.config.items()}
        return doc

    def failure_context(self) -> str:
        if self._host is not None and self._workdir:
            tail = self._tail(self._host)
            if tail:
                return tail
        return self._last_tail




# ---------------------------------------------------------------------------------------------
# external server
# ---------------------------------------------------------------------------------------------


def parse_dsn(dsn: str) -> dict[str, object]:
    """``mysql://user:pass@host:port/db`` -> parts. Errors never echo the password."""
    try:
        parts = urlsplit(dsn)
    except ValueError:  # unbalanced [ ] around an IPv6 address
        raise BadInputError("--dsn host is not a valid address; an IPv6 one goes in brackets, "
                            "e.g. mysql://user:pass@[::1]:3306/db") from None
    if parts.scheme not in ("mysql", "mariadb"):
        raise BadInputError("--dsn must look like mysql://user:pass@host:port/db (scheme mysql)")
    # the port as written (urlsplit's own error mixes "not a number" with "out of range", and it
    # takes port 0 for none); never echoed: in a DSN missing its '@host' it is the password
    host_port = parts.netloc.rpartition("@")[2]
    port_text = (host_port.rpartition("]")[2] if host_port.startswith("[") else host_port).partition(":")[2]
    if not port_text:
        port = 3306
    elif not re.fullmatch(r"[0-9]+", port_text):
        raise BadInputError("--dsn port is not a number; give 1-65535, e.g. mysql://user:pass@host:3306/db")
    elif not 1 <= int(port_text) <= 65535:
        raise BadInputError("--dsn port is out of range; give 1-65535, e.g. mysql://user:pass@host:3306/db")
    else:
        port = int(port_text)
    if not parts.hostname:
        raise BadInputError("--dsn has no host; expected mysql://user:pass@host:port/db")
    if not parts.username:
        raise BadInputError("--dsn has no user; expected mysql://user:pass@host:port/db")
    db = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", db or ""):
        raise BadInputError("--dsn needs a database name after the port, e.g. mysql://u:p@h:3306/sbtest")
    return {
        "user": unquote(parts.username),
        "password": unquote(parts.password) if parts.password is not None else "",
        "host": parts.hostname,
        "port": port,
        "database": db,
    }


class ExternalMySQL(App):
    """A server ostune did not start: checked, measured, never started/stopped/reconfigured."""

    name = "mysql"
    managed = False

    def __init__(self, dsn: str, *, client: str | None = None, connect_timeout_s: int = 5) -> None:
        parts = parse_dsn(dsn)
        self._user = str(parts["user"])
        self._password = str(parts["password"])
        # sysbench takes them from its config file; refused now rather than after the connection
        # check passed, when every trial would fail with "Access denied"
        refused = credentials_problem(self._user, self._password)
        if refused:
            what, problem = refused
            raise BadInputError(f"--dsn: sysbench cannot take a {what} {problem}; choose another {what}")
        self._hostname = str(parts["host"])
        self._port = int(parts["port"])  # type: ignore[arg-type]
        self._database = str(parts["database"])
        self.client = client
        self.connect_timeout_s = connect_timeout_s
        self._host: Host | None = None
        self._endpoint: Endpoint | None = None
        self._version = ""
        self._last_error = ""

    @property
    def safe_dsn(self) -> str:
        return f"mysql://{self._user}@{self._hostname}:{self._port}/{self._database}"

    def _redact(self, text: str) -> str:
        return mask_password(text, self._password)

    def _query(self, host: Host, sql: str) -> str:
        client = find_client(host, self.client)
        if client is None:
            raise AppError("no mariadb/mysql client on the host to reach the DSN; install mariadb-client")
        argv = [client, "--protocol=tcp", f"--host={self._hostname}", f"--port={self._port}",
                f"--user={self._user}", f"--connect-timeout={self.connect_timeout_s}",
                "--batch", "--skip-column-names", "-e", sql, self._database]
        env = {"MYSQL_PWD": self._password}
        try:
            r = host.run(argv, timeout_s=self.connect_timeout_s + 20, check=False, env=env)
        except HostOperationError as exc:
            raise AppError(self._redact(f"{self.safe_dsn} did not answer: {exc}")) from None
        if r.ok:
            return r.stdout
        err = _sql_error(r.stderr + "\n" + r.stdout)
        code = re.search(r"ERROR (\d+)", err)
        number = int(code.group(1)) if code else 0
        if number == 1045:
            msg = f"access denied for {self._user} at {self._hostname}:{self._port} (wrong user or password in --dsn)"
        elif number in (2002, 2003, 2005, 2013):
            msg = f"cannot connect to MySQL at {self._hostname}:{self._port} (server down, wrong host/port, or firewall)"
        elif number == 1049:
            msg = f"database {self._database!r} does not exist on {self._hostname}:{self._port}; create it first"
        else:
            msg = f"{self.safe_dsn}: {err[:200]}"
        self._last_error = self._redact(err)
        raise AppError(self._redact(msg))

    def start(self, host: Host) -> Endpoint:
        self._host = host
        self._version = self._query(host, "SELECT VERSION()").strip()
        self._endpoint = Endpoint(
            address=self._hostname, port=self._port,
            extra={"user": self._user, "password": self._password, "database": self._database},
        )
        return self._endpoint

    def stop(self) -> None:
        """Never stops the external server; only forgets the connection."""
        self._endpoint = None

    def restart(self, host: Host) -> Endpoint:
        # ostune does not restart a server it did not start; re-check that it answers
        return self.start(host)

    def is_healthy(self) -> bool:
        if self._host is None:
            return False
        try:
            self._query(self._host, "SELECT 1")
        except AppError:
            return False
        return True

    def pids(self) -> list[int]:
        """mysqld/mariadbd pid when the server listens on this host's loopback (best effort)."""
        if self._host is None or self._hostname not in ("127.0.0.1", "localhost", "::1"):
            return []
        try:
            r = self._host.run(["ss", "-Hltnp", f"sport = :{self._port}"], timeout_s=5, check=False)
        except HostOperationError:
            return []
        return sorted({int(p) for p in re.findall(r"pid=(\d+)", r.stdout)})

    def placeholders(self, host: Host) -> dict[str, Placeholder]:
        """``{datadir_device}`` when the server runs on the tuned host (DSN host on its loopback):
        the block device under its ``@@datadir``. Read-only: one SELECT."""
        if self._hostname not in ("127.0.0.1", "localhost", "::1"):
            return {"datadir_device": Placeholder(
                None, f"the server at {self._hostname}:{self._port} is not on the tuned host's loopback, "
                      "so the disk holding its datadir is unknown")}
        try:
            datadir = self._query(host, "SELECT @@datadir").strip()
        except AppError as exc:
            return {"datadir_device": Placeholder(None, f"cannot ask the server for its datadir: {exc}")}
        if not datadir.startswith("/"):
            return {"datadir_device": Placeholder(None, f"the server reports datadir {datadir!r}, not an absolute path")}
        return {"datadir_device": device_placeholder(host, datadir)}

    def describe(self) -> dict[str, object]:
        doc: dict[str, object] = {"app": "mysql", "managed": False, "dsn": self.safe_dsn,
                                  "note": "external server: never started, stopped or reconfigured by ostune"}
        if self._version:
            doc["version"] = self._version
        return doc

    def failure_context(self) -> str:
        return self._last_error


def make_mysql_app(*, dsn: str | None = None, **settings: object) -> App:
    """``--app mysql|mariadb``: ExternalMySQL with a DSN, else a managed MariaDBApp."""
    if dsn:
        unknown = sorted(k for k in settings if k not in ("client", "connect_timeout_s"))
        if unknown:
            raise BadInputError(
                f"with --dsn ostune does not manage the server; settings {', '.join(unknown)} do not apply"
            )
        return ExternalMySQL(dsn, **settings)  # type: ignore[arg-type]
    try:
        return MariaDBApp(**settings)  # type: ignore[arg-type]
    except TypeError as exc:
        raise BadInputError(f"mariadb app setting not understood: {exc}") from None


# ---------------------------------------------------------------------------------------------
# block device of a path
# ---------------------------------------------------------------------------------------------


def _block_name_from_sys(host: Host, sys_path: str) -> str | None:
    """/sys/... device dir -> the whole-disk name (a partition maps to its parent)."""
    name = posixpath.basename(sys_path.rstrip("/"))
    if host.exists(f"{sys_path}/partition"):
        name = posixpath.basename(posixpath.dirname(sys_path.rstrip("/")))
    return name if host.exists(f"/sys/block/{name}") else None


def device_placeholder(host: Host, datadir: str) -> Placeholder:
    """The ``{datadir_device}`` placeholder for a datadir path, or the reason there is none."""
    device = datadir_block_device(host, datadir)
    if device is None:
        fs = ""
        try:
            r = host.run(["findmnt", "-n", "-o", "FSTYPE", "--target", datadir], timeout_s=10, check=False)
            fs = r.stdout.strip() if r.ok else ""
        except HostOperationError:
            pass
        on = f"a {fs} filesystem" if fs else "a filesystem"
        return Placeholder(None, f"datadir {datadir} is on {on} without a block device, so it has no I/O queue to tune")
    return Placeholder(device, source=f"datadir {datadir}")


def datadir_block_device(host: Host, path: str) -> str | None:
    """Name of the block device (e.g. ``vda``, ``sda``, ``nvme0n1``, ``loop3``) holding ``path``,
    such that ``/sys/block/<name>/queue/{scheduler,read_ahead_kb,nr_requests}`` exist; a
    partition resolves to its disk. None for filesystems without one (tmpfs, overlay over
    tmpfs, NFS). Device-mapper volumes resolve to ``dm-N`` (their own queue)."""
    probe = path.rstrip("/") or "/"
    while not host.exists(probe) and probe not in ("/", ""):
        probe = posixpath.dirname(probe) or "/"
    try:
        r = host.run(["stat", "-c", "%d", "--", probe], timeout_s=10, check=False)
    except HostOperationError:
        return None
    if r.ok and r.stdout.strip().isdigit():
        dev = int(r.stdout.strip())
        major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)
        minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF)
        if major != 0:
            link = host.run(["readlink", "-f", f"/sys/dev/block/{major}:{minor}"], timeout_s=10, check=False)
            target = link.stdout.strip()
            if link.ok and target and host.exists(target):
                name = _block_name_from_sys(host, target)
                if name:
                    return name
    # anonymous device numbers (btrfs subvolumes, some overlays): ask the mount table
    try:
        m = host.run(["findmnt", "-n", "-o", "SOURCE", "--target", probe], timeout_s=10, check=False)
    except HostOperationError:
        return None
    source = m.stdout.strip().split("[", 1)[0] if m.ok else ""
    if not source.startswith("/dev/"):
        return None
    real = host.run(["readlink", "-f", source], timeout_s=10, check=False).stdout.strip() or source
    sys_dir = f"/sys/class/block/{posixpath.basename(real)}"
    if not host.exists(sys_dir):
        return None
    target = host.run(["readlink", "-f", sys_dir], timeout_s=10, check=False).stdout.strip()
    return _block_name_from_sys(host, target) if target else None
