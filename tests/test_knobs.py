"""Knob families against this machine's real kernel (root) and their pure parsing rules."""

import os

import pytest

from spaces.loader import parse_space
from spaces.model import values_equal
from targets.hosts.local import LocalHost
from targets.knobs import DebugfsKnobs, SysctlKnobs, family_for, parse_knob_text
from tuner.errors import ApplyError

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="writes real sysctls: needs root")

SPACE = parse_space("""
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 200]}
  net.ipv4.tcp_rmem: {kind: sysctl, type: categorical, choices: ["4096 131072 6291456", "4096 87380 16777216"]}
  thp: {kind: sysfs, path: /sys/kernel/mm/transparent_hugepage/enabled, type: categorical, choices: [always, madvise, never]}
  base_slice_ns: {kind: debugfs, type: int, range: [100000, 6000000], optional: true}
""")


def test_selector_files_report_the_bracketed_choice_and_multi_values_normalize():
    assert parse_knob_text("always [madvise] never\n") == "madvise"
    assert parse_knob_text("none [mq-deadline] kyber bfq \n") == "mq-deadline"
    assert parse_knob_text("4096\t131072\t6291456\n") == "4096 131072 6291456"
    param = SPACE["net.ipv4.tcp_rmem"]
    assert values_equal(param, "4096 131072 6291456", "4096\t131072\t6291456")
    assert not values_equal(param, "4096 87380 16777216", "4096 131072 6291456")


def test_sysctl_names_map_to_proc_sys_paths():
    assert SysctlKnobs().path(SPACE["vm.swappiness"]) == "/proc/sys/vm/swappiness"


@root_only
def test_apply_writes_reads_back_and_refusals_are_apply_errors():
    host = LocalHost()
    param = SPACE["vm.swappiness"]
    family = family_for(param)
    original = family.read_raw(host, param)
    try:
        family.apply(host, param, 17)
        assert family.read(host, param) == 17
        with open("/proc/sys/vm/swappiness") as f:
            assert f.read().strip() == "17"
        with pytest.raises(ApplyError, match="kernel refused '201'"):
            family.apply(host, SPACE["vm.swappiness"].__class__(**{**param.__dict__, "high": 300}), 201)
    finally:
        host.write_text("/proc/sys/vm/swappiness", original)


@root_only
def test_multi_value_sysctl_round_trips():
    host = LocalHost()
    param = SPACE["net.ipv4.tcp_rmem"]
    family = family_for(param)
    original = family.read_raw(host, param)
    try:
        family.apply(host, param, "4096 87380 16777216")
        assert family.read(host, param) == "4096 87380 16777216"
    finally:
        host.write_text(family.path(param), original)


def test_debugfs_probe_reports_availability_with_a_reason():
    availability = DebugfsKnobs().probe(LocalHost(), SPACE["base_slice_ns"])
    if availability.available:
        assert int(availability.current) > 0
    else:
        # e.g. kernel lockdown on Firecracker: EPERM even when reading
        assert "base_slice_ns" in availability.reason and availability.reason
