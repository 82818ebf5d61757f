"""`ostune spaces`: the shipped spaces, one space's parameters, and what a run would find on a host
(each parameter's current value there, or why it cannot be tuned) — read from the real kernel."""

from __future__ import annotations

from pathlib import Path

from spaces.loader import catalog_names, load_space
from targets.knobs import parse_knob_text
from tests.helpers import ostune

SPACE = """
name: insp
description: what a run would see
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  x.not_here: {kind: sysctl, type: int, range: [0, 10]}
  y.not_here: {kind: sysctl, type: int, range: [0, 10], optional: true}
  mitigations: {kind: boot, type: categorical, choices: [auto, "off"], default: auto}
  read_ahead_kb: {kind: sysfs, path: "/sys/block/{datadir_device}/queue/read_ahead_kb", type: int, range: [0, 8192]}
  thp: {kind: sysfs, path: /sys/kernel/mm/transparent_hugepage/enabled, type: categorical, choices: [always, madvise, never]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 65535], log: true}
relations:
  - vm.swappiness > x.not_here
"""


def _rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by parameter name, cells stripped (the table is plain text off a terminal)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > 2 and cells[0] and cells[0] != "parameter":
            rows[cells[0]] = cells
    return rows


def test_spaces_lists_the_shipped_ones_and_shows_one_spaces_parameters(tmp_path: Path) -> None:
    listed = ostune("spaces")
    assert listed.returncode == 0 and all(name in listed.stdout for name in catalog_names())
    shown = ostune("spaces", "redis-latency")
    assert shown.returncode == 0, shown.stderr
    rows = _rows(shown.stdout)
    assert list(rows) == load_space("redis-latency").names
    assert rows["net.core.somaxconn"][1:3] == ["sysctl", "[128, 65535] log"]
    assert rows["guest_halt_poll_ns"][1] == "sysfs (optional)"
    space = tmp_path / "insp.yaml"
    space.write_text(SPACE)
    rows = _rows(ostune("spaces", str(space)).stdout)
    assert rows["thp"][2:] == ["always|madvise|never", "host's"] and rows["vm.swappiness"][2:] == ["[0, 100]", "60"]


def test_spaces_with_a_host_reads_every_parameter_or_says_why_a_run_cannot_tune_it(tmp_path: Path) -> None:
    space = tmp_path / "insp.yaml"
    space.write_text(SPACE)
    before = Path("/proc/sys/vm/swappiness").read_text()
    result = ostune("spaces", str(space), "--host", "local")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    on_host = {name: cells[-1] for name, cells in rows.items()}
    assert on_host["vm.swappiness"] == before.strip()
    assert on_host["net.core.somaxconn"] == Path("/proc/sys/net/core/somaxconn").read_text().strip()
    assert on_host["thp"] == parse_knob_text(Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text())
    # a run refuses a missing parameter (likely a typo) but skips an optional one
    assert on_host["x.not_here"].startswith("missing: a run refuses it") and "/proc/sys/x/not_here" in on_host["x.not_here"]
    assert on_host["y.not_here"].startswith("skipped: /proc/sys/y/not_here does not exist")
    assert on_host["mitigations"].startswith("skipped: boot parameters need a host that can reboot")
    assert on_host["read_ahead_kb"].endswith("{datadir_device} is known once the application runs")
    assert "relations: vm.swappiness > x.not_here" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "3 of 7 parameters can be tuned on local:" + \
        result.stdout.split("on local:")[1].split()[0] + "; 4 cannot (reasons above)"
    assert Path("/proc/sys/vm/swappiness").read_text() == before


def test_spaces_bad_input_is_one_line(tmp_path: Path) -> None:
    space = tmp_path / "insp.yaml"
    space.write_text(SPACE)
    for args, expected in (
        (("spaces", "nope"), "space 'nope': no such file and no shipped space of that name"),
        (("spaces", "--host", "local"), "--host goes with a space"),
        (("spaces", str(space), "--write-back"), "--write-back goes with --host"),
        (("spaces", str(space), "--host", "none"), "--host none: no kernel to read here"),
        (("spaces", str(space), "--host", "local", "--host-set", "key_path=/k"), "--host-set key_path: --host local takes no host settings"),
    ):
        result = ostune(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0 and expected in result.stderr, (args, result.stderr)


def test_write_back_finds_knobs_root_may_read_but_not_write_and_waits_for_no_run(tmp_path: Path) -> None:
    """kernel.random.entropy_avail is read-only (0444) on every kernel: read-only it shows a value,
    with --write-back (what a run's probe does) it is a knob a run skips."""
    from tests.helpers import spawn_ostune, try_query, wait_for

    space = tmp_path / "ro.yaml"
    space.write_text("parameters:\n  vm.swappiness: {kind: sysctl, type: int, range: [0, 100]}\n"
                     "  kernel.random.entropy_avail: {kind: sysctl, type: int, range: [0, 1000000]}\n")
    before = Path("/proc/sys/vm/swappiness").read_text()
    read_only = _rows(ostune("spaces", str(space), "--host", "local").stdout)
    assert read_only["kernel.random.entropy_avail"][-1].isdigit()
    result = ostune("spaces", str(space), "--host", "local", "--write-back")
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["kernel.random.entropy_avail"][-1].startswith("skipped: cannot write back the value it holds")
    assert rows["vm.swappiness"][-1] == before.strip()
    assert Path("/proc/sys/vm/swappiness").read_text() == before
    # not while a run changes this kernel: its writes and the write-back would race
    db = tmp_path / "busy.db"
    run = spawn_ostune("run", "--app", "command", "--host", "local", "--space", str(space), "--command",
                       "sleep 1; echo '{\"p99_ms\": 1.0}'", "--trials", "30", "--db", f"sqlite:///{db}",
                       "--repetitions", "1", "--no-warmup")
    try:
        wait_for(lambda: try_query(db, "select 1 from trials where number=2 and status='running'"))
        busy = ostune("spaces", str(space), "--host", "local", "--write-back")
        assert busy.returncode == 6 and f"already being tuned by pid {run.pid}" in busy.stderr, busy.stderr
        assert ostune("spaces", str(space), "--host", "local").returncode == 0  # reading alone is fine
    finally:
        run.terminate()
        run.wait(timeout=60)
    assert Path("/proc/sys/vm/swappiness").read_text() == before
