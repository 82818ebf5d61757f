"""Render a configuration for use outside ostune (sysctl.d drop-in, shell lines, boot tokens)."""

from __future__ import annotations

import shlex
from typing import Mapping, Sequence

from spaces.model import Space, boot_tokens
from targets.knobs import family_for


def deployable_space(store, experiment, space: Space, run_ids: Sequence[int]) -> tuple[Space, dict[str, str]]:  # type: ignore[no-untyped-def]
    """The space with its {placeholders} resolved the way the runs that measured a configuration
    resolved them (`run_ids` first, then the experiment's latest runs), and the parameters none of
    them resolved, with why: a deployment file must name /sys/block/vda/..., never
    /sys/block/{datadir_device}/..."""
    from spaces.placeholders import expand, names_in, values_from_paths

    if not any(names_in(p.path) for p in space.parameters):
        return space, {}
    later = [run["id"] for run in reversed(store.runs_for(experiment.id)) if run["id"] not in run_ids]
    values = values_from_paths(space, store.journal_paths([*run_ids, *later]))
    expansion = expand(space, values)
    unresolved = {name: (f"its path {space[name].path} depends on the host, and no run of this experiment "
                         "recorded where it was") for name in expansion.skipped}
    return expansion.space, unresolved


def unresolved_lines(unresolved: Mapping[str, str], values: Mapping[str, object]) -> list[str]:
    """Comment lines for the parameters a deployment file leaves out (only those it would set)."""
    return [f"# not included: {name} = {values[name]} ({why})" for name, why in unresolved.items() if name in values]


def render_sysctl_d(space: Space, values: Mapping[str, object], header: str = "") -> str:
    lines = [f"# {header}"] if header else []
    present = {k: space[k].coerce(v) for k, v in values.items() if k in space}
    sysctls = [p for p in space.parameters if p.kind == "sysctl" and p.name in present]
    files = [p for p in space.parameters if p.kind in ("sysfs", "debugfs") and p.name in present]
    for param in sysctls:
        lines.append(f"{param.name} = {param.render(present[param.name])}")
    if files:
        lines.append("# not sysctls: apply at boot with a unit or tmpfiles.d, e.g.")
        for param in files:
            lines.append(f"# echo {shlex.quote(param.render(present[param.name]))} > {family_for(param).path(param)}")
    tokens = boot_tokens(space, present)
    if tokens:
        lines.append(f"# kernel command line (GRUB_CMDLINE_LINUX): {' '.join(tokens)}")
    return "\n".join(lines)


def minimal_summary(experiment, choice) -> str:  # type: ignore[no-untyped-def]
    """The header of an exported minimal change: what it is and how far it is established."""
    from tuner.recommend import verification_status

    change = choice.minimal
    status = verification_status(choice.minimal_verification,
                                 unmeasured="a model prediction, not measured: run `ostune verify`")
    return (f"ostune experiment {experiment.name}: minimal change, the {len(change.kept)} of "
            f"{change.changed} knobs of trial {choice.trial.number} the model says carry "
            f"{change.share_kept:.0%} of its improvement; every other knob keeps the host's value ({status})")


# -- `ostune export` ----------------------------------------------------------------------------
# Formats for a chosen configuration (sysctl.d, grub, tuned) and for the trials (json, csv).

CONFIG_FORMATS = ("sysctl.d", "grub", "tuned")
TRIAL_FORMATS = ("json", "csv")
FORMATS = CONFIG_FORMATS + TRIAL_FORMATS

#: sysfs files Red Hat tuned manages in its [vm] plugin rather than [sysfs]
TUNED_VM_OPTIONS = {
    "/sys/kernel/mm/transparent_hugepage/enabled": "transparent_hugepages",
    "/sys/kernel/mm/transparent_hugepage/defrag": "transparent_hugepage.defrag",
}


def _boot_tokens_off_default(space: Space, values: Mapping[str, object]) -> list[str]:
    """Boot tokens, leaving out parameters at their default (the kernel's own behaviour)."""
    present = {k: space[k].coerce(v) for k, v in values.items() if k in space}
    changed = {k: v for k, v in present.items()
               if space[k].kind == "boot" and (space[k].default is None or v != space[k].coerce(space[k].default))}
    return boot_tokens(space, changed)


def render_grub(space: Space, values: Mapping[str, object], header: str = "") -> str:
    """/etc/default/grub.d/ostune.cfg (Debian/Ubuntu source it after /etc/default/grub): a comment
    saying where it comes from, then one line appending the boot parameters to whatever
    GRUB_CMDLINE_LINUX holds. With no boot parameter changed the line is a deliberate no-op and
    the comment says so, so a pipeline that always installs the fragment keeps working."""
    tokens = _boot_tokens_off_default(space, values)
    for token in tokens:
        if '"' in token or "$" in token or "`" in token or "\\" in token:
            raise ValueError(f"boot token {token!r} cannot be written into a GRUB shell fragment")
    lines = [f"# {header}"] if header else []
    if not tokens:
        lines.append("# changes no kernel boot parameter: GRUB_CMDLINE_LINUX stays as it is")
    lines.append(f'GRUB_CMDLINE_LINUX="${{GRUB_CMDLINE_LINUX}}{"".join(" " + t for t in tokens)}"')
    return "\n".join(lines)


def render_tuned(space: Space, values: Mapping[str, object], *, summary: str, include: str | None = None) -> str:
    """tuned.conf of a Red Hat tuned profile: [main], then [sysctl], [vm], [sysfs] and [bootloader]
    for the kinds of parameters present."""
    present = {k: space[k].coerce(v) for k, v in values.items() if k in space}
    sections: dict[str, list[str]] = {"main": [f"summary={summary.replace(chr(10), ' ')}"]}
    if include:
        sections["main"].append(f"include={include}")
    for param in space.parameters:
        if param.name not in present:
            continue
        text = param.render(present[param.name])
        if param.kind == "sysctl":
            sections.setdefault("sysctl", []).append(f"{param.name}={text}")
        elif param.kind in ("sysfs", "debugfs"):
            path = family_for(param).path(param)
            if path in TUNED_VM_OPTIONS:
                sections.setdefault("vm", []).append(f"{TUNED_VM_OPTIONS[path]}={text}")
            else:
                sections.setdefault("sysfs", []).append(f"{path}={text}")
    tokens = _boot_tokens_off_default(space, values)
    if tokens:
        sections["bootloader"] = [f"cmdline={' '.join(tokens)}"]
    out = []
    for name in ("main", "sysctl", "vm", "sysfs", "bootloader"):
        if name not in sections:
            continue
        lines = sections[name]
        out.append(f"[{name}]")
        out.extend(lines)
        out.append("")
    return "\n".join(out)


def trial_rows(trials: list, space: Space | None = None) -> tuple[list[dict[str, object]], list[str]]:  # type: ignore[type-arg]
    """One flat dict per trial (params as `param:NAME`, metrics as `metric:NAME`) and the columns.
    With the space, parameter values are in their own types (5 and false, not the 5.0 and 0.0 of
    the database's float column)."""
    params = sorted({k for t in trials for k in t.params})
    metrics = sorted({k for t in trials for k in t.metrics})
    base = ["trial", "status", "source", "objective", "objective_sd", "repetitions", "started_at",
            "duration_s", "error"]
    rows = []
    for t in trials:
        row: dict[str, object] = {
            "trial": t.number, "status": t.status, "source": t.source, "objective": t.objective,
            "objective_sd": t.objective_sd, "repetitions": t.repetitions,
            "started_at": t.started_at.isoformat() if t.started_at else None,
            "duration_s": t.duration_s, "error": t.error,
        }
        row.update({f"param:{k}": _typed(space, k, t.params.get(k)) for k in params})
        row.update({f"metric:{k}": t.metrics.get(k) for k in metrics})
        rows.append(row)
    return rows, base + [f"param:{k}" for k in params] + [f"metric:{k}" for k in metrics]


def _typed(space: Space | None, name: str, value: object) -> object:
    if space is None or value is None or name not in space:
        return value
    return space[name].coerce(value)


def render_trials_json(experiment: object, trials: list, space: Space | None = None) -> str:  # type: ignore[type-arg]
    import json

    rows, _ = trial_rows(trials, space)
    doc = {
        "experiment": getattr(experiment, "name"), "objective": getattr(experiment, "objective"),
        "direction": getattr(experiment, "direction"), "space": getattr(experiment, "space"),
        "target": getattr(experiment, "target"), "trials": rows,
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def render_trials_csv(trials: list, space: Space | None = None) -> str:  # type: ignore[type-arg]
    import csv
    import io

    rows, columns = trial_rows(trials, space)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()
