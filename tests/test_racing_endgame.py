"""Racing's end game (tuner/racing.py): re-measurements are spent at the end of a run, on the
configuration that will be recommended, so it ends with >= 3 measurements."""

import math
import random

from spaces.loader import parse_space
from tuner import racing
from tuner.optimizer import Observation, SkoptOptimizer, model_targets, propose
from tuner.racing import Candidate, next_rerun


def cand(name, measurements):
    return Candidate((name,), {"x": name}, trials=list(range(measurements)), objectives=[1.0] * measurements)


def test_end_game_confirms_the_best_reachable_configuration_then_races_a_challenger():
    a1, b2, c3 = cand("a", 1), cand("b", 2), cand("c", 3)
    # before the end game, with the run's length known: no re-measurements
    assert next_rerun([a1, b2, c3], [], remaining=racing.ENDGAME + 1) is None
    # in it: the best that can still reach 3 measurements
    assert next_rerun([a1, b2, c3], [], remaining=2) is a1
    # 1 trial left: the best cannot reach 3; the best one that can (2 measurements) gets its third
    assert next_rerun([a1, b2, c3], [], remaining=1) is b2
    # the best has its 3: the challenger after it is re-measured, so it may overtake
    assert next_rerun([c3, a1, b2], [], remaining=2) is a1
    # both leaders confirmed: the trials left settle between them (a new configuration could not
    # reach 3 measurements any more), the less measured first, the leader on a tie
    d3, e4 = cand("d", 3), cand("e", 4)
    assert next_rerun([c3, d3, a1], [], remaining=2) is c3
    assert next_rerun([e4, d3, a1], [], remaining=2) is d3
    assert next_rerun([c3, a1], [], remaining=1) is c3  # a1 is out of reach: the leader alone


def test_without_a_known_end_racing_remeasures_along_the_way():
    a1 = cand("a", 1)
    finished = [Observation({"x": i}, "succeeded", 1.0, "optimizer", i) for i in range(12)]
    assert next_rerun([a1], finished, remaining=None) is a1


SPACE = parse_space("""
parameters:
  x.poll: {kind: sysctl, type: int, range: [0, 400000], default: 0}
  x.slice: {kind: sysctl, type: float, range: [100000.0, 6000000.0], log: true, default: 3000000.0}
  x.thp: {kind: sysctl, type: categorical, choices: [always, madvise, never], default: always}
  x.decoy: {kind: sysctl, type: int, range: [0, 100], default: 60}
""")


def truth(p):
    poll = 0.4 + 0.6 / (1.0 + math.exp(min((p["x.poll"] - 120000.0) / 20000.0, 700.0)))
    s = 1.0 + 0.25 * (math.log10(p["x.slice"]) - math.log10(700000.0)) ** 2
    return poll * s * {"always": 1.1, "madvise": 1.0, "never": 1.0}[p["x.thp"]]


def test_a_noisy_run_ends_with_a_recommendation_measured_three_times_and_reruns_only_at_the_end():
    rng = random.Random(4)
    trials, history = 24, []
    for done in range(trials):
        proposal = propose(SPACE, history, seed=2, maximize=False, remaining=trials - done)
        value = truth(proposal.params) * math.exp(rng.gauss(0.0, 0.2))
        history.append(Observation(proposal.params, "succeeded", value, proposal.source, done + 1))
    reruns = [o.number for o in history if o.source == "rerun"]
    assert reruns and min(reruns) > trials - racing.ENDGAME, reruns  # only in the end game
    engine = SkoptOptimizer(SPACE, seed=2)
    engine.tell_many(model_targets(history, maximize=False))
    best = racing.incumbent(racing.rank(SPACE, racing.group(SPACE, history), engine, maximize=False))
    assert best is not None and best.measurements >= racing.MIN_MEASUREMENTS
    # and it is a good configuration: past the polling cliff, well below the default's value
    assert truth(best.params) < 0.7 * truth({"x.poll": 0, "x.slice": 3e6, "x.thp": "always", "x.decoy": 60})
