"""Render a configuration for use outside ostune (sysctl.d drop-in, shell lines, boot tokens)."""

from __future__ import annotations

import shlex
from typing import Mapping

from spaces.model import Space, boot_tokens
from targets.knobs import family_for


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
