"""{name} placeholders in parameter paths: validation, pure expansion, and probing of the
resolved files (writability checked by writing the read value back)."""

from __future__ import annotations

import pytest

from spaces.loader import load_space, parse_space
from spaces.placeholders import expand
from targets.apps.base import Placeholder
from targets.hosts.local import LocalHost
from tuner.errors import ApplyError, KnobUnavailableError, SpaceError
from tuner.host_state import probe

SPACE = """
name: p
parameters:
  block.scheduler:
    kind: sysfs
    path: /sys/block/{datadir_device}/queue/scheduler
    type: categorical
    choices: [none, mq-deadline]
    optional: true
  vm.dirty_ratio: {kind: sysctl, type: int, range: [5, 80]}
  vm.dirty_background_ratio: {kind: sysctl, type: int, range: [1, 50]}
relations:
  - vm.dirty_background_ratio < vm.dirty_ratio
"""


def test_shipped_mysql_space_uses_the_placeholder_and_the_dirty_relation():
    space = load_space("mysql-latency")
    for name in ("block.scheduler", "block.read_ahead_kb", "block.nr_requests"):
        assert space[name].path == f"/sys/block/{{datadir_device}}/queue/{name.split('.')[1]}"
        assert space[name].optional
    assert [str(r) for r in space.relations] == ["vm.dirty_background_ratio < vm.dirty_ratio"]
    assert space["transparent_hugepage.enabled"].restart and space["net.core.somaxconn"].restart
    assert not space["vm.swappiness"].restart
    for name in ("vm.dirty_expire_centisecs", "vm.dirty_writeback_centisecs", "transparent_hugepage.defrag",
                 "kernel.numa_balancing", "kernel.sched_autogroup_enabled", "base_slice_ns"):
        assert name in space


@pytest.mark.parametrize("path, rule", [
    ("/sys/block/{datadir device}/queue/x", "is not a name"),
    ("/sys/block/{datadir_device/queue/x", "unbalanced"),
    ("/sys/block/}x{/queue/x", "unbalanced"),
    ("/sys/block/{}/queue/x", "is not a name"),
])
def test_malformed_placeholders_are_space_errors(path, rule):
    text = f"parameters:\n  a.b: {{kind: sysfs, path: '{path}', type: int, range: [0, 9]}}\n"
    with pytest.raises(SpaceError, match=f"parameter 'a.b': path .*{rule}"):
        parse_space(text, source="s.yaml")


def test_expand_substitutes_and_keeps_the_hash_of_the_text():
    space = parse_space(SPACE)
    a = expand(space, {"datadir_device": Placeholder("vda", source="datadir /x")})
    b = expand(space, {"datadir_device": "nvme0n1"})
    assert a.space["block.scheduler"].path == "/sys/block/vda/queue/scheduler"
    assert b.space["block.scheduler"].path == "/sys/block/nvme0n1/queue/scheduler"
    assert a.expanded == ["block.scheduler"] and a.used == {"datadir_device": ("vda", "datadir /x")}
    assert a.skipped == {} and len(a.space.relations) == 1
    # the stored space (and what resume compares) is the unexpanded one
    assert space.hash() == parse_space(SPACE).hash() and "{datadir_device}" in str(space.canonical())


def test_expand_skips_with_the_apps_reason_or_a_generic_one():
    space = parse_space(SPACE)
    why = "datadir /d is on a tmpfs filesystem without a block device"
    out = expand(space, {"datadir_device": Placeholder(None, why)})
    assert out.skipped == {"block.scheduler": why} and "block.scheduler" not in out.space
    assert out.space.names == ["vm.dirty_ratio", "vm.dirty_background_ratio"]
    generic = expand(space, {}, app_name="redis")
    assert generic.skipped["block.scheduler"].startswith("redis does not provide {datadir_device}")
    for bad in ("../x", "a/b", ".."):
        assert "not a single path component" in expand(space, {"datadir_device": bad}).skipped["block.scheduler"]


class _Host(LocalHost):
    """Serves fake files: one readable and writable, one whose writes the kernel refuses."""

    def __init__(self, refuse: bool) -> None:
        super().__init__()
        self.refuse = refuse
        self.files = {"/sys/block/fake0/queue/scheduler": "none [mq-deadline] kyber\n"}
        self.writes: list[tuple[str, str]] = []

    def read_text(self, path: str) -> str:
        if path in self.files:
            return self.files[path]
        return super().read_text(path)

    def write_text(self, path: str, text: str) -> None:
        if self.refuse:
            raise ApplyError(f"kernel refused {text!r} for {path}: invalid value")
        self.writes.append((path, text))


def test_probe_writes_placeholder_files_back_and_skips_refused_ones():
    space = parse_space(SPACE)
    expanded = expand(space, {"datadir_device": "fake0"})
    ok_host = _Host(refuse=False)
    report = probe(ok_host, expanded.space, check_writable=expanded.expanded)
    assert report.current["block.scheduler"] == "mq-deadline"
    assert ok_host.writes == [("/sys/block/fake0/queue/scheduler", "mq-deadline")]  # the value read, unchanged
    bad_host = _Host(refuse=True)
    report = probe(bad_host, expanded.space, check_writable=expanded.expanded)
    assert "block.scheduler" not in report.available
    assert report.skipped["block.scheduler"] == ("cannot write back the value it holds (kernel refused 'mq-deadline' "
                                                 "for /sys/block/fake0/queue/scheduler: invalid value)")
    with pytest.raises(KnobUnavailableError, match="cannot write back the value it holds"):
        probe(bad_host, expanded.space, check_writable=expanded.expanded, strict=True)


def test_probe_reports_unresolved_placeholders_and_strict_refuses():
    space = parse_space(SPACE)
    out = expand(space, {"datadir_device": Placeholder(None, "no disk here")})
    report = probe(LocalHost(), out.space, skipped=out.skipped)
    assert report.skipped == {"block.scheduler": "no disk here"}
    with pytest.raises(KnobUnavailableError, match="block.scheduler: no disk here"):
        probe(LocalHost(), out.space, skipped=out.skipped, strict=True)


def test_placeholder_values_are_read_back_from_the_paths_a_run_wrote():
    from spaces.model import Parameter, Space
    from spaces.placeholders import values_from_paths

    space = Space((Parameter("block.scheduler", "sysfs", "categorical", choices=("none", "mq-deadline"),
                             path="/sys/block/{datadir_device}/queue/scheduler"),
                   Parameter("vm.swappiness", "sysctl", "int", low=0, high=100)))
    assert values_from_paths(space, {"block.scheduler": "/sys/block/nvme0n1/queue/scheduler",
                                     "vm.swappiness": "/proc/sys/vm/swappiness"}) == {"datadir_device": "nvme0n1"}
    # a path that does not fit the template (another space version) says nothing
    assert values_from_paths(space, {"block.scheduler": "/sys/block/vda/queue/nr_requests"}) == {}
    assert values_from_paths(space, {}) == {}
