import pytest

from spaces.loader import catalog_names, load_space, parse_space
from spaces.model import boot_tokens
from tuner.errors import SpaceError

VALID = """
parameters:
  vm.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  thp: {kind: sysfs, path: /sys/kernel/mm/transparent_hugepage/enabled, type: categorical, choices: [always, madvise, never]}
  net.core.somaxconn: {kind: sysctl, type: int, range: [128, 65535], log: true}
  mitigations: {kind: boot, type: categorical, choices: ["auto", "off"], default: auto}
  nosmt: {kind: boot, type: bool, default: false}
  base_slice_ns: {kind: debugfs, type: int, range: [100000, 6000000], log: true, optional: true}
relations:
  - vm.swappiness < net.core.somaxconn
"""


def test_valid_space_parses_with_types_and_defaults():
    space = parse_space(VALID, source="s.yaml")
    assert space.names == ["vm.swappiness", "thp", "net.core.somaxconn", "mitigations", "nosmt", "base_slice_ns"]
    assert space["net.core.somaxconn"].log
    assert space["base_slice_ns"].path == "/sys/kernel/debug/sched/base_slice_ns"
    assert space["vm.swappiness"].default == 60
    assert [str(r) for r in space.relations] == ["vm.swappiness < net.core.somaxconn"]
    assert boot_tokens(space, {"mitigations": "off", "nosmt": True}) == ["mitigations=off", "nosmt"]
    assert boot_tokens(space, {"mitigations": "auto", "nosmt": False}) == ["mitigations=auto"]


def test_hash_survives_a_round_trip_through_the_database_form():
    import yaml

    space = parse_space(VALID, source="s.yaml")
    again = parse_space(yaml.safe_dump({"parameters": space.canonical()["parameters"],
                                        "relations": space.canonical()["relations"]}))
    assert again.hash() == space.hash()
    changed = parse_space(VALID.replace("[0, 100]", "[0, 90]"))
    assert changed.hash() != space.hash()


@pytest.mark.parametrize("text, fragment", [
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [10, 1]}", "parameter 'vm.x': range low 10 > high 1"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10], default: 11}", "parameter 'vm.x': default 11 is outside [0, 10]"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\n  vm.x: {kind: sysctl, type: int, range: [0, 5]}", "duplicate key 'vm.x'"),
    ("parameters:\n  vm.x: {kind: procfs, type: int, range: [0, 10]}", "parameter 'vm.x': unknown kind 'procfs' (valid: sysctl, sysfs, debugfs, boot)"),
    ("parameters:\n  vm.x: {kind: sysctl, type: long, range: [0, 10]}", "parameter 'vm.x': unknown type 'long' (valid: int, float, categorical, bool)"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10], log: true}", "parameter 'vm.x': log scale needs range low > 0 (got 0)"),
    ("parameters:\n  vm.x: {kind: sysctl, type: categorical, choices: [a]}", "at least two values"),
    ("parameters:\n  t: {kind: sysfs, type: int, range: [0, 1], path: /etc/passwd}", "kind sysfs needs 'path' under /sys/"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10], colour: red}", "unknown key 'colour'"),
    ("parameters: [1, 2]", "expected a top-level 'parameters:' mapping"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]\n", "not valid YAML"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\nrelations: [vm.x < vm.y]", "names unknown parameter 'vm.y'"),
    # a path under /sys/ only as text: `..` leaves it
    ("parameters:\n  t: {kind: sysfs, type: int, range: [0, 1], path: /sys/../etc/passwd}", "path /sys/../etc/passwd is not a plain absolute path"),
    ("parameters:\n  vm.x: {kind: sysctl, type: float, range: [0, .nan]}", "with two finite numbers"),
    ("parameters:\n  vm.x: {kind: sysctl, type: float, range: [0, .inf]}", "with two finite numbers"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10], default: .inf}", "default inf is not a finite number"),
    ("parameters:\n  vm.x: {kind: sysctl, type: float, range: [0, 10], default: .nan}", "default nan is not a finite number"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [1, 10], default: 5.5}", "default 5.5 is not a whole number"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [1, 10], default: 1" + "0" * 400 + "}", "default 1000"),
    ("parameters:\n  vm.x: {kind: sysctl, type: categorical, choices: [[1], 2]}", "choice [1] is not a plain value"),
    ("parameters:\n  vm.x: {kind: sysctl, type: categorical, choices: [~, a]}", "choice None is not a plain value"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10], bool_values: [N, Y]}", "bool_values is for type bool, not int"),
    ("parameters:\n  vm.x: {kind: sysctl, type: bool, bool_values: [Y, Y]}", "two different texts"),
    ("name: [1]\nparameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}", "'name' must be text, not list"),
    # relations that leave the optimizer nothing to propose, or constrain nothing
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\nrelations: [vm.x < vm.x]", "compares a side with itself"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\nrelations: [vm.x > 20]", "cannot hold for any value"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\n  vm.y: {kind: sysctl, type: int, range: [20, 30]}\n"
     "relations: [vm.y <= vm.x]", "relation 'vm.y <= vm.x' cannot hold for any value"),
    ("parameters:\n  vm.x: {kind: sysctl, type: int, range: [0, 10]}\nrelations: ['1 < 2']", "names no parameter"),
])
def test_each_rule_gives_one_line_naming_file_parameter_and_rule(text, fragment):
    with pytest.raises(SpaceError) as info:
        parse_space(text, source="bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml: ")
    assert fragment in message
    assert "\n" not in message


def test_shipped_spaces_load_and_redis_space_has_8_to_14_knobs():
    assert "redis-latency" in catalog_names()
    for name in catalog_names():
        load_space(name)
    assert 8 <= len(load_space("redis-latency")) <= 14


def test_unknown_space_name_lists_shipped_ones():
    with pytest.raises(SpaceError, match="shipped: .*redis-latency"):
        load_space("no-such-space")


def test_numeric_choices_read_back_from_the_database_are_the_choices_themselves():
    # trial values are stored in float columns: 8192 comes back as 8192.0, and a re-measurement or
    # a verification that wrote '8192.0' to read_ahead_kb was refused by the kernel
    from tuner.racing import typed_params

    space = load_space("mysql-latency")
    numeric = [p for p in space.parameters if p.type == "categorical"
               and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)]
    assert numeric, "the shipped MySQL space has numeric-choice knobs (read-ahead)"
    for param in numeric:
        for choice in param.choices:
            typed = typed_params(space, {param.name: float(choice)})[param.name]
            assert typed == choice and type(typed) is type(choice)
            assert param.render(typed) == str(choice)
            assert param.coerce(str(choice)) == choice
    text = next(p for p in space.parameters if p.type == "categorical" and p not in numeric)
    assert text.coerce(2.0) == "2.0"  # no number among the choices: the value is kept as text


def test_a_space_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfeparameters: {}")
    with pytest.raises(SpaceError, match=r"binary.yaml: not UTF-8 text \(byte 0\)"):
        load_space(str(path))


def test_a_stored_space_is_read_under_the_rules_of_its_day():
    """Rules added later (a plain path, bool_values only for bools, ...) refuse new files, but an
    experiment created before them stays readable: its stored space is not re-judged by them."""
    from spaces.loader import space_from_document

    document = {"name": "old", "parameters": {
        "t": {"kind": "sysfs", "type": "int", "range": [0, 1], "path": "/sys/kernel/mm//x", "bool_values": ["N", "Y"]},
        "vm.x": {"kind": "sysctl", "type": "int", "range": [0, 10]}},
        "relations": ["vm.x >= 0"]}
    with pytest.raises(SpaceError):
        space_from_document(document, "new.yaml")
    space = space_from_document(document, "experiment old", stored=True)
    assert space["t"].path == "/sys/kernel/mm//x" and [str(r) for r in space.relations] == ["vm.x >= 0"]


@pytest.mark.parametrize("text, message", [
    ("vm.swappiness", "'vm.swappiness' is not name=value"),
    ("vm.nope=1", "'vm.nope' is not a parameter of the space (parameters: vm.swappiness, thp, "),
    ("vm.swappiness=abc", "vm.swappiness='abc' is not a whole number in [0, 100]"),
    ("vm.swappiness=1" + "0" * 400, "vm.swappiness='1000000000000000000000000000000000000000' is not a whole number in"),
    # a person's typo is named, not rounded or taken for something else
    ("vm.swappiness=5.7", "vm.swappiness='5.7' is not a whole number"),
    ("vm.swappiness=inf", "vm.swappiness='inf' is not a whole number"),
    ("vm.swappiness=1e400", "vm.swappiness='1e400' is not a whole number"),
    ("vm.swappiness=1_0", "vm.swappiness='1_0' is not a whole number"),
    ("vm.swappiness=\uff15", "vm.swappiness='\uff15' is not a whole number"),
    ("nosmt=maybe", "nosmt='maybe' is not a bool (true/false, 1/0, or the kernel's '1'/'0')"),
    ("vm.swappiness=500", "vm.swappiness='500' is outside [0, 100]"),
    ("thp=sometimes", "thp='sometimes' is outside one of ['always', 'madvise', 'never']"),
    ("vm.swappiness=5,vm.swappiness=6", "'vm.swappiness' is given twice"),
    (",", "',' names no parameter"),
])
def test_a_configuration_to_try_is_checked_against_the_space(text, message):
    from spaces.model import parse_assignment

    space = parse_space(VALID, source="s.yaml")
    assert parse_assignment(space, "vm.swappiness=5, thp=never") == {"vm.swappiness": 5, "thp": "never"}
    assert parse_assignment(space, "vm.swappiness=+7,nosmt=Yes") == {"vm.swappiness": 7, "nosmt": True}
    with pytest.raises(ValueError) as caught:
        parse_assignment(space, text)
    assert str(caught.value).startswith(message), str(caught.value)
