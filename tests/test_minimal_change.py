"""The minimal change: which of the recommended configuration's changed knobs carry its predicted
improvement, by backward elimination on the model's posterior mean (tuner/minimal.py). The model
here is a known additive function, so the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from spaces.loader import parse_space
from tuner.minimal import minimal_change

SPACE = parse_space("""
parameters:
  k.poll: {kind: sysctl, type: int, range: [0, 400000], default: 0}
  k.swappiness: {kind: sysctl, type: int, range: [0, 100], default: 60}
  k.thp: {kind: sysctl, type: categorical, choices: [always, madvise, never], default: madvise}
  k.slice: {kind: sysctl, type: int, range: [1, 100], default: 30}
  k.background: {kind: sysctl, type: int, range: [1, 50], default: 10}
  k.ratio: {kind: sysctl, type: int, range: [1, 50], default: 20}
relations:
  - k.background < k.ratio
""", source="test")

BASELINE = {"k.poll": 0, "k.swappiness": 60, "k.thp": "madvise", "k.slice": 30, "k.background": 10, "k.ratio": 20}
RECOMMENDED = {"k.poll": 300000, "k.swappiness": 5, "k.thp": "never", "k.slice": 80, "k.background": 30, "k.ratio": 40}


def additive(effects, uncertain=None):  # type: ignore[no-untyped-def]
    """A posterior (log latency, lower is better) whose mean is a sum of one-knob effects: each
    knob at its recommended value contributes effects[knob], at its baseline value nothing. Each
    knob in `uncertain` adds an independent term of that standard deviation where it is at its
    recommended value (the model has seen little of it); the rest is known exactly."""
    uncertain = uncertain or {}

    def posterior(configs):  # type: ignore[no-untyped-def]
        means, loadings = [], []
        for config in configs:
            assert not SPACE.satisfies(config), f"asked about a configuration breaking a relation: {config}"
            means.append(sum(effect for name, effect in effects.items() if config[name] == RECOMMENDED[name]))
            loadings.append([sd if config[name] == RECOMMENDED[name] else 0.0 for name, sd in uncertain.items()])
        load = np.array(loadings).reshape(len(configs), len(uncertain))
        return np.array(means), load @ load.T
    return posterior


def test_only_the_knob_that_carries_the_improvement_is_kept():
    posterior = additive({"k.poll": -1.0, "k.swappiness": 0.004, "k.thp": -0.003, "k.slice": 0.0, "k.background": 0.001,
                        "k.ratio": -0.002})
    change = minimal_change(posterior, SPACE, RECOMMENDED, BASELINE)
    assert change is not None and change.kept == ("k.poll",)
    assert set(change.reverted) == {"k.swappiness", "k.thp", "k.slice", "k.background", "k.ratio"}
    assert change.changes() == {"k.poll": 300000}
    assert change.params == {**BASELINE, "k.poll": 300000}
    # gave up: thp's and ratio's predicted 0.5% gains; won back: swappiness's and background's costs
    gain = 1.0 - 0.004 + 0.003 - 0.001 + 0.002
    assert change.share_kept == pytest.approx(1.0 - (0.003 + 0.002 - 0.004 - 0.001) / gain)


def test_kept_knobs_come_most_important_first_and_the_tolerance_is_a_share_of_the_gain():
    # gain 1.0 + 0.3 + 0.08 + 0.03; reverting costs 8% or 30% of it is too much, 2% is not
    posterior = additive({"k.poll": -0.3, "k.slice": -1.0, "k.swappiness": -0.08, "k.thp": -0.03, "k.background": 0.0,
                        "k.ratio": 0.0})
    change = minimal_change(posterior, SPACE, RECOMMENDED, BASELINE)
    assert change is not None and change.kept == ("k.slice", "k.poll", "k.swappiness")
    assert change.reverted[-1] == "k.thp" and "k.thp" not in change.changes()
    looser = minimal_change(posterior, SPACE, RECOMMENDED, BASELINE, keep_share=0.9)
    assert looser is not None and looser.kept == ("k.slice", "k.poll")


def test_a_relation_decides_the_order_knobs_go_back_in():
    # Putting ratio back first (20) would leave background 30 above it: never considered, even
    # though ratio alone is the cheaper knob to put back; background goes first, then ratio.
    posterior = additive({"k.poll": -1.0, "k.ratio": 0.0, "k.background": 0.001, "k.swappiness": 0.0, "k.thp": 0.0,
                        "k.slice": 0.0})
    change = minimal_change(posterior, SPACE, RECOMMENDED, BASELINE)
    assert change is not None and change.kept == ("k.poll",)
    assert change.reverted.index("k.background") < change.reverted.index("k.ratio")


def test_no_predicted_improvement_means_nothing_to_attribute():
    posterior = additive({"k.poll": 0.2, "k.swappiness": 0.0, "k.thp": 0.0, "k.slice": 0.0, "k.background": 0.0, "k.ratio": 0.0})
    assert minimal_change(posterior, SPACE, RECOMMENDED, BASELINE) is None
    assert minimal_change(posterior, SPACE, BASELINE, BASELINE) is None  # nothing changed at all


def test_a_small_effect_the_model_is_unsure_of_stays():
    # swappiness's mean cost (3% of the gain) is within the 5% allowed, but its uncertainty is
    # not: a GP shrinks a little-seen real effect towards zero, so the mean alone would drop it
    effects = {"k.poll": -1.0, "k.swappiness": -0.03, "k.thp": 0.0, "k.slice": 0.0, "k.background": 0.0,
               "k.ratio": 0.0}
    unsure = minimal_change(additive(effects, {"k.swappiness": 0.05}), SPACE, RECOMMENDED, BASELINE)
    assert unsure is not None and unsure.kept == ("k.poll", "k.swappiness")
    sure = minimal_change(additive(effects), SPACE, RECOMMENDED, BASELINE)
    assert sure is not None and sure.kept == ("k.poll",)
