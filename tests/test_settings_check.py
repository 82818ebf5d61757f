"""KEY=VALUE settings (--host-set, --app-set, --set) are checked against the constructor they go
to before anything starts: names, and the kind of value where a number or a flag is wanted."""

from __future__ import annotations

from typing import Mapping

import pytest

from tuner.errors import BadInputError
from tuner.factory import check_settings


def target(*, port: int | None = None, timeout_s: float = 10.0, retries: int = 3, keep: bool = False,
           config: Mapping[str, object] | None = None, name: str = "x", command: str = "") -> None:
    """A constructor's shape: the checker reads only its signature."""


@pytest.mark.parametrize("settings", [
    {}, {"port": 6379}, {"port": None}, {"timeout_s": 2}, {"timeout_s": 2.5}, {"retries": 0},
    {"keep": True}, {"config": {"maxmemory": "1gb"}}, {"name": "y"},
])
def test_good_settings_pass(settings) -> None:
    check_settings("--x-set", "the target", settings, target)


@pytest.mark.parametrize("settings, message", [
    ({"prot": 1}, "--x-set prot: not a setting of the target (valid: config, keep, name, port, retries, timeout_s)"),
    ({"command": "ls"}, "--x-set command: not a setting"),  # given by its own option, not a setting
    ({"port": "abc"}, "--x-set port=abc: expected an integer"),
    ({"port": 2.5}, "--x-set port=2.5: expected an integer"),
    ({"retries": True}, "--x-set retries=True: expected an integer"),
    ({"retries": None}, "--x-set retries=None: expected an integer"),
    ({"timeout_s": "soon"}, "--x-set timeout_s=soon: expected a number"),
    ({"keep": "maybe"}, "--x-set keep=maybe: expected true or false"),
    # a timeout of zero or less failed every trial at once, and was stored with the experiment
    ({"timeout_s": -1}, "--x-set timeout_s=-1: a timeout must be longer than zero"),
    ({"timeout_s": 0}, "--x-set timeout_s=0: a timeout must be longer than zero"),
    ({"timeout_s": float("inf")}, "--x-set timeout_s=inf: expected a finite number"),
    ({"port": float("nan")}, "--x-set port=nan: expected an integer"),
    ({"timeout_s": -10**400}, "--x-set timeout_s=-1000"),  # an int of any size is no float overflow here
    ({"keep": 1}, "--x-set keep=1: expected true or false"),
])
def test_bad_settings_are_named(settings, message) -> None:
    with pytest.raises(BadInputError) as caught:
        check_settings("--x-set", "the target", settings, target)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize("config, message", [
    ("nothere", "redis config='nothere' is not a mapping of directives, e.g. --app-set 'config={maxmemory: 1gb}'"),
    ({"save": [1, 2]}, "redis config save: give a plain value"),
    ({"maxmemory": None}, "redis config maxmemory: give a plain value"),
    ({"Port": 7000}, "redis config may not set Port: ostune manages them"),
])
def test_an_apps_config_setting_is_a_mapping_of_plain_directives(config, message) -> None:
    from targets.apps.mariadb import MariaDBApp
    from targets.apps.redis import RedisApp

    with pytest.raises(BadInputError) as caught:
        RedisApp(config=config)
    assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(BadInputError, match="^mariadb config"):
        MariaDBApp(config=config)
    assert RedisApp(config={"maxmemory": "1gb", "appendonly": True}).config == {"maxmemory": "1gb", "appendonly": True}
