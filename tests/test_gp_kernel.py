"""The additive GP kernel (tuner/gp_kernel.py) and what the optimizer does with it: the kernel's
math (gradient vs finite differences, gradient path vs value path), that a fitted model tells
relevant knobs from irrelevant ones, and the end game's model-best proposal (exploit)."""

import math

import numpy as np
import pytest

from spaces.loader import parse_space
from tuner import racing
from tuner.gp_kernel import AdditiveKernel, _matern52, column_groups
from tuner.optimizer import Observation, SkoptOptimizer, model_targets, propose, sample

# -- kernel math ---------------------------------------------------------------------------------
# Two one-column (numeric) knobs and one three-choice categorical (three one-hot columns).
GROUPS = column_groups([1, 1, 3])


def _inputs(rng, n):
    X = np.empty((n, 5))
    X[:, :2] = rng.uniform(0.0, 1.0, (n, 2))
    X[:, 2:] = np.eye(3)[rng.integers(0, 3, n)]
    return X


@pytest.mark.parametrize("joint_length_scales", [[0.8], [0.7, 1.3, 2.0]], ids=["isotropic", "per-knob"])
def test_kernel_gradient_and_value_paths_agree(joint_length_scales):
    assert GROUPS == [[0], [1], [2, 3, 4]]
    rng = np.random.default_rng(11)
    X, Y = _inputs(rng, 9), _inputs(rng, 5)
    X[4] = X[1]  # a repeated configuration: zero distances in every group
    # no term negligible, so an error in any part of the gradient shows
    k = AdditiveKernel(GROUPS, [0.5, 1.5, 0.3], [0.4, 0.9, 0.6], joint_amplitude=0.2,
                       joint_length_scales=joint_length_scales)
    n_theta = 3 + 1 + len(joint_length_scales) + 3
    assert k.theta.shape == (n_theta,)

    K, grad = k(X, eval_gradient=True)
    assert K.shape == (9, 9) and grad.shape == (9, 9, n_theta)
    # gradient w.r.t. log hyperparameters, in theta's order, against central differences
    h = 1e-5
    numeric = np.empty_like(grad)
    for i in range(n_theta):
        up, down = k.theta.copy(), k.theta.copy()
        up[i] += h
        down[i] -= h
        numeric[:, :, i] = (k.clone_with_theta(up)(X) - k.clone_with_theta(down)(X)) / (2 * h)
    assert np.abs(grad - numeric).max() < 1e-6
    assert np.abs(grad).max() > 0.05  # and the comparison is not between two arrays of zeros

    # the gradient path's K is the value path's k(X)
    assert np.allclose(K, k(X), rtol=0, atol=1e-12)
    # k(X, Y) is the off-diagonal block of k on the stacked inputs (from both paths)
    Z = np.vstack([X, Y])
    KZ = k(Z)
    assert np.allclose(k(X, Y), KZ[:9, 9:], rtol=0, atol=1e-12)
    assert np.allclose(k(Y, X), KZ[9:, :9], rtol=0, atol=1e-12)
    assert np.allclose(k(Z, eval_gradient=True)[0], KZ, rtol=0, atol=1e-12)
    # diag is the diagonal (sum of the amplitudes, stationary), and K is symmetric and PSD
    assert np.allclose(k.diag(X), np.diag(k(X)), rtol=0, atol=1e-12)
    assert np.allclose(k.diag(X), 0.5 + 1.5 + 0.3 + 0.2)
    assert np.allclose(KZ, KZ.T, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(KZ).min() > -1e-10
    # the memoized training distances do not leak to other inputs of the same shape
    X2 = _inputs(rng, 9)
    assert np.allclose(k(X2, eval_gradient=True)[0], k(X2), rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        k(X, Y, eval_gradient=True)


def test_kernel_is_the_documented_sum_of_matern_terms():
    # one pair of points by hand: k = sum_g a_g m(d_g / l_g) + a_joint m(|(d_g / l_joint_g)|)
    x = np.array([[0.1, 0.9, 1.0, 0.0, 0.0]])
    y = np.array([[0.4, 0.5, 0.0, 0.0, 1.0]])
    d = np.array([0.3, 0.4, math.sqrt(2.0)])
    amplitudes, lengths, joint = np.array([0.5, 1.5, 0.3]), np.array([0.4, 0.9, 0.6]), np.array([0.7, 1.3, 2.0])
    k = AdditiveKernel(GROUPS, amplitudes, lengths, joint_amplitude=0.2, joint_length_scales=joint)
    expected = float(np.sum(amplitudes * _matern52(d / lengths))
                     + 0.2 * _matern52(np.sqrt(np.sum((d / joint) ** 2))))
    assert math.isclose(float(k(x, y)[0, 0]), expected, rel_tol=1e-12)
    assert math.isclose(float(k(np.vstack([x, y]), eval_gradient=True)[0][0, 1]), expected, rel_tol=1e-12)


# -- the additive structure is learnt --------------------------------------------------------------
# Two knobs matter (a bowl on x.window with its bottom at 300, and x.sched where "fast" is clearly
# better); four do nothing. Listed so the relevant ones are not first and last.
ADDITIVE_SPACE = parse_space("""
parameters:
  x.window: {kind: sysctl, type: int, range: [0, 1000], default: 0}
  x.noise_f: {kind: sysctl, type: float, range: [0.0, 1.0], default: 0.5}
  x.sched: {kind: sysctl, type: categorical, choices: [slow, fast, meh], default: slow}
  x.noise_log: {kind: sysctl, type: int, range: [16, 65536], log: true, default: 1024}
  x.noise_bool: {kind: sysctl, type: bool, default: false}
  x.noise_cat: {kind: sysctl, type: categorical, choices: [a, b, c, d], default: a}
""", source="additive")
RELEVANT = ("x.window", "x.sched")


def log_latency(p):
    return 3.0 * ((p["x.window"] - 300) / 1000) ** 2 + {"slow": 0.5, "fast": 0.0, "meh": 0.4}[p["x.sched"]]


def additive_history(seed, n=30, sigma=0.05):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = {q.name: sample(q, rng) for q in ADDITIVE_SPACE.parameters}
        out.append(Observation(p, "succeeded", math.exp(log_latency(p) + rng.normal(0.0, sigma)), "optimizer", i + 1))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitted_model_finds_the_relevant_knobs_and_exploit_composes_their_best_values(seed):
    history = additive_history(seed)
    engine = SkoptOptimizer(ADDITIVE_SPACE, seed=seed)
    engine.tell_many(model_targets(history, maximize=False))
    assert engine.has_model
    kernel = engine._model.kernel_.k1
    assert isinstance(kernel, AdditiveKernel)
    names = ADDITIVE_SPACE.names
    relevant = [names.index(n) for n in RELEVANT]
    irrelevant = [i for i in range(len(names)) if i not in relevant]
    amplitudes = np.asarray(kernel.amplitudes, dtype=float)
    lengths = np.asarray(kernel.length_scales, dtype=float)
    assert amplitudes.shape == (6,)
    # Measured (seeds 0-2): the smaller relevant amplitude is 24x, 5x, 27x the largest irrelevant.
    # Over seeds 0-39 this held for 36: an irrelevant knob sometimes takes a large amplitude with
    # a long length scale, i.e. a nearly flat curve, hence the second check below.
    assert amplitudes[relevant].min() > amplitudes[irrelevant].max(), (names, amplitudes, lengths)
    # How far the model lets each knob move the objective across its range (prior variance of the
    # difference between its two ends, in normalized units: numeric ranges are [0, 1] once
    # transformed, two one-hot choices are sqrt(2) apart). Over seeds 0-39 the smaller relevant
    # one was at least 10x the largest irrelevant one.
    span = np.array([1.0, 1.0, math.sqrt(2.0), 1.0, 1.0, math.sqrt(2.0)])
    effect = amplitudes * (1.0 - _matern52(span / lengths))
    assert effect[relevant].min() > 5.0 * effect[irrelevant].max(), (names, effect)

    best = engine.exploit()
    assert set(best) == set(names)
    assert best["x.sched"] == "fast"
    # Measured over seeds 0-39: |window - 300| <= 50 (the search grid's step is 25)
    assert abs(best["x.window"] - 300) <= 100, best


def test_exploit_does_not_follow_noise_in_irrelevant_knobs_to_the_edges_of_their_ranges():
    # With EXPLOIT_KAPPA a knob moves only on a confident improvement; without it, the coordinate
    # search took every irrelevant numeric knob to an end of its range (the model's faint, noisy
    # trend there is still a lower mean). Measured over seeds 0-11: 4 of 24 irrelevant numeric
    # knobs at an edge with EXPLOIT_KAPPA = 1, 24 of 24 with 0; the relevant knobs found in both.
    import tuner.optimizer as optimizer_module

    numeric_irrelevant = ("x.noise_f", "x.noise_log")
    at_edge = {1.0: 0, 0.0: 0}
    saved = optimizer_module.EXPLOIT_KAPPA
    try:
        for seed in range(12):
            history = additive_history(seed)
            engine = SkoptOptimizer(ADDITIVE_SPACE, seed=seed)
            engine.tell_many(model_targets(history, maximize=False))
            for kappa in at_edge:
                optimizer_module.EXPLOIT_KAPPA = kappa
                best = engine.exploit()
                assert best["x.sched"] == "fast" and abs(best["x.window"] - 300) <= 100, (kappa, best)
                at_edge[kappa] += sum(best[n] in (ADDITIVE_SPACE[n].low, ADDITIVE_SPACE[n].high)
                                      for n in numeric_irrelevant)
    finally:
        optimizer_module.EXPLOIT_KAPPA = saved
    assert saved == 1.0
    assert at_edge[1.0] <= 8 and at_edge[0.0] >= 20, at_edge


# -- exploit and relations -----------------------------------------------------------------------
# The unconstrained optimum (background 40, limit 10) violates the relation; the constrained one is
# on its boundary, at background 24 or 25 (limit one more).
RELATION_SPACE = parse_space("""
parameters:
  x.background: {kind: sysctl, type: int, range: [1, 50], default: 10}
  x.limit: {kind: sysctl, type: int, range: [1, 50], default: 20}
  x.other: {kind: sysctl, type: float, range: [0.0, 1.0], default: 0.5}
relations:
  - x.background < x.limit
""", source="relation")
UNCONSTRAINED_BEST = {"x.background": 40, "x.limit": 10, "x.other": 0.5}


def relation_log_latency(p):
    return 2.0 * ((p["x.background"] - 40) / 50) ** 2 + 2.0 * ((p["x.limit"] - 10) / 50) ** 2


def relation_history(seed, n=30, first=()):
    """Random configurations satisfying the relation (what propose() measures), after `first`."""
    rng = np.random.default_rng(seed)
    out = list(first)
    while len(out) < n:
        p = {q.name: sample(q, rng) for q in RELATION_SPACE.parameters}
        if RELATION_SPACE.satisfies(p):
            continue
        value = math.exp(relation_log_latency(p) + rng.normal(0.0, 0.05))
        out.append(Observation(p, "succeeded", value, "optimizer", len(out) + 1))
    return out


def test_exploit_respects_relations_that_bind_at_the_models_optimum():
    engine = SkoptOptimizer(RELATION_SPACE, seed=0)
    engine.tell_many(model_targets(relation_history(0), maximize=False))
    best = engine.exploit()
    assert RELATION_SPACE.satisfies(best) == [], best
    # the relation did bind: the model prefers the violating corner to what exploit returned
    corner = {**UNCONSTRAINED_BEST, "x.other": best["x.other"]}
    assert RELATION_SPACE.satisfies(corner)
    mean_best, mean_corner = engine.posterior_mean([best, corner])
    assert mean_corner < mean_best - 0.1
    # and exploit went to the boundary near the constrained optimum. Measured over seeds 0-9:
    # limit = background + 1, background in 22..28.
    assert best["x.limit"] - best["x.background"] <= 2, best
    assert abs(best["x.background"] - 24.5) <= 8, best


def test_exploit_respects_relations_even_when_the_best_measured_configuration_violates_them():
    # Trial 1 measures the host as it is (tuner/experiment.py), relations or not.
    baseline = Observation(UNCONSTRAINED_BEST, "succeeded", math.exp(relation_log_latency(UNCONSTRAINED_BEST)),
                           "baseline", 1)
    history = relation_history(0, first=[baseline])
    engine = SkoptOptimizer(RELATION_SPACE, seed=0)
    engine.tell_many(model_targets(history, maximize=False))
    assert RELATION_SPACE.satisfies(engine.exploit()) == []
    proposal = propose(RELATION_SPACE, history, seed=0, maximize=False, remaining=racing.EXPLOIT_AT)
    assert RELATION_SPACE.satisfies(proposal.params) == []


# -- the end game's exploit proposal -------------------------------------------------------------
def test_propose_makes_the_exploit_proposal_exactly_at_exploit_at():
    assert racing.EXPLOIT_AT > racing.ENDGAME
    history = additive_history(0)
    engine = SkoptOptimizer(ADDITIVE_SPACE, seed=5)
    engine.tell_many(model_targets(history, maximize=False))
    assert engine.has_model

    at = propose(ADDITIVE_SPACE, history, seed=5, maximize=False, remaining=racing.EXPLOIT_AT)
    assert at.notes.get("exploit") is True and at.source == "optimizer"
    assert at.params == engine.exploit()  # the model's best guess, as exploit() finds it
    assert at.notes["theta"] == engine.fitted_theta()

    # before it (and without a known end, or without racing): ordinary proposals
    for remaining in (racing.EXPLOIT_AT + 1, racing.EXPLOIT_AT + 2, None):
        normal = propose(ADDITIVE_SPACE, history, seed=5, maximize=False, remaining=remaining)
        assert "exploit" not in normal.notes, remaining
        if remaining is not None:  # (without a known end, racing may re-measure along the way)
            assert normal.source == "optimizer" and "relation_rejects" in normal.notes, remaining
            assert normal.params != at.params, remaining
    off = propose(ADDITIVE_SPACE, history, seed=5, maximize=False, remaining=racing.EXPLOIT_AT, racing=False)
    assert "exploit" not in off.notes and off.source == "optimizer"
    # after it, the end game re-measures
    after = propose(ADDITIVE_SPACE, history, seed=5, maximize=False, remaining=racing.EXPLOIT_AT - 1)
    assert after.source == "rerun" and "exploit" not in after.notes

    # without a model (too few observations for the initial design) there is nothing to exploit
    few = history[:4]
    early = propose(ADDITIVE_SPACE, few, seed=5, maximize=False, remaining=racing.EXPLOIT_AT)
    assert "exploit" not in early.notes and early.source == "optimizer"
