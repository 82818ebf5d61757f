"""The external server's DSN without a server: its port, the passwords sysbench can take, and
where the password is masked (only where it really stands, never in ordinary words)."""

from __future__ import annotations

import shlex
from urllib.parse import quote

import pytest

from targets.apps.mariadb import ExternalMySQL, parse_dsn
from targets.hosts.base import CommandResult
from targets.hosts.local import LocalHost
from targets.workloads.sysbench import config_line, config_value_problem, mask_password
from tuner.errors import AppError, BadInputError, HostOperationError

# -- port ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["99999", "65536", "0", "00"])
def test_dsn_port_out_of_range_names_the_valid_range(port: str) -> None:
    secret = "Zq9-secret"
    with pytest.raises(BadInputError) as info:
        parse_dsn(f"mysql://u:{secret}@127.0.0.1:{port}/db")
    msg = str(info.value)
    assert msg.startswith("--dsn port is out of range; give 1-65535") and "\n" not in msg
    assert secret not in msg


def test_dsn_port_limits_and_not_a_number() -> None:
    assert parse_dsn("mysql://u:p@h:1/db")["port"] == 1
    assert parse_dsn("mysql://u:p@h:65535/db")["port"] == 65535
    assert parse_dsn("mysql://u:p@h:/db")["port"] == 3306
    assert parse_dsn("mysql://u:p@[::1]:3307/db") == {
        "user": "u", "password": "p", "host": "::1", "port": 3307, "database": "db"}
    for port in ("xx", "-1", "+5", "٣"):
        with pytest.raises(BadInputError, match="^--dsn port is not a number; give 1-65535"):
            parse_dsn(f"mysql://u:p@h:{port}/db")


def test_dsn_without_its_host_does_not_echo_the_password_it_takes_for_a_port() -> None:
    # '@127.0.0.1' forgotten: urlsplit reads the numeric password as the port
    with pytest.raises(BadInputError, match="port is out of range") as info:
        parse_dsn("mysql://root:7654321/db")
    assert "7654321" not in str(info.value)


def test_dsn_with_a_broken_ipv6_address_is_a_one_line_error() -> None:
    with pytest.raises(BadInputError, match=r"^--dsn host is not a valid address; .*\[::1\]:3306"):
        parse_dsn("mysql://u:p@[::1/db")


# -- what sysbench can take ------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["a b", "a,b", "#ab", " lead", "it's x", 'say "hi"', "tab\there",
                                      "p@ss:w/rd", "x" * 238, "é" * 119])
def test_passwords_sysbench_reads_back_exactly_are_accepted(password: str) -> None:
    assert config_value_problem("mysql-password", password) is None
    line = config_line("mysql-password", password)
    assert len(line.encode()) <= 255
    # quoted, with a quote character the password does not hold: sysbench takes it verbatim
    assert line[len("mysql-password=")] == line[-1] and line[-1] not in password
    ExternalMySQL(f"mysql://u:{_encode(password)}@h/db")


@pytest.mark.parametrize(("password", "reason"), [
    ("it's \"quoted\"", "containing both ' and \""),
    ("line\nbreak", "containing a line break or NUL character"),
    ("nul\0byte", "containing a line break or NUL character"),
    ("x" * 239, "of 239 bytes .*at most 255 bytes, which leaves 238 for the value of mysql-password"),
    ("é" * 120, "of 240 bytes"),
])
def test_passwords_sysbench_cannot_take_are_refused_before_connecting(password: str, reason: str) -> None:
    with pytest.raises(BadInputError, match=f"^--dsn: sysbench cannot take a password {reason}") as info:
        ExternalMySQL(f"mysql://u:{_encode(password)}@127.0.0.1:1/db")
    msg = str(info.value)
    assert "\n" not in msg and password not in msg and msg.endswith("; choose another password")


def test_user_names_sysbench_cannot_take_are_refused_too() -> None:
    ExternalMySQL("mysql://a%20b:pw@h/db")
    with pytest.raises(BadInputError, match="^--dsn: sysbench cannot take a user name containing both"):
        ExternalMySQL(f"mysql://{_encode(chr(39) + chr(34))}:pw@h/db")


def _encode(text: str) -> str:
    return quote(text, safe="")


# -- masking ---------------------------------------------------------------------------------------


def test_masking_leaves_ordinary_words_and_the_user_name() -> None:
    assert mask_password("access denied (wrong user or password in --dsn)", "wrong") == \
        "access denied (wrong user or password in --dsn)"
    text = "FATAL: error 1142: DROP command denied to user 'ro'@'127.0.0.1' for table `sbtest`.`sbtest1`"
    assert mask_password(text, "ro") == text
    # a password that begins like the port: only a command line is ever cut short
    assert mask_password("cannot connect to 127.0.0.1:3306", "3306xyz") == "cannot connect to 127.0.0.1:3306"
    assert mask_password("mysql://ro@127.0.0.1:3306/sbtest", "ro") == "mysql://ro@127.0.0.1:3306/sbtest"


@pytest.mark.parametrize("password", ["ro", "a b", "it's", "p@ss%20:/", 'q"uote'])
def test_masking_hides_the_password_where_ostune_puts_it(password: str) -> None:
    def ssh_command(pw: str) -> str:  # RemoteHost._command_line with sudo
        return shlex.join(["sudo", "-n", "--", "env", f"MYSQL_PWD={pw}", "mariadb", "--user=ro", "-e", "SELECT 1"])

    token = shlex.quote(f"MYSQL_PWD={password}")
    line = config_line("mysql-password", password)
    cases = [
        # the surrounding quotes stay as they were
        (ssh_command(password),
         ssh_command(password).replace(token, "'MYSQL_PWD=***'" if token.startswith("'") else "MYSQL_PWD=***")),
        (f"env MYSQL_PWD={password}", "env MYSQL_PWD=***"),
        (line, f"mysql-password={line[-1]}***{line[-1]}"),
        (f"mysql-password={password}", "mysql-password=***"),
        (f"mysql://ro:{password}@127.0.0.1:3306/sbtest", "mysql://ro:***@127.0.0.1:3306/sbtest"),
        (f"mysql://ro:{_encode(password)}@127.0.0.1:3306/sbtest", "mysql://ro:***@127.0.0.1:3306/sbtest"),
    ]
    for shown, expected in cases:
        assert mask_password(f"failed: {shown} (error 1142)", password) == f"failed: {expected} (error 1142)"


@pytest.mark.parametrize("password", ["k" * 40 + "-secret-tail", "k" * 40 + " secret tail"])
def test_masking_a_message_cut_inside_the_password(password: str) -> None:
    command = shlex.join(["sudo", "-n", "--", "env", f"MYSQL_PWD={password}", "mariadb"])
    start, end = command.index("MYSQL_PWD=") + len("MYSQL_PWD="), command.index(" mariadb")
    for cut in range(start + 1, end + 1):
        masked = mask_password(f"command on h timed out after 25 s: {command[:cut]}", password)
        assert "kk" not in masked and "secret" not in masked and "MYSQL_PWD=***" in masked, masked


# -- masking through ExternalMySQL (behaviour that the old code got wrong) ------------------------


class _ClientHost(LocalHost):
    """Answers the mysql client with a canned result, or fails like an SSH timeout does."""

    def __init__(self, stderr: str = "", timeout: bool = False) -> None:
        super().__init__()
        self.stderr = stderr
        self.timeout = timeout

    def which(self, program: str) -> str | None:
        return f"/usr/bin/{program}"

    def run(self, argv, *, timeout_s=None, check=True, input_text=None, env=None):  # type: ignore[no-untyped-def]
        if self.timeout:
            # the shape of SshSession.exec's timeout: the command line, cut to 160 characters
            command = shlex.join(["sudo", "-n", "--", "env", *[f"{k}={v}" for k, v in (env or {}).items()], *argv])
            raise HostOperationError(f"command on root@db timed out after {timeout_s} s: {command[:160]}")
        return CommandResult(tuple(argv), 1, "", self.stderr, 0.01)


def test_access_denied_message_keeps_the_word_that_is_the_password() -> None:
    ext = ExternalMySQL("mysql://bench:wrong@127.0.0.1:3306/sbtest")
    host = _ClientHost("ERROR 1045 (28000): Access denied for user 'bench'@'127.0.0.1' (using password: YES)")
    with pytest.raises(AppError) as info:
        ext.start(host)
    assert str(info.value) == "access denied for bench at 127.0.0.1:3306 (wrong user or password in --dsn)"


def test_other_errors_keep_the_user_name_that_is_the_password() -> None:
    ext = ExternalMySQL("mysql://ro:ro@127.0.0.1:3306/sbtest")
    err = "ERROR 1142 (42000): SELECT command denied to user 'ro'@'127.0.0.1' for table `sbtest`.`t`"
    with pytest.raises(AppError) as info:
        ext.start(_ClientHost(err))
    assert str(info.value) == f"mysql://ro@127.0.0.1:3306/sbtest: {err}"
    assert ext.failure_context() == err


@pytest.mark.parametrize("password", ["Secret-Over-Ssh-1", "a b c", "it's", "Long-" + "L" * 150])
def test_ssh_timeout_message_hides_the_password_of_the_command_line(password: str) -> None:
    # "it's" stands there shell-quoted (it'"'"'s); the long one is cut off with the command line
    ext = ExternalMySQL(f"mysql://bench:{_encode(password)}@127.0.0.1:3306/sbtest")
    with pytest.raises(AppError) as info:
        ext.start(_ClientHost(timeout=True))
    msg = str(info.value)
    assert msg.startswith("mysql://bench@127.0.0.1:3306/sbtest did not answer: command on root@db timed out")
    assert "MYSQL_PWD=***" in msg and password[:20] not in msg
