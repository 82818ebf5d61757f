"""The smallest change that keeps the recommended configuration's improvement.

A recommendation changes every knob the search happened to move, but on a real host most of them
are decoys: on our Redis VM only `guest_halt_poll_ns` moved p99, while the recommended
configuration also set swappiness, somaxconn, busy polling and autogroup to whatever its trial
drew. An operator wants to change only what matters (busy polling burns CPU; a smaller somaxconn
drops connection bursts), and each knob left alone is one less thing to review and roll out.

The model says which knobs matter: its kernel is additive over knobs (tuner/gp_kernel.py), so the
posterior mean of "recommended, with this knob put back to the baseline's value" is that knob's
learnt contribution. Backward elimination: put back the knob whose return costs least, as long as
the predicted objective keeps at least KEEP_SHARE of the predicted improvement over the baseline;
a configuration that breaks a space relation is never considered. The result is a prediction for
a configuration that may never have been measured, so `ostune verify` measures it next to the
recommended one ("minimal") before anyone should trust it more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from spaces.model import Space, Value

#: the share of the model's predicted improvement (baseline -> recommended) the minimal change
#: must keep; the 5% given up is far below run-to-run noise (15-30% on Redis p99)
KEEP_SHARE = 0.95

#: posterior mean at each configuration, in engine units (lower is better)
Predict = Callable[[Sequence[Mapping[str, Value]]], np.ndarray]


@dataclass(frozen=True)
class MinimalChange:
    #: the whole configuration: kept knobs at the recommended values, the rest at the baseline's
    params: dict[str, Value]
    #: knobs still changed from the baseline, the one whose return would cost most first
    kept: tuple[str, ...]
    #: knobs put back to the baseline's value, in the order they were
    reverted: tuple[str, ...]
    #: the share of the predicted improvement the minimal change keeps (1.0: all of it)
    share_kept: float

    def changes(self) -> dict[str, Value]:
        """Only the kept knobs: what to write on a host that has the baseline's values."""
        return {name: self.params[name] for name in self.kept}


def changed_knobs(space: Space, config: Mapping[str, Value], baseline: Mapping[str, Value]) -> list[str]:
    return [p.name for p in space.parameters
            if p.name in config and p.name in baseline and p.coerce(config[p.name]) != p.coerce(baseline[p.name])]


def minimal_change(predict: Predict, space: Space, recommended: Mapping[str, Value],
                   baseline: Mapping[str, Value], *, keep_share: float = KEEP_SHARE) -> MinimalChange | None:
    """None when the model predicts no improvement of the recommended configuration over the
    baseline (then it cannot say which knob carries one)."""
    current = dict(recommended)
    changed = changed_knobs(space, current, baseline)
    best, base = (float(v) for v in predict([current, dict(baseline)]))
    gain = base - best
    if not changed or gain <= 0:
        return None
    allowed = (1.0 - keep_share) * gain
    reverted: list[str] = []
    cost = 0.0
    while changed:
        options = []
        for name in changed:
            candidate = {**current, name: baseline[name]}
            if not space.satisfies(candidate):
                options.append((name, candidate))
        if not options:
            break
        means = predict([c for _, c in options])
        pick = int(np.argmin(means))
        if float(means[pick]) - best > allowed:
            break
        name, current = options[pick]
        cost = float(means[pick]) - best
        changed.remove(name)
        reverted.append(name)
    # most important first: what putting each kept knob back alone would cost from here
    if len(changed) > 1:
        solo = predict([{**current, name: baseline[name]} for name in changed])
        changed = [name for _, name in sorted(zip(solo, changed), key=lambda pair: -float(pair[0]))]
    return MinimalChange(current, tuple(changed), tuple(reverted), max(0.0, min(1.0, 1.0 - cost / gain)))
