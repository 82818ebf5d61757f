"""Read and validate space files (YAML). Every problem is one SpaceError line naming file,
parameter and rule."""

from __future__ import annotations

import math
import posixpath
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from spaces.model import KINDS, TYPES, Parameter, Relation, Space
from spaces.placeholders import path_problem
from tuner.errors import SpaceError

PARAM_KEYS = {
    "kind", "type", "range", "choices", "log", "default", "path", "description", "unit",
    "restart", "optional", "bool_values",
}
TOP_KEYS = {"parameters", "relations", "name", "description"}
_SYSCTL_NAME = re.compile(r"^[a-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+$")
DEBUGFS_SCHED_DIR = "/sys/kernel/debug/sched"
CATALOG_PACKAGE = "spaces.catalog"
DEFAULT_SPACE = "redis-latency"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of duplicate keys silently; a duplicated parameter is an error."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpaceError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def catalog_names() -> list[str]:
    files = resources.files(CATALOG_PACKAGE)
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def resolve_space_path(spec: str | None) -> Path:
    """A file path, or the name of a shipped catalog space (default: redis-latency)."""
    name = spec or DEFAULT_SPACE
    path = Path(name)
    if path.exists():
        return path
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        candidate = resources.files(CATALOG_PACKAGE) / f"{name}.yaml"
        if candidate.is_file():
            return Path(str(candidate))
    raise SpaceError(
        f"space {name!r}: no such file and no shipped space of that name "
        f"(shipped: {', '.join(catalog_names())})"
    )


def load_space(spec: str | None) -> Space:
    path = resolve_space_path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path}: not UTF-8 text (byte {exc.start}); a space is a YAML file") from None
    return parse_space(text, source=str(path))


def parse_space(text: str, source: str = "<space>") -> Space:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except SpaceError as exc:
        raise SpaceError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpaceError(f"{source}: {where}not valid YAML ({problem})") from None
    return space_from_document(data, source)


def space_from_document(data: Any, source: str = "<space>", *, stored: bool = False) -> Space:
    """A space from its parsed form: a loaded YAML file, or the copy stored with an experiment
    (`stored`: it passed the rules of the version that created the experiment; the rules added
    since, marked NEW_RULE below, are not applied to it, so an old experiment stays readable)."""
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict):
        raise SpaceError(f"{source}: expected a top-level 'parameters:' mapping of name -> settings")
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SpaceError(
            f"{source}: unknown top-level key {sorted(unknown)[0]!r} (valid: {', '.join(sorted(TOP_KEYS))})"
        )
    if not data["parameters"]:
        raise SpaceError(f"{source}: 'parameters' is empty; declare at least one parameter")
    for key in ("name", "description"):  # NEW_RULE
        if not stored and data.get(key) is not None and not isinstance(data[key], (str, int, float)):
            raise SpaceError(f"{source}: '{key}' must be text, not {type(data[key]).__name__}")
    params = tuple(
        _parse_parameter(source, str(name), settings, stored=stored) for name, settings in data["parameters"].items()
    )
    names = {p.name for p in params}
    relations = []
    for text_rel in data.get("relations") or []:
        try:
            relation = Relation.parse(str(text_rel))
        except ValueError as exc:
            raise SpaceError(f"{source}: {exc}") from None
        for name in relation.names():
            if name not in names:
                raise SpaceError(f"{source}: relation '{relation}' names unknown parameter {name!r}")
        for name in relation.names():
            if next(p for p in params if p.name == name).type not in ("int", "float", "bool"):
                raise SpaceError(f"{source}: relation '{relation}': {name!r} is not numeric")
        problem = None if stored else relation_problem(relation, {p.name: p for p in params})  # NEW_RULE
        if problem:
            raise SpaceError(f"{source}: relation '{relation}' {problem}")
        relations.append(relation)
    space = Space(params, tuple(relations), str(data.get("name") or Path(source).stem),
                  str(data.get("description") or ""), source)
    defaults = {p.name: p.default for p in params if p.default is not None}
    if len(defaults) == len(params):
        broken = space.satisfies(defaults)
        if broken:
            raise SpaceError(f"{source}: the defaults violate relation '{broken[0]}'")
    return space


def _parse_parameter(source: str, name: str, settings: Any, *, stored: bool = False) -> Parameter:
    def fail(rule: str) -> SpaceError:
        return SpaceError(f"{source}: parameter {name!r}: {rule}")

    if not isinstance(settings, dict):
        raise fail("expected a mapping with at least 'kind' and 'type'")
    unknown = set(settings) - PARAM_KEYS
    if unknown:
        raise fail(f"unknown key {sorted(unknown)[0]!r} (valid: {', '.join(sorted(PARAM_KEYS))})")
    kind = settings.get("kind")
    if kind not in KINDS:
        raise fail(f"unknown kind {kind!r} (valid: {', '.join(KINDS)})")
    ptype = settings.get("type")
    if ptype not in TYPES:
        raise fail(f"unknown type {ptype!r} (valid: {', '.join(TYPES)})")

    path = settings.get("path")
    if kind == "sysctl":
        if not _SYSCTL_NAME.match(name):
            raise fail("a sysctl name is dotted lower-case, e.g. vm.swappiness")
        if path is not None:
            raise fail("'path' is not used for kind sysctl (the name is the key)")
    elif kind == "sysfs":
        if not isinstance(path, str) or not path.startswith("/sys/"):
            raise fail("kind sysfs needs 'path' under /sys/, e.g. /sys/kernel/mm/transparent_hugepage/enabled")
    elif kind == "debugfs":
        path = path or f"{DEBUGFS_SCHED_DIR}/{name}"
        if not str(path).startswith("/sys/kernel/debug/"):
            raise fail("kind debugfs needs 'path' under /sys/kernel/debug/")
    elif kind == "boot":
        if path is not None:
            raise fail("'path' is not used for kind boot (the name is the command-line key)")
        if not re.match(r"^[\w.\-]+$", name):
            raise fail("a boot parameter name is a kernel command-line key, e.g. mitigations")
    if kind in ("sysfs", "debugfs"):
        if not stored and posixpath.normpath(str(path)) != str(path):  # NEW_RULE
            # /sys/../etc/passwd starts with /sys/ too: only a plain path stays where it says
            raise fail(f"path {path} is not a plain absolute path (no '..', '.', '//' or trailing '/')")
        problem = path_problem(str(path))  # {name} placeholders, resolved per host at run time
        if problem:
            raise fail(f"path {path}: {problem}")

    low = high = None
    choices: tuple = ()
    log = bool(settings.get("log", False))
    if ptype in ("int", "float"):
        rng = settings.get("range")
        if not (isinstance(rng, list) and len(rng) == 2 and all(_is_num(v) for v in rng)):
            raise fail(f"type {ptype} needs 'range: [low, high]' with two finite numbers")
        low, high = rng
        if ptype == "int" and not all(float(v) == int(v) for v in rng):
            raise fail("type int needs whole-number range bounds")
        if low > high:
            raise fail(f"range low {low} > high {high}")
        if low == high:
            raise fail(f"range low == high ({low}); use a wider range or drop the parameter")
        if log and low <= 0:
            raise fail(f"log scale needs range low > 0 (got {low})")
        if "choices" in settings:
            raise fail(f"type {ptype} takes 'range', not 'choices'")
    elif ptype == "categorical":
        raw = settings.get("choices")
        if not isinstance(raw, list) or len(raw) < 2:
            raise fail("type categorical needs 'choices: [...]' with at least two values")
        odd = next((c for c in raw if c is None or not isinstance(c, (str, int, float))), False)
        if odd is not False and not stored:  # NEW_RULE
            raise fail(f"choice {odd!r} is not a plain value (text or a number); quote it if it is text")
        if len({str(c) for c in raw}) != len(raw):
            raise fail("choices contain a duplicate")
        choices = tuple(str(c) if not isinstance(c, (int, float)) or isinstance(c, bool) else c for c in raw)
        if log:
            raise fail("log scale applies only to int and float")
        if "range" in settings:
            raise fail("type categorical takes 'choices', not 'range'")
    else:  # bool
        if log or "range" in settings or "choices" in settings:
            raise fail("type bool takes no range, choices or log")

    bool_values = settings.get("bool_values", ["0", "1"])
    if "bool_values" in settings and ptype != "bool" and not stored:  # NEW_RULE
        raise fail(f"bool_values is for type bool, not {ptype}")
    if not (isinstance(bool_values, list) and len(bool_values) == 2):
        raise fail("bool_values needs [false_text, true_text]")
    if not stored and not (all(isinstance(v, (str, int)) for v in bool_values)  # NEW_RULE
                           and str(bool_values[0]) != str(bool_values[1])):
        raise fail("bool_values needs [false_text, true_text], two different texts")

    param = Parameter(
        name=name, kind=kind, type=ptype,
        low=float(low) if ptype == "float" and low is not None else low,
        high=float(high) if ptype == "float" and high is not None else high,
        choices=choices, log=log, default=None, path=path,
        description=str(settings.get("description") or ""), unit=str(settings.get("unit") or ""),
        restart=bool(settings.get("restart", False)),
        optional=bool(settings.get("optional", False)),
        bool_values=(str(bool_values[0]), str(bool_values[1])),
    )
    if "default" in settings:
        default = settings["default"]
        if ptype == "categorical" and not isinstance(default, bool):
            default = param.coerce(default)
        if ptype in ("int", "float") and isinstance(default, float) and not math.isfinite(default):
            raise fail(f"default {default!r} is not a finite number")
        if ptype == "int" and isinstance(default, float) and not default.is_integer():
            raise fail(f"default {default!r} is not a whole number (the type is int)")
        if not param.contains(default):
            allowed = f"[{low}, {high}]" if ptype in ("int", "float") else f"one of {list(choices) or [False, True]}"
            raise fail(f"default {default!r} is outside {allowed}")
        param = Parameter(**{**param.__dict__, "default": default})
    return param


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def relation_problem(relation: Relation, params: dict[str, Parameter]) -> str | None:
    """Why a relation is meaningless on its own, or None: one that no value of its parameters can
    satisfy would leave the optimizer nothing to propose. (One that always holds is harmless.)"""
    def bounds(side: str) -> tuple[float, float]:
        if side not in params:
            return float(side), float(side)
        param = params[side]
        return (0.0, 1.0) if param.type == "bool" else (float(param.low), float(param.high))  # type: ignore[arg-type]

    if relation.left == relation.right:
        return "compares a side with itself"
    if not relation.names():
        return "names no parameter"
    (left_low, left_high), (right_low, right_high) = bounds(relation.left), bounds(relation.right)
    satisfiable = {"<": left_low < right_high, "<=": left_low <= right_high, ">": left_high > right_low,
                   ">=": left_high >= right_low, "!=": not (left_low == left_high == right_low == right_high)}
    if not satisfiable[relation.op]:
        return "cannot hold for any value in the parameters' ranges"
    return None
