"""A command's environment on an SSH host (RemoteHost.run(env=...)) never stands on a command line:
the MySQL password that sysbench and the mysql client get as MYSQL_PWD would otherwise be readable
by every user of that machine in ps (/proc/PID/cmdline) for the whole benchmark, and sudo would log
it. Against a real QEMU guest, as root (QemuHost, and SshHost the way a remote machine is reached)
and as a user with passwordless sudo. Marked vm.

The guest image has neither sudo nor a user but root: the sudo test installs the Debian sudo
package into the running guest (its disk is a throw-away overlay), taken from this machine's apt
cache or fetched with `apt-get download sudo`, and skips when neither works.
"""

from __future__ import annotations

import base64
import glob
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from targets.hosts.base import CommandResult
from targets.hosts.qemu import QemuHost
from targets.hosts.ssh import REMOTE_GRACE_S, RemoteHost, SshHost
from targets.vm.image import GuestImage
from tests.conftest_vm import booted_guest, cache_root, get_image, guest_as_ssh_host
from tuner.errors import BadInputError, HostError

pytestmark = pytest.mark.vm

#: unique, so finding it anywhere means it leaked; the rest is there to be hard to quote
MARK = uuid.uuid4().hex
SECRET = f"pw-{MARK}-it's \"q\" $HOME `id` a\\b\nline two"
USER = "bench"

# Says it runs (file $1), waits until told to go on (file $2), then prints its environment's
# password; waiting on a file lets the test look at the guest's processes while it runs.
WAITER = ': > "$1"; while [ ! -e "$2" ]; do sleep 0.1; done; printf %s "$MYSQL_PWD"; exit 5'


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return get_image("direct")


@pytest.fixture(scope="module")
def guest(image: GuestImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuHost]:
    with booted_guest(image, tmp_path_factory.mktemp("qemu-run"), memory_mb=1024, vcpus=2) as vm:
        yield vm


@pytest.fixture()
def as_root(guest: QemuHost, image: GuestImage) -> Iterator[SshHost]:
    host = guest_as_ssh_host(guest, image)
    try:
        yield host
    finally:
        host.close()
    assert leftovers(guest) == []


@pytest.fixture(scope="module")
def sudo_user(guest: QemuHost, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A user that logs in with the image's key and may run anything with `sudo -n`."""
    deb = sudo_deb(tmp_path_factory.mktemp("sudo-deb"))
    encoded = base64.b64encode(deb.read_bytes()).decode()
    guest.run(["sh", "-c", 'base64 -d > /tmp/sudo.deb'], input_text=encoded, timeout_s=300)
    installed = guest.run(["dpkg", "-i", "/tmp/sudo.deb"], check=False, timeout_s=600)
    if not installed.ok:
        pytest.skip(f"{deb.name} does not install in the guest: {installed.stderr.strip()[-300:]}")
    guest.run(["sh", "-c",
               'useradd -m -s /bin/sh "$1" && install -d -m 700 -o "$1" -g "$1" "/home/$1/.ssh" && '
               'install -m 600 -o "$1" -g "$1" /root/.ssh/authorized_keys "/home/$1/.ssh/" && '
               'echo "$1 ALL=(ALL) NOPASSWD: ALL" > "/etc/sudoers.d/$1" && chmod 440 "/etc/sudoers.d/$1"',
               "sh", USER], timeout_s=120)
    return USER


@pytest.fixture()
def as_user(guest: QemuHost, image: GuestImage, sudo_user: str) -> Iterator[SshHost]:
    host = SshHost(f"ssh://{sudo_user}@127.0.0.1:{guest.port}", key_path=str(image.ssh_key),
                   known_hosts_path=str(image.known_hosts), host_key_alias=image.host_key_alias,
                   connect_timeout_s=20)
    try:
        yield host
    finally:
        host.close()
    assert leftovers(guest) == []


def sudo_deb(into: Path) -> Path:
    found = sorted(glob.glob("/var/cache/apt/archives/sudo_*_amd64.deb")
                   + glob.glob(str(cache_root() / "images" / "debs" / "sudo_*_amd64.deb")))
    if found:
        return Path(found[-1])
    try:
        got = subprocess.run(["apt-get", "download", "sudo"], cwd=into, capture_output=True, text=True,
                             timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the guest image has no sudo and no user but root, and no sudo .deb to install: {exc}")
    debs = sorted(into.glob("sudo_*.deb"))
    if got.returncode or not debs:
        pytest.skip("the guest image has no sudo and no user but root, and no sudo .deb to install "
                    f"(apt-get download sudo: {got.stderr.strip()[-200:] or got.returncode})")
    return debs[-1]


def leftovers(guest: QemuHost) -> list[str]:
    """The private directories of commands (their environment and stdin files) still on the guest."""
    return guest.run(["sh", "-c", "ls -d /tmp/ostune-private-* 2>/dev/null || true"]).stdout.split()


def process_table(guest: QemuHost) -> dict[int, str]:
    """Every process's command line on the guest (NULs as spaces), read over the guest's own
    connection: another one than the command under test uses."""
    out = guest.run(["sh", "-c", 'for f in /proc/[0-9]*; do printf "%s %s\\n" "${f#/proc/}" '
                     '"$(tr "\\0\\n" "  " < "$f/cmdline" 2>/dev/null)"; done'], timeout_s=120).stdout
    table = {}
    for line in out.splitlines():
        pid, _, cmdline = line.partition(" ")
        table[int(pid)] = cmdline
    return table


def private_files(guest: QemuHost) -> list[tuple[str, str, str]]:
    """(mode, owner, name in /tmp) of every command's private directory and what is in it."""
    out = guest.run(["sh", "-c", 'for d in /tmp/ostune-private-*; do [ -d "$d" ] || continue; '
                     'stat -c "%a %U %n" "$d"; for f in "$d"/* "$d"/.[!.]*; do '
                     '[ -e "$f" ] && stat -c "%a %U %n" "$f"; done; done; true']).stdout
    return [(mode, owner, name.split("/", 2)[2]) for mode, owner, name in (line.split() for line in out.splitlines())]


def while_running(host: RemoteHost, guest: QemuHost, input_text: str | None = None,
                  ) -> tuple[CommandResult, dict[int, str], str, list[tuple[str, str, str]]]:
    """Run WAITER with the password in its environment; returns its result, the guest's process
    table taken while it ran, the environment of the process that ran it and private_files()."""
    tag = f"ostune-env-probe-{uuid.uuid4().hex[:8]}"
    started, go = f"/tmp/{tag}.started", f"/tmp/{tag}.go"
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = host.run(["sh", "-c", WAITER, tag, started, go], env={"MYSQL_PWD": SECRET},
                                     input_text=input_text, check=False, timeout_s=300)
        except BaseException as exc:  # reported by the test thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not guest.exists(started):
            assert thread.is_alive(), box
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.2)
        table = process_table(guest)
        [pid] = [p for p, cmd in table.items() if cmd.startswith(f"sh -c {WAITER.split()[0]}") and tag in cmd]
        environ = guest.read_text(f"/proc/{pid}/environ")
        staged = private_files(guest)
    finally:
        guest.run(["touch", go])
        thread.join(timeout=120)
    guest.run(["rm", "-f", started, go])
    assert "error" not in box, box["error"]
    return box["result"], table, environ, staged  # type: ignore[return-value]


def assert_no_secret_on_a_command_line(table: dict[int, str]) -> None:
    leaked = {pid: cmd for pid, cmd in table.items() if MARK in cmd}
    assert leaked == {}, f"the password stands on a command line: {leaked}"


# -- root --------------------------------------------------------------------------------------


@pytest.mark.parametrize("through", ["ssh", "qemu"])
def test_the_program_gets_the_variable_and_its_exit_code_comes_back(
    through: str, guest: QemuHost, as_root: SshHost,
) -> None:
    host: RemoteHost = as_root if through == "ssh" else guest
    r = host.run(["sh", "-c", 'printf %s "$MYSQL_PWD"; printf err >&2; exit 7'], env={"MYSQL_PWD": SECRET},
                 check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (7, SECRET, "err")
    # with stdin too (both in the one private directory), and several variables
    r = host.run(["sh", "-c", 'cat; printf "|%s|%s" "$MYSQL_PWD" "$B"'], input_text="from stdin\n",
                 env={"MYSQL_PWD": SECRET, "B": ""})
    assert r.stdout == f"from stdin\n|{SECRET}|"
    # the environment a program is started with, as `env NAME=VALUE program` gave it: PATH
    # finds the program, and an unknown program is 127
    r = host.run(["printenv", "MYSQL_PWD"], env={"MYSQL_PWD": SECRET, "PATH": "/usr/bin:/bin"})
    assert r.stdout == SECRET + "\n"
    assert host.run(["no-such-program"], env={"A": "1"}, check=False).exit_code == 127
    with pytest.raises(HostError, match=r"exit 3") as info:
        host.run(["sh", "-c", "exit 3"], env={"MYSQL_PWD": SECRET})
    assert MARK not in str(info.value)
    assert leftovers(guest) == []


def test_bad_variable_names_are_refused_before_anything_reaches_the_host(as_root: SshHost, guest: QemuHost) -> None:
    for name in ["A;rm", "1A", "A\n", "", "A B"]:
        with pytest.raises(BadInputError, match="bad environment variable name"):
            as_root.run(["true"], env={name: "x"})
    with pytest.raises(BadInputError, match="NUL"):
        as_root.run(["true"], env={"A": "x\0y"})
    assert leftovers(guest) == []


def test_a_timed_out_command_shows_no_password_and_leaves_no_file(as_root: SshHost, guest: QemuHost) -> None:
    try:
        with pytest.raises(HostError, match="timed out") as info:
            as_root.run(["sleep", "30"], env={"MYSQL_PWD": SECRET}, input_text="x", timeout_s=3)
        assert MARK not in str(info.value) and "sleep 30" in str(info.value)
        assert leftovers(guest) == []
        # ... and it is ended on the guest soon after (closing its channel did not: it kept
        # loading the host and holding one of sshd's sessions for the rest of its 30 s)
        deadline = time.monotonic() + REMOTE_GRACE_S + 10
        while guest.run(["pgrep", "-x", "sleep"], check=False).ok:
            assert time.monotonic() < deadline, "the timed-out command still runs on the guest"
            time.sleep(0.5)
    finally:
        guest.run(["sh", "-c", "pkill -x sleep || true"])  # the next test would find it in the process table


@pytest.mark.parametrize("stdin", [None, "some input"])
def test_no_process_shows_the_password_while_the_command_runs_as_root(
    stdin: str | None, as_root: SshHost, guest: QemuHost,
) -> None:
    # without stdin the login shell may exec the command in its place; with it, the shell stays
    # (it redirects, then removes the input file), showing its whole command line
    result, table, environ, staged = while_running(as_root, guest, stdin)
    assert_no_secret_on_a_command_line(table)
    # the environment file went as the program started; the input stays until it ends
    [(mode, owner, directory), *inside] = staged
    assert (mode, owner) == ("700", "root")
    assert inside == ([] if stdin is None else [("600", "root", f"{directory}/stdin")])
    assert f"MYSQL_PWD={SECRET}\0" in environ
    assert (result.exit_code, result.stdout) == (5, SECRET)


# -- a user with sudo --------------------------------------------------------------------------


def test_no_process_shows_the_password_while_the_command_runs_under_sudo(
    as_user: SshHost, guest: QemuHost, sudo_user: str,
) -> None:
    assert as_user.run(["id", "-u"]).stdout.strip() == "0"  # the command itself goes through sudo
    since = guest.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    result, table, environ, staged = while_running(as_user, guest)
    assert_no_secret_on_a_command_line(table)
    assert [(mode, owner) for mode, owner, _ in staged] == [("700", sudo_user)]
    assert any(cmd.startswith("sudo -n -- sh -c ") for cmd in table.values())  # it was seen under sudo
    assert f"MYSQL_PWD={SECRET}\0" in environ
    assert (result.exit_code, result.stdout) == (5, SECRET)
    # sudo logs every command line it runs (journal, auth facility)
    journal = guest.run(["journalctl", "--no-pager", "-o", "cat", "--since", since], check=False, timeout_s=120)
    assert "COMMAND=" in journal.stdout, journal.stderr
    assert MARK not in journal.stdout


def test_stdin_exit_codes_and_servers_still_work_under_sudo(as_user: SshHost, guest: QemuHost) -> None:
    r = as_user.run(["sh", "-c", 'cat; printf "|%s|%s" "$MYSQL_PWD" "$(id -u)"; exit 4'], input_text="in\n",
                    env={"MYSQL_PWD": SECRET}, check=False)
    assert (r.exit_code, r.stdout) == (4, f"in\n|{SECRET}|0")
    workdir = as_user.make_workdir("envtest")
    try:
        proc = as_user.spawn(["sleep", "300"], log_path=f"{workdir}/sleep.log", cwd=workdir)
        assert as_user.is_alive(proc)
        as_user.terminate(proc, timeout_s=5)
        assert not as_user.is_alive(proc)
    finally:
        as_user.remove_tree(workdir)
    assert not guest.exists(workdir)
