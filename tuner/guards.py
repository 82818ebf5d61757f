"""Run-level metric guards: conditions every trial's metrics must meet, e.g.

    ops_per_s >= 0.95*baseline      throughput at least 95% of the baseline trial's
    errors == 0                     no errors
    p999_ms <= 2*baseline           p99.9 at most twice the baseline's

A trial that breaks one is stored with status `infeasible` (its metrics kept, the broken guard
as its error); the optimizer is told it like a failed trial (worst value plus a margin), so it
learns to avoid the region, and it is never recommended. The baseline trial is the reference
and is not judged by guards that compare to it.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from tuner.errors import BadInputError

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
        "!=": operator.ne}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_GUARD = re.compile(
    rf"^\s*(?P<metric>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    rf"(?:(?P<factor>{_NUMBER})\s*\*\s*baseline|baseline\s*\*\s*(?P<factor2>{_NUMBER})|(?P<base>baseline)|(?P<const>{_NUMBER}))\s*$"
)


@dataclass(frozen=True)
class Guard:
    metric: str
    op: str
    #: the right-hand side is factor x the baseline trial's value of the metric ...
    factor: float | None = None
    #: ... or this constant
    constant: float | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> "Guard":
        match = _GUARD.match(text)
        if not match:
            raise BadInputError(
                f"--guard {text!r} is not METRIC OP VALUE (OP: >= <= > < == !=; VALUE: a number, "
                "baseline, or NUMBER*baseline), e.g. 'ops_per_s>=0.95*baseline' or 'errors==0'"
            )
        factor = match.group("factor") or match.group("factor2")
        if factor is not None or match.group("base"):
            return cls(match.group("metric"), match.group("op"), float(factor or 1.0), None, text.strip())
        return cls(match.group("metric"), match.group("op"), None, float(match.group("const")), text.strip())

    @property
    def relative(self) -> bool:
        return self.factor is not None

    def check(self, metrics: Mapping[str, float], baseline: Mapping[str, float] | None) -> str | None:
        """None if the guard holds, else why not (one line)."""
        if self.metric not in metrics:
            return f"guard '{self.text}': metric {self.metric!r} was not reported"
        if self.relative:
            if baseline is None or self.metric not in baseline:
                return None  # nothing to compare with yet (the baseline itself)
            limit = float(self.factor) * float(baseline[self.metric])  # type: ignore[arg-type]
        else:
            limit = float(self.constant)  # type: ignore[arg-type]
        value = float(metrics[self.metric])
        if _OPS[self.op](value, limit):
            return None
        return f"guard '{self.text}' broken: {self.metric} = {value:.6g}, limit {limit:.6g}"


def unreported_guard(guards: Sequence[Guard], reported: Collection[str]) -> Guard | None:
    """The first guard on a metric the workload has never reported (`reported`: every metric of
    the experiment's measured trials), or None. Such a guard would make every trial infeasible."""
    return next((g for g in guards if g.metric not in reported), None)


def parse_guards(texts: Sequence[str]) -> tuple[Guard, ...]:
    return tuple(Guard.parse(t) for t in texts)


def broken_guards(guards: Sequence[Guard], metrics: Mapping[str, float],
                  baseline: Mapping[str, float] | None) -> list[str]:
    return [msg for g in guards if (msg := g.check(metrics, baseline)) is not None]
