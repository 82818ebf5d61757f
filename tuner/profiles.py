"""Known-good starting points: Red Hat tuned profiles shipped as data (spaces/profiles/*.yaml,
each naming its source), restricted to an experiment's parameters.

A new experiment measures them right after the baseline (trial source `profile:<name>`), so the
model sees them early and `ostune verify` can compare the recommendation against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

import yaml

from spaces.model import Parameter, Space, Value
from tuner.errors import SpaceError

PACKAGE = "spaces.profiles"
#: the order trials are run in (a profile that includes another comes after it)
SHIPPED = ("latency-performance", "network-latency")


@dataclass(frozen=True)
class Setting:
    value: Any
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    source: str
    settings: dict[str, Setting]


@dataclass
class ProfileConfig:
    """A profile as a full configuration of one space: the base values with the profile's
    settings (the ones the space has) on top."""

    name: str
    source: str
    params: dict[str, Value]
    changed: dict[str, Value]
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"profile:{self.name}"


def _read(name: str) -> dict[str, Any]:
    path = resources.files(PACKAGE) / f"{name}.yaml"
    if not path.is_file():
        raise SpaceError(f"no shipped profile named {name!r} (shipped: {', '.join(SHIPPED)})")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise SpaceError(f"profile {name}: expected a 'settings:' mapping")
    return data


def load_profile(name: str, _seen: tuple[str, ...] = ()) -> Profile:
    if name in _seen:
        raise SpaceError(f"profile {name}: include cycle {' -> '.join((*_seen, name))}")
    data = _read(name)
    settings: dict[str, Setting] = {}
    if data.get("include"):
        settings.update(load_profile(str(data["include"]), (*_seen, name)).settings)
    for key, entry in data["settings"].items():
        if not isinstance(entry, dict) or "value" not in entry:
            raise SpaceError(f"profile {name}: setting {key!r} needs 'value'")
        settings[str(key)] = Setting(entry["value"], tuple(str(p) for p in entry.get("paths") or ()))
    return Profile(str(data.get("name") or name), str(data.get("source") or ""), settings)


def shipped_profiles() -> list[Profile]:
    return [load_profile(name) for name in SHIPPED]


def _param_path(param: Parameter) -> str | None:
    from targets.knobs import family_for

    if param.kind == "boot":
        return None
    try:
        return family_for(param).path(param)
    except Exception:  # noqa: BLE001 - a family without paths
        return param.path


def restrict(profile: Profile, space: Space, base: Mapping[str, Value]) -> ProfileConfig:
    """The profile on `space`: `base` (usually the baseline) with the profile's settings for the
    parameters the space has. Values outside the space's range/choices are left out with a note."""
    changed: dict[str, Value] = {}
    notes: list[str] = []
    for param in space.parameters:
        setting = profile.settings.get(param.name)
        if setting is None:
            path = _param_path(param)
            setting = next((s for s in profile.settings.values() if path and path in s.paths), None)
        if setting is None:
            continue
        try:
            value = param.coerce(setting.value)
        except (TypeError, ValueError):
            value = setting.value
        if not param.contains(value):
            notes.append(f"{param.name}={setting.value!r} is outside the space's domain; left at the base value")
            continue
        changed[param.name] = value
    params = {name: base[name] for name in space.names if name in base}
    params.update(changed)
    return ProfileConfig(profile.name, profile.source, params, changed, notes)


def profile_configs(space: Space, base: Mapping[str, Value]) -> tuple[list[ProfileConfig], list[str]]:
    """The shipped profiles that change something on this space and satisfy its relations, and
    notes on the ones left out."""
    usable, notes = [], []
    for profile in shipped_profiles():
        config = restrict(profile, space, base)
        notes += [f"profile {profile.name}: {n}" for n in config.notes]
        if not config.changed:
            notes.append(f"profile {profile.name}: sets none of this space's parameters; not measured")
            continue
        broken = space.satisfies(config.params)
        if broken:
            notes.append(f"profile {profile.name}: violates relation '{broken[0]}'; never applied")
            continue
        same = next((u for u in usable if u.params == config.params), None)
        if same is not None:  # they differ only in knobs this space lacks: one measurement says it
            notes.append(f"profile {profile.name}: on this space the same configuration as {same.label}; "
                         "measured once, as that")
            continue
        usable.append(config)
    return usable, notes
