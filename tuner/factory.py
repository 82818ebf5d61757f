"""Build hosts, applications and workloads from command-line choices (imports stay lazy so that
`ostune show` does not load fabric or QEMU code)."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from targets.apps.base import App
from targets.hosts.base import Host
from targets.workloads.base import Workload
from tuner.errors import BadInputError

APPS = ("redis", "command", "mariadb", "mysql")


@dataclass
class TargetOptions:
    app: str = "redis"
    command: str | None = None
    host: str = "local"
    #: workload settings (clients, requests, ...) by name; unknown names are errors
    workload: dict[str, Any] = field(default_factory=dict)
    #: application settings (binary, config overrides, dsn, ...)
    app_settings: dict[str, Any] = field(default_factory=dict)
    #: QEMU / SSH host settings
    host_settings: dict[str, Any] = field(default_factory=dict)


def make_host(options: TargetOptions) -> Host:
    spec = options.host
    if spec in ("local", "none") and options.host_settings:
        raise BadInputError(f"--host-set {sorted(options.host_settings)[0]}: --host {spec} takes no host "
                            "settings (they are for --host qemu and ssh://…)")
    if spec == "local":
        from targets.hosts.local import LocalHost

        return LocalHost()
    if spec == "none":
        from targets.hosts.none import NoneHost

        return NoneHost()
    if spec == "qemu":
        from targets.hosts.qemu import QemuHost, check_extra_qemu_args
        from targets.vm.factory import make_qemu_host

        check_settings("--host-set", "qemu hosts", options.host_settings, make_qemu_host, QemuHost.__init__,
                       internal=QEMU_INTERNAL_ARGUMENTS)
        if "extra_qemu_args" in options.host_settings:  # before the image is built (minutes)
            check_extra_qemu_args(options.host_settings["extra_qemu_args"])
        return make_qemu_host(**options.host_settings)
    if spec.startswith("ssh://"):
        from targets.hosts.ssh import SshHost

        check_settings("--host-set", "ssh hosts", options.host_settings, SshHost.__init__)
        return SshHost(spec, **options.host_settings)
    raise BadInputError(f"--host {spec!r} is not one of: local, none, qemu, ssh://user@host[:port]")


#: constructor arguments that are not settings (given by other options, or internal)
_NOT_SETTINGS = {"self", "url", "image", "progress", "command"}
#: QemuHost arguments for ostune's own use: use_overlay=false boots the shared cached image
#: itself and writes into it; workdir is the run's private directory (overlay, console log)
QEMU_INTERNAL_ARGUMENTS = frozenset({"use_overlay", "workdir"})


def check_settings(flag: str, what: str, settings: dict[str, Any], *constructors: Any,
                   internal: frozenset[str] = frozenset()) -> None:
    """KEY=VALUE settings checked against the constructors they go to, before anything starts (a
    QEMU image build takes minutes): an unknown name is one line listing the valid ones, a value
    of the wrong kind (a word for a number) one line saying what is expected."""
    params: dict[str, inspect.Parameter] = {}
    for constructor in constructors:
        params.update({p.name: p for p in inspect.signature(constructor).parameters.values()
                       if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in _NOT_SETTINGS
                       and p.name not in internal})
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise BadInputError(f"{flag} {unknown[0]}: not a setting of {what} (valid: {', '.join(sorted(params))})")
    for name, value in settings.items():
        param = params[name]
        expected = _scalar_type(param)
        if expected is None or (value is None and ("None" in str(param.annotation) or param.default is None)):
            continue
        if not (isinstance(value, bool) if expected is bool
                else not isinstance(value, bool) and isinstance(value, int if expected is int else (int, float))):
            wanted = {bool: "true or false", int: "an integer", float: "a number"}[expected]
            raise BadInputError(f"{flag} {name}={value}: expected {wanted}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BadInputError(f"{flag} {name}={value}: expected a finite number")
        if expected in (int, float) and "timeout" in name and value <= 0:
            # a timeout of 0 or less failed every trial at once, and was then stored with the experiment
            raise BadInputError(f"{flag} {name}={value}: a timeout must be longer than zero")


def setting_defaults(app: str, host_spec: str) -> dict[str, dict[str, Any]]:
    """What leaving a setting out means, by flag (--set, --app-set, --host-set): the defaults of
    the constructors the settings go to. An experiment that left a setting out was measured with
    its default, so a resumed run that gives the default explicitly changes nothing."""
    workload: list[Any] = []
    application: list[Any] = []
    machine: list[Any] = []
    if app == "command":
        from targets.workloads.command import CommandWorkload

        workload = [CommandWorkload.__init__]
    elif app == "redis":
        from targets.apps.redis import RedisApp
        from targets.workloads.redis_benchmark import RedisBenchmarkWorkload

        workload, application = [RedisBenchmarkWorkload.__init__], [RedisApp.__init__]
    elif app in ("mariadb", "mysql"):
        from targets.apps.mariadb import MariaDBApp
        from targets.workloads.sysbench import SysbenchWorkload

        workload, application = [SysbenchWorkload.__init__], [MariaDBApp.__init__]
    if host_spec == "qemu":
        from targets.hosts.qemu import QemuHost
        from targets.vm.factory import make_qemu_host

        machine = [make_qemu_host, QemuHost.__init__]
    return {"--set": _defaults(workload), "--app-set": _defaults(application), "--host-set": _defaults(machine)}


def _defaults(constructors: list[Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for constructor in constructors:
        for p in inspect.signature(constructor).parameters.values():
            if p.default is not p.empty and p.name not in _NOT_SETTINGS:
                defaults.setdefault(p.name, p.default)
    return defaults


def _scalar_type(param: inspect.Parameter) -> type | None:
    """bool, int or float when the constructor wants one (by its annotation, else its default)."""
    annotation = str(param.annotation).split("|")[0].strip()
    by_annotation = {"bool": bool, "int": int, "float": float}.get(annotation)
    if by_annotation is not None or param.annotation is not inspect.Parameter.empty:
        return by_annotation
    default = param.default
    return type(default) if isinstance(default, (bool, int, float)) else None


def host_spec_for(host_key: str) -> str:
    """The --host value that reaches the host an experiment stored by key (`Host.key`)."""
    if host_key.startswith("local:"):
        return "local"
    if host_key.startswith("qemu:"):
        return "qemu"
    return host_key  # "none", "ssh://user@host:port"


def make_app_and_workload(options: TargetOptions) -> tuple[App, Workload]:
    app = options.app
    if app == "command":
        from targets.apps.none import NoApp
        from targets.workloads.command import CommandWorkload

        if not options.command:
            raise BadInputError("--app command needs --command 'CMD' (its last stdout line: JSON metrics)")
        if options.app_settings:  # there is no application for them to configure
            key = next(iter(options.app_settings))
            raise BadInputError(f"--app-set {key}: --app command has no application settings "
                                "(its command gets the parameters; workload settings go with --set)")
        check_settings("--set", "the command workload", options.workload, CommandWorkload.__init__)
        return NoApp(), CommandWorkload(options.command, **options.workload)
    if options.command:
        raise BadInputError(f"--command is only used with --app command, not --app {app}")
    if app == "redis":
        from targets.apps.redis import RedisApp
        from targets.workloads.redis_benchmark import RedisBenchmarkWorkload

        check_settings("--app-set", "the redis app", options.app_settings, RedisApp.__init__)
        check_settings("--set", "redis-benchmark", options.workload, RedisBenchmarkWorkload.__init__)
        return _construct(RedisApp, options.app_settings), _construct(RedisBenchmarkWorkload, options.workload)
    if app in ("mariadb", "mysql"):
        from targets.apps.mariadb import MariaDBApp, make_mysql_app
        from targets.workloads.sysbench import SysbenchWorkload

        if not options.app_settings.get("dsn"):  # with --dsn, make_mysql_app says which settings do not apply
            check_settings("--app-set", "the mariadb app", options.app_settings, MariaDBApp.__init__)
        check_settings("--set", "sysbench", options.workload, SysbenchWorkload.__init__)

        return _construct(make_mysql_app, options.app_settings), _construct(SysbenchWorkload, options.workload)
    raise BadInputError(f"--app {app!r} is not one of: {', '.join(APPS)}")


def _construct(factory: Any, settings: dict[str, Any]) -> Any:
    try:
        return factory(**settings)
    except TypeError as exc:
        raise BadInputError(f"setting not understood by {factory.__name__}: {exc}") from None
