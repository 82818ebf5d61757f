"""The smallest change that keeps the recommended configuration's improvement.

A recommendation changes every knob the search happened to move, but on a real host most of them
are decoys: on our Redis VM only `guest_halt_poll_ns` moved p99, while the recommended
configuration also set swappiness, somaxconn, busy polling and autogroup to whatever its trial
drew. An operator wants to change only what matters (busy polling burns CPU; a smaller somaxconn
drops connection bursts), and each knob left alone is one less thing to review and roll out.

The model says which knobs matter: its kernel is additive over knobs (tuner/gp_kernel.py), so the
posterior of "recommended, with this knob put back to the baseline's value" gives that knob's
learnt contribution, with its uncertainty. Backward elimination: put back the knob whose return
costs least, as long as the model is confident (the cost's mean plus CONFIDENCE_Z standard
deviations of it) that the result keeps at least KEEP_SHARE of the predicted improvement over the
baseline; a configuration that breaks a space relation is never considered. The margin is
small on purpose. A GP shrinks a small real effect it has seen little of towards zero, and its
uncertainty is conditional on the fitted amplitudes, so an underfitted effect looks both small
and certain: no margin protects against that, and a wide one keeps the decoys too. Measured, 30
trials each: on the Redis VM (one knob matters) the minimal change kept guest_halt_poll_ns alone
in 3 of 7 sessions, with one decoy in 2, with three in 1, and found nothing to put back in 1 (z = 2:
alone in 1 of 7, mostly 6-8 decoys kept). On bench/quality.py (seeds 40-49, true values known),
runs where it was worse than the recommendation / better / the same: needle (2 real knobs, 10
decoys) 2/0/3 (z = 0: 5/0/3; z = 2: 1/0/4); writeback 2/4/2 (it puts back knobs the
recommendation had made worse); haltpoll, made of many 4-12% effects, 8/0/0, losing 10-25%.
The result is a prediction for a configuration that may never have been measured, so
`ostune verify` measures it next to the recommended one ("minimal") before anyone should trust it
more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from spaces.model import Space, Value

#: the share of the model's predicted improvement (baseline -> recommended) the minimal change
#: must keep; the 5% given up is far below run-to-run noise (15-30% on Redis p99)
KEEP_SHARE = 0.95

#: how sure the model must be: a knob goes back only if its cost's mean plus this many standard
#: deviations stays within what KEEP_SHARE allows
CONFIDENCE_Z = 0.5

#: the joint posterior at configurations: mean (engine units, lower is better) and covariance
Posterior = Callable[[Sequence[Mapping[str, Value]]], tuple[np.ndarray, np.ndarray]]


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

    @property
    def changed(self) -> int:
        """How many knobs the recommended configuration changed from the baseline."""
        return len(self.kept) + len(self.reverted)

    def changes(self) -> dict[str, Value]:
        """Only the kept knobs: what to write on a host that has the baseline's values."""
        return {name: self.params[name] for name in self.kept}


def changed_knobs(space: Space, config: Mapping[str, Value], baseline: Mapping[str, Value]) -> list[str]:
    return [p.name for p in space.parameters
            if p.name in config and p.name in baseline and p.coerce(config[p.name]) != p.coerce(baseline[p.name])]


def minimal_change(posterior: Posterior, space: Space, recommended: Mapping[str, Value],
                   baseline: Mapping[str, Value], *, keep_share: float = KEEP_SHARE,
                   z: float = CONFIDENCE_Z) -> MinimalChange | None:
    """None when there is no smaller change: the model predicts no improvement of the
    recommended configuration over the baseline (then it cannot say which knob carries one), or
    every changed knob carries part of it."""
    start = dict(recommended)
    changed = changed_knobs(space, start, baseline)
    (best, base), _ = posterior([start, dict(baseline)])
    gain = float(base - best)
    if not changed or gain <= 0:
        return None
    allowed = (1.0 - keep_share) * gain
    current = start
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
        # each option against the recommended configuration itself: the whole cost so far
        mean, cov = posterior([start, *(c for _, c in options)])
        costs = mean[1:] - mean[0]
        sds = np.sqrt(np.maximum(np.diag(cov)[1:] + cov[0, 0] - 2.0 * cov[0, 1:], 0.0))
        bounds = costs + z * sds
        pick = int(np.argmin(bounds))
        if float(bounds[pick]) > allowed:
            break
        name, current = options[pick]
        cost = float(costs[pick])
        changed.remove(name)
        reverted.append(name)
    if not reverted:
        return None
    # most important first: what putting each kept knob back alone would cost from here
    if len(changed) > 1:
        solo, _ = posterior([{**current, name: baseline[name]} for name in changed])
        changed = [name for _, name in sorted(zip(solo, changed), key=lambda pair: -float(pair[0]))]
    return MinimalChange(current, tuple(changed), tuple(reverted), max(0.0, min(1.0, 1.0 - cost / gain)))
