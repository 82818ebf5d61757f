"""``{name}`` placeholders in parameter paths, resolved per host at run time.

A space may name a file whose location depends on the machine, e.g. the I/O scheduler of the
disk that holds the application's data: ``path: /sys/block/{datadir_device}/queue/scheduler``.
The space (and its hash, which resume compares) keeps the placeholder text, so one experiment can
resume on a machine whose datadir sits on another device. The application supplies the values
after it started (``App.placeholders()``); :func:`expand` substitutes them before the host is
probed, and parameters whose placeholder has no value are skipped with the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from spaces.model import Parameter, Space

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: a substituted value is one path segment: no separators, no '..', nothing odd
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:+\-]+$")


def names_in(path: str | None) -> list[str]:
    """Placeholder names in a path, in order (invalid ones included, for validation)."""
    return PLACEHOLDER.findall(path or "")


def path_problem(path: str) -> str | None:
    """Why a path's placeholders are malformed, or None."""
    rest = PLACEHOLDER.sub("", path)
    if "{" in rest or "}" in rest:
        return "unbalanced '{' or '}' (a placeholder is {name})"
    for name in names_in(path):
        if not NAME.match(name):
            return f"placeholder {{{name}}} is not a name (letters, digits, _)"
    return None


@dataclass
class Expansion:
    #: the space with every resolvable placeholder substituted (unresolvable parameters dropped)
    space: Space
    #: parameter name -> why it is skipped (its placeholder has no value on this host)
    skipped: dict[str, str] = field(default_factory=dict)
    #: names of parameters whose path was expanded (their writability is checked when probed)
    expanded: list[str] = field(default_factory=list)
    #: placeholder -> (value, source) actually used
    used: dict[str, tuple[str, str]] = field(default_factory=dict)


def expand(space: Space, values: Mapping[str, object], *, app_name: str = "the application") -> Expansion:
    """Substitute placeholder values (``targets.apps.base.Placeholder`` objects, or plain
    strings) into parameter paths. Pure: reads nothing from any host."""
    params: list[Parameter] = []
    skipped: dict[str, str] = {}
    expanded: list[str] = []
    used: dict[str, tuple[str, str]] = {}
    for param in space.parameters:
        names = names_in(param.path)
        if not names:
            params.append(param)
            continue
        path = param.path or ""
        reason = ""
        for name in names:
            given = values.get(name)
            value, why, source = _unpack(given)
            if value is None:
                reason = why or f"{app_name} does not provide {{{name}}} (used in {param.path})"
                break
            if not _SAFE_VALUE.match(value) or value in (".", ".."):
                reason = f"{{{name}}} resolved to {value!r}, which is not a single path component"
                break
            path = path.replace("{" + name + "}", value)
            used[name] = (value, source)
        if reason:
            skipped[param.name] = reason
            continue
        params.append(replace(param, path=path))
        expanded.append(param.name)
    kept = {p.name for p in params}
    relations = tuple(r for r in space.relations if set(r.names()) <= kept)
    return Expansion(Space(tuple(params), relations, space.name, space.description, space.source),
                     skipped, expanded, used)


def values_from_paths(space: Space, paths: Mapping[str, str]) -> dict[str, str]:
    """Placeholder values read back from real paths (a run's journal: the parameter's path as it
    was written): /sys/block/{datadir_device}/queue/scheduler and /sys/block/vda/queue/scheduler
    give datadir_device=vda. Pure."""
    values: dict[str, str] = {}
    for param in space.parameters:
        names = names_in(param.path)
        real = paths.get(param.name)
        if not names or real is None:
            continue
        pattern = "".join(f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
                          for i, part in enumerate(PLACEHOLDER.split(param.path or "")))
        try:
            match = re.fullmatch(pattern, real)
        except re.error:  # a placeholder used twice in one path: a repeated group name
            continue
        if match:
            for name, value in match.groupdict().items():
                values.setdefault(name, value)
    return values


def _unpack(given: object) -> tuple[str | None, str, str]:
    if given is None:
        return None, "", ""
    if isinstance(given, str):
        return (given or None), "", ""
    value = getattr(given, "value", None)
    return (str(value) if value else None), str(getattr(given, "reason", "") or ""), str(getattr(given, "source", "") or "")
