"""The kernel state of a host during an experiment: which parameters exist there, their original
values (journalled before any write), applying a configuration, and putting everything back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping

from spaces.model import Parameter, Space, Value, boot_tokens, values_equal
from storage.store import JournalRecord, ResultStore
from targets.hosts.base import Host
from targets.knobs import Availability, BootKnobs, family_for, parse_knob_text
from tuner.errors import ApplyError, HostError, HostUnreachableError, KnobUnavailableError


@dataclass
class ProbeReport:
    available: list[str] = field(default_factory=list)
    #: parameter name -> why it is skipped on this host
    skipped: dict[str, str] = field(default_factory=dict)
    #: parameter name -> the raw text the kernel reports now (runtime parameters)
    originals: dict[str, str] = field(default_factory=dict)
    #: parameter name -> value now (runtime: coerced original; boot: from /proc/cmdline)
    current: dict[str, Value] = field(default_factory=dict)


@dataclass
class ApplyOutcome:
    rebooted: bool = False
    #: parameters whose change requires restarting the application
    restart_for: list[str] = field(default_factory=list)


def probe(host: Host, space: Space, *, strict: bool = False, check_writable: Collection[str] = (),
          skipped: Mapping[str, str] | None = None) -> ProbeReport:
    """Read every parameter once. Missing non-optional parameters are errors (likely typos);
    optional ones, and ones the kernel forbids (lockdown, EPERM), are skipped with the reason.
    With strict=True anything unavailable is an error.

    ``check_writable``: parameters also written back with the value just read (a no-op for the
    kernel, and what the baseline trial writes anyway) and skipped with the reason if that write
    is refused: a run passes every runtime knob. ``skipped``:
    parameters already known to be unavailable (e.g. an unresolved placeholder), with reasons."""
    report = ProbeReport()
    for name, reason in (skipped or {}).items():
        if strict:
            raise KnobUnavailableError(f"{name}: {reason}")
        report.skipped[name] = reason
    boot_knobs = BootKnobs()
    for param in space.parameters:
        if param.kind == "boot":
            reason = _boot_unsupported(host)
            if reason is not None:
                if strict:
                    raise KnobUnavailableError(f"{param.name}: {reason}")
                report.skipped[param.name] = reason
                continue
            report.available.append(param.name)
            report.current[param.name] = boot_knobs.read(host, param)  # type: ignore[assignment]
            continue
        availability = _read_runtime(host, param, write_back=param.name in check_writable)
        if availability.available:
            assert availability.current is not None
            report.available.append(param.name)
            report.originals[param.name] = availability.current
            report.current[param.name] = param.coerce(availability.current)
            continue
        missing = "does not exist" in availability.reason
        if strict or (missing and not param.optional):
            hint = "" if strict else " (mark it `optional: true` in the space to skip it where missing)"
            raise KnobUnavailableError(f"{param.name} ({param.kind}): {availability.reason}{hint}")
        report.skipped[param.name] = availability.reason
    if not report.available:
        raise KnobUnavailableError(
            f"none of the space's {len(space)} parameters can be tuned on {host.key}: "
            + "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:3])
        )
    return report


def read_parameters(host: Host, space: Space, *, write_back: bool = False) -> dict[str, Availability]:
    """What `ostune spaces NAME --host H` shows: every parameter's current value on the host, or
    why a run would skip it. Reads only, unless `write_back`: then each value read is also
    written back, as a run's probe does, which finds the knobs root may read but not write."""
    from spaces.placeholders import expand, names_in

    expansion = expand(space, {})  # {placeholders} are only known once the application runs
    out = {name: Availability(name, False, f"{space[name].path}: {', '.join('{' + n + '}' for n in names_in(space[name].path))} "
                                           "is known once the application runs")
           for name in expansion.skipped}
    boot_knobs = BootKnobs()
    for param in expansion.space.parameters:
        if param.kind != "boot":
            out[param.name] = _read_runtime(host, param, write_back=write_back)
        elif (reason := _boot_unsupported(host)) is not None:
            out[param.name] = Availability(param.name, False, reason)
        else:
            current = boot_knobs.read(host, param)
            out[param.name] = Availability(param.name, True, current=None if current is None else param.render(current))
    return out


def _boot_unsupported(host: Host) -> str | None:
    """Why boot parameters cannot be tuned on this host, or None when they can."""
    if host.supports_boot:
        return None
    return f"boot parameters need a host that can reboot (--host qemu or ssh://…), not {host.key}"


def _read_runtime(host: Host, param: Parameter, *, write_back: bool) -> Availability:
    """A runtime knob read (and, with `write_back`, its value written back unchanged)."""
    availability = family_for(param).probe(host, param)
    if write_back and availability.available:
        availability = _check_writable(host, param, availability)
    return availability


def _check_writable(host: Host, param: Parameter, availability: Availability) -> Availability:
    assert availability.current is not None
    family = family_for(param)
    try:
        family.write_raw(host, param, availability.current)
    except HostError as exc:
        return Availability(param.name, False, f"cannot write back the value it holds ({exc})")
    return availability


class HostState:
    """Applies configurations to one host and restores it, journalling originals first."""

    def __init__(self, host: Host, space: Space, store: ResultStore, run_id: int, report: ProbeReport) -> None:
        self.host = host
        self.space = space.subset(report.available)
        self.store = store
        self.run_id = run_id
        self.report = report
        self._applied: dict[str, Value] = {}
        self._journalled = False

    def journal(self) -> None:
        """Record the originals in the database before anything is written."""
        entries = []
        for param in self.space.parameters:
            if param.kind == "boot":
                continue
            family = family_for(param)
            entries.append((param.name, param.kind, family.path(param), self.report.originals[param.name]))
        self.store.journal_originals(self.run_id, self.host.key, entries)
        self._journalled = True

    def baseline(self) -> dict[str, Value]:
        """The host's current values for every available parameter."""
        return {name: self.report.current[name] for name in self.space.names}

    def apply(self, values: Mapping[str, Value]) -> ApplyOutcome:
        if not self._journalled:
            raise RuntimeError("HostState.apply before journal(): originals would be lost")
        outcome = ApplyOutcome()
        tokens = boot_tokens(self.space, {k: v for k, v in values.items() if k in self.space})
        tokens = [t for t in tokens if not self._is_default_token(t)]
        if any(p.kind == "boot" for p in self.space.parameters):
            outcome.rebooted = self.host.ensure_boot(tokens)
            if outcome.rebooted:
                # A reboot resets runtime knobs to their boot-time values: re-apply all of them.
                self._applied = {k: v for k, v in self._applied.items() if self.space[k].kind == "boot"}
        for param in self.space.parameters:
            if param.name not in values:
                continue
            value = values[param.name]
            if param.kind == "boot":
                self._applied[param.name] = value
                continue
            previous = self._applied.get(param.name, self.report.current.get(param.name))
            family_for(param).apply(self.host, param, value)
            changed = previous is None or not values_equal(param, value, previous)
            if param.restart and changed:
                outcome.restart_for.append(param.name)
            self._applied[param.name] = value
        self._recheck(values)
        if outcome.rebooted:
            outcome.restart_for.append("(reboot)")
        return outcome

    def _recheck(self, values: Mapping[str, Value]) -> None:
        """Read every written knob once more: a later write can move an earlier one (switching a
        disk's I/O scheduler resets its nr_requests). A moved knob is written again, once."""
        for param in self.space.parameters:
            if param.kind == "boot" or param.name not in values:
                continue
            family = family_for(param)
            if not values_equal(param, values[param.name], family.read_raw(self.host, param)):
                family.apply(self.host, param, values[param.name])

    def _is_default_token(self, token: str) -> bool:
        # A boot parameter at its default is left off the command line (the kernel's own default).
        name, _, value = token.partition("=")
        param = self.space[name]
        return param.default is not None and value != "" and values_equal(param, param.default, value)

    def restore(self, log: Callable[[str], None] | None = None) -> list[str]:
        """Put back every journalled original of this run. Returns failure messages."""
        failures = restore_entries(self.host, self.store, self.store.pending_journal([self.run_id]), log)
        restore_boot = getattr(self.host, "restore_boot", None)
        if any(p.kind == "boot" for p in self.space.parameters) and callable(restore_boot):
            try:
                restore_boot()
            except HostError as exc:
                failures.append(f"boot parameters: {exc}")
        self._applied.clear()
        return failures


def restore_entries(
    host: Host, store: ResultStore, entries: list[JournalRecord], log: Callable[[str], None] | None = None,
) -> list[str]:
    """Write originals back (newest first), read back; then check all of them once more (a
    later write can move an earlier knob: switching a disk's I/O scheduler resets its
    nr_requests), writing a moved one again; mark each entry restored.

    A knob the kernel refuses its original is tried once more after all the others are back:
    what it accepts can depend on another knob (a disk's nr_requests is capped at its tag depth
    while its scheduler is `none`, and the scheduler is put back after it)."""
    failures: list[str] = []

    def failed(entry: JournalRecord, exc: Exception) -> None:
        message = f"{entry.name}: could not restore {entry.original!r}: {exc}"
        store.mark_restored(entry.id, error=message)
        failures.append(message)

    gone: list[HostUnreachableError] = []  # once the host is gone, the rest is not tried
    refused: list[JournalRecord] = []

    def attempt(entry: JournalRecord, action: Callable[[], None], *, last_try: bool = True) -> bool:
        try:
            if gone:
                raise gone[0]
            action()
        except HostUnreachableError as exc:
            gone[:1] = [exc]
            failed(entry, exc)
            return False
        except (HostError, OSError) as exc:
            if last_try:
                failed(entry, exc)
            else:
                refused.append(entry)
            return False
        return True

    written = [entry for entry in reversed(entries)
               if attempt(entry, lambda e=entry: _write_back(host, e), last_try=False)]
    written += [entry for entry in refused if attempt(entry, lambda e=entry: _write_back(host, e))]

    def check_again(entry: JournalRecord) -> None:
        if not _same(parse_knob_text(host.read_text(entry.path)), entry.original):
            _write_back(host, entry)

    for entry in written:
        if not attempt(entry, lambda e=entry: check_again(e)):
            continue
        store.mark_restored(entry.id)
        if log:
            log(f"restored {entry.name} = {entry.original}")
    return failures


def _same(actual: str, original: str) -> bool:
    return " ".join(actual.split()) == " ".join(original.split())


def _write_back(host: Host, entry: JournalRecord) -> None:
    host.write_text(entry.path, entry.original)
    actual = parse_knob_text(host.read_text(entry.path))
    if not _same(actual, entry.original):
        raise ApplyError(f"wrote {entry.original!r} back but the kernel reports {actual!r}")



