"""The parameter-space model: what may be tuned, its type and range, and relations between knobs.

Pure data and pure functions only; reading YAML lives in spaces/loader.py, applying values to a
kernel lives in targets/knobs.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

KINDS = ("sysctl", "sysfs", "debugfs", "boot")
TYPES = ("int", "float", "categorical", "bool")

Value = int | float | str | bool


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    type: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Value, ...] = ()
    log: bool = False
    default: Value | None = None
    path: str | None = None
    description: str = ""
    unit: str = ""
    #: the application must be restarted for a new value to take effect (e.g. THP for Redis)
    restart: bool = False
    #: missing on a host is fine (skipped with a note) instead of an error (likely a typo)
    optional: bool = False
    #: strings written for False/True (e.g. ("N", "Y") for bool module parameters)
    bool_values: tuple[str, str] = ("0", "1")

    def contains(self, value: Value) -> bool:
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):  # (an int of any size is finite)
            return False
        if self.type == "int" and isinstance(value, float) and not value.is_integer():
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def coerce(self, value: Any) -> Value:
        """Convert a stored or read value to this parameter's Python type."""
        if self.type == "int":
            return int(round(float(value)))
        if self.type == "float":
            return float(value)
        if self.type == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "y", "yes", "true", "on", self.bool_values[1].lower())
            return bool(value)
        # categorical: an exact match of the same type first (the optimizer's hot path: ~10k calls
        # per proposal at 200 trials), then by normalized text so "4096 87380 6291456" equals
        # tab-separated reads
        for choice in self.choices:
            if type(choice) is type(value) and choice == value:
                return choice
        for choice in self.choices:
            if normalize_text(str(choice)) == normalize_text(str(value)):
                return choice
        # numeric choices come back from the database as floats (8192.0 for 8192): match by number,
        # or the kernel would be handed '8192.0'
        number = _as_number(value)
        if number is not None:
            for choice in self.choices:
                if _as_number(choice) == number:
                    return choice
        return str(value)

    def render(self, value: Value) -> str:
        """The text written to the kernel (or put on the command line) for a value."""
        if self.type == "bool":
            return self.bool_values[1] if value else self.bool_values[0]
        if self.type == "int":
            return str(int(value))
        if self.type == "float":
            return repr(float(value))
        return str(value)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "type": self.type}
        if self.type in ("int", "float"):
            data["range"] = [self.low, self.high]
        if self.type == "categorical":
            data["choices"] = list(self.choices)
        for key in ("log", "default", "path", "description", "unit", "restart", "optional"):
            value = getattr(self, key)
            if value not in (None, False, ""):
                data[key] = value
        if self.type == "bool" and self.bool_values != ("0", "1"):
            data["bool_values"] = list(self.bool_values)
        return data


_RELATION_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "!=": operator.ne}
_RELATION_RE = re.compile(r"^\s*([\w.\-/]+)\s*(<=|>=|!=|<|>)\s*([\w.\-/]+)\s*$")


@dataclass(frozen=True)
class Relation:
    """`left OP right` where each side is a parameter name or a number."""

    left: str
    op: str
    right: str

    @classmethod
    def parse(cls, text: str) -> "Relation":
        match = _RELATION_RE.match(text)
        if not match:
            raise ValueError(f"relation {text!r} is not of the form 'a < b' (ops: < <= > >= !=)")
        return cls(match.group(1), match.group(2), match.group(3))

    def names(self) -> list[str]:
        return [side for side in (self.left, self.right) if not _is_number(side)]

    def holds(self, values: Mapping[str, Value]) -> bool:
        """True if satisfied, or if a side is not in `values` (a skipped parameter)."""
        try:
            left = float(self.left) if _is_number(self.left) else float(values[self.left])
            right = float(self.right) if _is_number(self.right) else float(values[self.right])
        except KeyError:
            return True
        return _RELATION_OPS[self.op](left, right)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Space:
    parameters: tuple[Parameter, ...]
    relations: tuple[Relation, ...] = ()
    name: str = ""
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {p.name: p for p in self.parameters})

    def __getitem__(self, name: str) -> Parameter:
        return self._by_name[name]  # type: ignore[attr-defined]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.parameters)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def subset(self, names: set[str] | list[str]) -> "Space":
        keep = set(names)
        params = tuple(p for p in self.parameters if p.name in keep)
        relations = tuple(r for r in self.relations if set(r.names()) <= keep)
        return Space(params, relations, self.name, self.description, self.source)

    def satisfies(self, values: Mapping[str, Value]) -> list[Relation]:
        """The relations these values violate (empty when all hold)."""
        return [r for r in self.relations if not r.holds(values)]

    def canonical(self) -> dict[str, Any]:
        return {
            "parameters": {p.name: p.as_dict() for p in self.parameters},
            "relations": [str(r) for r in self.relations],
        }

    def hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def normalize_text(text: str) -> str:
    """Kernel multi-value knobs print tabs; users write spaces. Compare on single spaces."""
    return " ".join(text.split())


def values_equal(param: Parameter, wanted: Value, actual: Value) -> bool:
    if param.type == "float":
        return math.isclose(float(wanted), float(actual), rel_tol=1e-6, abs_tol=1e-9)
    if param.type == "categorical":
        return normalize_text(str(wanted)) == normalize_text(str(actual))
    return param.coerce(wanted) == param.coerce(actual)


@dataclass
class Configuration:
    """A full assignment of values to (some of) a space's parameters."""

    values: dict[str, Value] = field(default_factory=dict)

    def boot_tokens(self, space: Space) -> list[str]:
        return boot_tokens(space, self.values)


def boot_tokens(space: Space, values: Mapping[str, Value]) -> list[str]:
    """Kernel command-line tokens for the `boot` parameters among `values`, in space order.

    A bool boot parameter is a flag (present when true); others render as `name=value`.
    """
    tokens: list[str] = []
    for param in space.parameters:
        if param.kind != "boot" or param.name not in values:
            continue
        value = values[param.name]
        if param.type == "bool":
            if value:
                tokens.append(param.name)
        else:
            tokens.append(f"{param.name}={param.render(value)}")
    return tokens


_WHOLE_RE = re.compile(r"[+-]?[0-9]+")
_BOOL_TEXTS = {"1": True, "y": True, "yes": True, "true": True, "on": True,
               "0": False, "n": False, "no": False, "false": False, "off": False}


def _typed_text(param: Parameter, raw: str, name: str) -> Value:
    """A value the user typed, in the parameter's type, strictly: coerce() is for what the kernel
    and the database give back (8192.0, 'Y'); a person's `5.7` for an int, `maybe` for a bool or
    `inf` is a mistake to name, not to round."""
    if param.type == "int":
        if not _WHOLE_RE.fullmatch(raw) or len(raw) > 30:  # (int() refuses past 4300 digits, in its own words)
            raise ValueError(f"{name}={raw[:40]!r} is not a whole number in [{param.low}, {param.high}]")
        return int(raw)
    if param.type == "float":
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or "_" in raw or not raw.isascii():
            raise ValueError(f"{name}={raw!r} is not a finite number (a float in [{param.low}, {param.high}])")
        return number
    if param.type == "bool":
        texts = {**_BOOL_TEXTS, param.bool_values[0].lower(): False, param.bool_values[1].lower(): True}
        if raw.lower() not in texts:
            raise ValueError(f"{name}={raw!r} is not a bool (true/false, 1/0, or the kernel's "
                             f"{param.bool_values[1]!r}/{param.bool_values[0]!r})")
        return texts[raw.lower()]
    return param.coerce(raw)


def parse_assignment(space: Space, text: str) -> dict[str, Value]:
    """`name=value,name=value` (a configuration to try) checked against the space.
    Raises ValueError with a one-line reason naming the bad part and what would be valid."""
    values: dict[str, Value] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"{part!r} is not name=value")
        if name in values:
            raise ValueError(f"{name!r} is given twice")
        if name not in space:
            raise ValueError(f"{name!r} is not a parameter of the space (parameters: {', '.join(space.names)})")
        param = space[name]
        value = _typed_text(param, raw.strip(), name)
        if not param.contains(value):
            allowed = (f"[{param.low}, {param.high}]" if param.type in ("int", "float")
                       else f"one of {list(param.choices) or [False, True]}")
            raise ValueError(f"{name}={raw.strip()!r} is outside {allowed}")
        values[name] = value
    if not values:
        raise ValueError(f"{text!r} names no parameter")
    return values

