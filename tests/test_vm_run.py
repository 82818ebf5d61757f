"""`ostune run --host qemu`: the whole loop against a guest it boots with each trial's kernel
command line. Under TCG latency is too noisy to rank anything: these tests check plumbing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest_vm import cache_root, get_image, qemu_pids_for
from tests.helpers import query, spawn_ostune, try_query

pytestmark = pytest.mark.vm

# Boot parameters the shipped tuned profiles do not set, so every trial after the baseline is the
# optimizer's; no default given for `mitigations`' alternative means most proposals carry tokens.
SPACE = """
parameters:
  mitigations: {kind: boot, type: categorical, choices: ["auto", "off"], default: auto}
  transparent_hugepage: {kind: boot, type: categorical, choices: [always, madvise, never], default: madvise}
  vm.dirty_expire_centisecs: {kind: sysctl, type: int, range: [500, 6000]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 4096], log: true}
"""


def guest_read(image, port: int, command: str) -> str | None:
    argv = ["ssh", "-p", str(port), "-i", str(image.ssh_key), "-o", f"UserKnownHostsFile={image.known_hosts}",
            "-o", f"HostKeyAlias={image.host_key_alias}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
            "root@127.0.0.1", command]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return result.stdout if result.returncode == 0 else None


def current_port(run_dir: Path) -> int | None:
    records = sorted(run_dir.glob("qemu-*.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        return None
    try:
        return int(json.loads(records[-1].read_text())["port"])
    except (OSError, ValueError, KeyError):
        return None


def expected_tokens(params: dict) -> set[str]:
    defaults = {"mitigations": "auto", "transparent_hugepage": "madvise"}
    return {f"{k}={params[k]}" for k in defaults if params[k] != defaults[k]}


def test_each_trial_boots_its_own_command_line_and_applies_runtime_values(tmp_path):
    image = get_image("direct")
    run_dir = tmp_path / "run"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    db = tmp_path / "vm.db"
    proc = spawn_ostune(
        "run", "--host", "qemu", "--host-set", "accel=tcg", "--host-set", f"run_dir={run_dir}",
        "--host-set", f"cache_dir={cache_root() / 'images'}", "--space", str(space), "--trials", "4",
        "--seed", "2", "--repetitions", "1", "--requests", "300", "--no-warmup", "--db", f"sqlite:///{db}",
        cwd=tmp_path)
    # While each trial runs, look inside the guest the way an operator would: over SSH.
    seen: dict[int, tuple[str, str]] = {}
    deadline = time.monotonic() + 900
    while proc.poll() is None and time.monotonic() < deadline:
        running = try_query(db, "select number from trials where status='running'")
        port = current_port(run_dir)
        if running and port:
            out = guest_read(image, port, "cat /proc/cmdline; sysctl -n vm.dirty_expire_centisecs net.core.somaxconn")
            still = try_query(db, "select number from trials where status='running'")
            if out and still == running:
                seen[running[0][0]] = (out.splitlines()[0], " ".join(out.split("\n")[1:]).split())
        time.sleep(1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err + out
    trials = query(db, "select number, status from trials order by number")
    assert [s for _, s in trials] == ["succeeded"] * 4, trials
    with_tokens = 0
    for number, _ in trials:
        params = dict(query(db, "select param, value from trial_params where trial=?", number))
        cmdline, runtime = seen[number]
        tokens = set(cmdline.split())
        want = expected_tokens(params)
        with_tokens += bool(want)
        assert want <= tokens, (number, want, cmdline)
        for name, default in (("mitigations", "auto"), ("transparent_hugepage", "madvise")):
            if params[name] == default:
                assert not any(t.startswith(f"{name}=") for t in tokens), (number, cmdline)
        if number > 1:  # the baseline leaves the guest's own values
            assert runtime == [str(int(params["vm.dirty_expire_centisecs"])), str(int(params["net.core.somaxconn"]))]
    assert with_tokens >= 1  # at least one trial really rebooted with proposed tokens
    assert query(db, "select count(*) from trials where rebooted") [0][0] >= 1
    assert qemu_pids_for(str(run_dir)) == []
