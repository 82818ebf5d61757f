"""The measurement set-up an experiment stores (workload, application and host settings), and how
a later `ostune run` or `ostune verify` of it reuses that set-up.

Trials measured under different set-ups (another client count, a custom redis-server build, Redis
config overrides) are not comparable: one model fitted to both ranks configurations by set-up, not
by kernel value, and a verification under another set-up re-measures something else. So a resumed
run or a verification takes the stored settings for whatever it is not given, and a resumed run
refuses a given workload or application setting that differs from the stored one. Host settings
are reused when the host is the experiment's own; a given one replaces the stored one when it
only says how to reach the host (a key file, a timeout), and is refused like a workload setting
when it changes the machine measured (a QEMU guest's memory, vCPUs, accelerator).

Secrets are never stored: a DSN (it may carry a password) is left out; the experiment's target
keeps its password-free form, and the DSN is given again to reach that server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from tuner.errors import BadInputError

if TYPE_CHECKING:
    from storage.store import ExperimentRecord
    from tuner.factory import TargetOptions

SECRET_SETTINGS = frozenset({"dsn"})


def settings_to_store(*, workload: Mapping[str, Any], app_settings: Mapping[str, Any],
                      host_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings_json parts that describe the set-up (the DSN is never among them)."""
    return {
        "workload": dict(workload),
        "app_settings": {k: v for k, v in app_settings.items() if k not in SECRET_SETTINGS},
        "host_settings": dict(host_settings),
    }


def reuse_measured(stored: Mapping[str, Any] | None, given: Mapping[str, Any], *, what: str,
                   experiment: str, defaults: Mapping[str, Any] = {}) -> dict[str, Any]:
    """Settings for a resumed run: the stored ones plus what is given, when what is given does not
    change the set-up. `stored` None: an experiment from before settings of this kind were
    stored; nothing is known, the given ones are used as they are. A setting the experiment left
    out was measured with its default (`defaults`): giving that value changes nothing."""
    if stored is None:
        return dict(given)
    for key, value in given.items():
        if key in SECRET_SETTINGS:
            continue
        if key not in stored:
            if key in defaults and _same_value(defaults[key], value):
                continue
            default = f"{key}={_shown(defaults[key])}" if key in defaults else key
            raise BadInputError(
                f"{what} {key}={_shown(value)}: experiment {experiment!r} was measured with the default "
                f"{default}; another set-up makes its trials incomparable (use a new --experiment name, "
                f"or leave {key} out)")
        if stored[key] != value:
            raise BadInputError(
                f"{what} {key}={_shown(value)}: experiment {experiment!r} was measured with "
                f"{key}={_shown(stored[key])}; another set-up makes its trials incomparable (use a new "
                f"--experiment name, or leave {key} out to reuse the stored value)")
    return {**stored, **given}


def reuse_host(stored: Mapping[str, Any] | None, given: Mapping[str, Any], *, same_host: bool) -> dict[str, Any]:
    """Host settings: the stored ones (only for the experiment's own host), a given one on top."""
    if stored is None or not same_host:
        return dict(given)
    return {**stored, **given}


def reuse_resumed_host(stored: Mapping[str, Any] | None, given: Mapping[str, Any], *, same_host: bool,
                       machine_settings: frozenset[str], experiment: str,
                       defaults: Mapping[str, Any] = {}) -> dict[str, Any]:
    """A resumed run's host settings: as reuse_host, but a setting that changes the machine
    measured must match the stored one (or its default, when none was stored)."""
    if stored is not None and same_host:
        reuse_measured({k: v for k, v in stored.items() if k in machine_settings},
                       {k: v for k, v in given.items() if k in machine_settings},
                       what="--host-set", experiment=experiment, defaults=defaults)
    return reuse_host(stored, given, same_host=same_host)


def _same_value(a: Any, b: Any) -> bool:
    """Equal, and both or neither a bool (True == 1 in Python, not in a setting)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resumed_options(options: "TargetOptions", experiment: "ExperimentRecord", *,
                    dsn_from_environment: bool = False) -> "TargetOptions":
    """`ostune run` of an existing experiment: the stored set-up for what the command line leaves
    out. Another app is left alone here (the run refuses it with its own message). The MySQL
    server is part of the set-up: an experiment tuned on ostune's own server is not continued on
    an external one, nor the other way round (the DSN from OSTUNE_DSN is not given for this
    experiment in particular, so it is only left unused where it does not apply)."""
    from tuner.factory import TargetOptions, host_spec_for, setting_defaults

    target = experiment.target
    if {"mariadb": "mysql"}.get(options.app, options.app) != target.get("app"):
        return options
    settings = experiment.settings
    same_host = options.host == host_spec_for(str(target.get("host")))
    given_app_settings = dict(options.app_settings)
    if target.get("app") == "mysql":
        given_app_settings = _with_experiments_server(given_app_settings, experiment,
                                                      dsn_from_environment=dsn_from_environment, command="run")
    defaults = setting_defaults(options.app, options.host)
    return TargetOptions(
        # the command workload's command is its whole set-up: reused when left out (a different
        # one is refused by resolve_experiment)
        app=options.app, command=options.command or target.get("command"), host=options.host,
        workload=reuse_measured(settings.get("workload"), options.workload, what="workload setting",
                                experiment=experiment.name, defaults=defaults["--set"]),
        app_settings=reuse_measured(_stored_app_settings(experiment), given_app_settings, what="--app-set",
                                    experiment=experiment.name, defaults=defaults["--app-set"]),
        host_settings=reuse_resumed_host(settings.get("host_settings"), options.host_settings, same_host=same_host,
                                         machine_settings=_machine_settings(options.host),
                                         experiment=experiment.name, defaults=defaults["--host-set"]),
    )


def _stored_app_settings(experiment: "ExperimentRecord") -> dict[str, Any] | None:
    """The stored --app-set settings; None for an experiment from before they were stored
    (nothing known, so nothing is refused)."""
    # Versions before 2026-11-27 accepted and stored --app-set for --app command, which has no
    # application to configure and never used them: such an experiment must stay runnable.
    if experiment.target.get("app") == "command":
        return {}
    return experiment.settings.get("app_settings")


def _machine_settings(host_spec: str) -> frozenset[str]:
    if host_spec == "qemu":
        from targets.vm.factory import MACHINE_SETTINGS

        return MACHINE_SETTINGS
    return frozenset()  # a local, remote or no host: its settings only say how to reach it


def verify_options(experiment: "ExperimentRecord", *, host_spec: str | None, host_settings: Mapping[str, Any],
                   dsn: str | None, dsn_from_environment: bool = False) -> "TargetOptions":
    """`ostune verify`: re-measure under the experiment's stored set-up, on its host unless told
    otherwise. An external MySQL server is reached with its DSN given again (never stored), and
    only if it is the server the experiment tuned."""
    from tuner.factory import TargetOptions, host_spec_for

    target = experiment.target
    app = {"mysql": "mariadb"}.get(str(target.get("app")), str(target.get("app")))
    own_host = host_spec_for(str(target.get("host")))
    app_settings = dict(_stored_app_settings(experiment) or {})
    if dsn is not None:
        app_settings["dsn"] = dsn
    app_settings = _with_experiments_server(app_settings, experiment, dsn_from_environment=dsn_from_environment,
                                            command="verify")
    return TargetOptions(
        app=app, command=target.get("command"), host=host_spec or own_host,
        workload=dict(experiment.settings.get("workload") or {}), app_settings=app_settings,
        host_settings=reuse_host(experiment.settings.get("host_settings"), host_settings,
                                 same_host=(host_spec or own_host) == own_host),
    )


def _with_experiments_server(app_settings: dict[str, Any], experiment: "ExperimentRecord", *,
                             dsn_from_environment: bool, command: str) -> dict[str, Any]:
    """`app_settings` with the DSN of the server the experiment tuned: required (and checked to be
    that server) when it tuned an external one; refused when ostune started its own server (an
    OSTUNE_DSN meant for other experiments is dropped instead). Trials on two servers in one
    experiment would rank configurations by server, not by kernel value."""
    target = experiment.target
    dsn = app_settings.get("dsn")
    if target.get("app") == "mysql" and target.get("managed") is False:
        return {**app_settings, "dsn": _same_server(dsn, str(target.get("dsn")), experiment.name)}
    if dsn is None:
        return app_settings
    if dsn_from_environment:
        return {k: v for k, v in app_settings.items() if k != "dsn"}
    own = "a MariaDB server ostune starts itself" if target.get("app") == "mysql" else f"--app {target.get('app')}"
    hint = ("leave --dsn out, or use a new --experiment name to tune the external server" if command == "run"
            else "leave --dsn out")
    raise BadInputError(f"--dsn: experiment {experiment.name!r} did not tune an external MySQL server (it was tuned "
                        f"on {own}); {hint}")


def _same_server(dsn: str | None, stored_dsn: str, experiment: str) -> str:
    from targets.apps.mariadb import ExternalMySQL

    if dsn is None:
        raise BadInputError(f"experiment {experiment!r} tuned the external server {stored_dsn}; give its DSN "
                            "with --dsn or OSTUNE_DSN (its password is never stored)")
    given = ExternalMySQL(dsn).safe_dsn  # the form the experiment's target stores
    if given != stored_dsn:
        raise BadInputError(f"--dsn {given} is not the server experiment {experiment!r} tuned ({stored_dsn})")
    return dsn
