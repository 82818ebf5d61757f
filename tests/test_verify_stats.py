"""The verification statistics on synthetic samples with known answers (tuner/verify.py)."""

import math

import numpy as np
import pytest

from tuner.verify import established, expanded_tail, interleaved_schedule, paired_effect


def test_a_constant_ratio_is_reported_exactly_with_a_degenerate_interval():
    baseline = [1.0, 1.4, 0.9, 2.0, 1.1]
    effect = paired_effect([0.5 * b for b in baseline], baseline)
    assert effect.relative == pytest.approx(0.5)
    assert effect.ci_low == pytest.approx(0.5) and effect.ci_high == pytest.approx(0.5)
    assert established(effect, lower_is_better=True)
    assert not established(effect, lower_is_better=False)


def test_large_sample_interval_matches_the_normal_theory_interval():
    # log ratios ~ N(log 0.8, 0.2): the geometric mean's 95% CI is exp(mean +- t * sd / sqrt(n)).
    rng = np.random.default_rng(5)
    n = 400
    logs = rng.normal(math.log(0.8), 0.2, n)
    baseline = np.exp(rng.normal(0.0, 0.3, n))
    config = baseline * np.exp(logs)
    effect = paired_effect(list(config), list(baseline), seed=1)
    half = 1.966 * logs.std(ddof=1) / math.sqrt(n)
    assert effect.relative == pytest.approx(math.exp(logs.mean()), rel=1e-9)
    assert effect.ci_low == pytest.approx(math.exp(logs.mean() - half), rel=0.01)
    assert effect.ci_high == pytest.approx(math.exp(logs.mean() + half), rel=0.01)


def test_expanded_tail_is_the_t_corrected_level():
    assert expanded_tail(10**6) == pytest.approx(0.025, abs=1e-4)  # large n: plain percentiles
    assert expanded_tail(6) < 0.005  # few rounds: much wider than 2.5%


def test_interval_covers_a_known_ratio_about_95_percent_of_the_time_with_8_rounds():
    rng = np.random.default_rng(11)
    covered = 0
    runs = 300
    for i in range(runs):
        baseline = np.exp(rng.normal(0.0, 0.2, 8))
        config = 0.8 * np.exp(rng.normal(0.0, 0.2, 8))
        effect = paired_effect(list(config), list(baseline), resamples=2000, seed=i)
        covered += effect.ci_low <= 0.8 <= effect.ci_high
    assert 0.88 <= covered / runs <= 0.99


@pytest.mark.parametrize("rounds", [3, 4])
def test_the_interval_keeps_its_95_percent_at_the_fewest_rounds_verify_allows(rounds):
    """A bootstrap of 3 rounds never reaches past the smallest and largest round: its interval
    held a known ratio 74% of the time and "established" 12-14% of unchanged configurations."""
    rng = np.random.default_rng(rounds)
    runs = 400
    covered = false_wins = 0
    for i in range(runs):
        baseline = np.exp(rng.normal(0.0, 0.3, rounds))
        same = np.exp(rng.normal(0.0, 0.3, rounds))
        effect = paired_effect(list(same), list(baseline), resamples=2000, seed=i)
        covered += effect.ci_low <= 1.0 <= effect.ci_high
        false_wins += established(effect, lower_is_better=True)
    assert covered / runs >= 0.92
    assert false_wins / runs <= 0.05  # one-sided 2.5% expected; 400 runs vary by about 0.8%


def test_an_unchanged_configuration_is_not_reported_as_an_improvement():
    # Same distribution as the baseline (20% noise, like Redis p99): "established" must be rare,
    # at most about the one-sided 2.5% error rate.
    rng = np.random.default_rng(3)
    runs = 400
    false_wins = 0
    for i in range(runs):
        baseline = np.exp(rng.normal(0.0, 0.2, 6))
        same = np.exp(rng.normal(0.0, 0.2, 6))
        false_wins += established(paired_effect(list(same), list(baseline), resamples=2000, seed=i),
                                  lower_is_better=True)
    assert false_wins / runs <= 0.05
    # and an identical re-measurement is never an improvement
    assert not established(paired_effect([1.0, 1.2, 0.9], [1.0, 1.2, 0.9]), lower_is_better=True)


def test_a_real_30_percent_improvement_is_established_with_6_rounds():
    rng = np.random.default_rng(8)
    wins = 0
    for i in range(100):
        baseline = np.exp(rng.normal(0.0, 0.15, 6))
        better = 0.7 * np.exp(rng.normal(0.0, 0.15, 6))
        wins += established(paired_effect(list(better), list(baseline), resamples=2000, seed=i), lower_is_better=True)
    assert wins >= 80


def test_too_few_pairs_give_no_interval():
    assert paired_effect([1.0], [1.0]) is None
    assert paired_effect([1.0, None, 2.0], [1.0, 1.0, None]) is None  # failed rounds drop their pair
    assert not established(None, lower_is_better=True)


def test_schedule_interleaves_every_configuration_once_per_round_in_varying_order():
    labels = ["baseline", "recommended", "profile:a", "profile:b"]
    schedule = interleaved_schedule(labels, 8, seed=4)
    assert len(schedule) == 8 and all(sorted(r) == sorted(labels) for r in schedule)
    assert len({tuple(r) for r in schedule}) > 1
    assert interleaved_schedule(labels, 8, seed=4) == schedule


def test_configurations_that_differ_only_in_knobs_this_host_lacks_are_measured_once():
    from spaces.model import Parameter, Space
    from tuner.verify import Contender, alias_lines, merge_identical

    space = Space((Parameter("vm.a", "sysctl", "int", low=0, high=10),
                   Parameter("kernel.sched_migration_cost_ns", "sysctl", "int", low=0, high=10**7)))
    baseline = Contender("baseline", {"vm.a": 1, "kernel.sched_migration_cost_ns": 500000}, 1)
    recommended = Contender("recommended", {"vm.a": 2, "kernel.sched_migration_cost_ns": 500000}, 7)
    profile = Contender("profile:latency-performance", {"vm.a": 2, "kernel.sched_migration_cost_ns": 5000000}, 2)
    nothing = Contender("profile:network-latency", {"vm.a": 1, "kernel.sched_migration_cost_ns": 0}, 3)
    everything = {"vm.a", "kernel.sched_migration_cost_ns"}
    kept, aliases = merge_identical([baseline, recommended, profile, nothing], space, everything)
    assert kept == [baseline, recommended, profile, nothing] and aliases == []
    # the scheduler knob is skipped here (debugfs, kernel lockdown): the profile is the recommendation
    kept, aliases = merge_identical([baseline, recommended, profile, nothing], space, {"vm.a"})
    assert [c.label for c in kept] == ["baseline", "recommended"]
    assert aliases == [(profile, recommended), (nothing, baseline)]
    assert alias_lines(aliases)[0] == (
        "profile:latency-performance sets the same values as recommended on this host (its other knobs cannot be "
        "set here): measured once, as recommended, and reported under both names")
