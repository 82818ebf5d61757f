"""The skopt engine's bookkeeping: stored hyperparameters, warm starts, expected improvement and
the memo of pristine skopt optimizers (tuner/optimizer.py)."""

import math
import warnings

import numpy as np

from spaces.loader import parse_space
from tuner.optimizer import Observation, SkoptOptimizer, _expected_improvement, model_targets, propose, sample

SPACE = parse_space("""
parameters:
  x.a: {kind: sysctl, type: float, range: [0.0, 1.0]}
  x.b: {kind: sysctl, type: int, range: [1, 1000], log: true}
  x.c: {kind: sysctl, type: categorical, choices: [p, q, r]}
""")


def history(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = {q.name: sample(q, rng) for q in SPACE.parameters}
        value = math.exp((p["x.a"] - 0.3) ** 2 + 0.1 * math.log(p["x.b"]) + (0.2 if p["x.c"] == "r" else 0.0)
                         + rng.normal(0, 0.1))
        out.append(Observation(p, "succeeded", value, "optimizer", i + 1))
    return out


def fitted(n, warm=None):
    engine = SkoptOptimizer(SPACE, seed=3, warm_theta=warm)
    engine.tell_many(model_targets(history(n), maximize=False))
    return engine


def test_stored_theta_includes_the_fitted_noise_so_the_warm_start_applies():
    engine = fitted(30)
    theta = engine.fitted_theta()
    # every kernel hyperparameter, the white-noise level included (skopt zeroes it in kernel_)
    assert len(theta) == len(engine._model.kernel_.theta)
    assert math.isclose(theta[-1], math.log(engine._model.noise_), abs_tol=1e-5)


def test_between_refits_the_stored_hyperparameters_are_reused_and_refitted_every_tenth():
    warm = fitted(60).fitted_theta()
    reused = fitted(61, warm).fitted_theta()
    assert np.allclose(reused, warm, atol=1e-5)  # 61 observations: no hyperparameter search
    refitted = fitted(70, warm).fitted_theta()
    assert not np.allclose(refitted, warm, atol=1e-5)  # 70: refined from the stored values
    # and a rebuild from the same history and stored values is the same model
    assert fitted(61, warm).ask() == fitted(61, warm).ask()


def test_expected_improvement_matches_skopt():
    from skopt.acquisition import gaussian_ei

    engine = fitted(40)
    X = engine._opt.space.transform(engine._global_candidates(300))
    y_opt = float(np.min(engine._opt.yi))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = gaussian_ei(X, engine._model, y_opt=y_opt, xi=0.01)
    assert np.allclose(_expected_improvement(engine._model, X, y_opt, 0.01), expected, atol=1e-12)


def test_memoized_skopt_optimizers_start_pristine():
    first = SkoptOptimizer(SPACE, seed=9)
    design = [first.ask() for _ in range(1)]
    first.tell_many(model_targets(history(12), maximize=False))  # consumes the design, fits
    fresh = SkoptOptimizer(SPACE, seed=9)
    assert len(fresh._opt.yi) == 0
    assert [fresh.ask()] == design  # the same first design point as a never-used engine
    h = history(25)
    assert propose(SPACE, h, seed=9, maximize=False).params == propose(SPACE, h, seed=9, maximize=False).params


def test_the_same_parameters_in_another_order_get_their_own_engine():
    # space.hash() is the same for both orders; the memo must not hand one the other's dimensions
    other = parse_space("""
parameters:
  x.c: {kind: sysctl, type: categorical, choices: [p, q, r]}
  x.b: {kind: sysctl, type: int, range: [1, 1000], log: true}
  x.a: {kind: sysctl, type: float, range: [0.0, 1.0]}
""")
    SkoptOptimizer(SPACE, seed=4)
    engine = SkoptOptimizer(other, seed=4)
    engine.tell_many(model_targets(history(15), maximize=False))
    assert engine.has_model and set(engine.ask()) == {"x.a", "x.b", "x.c"}


def test_a_seed_stored_out_of_numpys_range_proposes_as_its_residue():
    """Experiments created before --seed was range-checked may hold a negative seed: proposals go
    on (as with the seed mod 2**32) instead of crashing after the baseline."""
    for engine in ("skopt", "random"):
        for n in (1, 12):
            odd = propose(SPACE, history(n), seed=-5, maximize=False, engine=engine)
            same = propose(SPACE, history(n), seed=2**32 - 5, maximize=False, engine=engine)
            assert odd.params == same.params
