"""Fast checks of the VM/SSH host plumbing that need no guest (not marked vm)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from targets.hosts.qemu import console_tail, reap_stale_qemu
from targets.hosts.ssh import _ENV_WRAPPER, GrubBoot, RemoteHost, SshHost, _env_file_text, check_boot_tokens, parse_ssh_url
from targets.vm.image import recipe_hash
from tuner.errors import BadInputError, HostError
from tuner.ownership import process_start_ticks


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ssh://root@example.org", ("root", "example.org", 22)),
        ("ssh://bob@10.0.0.5:2222", ("bob", "10.0.0.5", 2222)),
        ("ssh://root@[::1]:2200", ("root", "::1", 2200)),
    ],
)
def test_parse_ssh_url(url: str, expected: tuple[str, str, int]) -> None:
    assert parse_ssh_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["http://root@h", "ssh://", "ssh://root@h:99999", "ssh://root@h:port", "ssh://root@h/path",
     "ssh://root:pw@h", "root@h"],
)
def test_bad_ssh_url_is_bad_input(url: str) -> None:
    with pytest.raises(BadInputError, match="ssh://user@host"):
        SshHost(url)


def test_an_alias_missing_from_known_hosts_says_how_to_add_it_not_only_how_to_rebuild_a_guest(tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    host = SshHost("ssh://root@127.0.0.1:1", known_hosts_path=str(known_hosts), host_key_alias="web1")
    with pytest.raises(HostError, match=r"host_key_alias 'web1': no key under that name in .*known_hosts; add the "
                                        r"host's key under it \(ssh-keyscan HOST"):
        host.start()


def test_missing_key_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        SshHost("ssh://root@h", key_path=str(tmp_path / "nope"))


@pytest.mark.parametrize("token", ["a b", 'x="y"', "$(reboot)", "a;b", "`x`", "", "a\nb", "x'y", "mitigations=off\n"])
def test_unsafe_boot_tokens_rejected(token: str) -> None:
    with pytest.raises(BadInputError, match="boot token"):
        check_boot_tokens([token])


def test_grub_dropin_is_one_quoted_assignment() -> None:
    text = GrubBoot.dropin_text(["mitigations=off", "sysctl.vm.swappiness=10"])
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines == ['GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT mitigations=off sysctl.vm.swappiness=10"']
    # the drop-in is sourced by grub-mkconfig: check it with a real shell
    out = subprocess.run(
        ["sh", "-c", 'GRUB_CMDLINE_LINUX_DEFAULT=quiet; . "$1"; printf %s "$GRUB_CMDLINE_LINUX_DEFAULT"', "sh", "/dev/stdin"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
    assert out == "quiet mitigations=off sysctl.vm.swappiness=10"


def test_command_lines_are_quoted_and_sudo_prefixed() -> None:
    class Fake(RemoteHost):
        key = "fake"

    host = Fake.__new__(Fake)
    host._sudo = False
    assert host._command_line(["echo", "$(id)", "a b;c"]) == "echo '$(id)' 'a b;c'"
    host._sudo = True
    # the environment travels in a file, never on the command line (ps shows it to every user)
    assert host._command_line(["cat", "/x"], env_file="/tmp/e") == \
        f"sudo -n -- sh -c {shlex.quote(_ENV_WRAPPER)} sh /tmp/e cat /x"
    assert _env_file_text({"A": "1 2'"}) == "export A='1 2'\"'\"''\n"
    for bad in ({"A;rm": "x"}, {"A\n": "x"}, {"A": "x\0y"}):
        with pytest.raises(BadInputError):
            _env_file_text(bad)


def test_recipe_hash_depends_on_bootloader() -> None:
    assert recipe_hash("direct") != recipe_hash("grub")
    assert recipe_hash("direct") == recipe_hash("direct")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def _write_record(run_dir: Path, name: str, owner: int, owner_start: int | None,
                  qemu: int, qemu_start: int | None) -> Path:
    path = run_dir / f"qemu-{name}.json"
    path.write_text(json.dumps({"ostune_pid": owner, "ostune_start": owner_start,
                                "qemu_pid": qemu, "qemu_start": qemu_start}))
    return path


def test_reap_stale_qemu_kills_only_orphans_with_matchingprocess_start_ticks(tmp_path: Path) -> None:
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    orphan, owned, reused = _sleeper(), _sleeper(), _sleeper()
    try:
        _write_record(tmp_path, "orphan", dead_owner.pid, 1, orphan.pid, process_start_ticks(orphan.pid))
        _write_record(tmp_path, "owned", os.getpid(), process_start_ticks(os.getpid()), owned.pid, process_start_ticks(owned.pid))
        # pid recorded with a different start time: the pid was reused by an unrelated process
        stale = _write_record(tmp_path, "reused", dead_owner.pid, 1, reused.pid, 12345)
        killed = reap_stale_qemu(tmp_path)
        assert killed == [orphan.pid]
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert owned.poll() is None and reused.poll() is None
        assert not stale.exists() and (tmp_path / "qemu-owned.json").exists()
    finally:
        for proc in (orphan, owned, reused):
            proc.kill()
            proc.wait()


def test_pdeathsig_kills_child_when_parent_is_killed(tmp_path: Path) -> None:
    """The mechanism QemuHost uses so qemu dies when ostune is kill -9'd."""
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "import signal\n"
        "from targets.hosts.local import die_with_parent\n"
        "p = subprocess.Popen(['sleep', '300'], preexec_fn=die_with_parent(signal.SIGKILL), start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent)
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert process_start_ticks(child) is not None
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while process_start_ticks(child) is not None:
            assert time.monotonic() < deadline, "child outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()


def test_empty_boot_tokens_never_touch_grub() -> None:
    class NoGrub(RemoteHost):
        key = "nogrub"

        def run(self, argv, **kwargs):  # type: ignore[override]
            raise AssertionError(f"unexpected command {argv}")

    assert GrubBoot(NoGrub.__new__(NoGrub)).apply([]) is False


def test_image_build_without_root_is_a_clear_host_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from targets.vm import image as image_mod
    from tuner.errors import HostError

    monkeypatch.setattr(image_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(HostError, match="needs root"):
        image_mod.build_image(tmp_path, "direct")
    with pytest.raises(BadInputError, match="bootloader"):
        image_mod.build_image(tmp_path, "uefi")  # type: ignore[arg-type]


def test_console_tail_keeps_the_panic_line_when_the_stack_trace_pushed_it_out():
    # Shaped like the serial output of a guest booted with init=/bin/false under TCG, where the
    # trace after the panic line was longer than the 40-line tail (seen in a suite run).
    trace = [f"[    5.{i:06d}]  ? some_function+0x{i:x}/0x100" for i in range(60)]
    text = "\r\n".join(["[    5.100000] Run /bin/false as init process",
                        "[    5.114000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
                        *trace, "[    5.117511] Rebooting in 1 seconds.."])
    tail = console_tail(text, 40).splitlines()
    assert tail[0].endswith("Attempted to kill init! exitcode=0x00000100") and tail[1] == "..."
    assert tail[2:] == text.replace("\r", "").splitlines()[-40:]
    # a tail that already has it, or output without a panic, is just the last lines
    assert console_tail(text, 70).splitlines() == text.replace("\r", "").splitlines()[-70:]
    quiet = "\n".join(f"line {i}" for i in range(100))
    assert console_tail(quiet, 40).splitlines() == [f"line {i}" for i in range(60, 100)]
