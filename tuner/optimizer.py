"""The optimizer behind a two-verb interface (ask / tell), rebuilt from stored history.

An engine never sees the database: the loop turns stored trials into Observations, builds a
fresh engine from them before every proposal (so a restarted process continues the same search),
and asks it for one configuration.

Rules for what the model is told (see README "How results feed the optimizer"):
- succeeded trials: their objective, log-transformed for latency-like positive objectives, negated
  when maximizing (engines always minimize);
- failed and infeasible trials: the worst transformed value observed so far plus a margin, so the
  model learns to avoid the region without the +inf that would wreck a GP; until a succeeded
  trial exists (no worst value yet) all of them at one common value, which says nothing about the
  landscape but moves the engine on along its initial design instead of proposing the same
  configuration again;
- aborted (interrupted) and running trials: ignored, they say nothing about the configuration;
- a failure of the baseline configuration once the baseline has succeeded: ignored too. The
  baseline is the host's own values, the ones it runs in production: when it fails (a server
  that was down, a disk that filled) the environment failed, not its values.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from spaces.model import Parameter, Space, Value


@dataclass(frozen=True)
class Observation:
    params: Mapping[str, Any]
    status: str  # succeeded | failed | infeasible
    objective: float | None
    #: how the trial came about (baseline | optimizer | rerun | profile:<name>); racing counts reruns
    source: str = ""
    number: int | None = None


@dataclass
class Proposal:
    params: dict[str, Value]
    engine: str
    observations: int
    propose_ms: float
    notes: dict[str, Any] = field(default_factory=dict)
    #: optimizer (a new configuration) or rerun (a re-measurement of a top candidate, racing)
    source: str = "optimizer"


class Optimizer(Protocol):
    name: str

    def ask(self) -> dict[str, Value]:
        ...

    def tell(self, params: Mapping[str, Value], value: float) -> None:
        ...


def transform_objective(value: float, *, maximize: bool, log: bool) -> float:
    if maximize:
        return -(math.log(value) if log and value > 0 else value)
    return math.log(value) if log and value > 0 else value


def environment_failures(observations: Sequence[Observation]) -> set[int]:
    """Indexes (into `observations`) of failures of the baseline configuration after the baseline
    has succeeded: see the module docstring."""
    baselines = [dict(o.params) for o in observations
                 if o.source == "baseline" and o.status == "succeeded" and o.objective is not None]
    return {i for i, o in enumerate(observations) if o.status == "failed" and dict(o.params) in baselines}


def model_targets(
    observations: Sequence[Observation], *, maximize: bool
) -> list[tuple[Mapping[str, Any], float]]:
    """(params, engine value) pairs per the rules in the module docstring."""
    ignored = environment_failures(observations)
    observations = [o for i, o in enumerate(observations) if i not in ignored]
    succeeded = [o for o in observations if o.status == "succeeded" and o.objective is not None]
    log = bool(succeeded) and all(o.objective > 0 for o in succeeded)  # type: ignore[operator]
    pairs = [(o.params, transform_objective(o.objective, maximize=maximize, log=log)) for o in succeeded]  # type: ignore[arg-type]
    if not pairs:
        return [(o.params, 0.0) for o in observations if o.status in ("failed", "infeasible")]
    pairs = _clip_outliers(pairs)
    values = [v for _, v in pairs]
    spread = (max(values) - min(values)) or abs(max(values)) or 1.0
    penalty = max(values) + 0.25 * spread
    pairs += [(o.params, penalty) for o in observations if o.status in ("failed", "infeasible")]
    return pairs


OUTLIER_FENCE_IQR = 3.0


def _clip_outliers(pairs: list[tuple[Mapping[str, Any], float]]) -> list[tuple[Mapping[str, Any], float]]:
    """Heavy-tailed noise (a repetition hit by a background burst) would stretch a GP's output
    scale and hide the differences that matter: values far above the bulk (beyond Q3 + 3 IQR, after
    the log) are pulled in to that fence. They stay the worst values, so the region is still
    avoided. Only with enough points to know what the bulk is."""
    if len(pairs) < 8:
        return pairs
    values = np.array([v for _, v in pairs])
    q1, q3 = np.percentile(values, [25, 75])
    fence = q3 + OUTLIER_FENCE_IQR * (q3 - q1)
    if q3 <= q1:
        return pairs
    return [(p, min(v, fence)) for p, v in pairs]


# -- encoding between parameter values and engine points -----------------------------------------
def _dimension(param: Parameter):  # type: ignore[no-untyped-def]
    from skopt.space import Categorical, Integer, Real

    if param.type == "int":
        return Integer(int(param.low), int(param.high), prior="log-uniform" if param.log else "uniform",
                       name=param.name)
    if param.type == "float":
        return Real(float(param.low), float(param.high), prior="log-uniform" if param.log else "uniform",
                    name=param.name)
    if param.type == "bool":
        return Categorical(["false", "true"], name=param.name)
    return Categorical([str(c) for c in param.choices], name=param.name)


def encode(param: Parameter, value: Any) -> Any:
    """A parameter value as the engine's point coordinate (clipped into range)."""
    if param.type == "bool":
        return "true" if param.coerce(value) else "false"
    if param.type == "categorical":
        coerced = param.coerce(value)
        if coerced not in param.choices:
            # a baseline value the space does not offer (a disk's read_ahead_kb of 256 among
            # [128, 512]): like a number outside its range, it is clipped, to the nearest choice
            coerced = _nearest_choice(param, coerced)
        return str(coerced)
    number = param.coerce(value)
    return min(max(number, param.low), param.high)  # type: ignore[type-var]


def _nearest_choice(param: Parameter, value: Any) -> Value:
    try:
        number = float(value)
        numeric = [c for c in param.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
    except (TypeError, ValueError):
        numeric = []
    if numeric:
        return min(numeric, key=lambda c: abs(float(c) - number))
    return param.choices[0]


def decode(param: Parameter, coordinate: Any) -> Value:
    if param.type == "bool":
        return coordinate == "true"
    if param.type == "categorical":
        return param.coerce(coordinate)
    if param.type == "int":
        return int(coordinate)
    return float(coordinate)


class SkoptOptimizer:
    """scikit-optimize's GP, driven for small, noisy, mixed, partly irrelevant kernel spaces.

    skopt supplies the space transform (log dimensions are modelled in log space, categoricals
    one-hot), the initial design (Latin hypercube), the GP machinery (hyperparameters by marginal
    likelihood, a fitted WhiteKernel for the noise) and the expected-improvement formula. ostune
    supplies the kernel, additive over knobs (tuner/gp_kernel.py: each knob's effect is learnt
    from every trial, an irrelevant knob's amplitude shrinks), and chooses where EI is evaluated:
    random points of the whole space plus perturbations of the best configurations by posterior
    mean (a few knobs changed at a time), which finds improvements in 10+ dimensions far more
    often than uniform sampling alone. EI's reference value is the lowest posterior mean over
    evaluated points, not the lowest noisy observation, so one lucky measurement does not freeze
    the search. `exploit` is the model's own best guess, proposed once at the start of the end
    game (tuner/racing.py).
    """

    name = "skopt-gp"
    # Mostly local: measured on bench/quality.py (10 seeds x 3 functions), 100 global + 900 local
    # candidates with half-size steps cut the median regret of the recommendation by 30-80% on
    # two of three functions vs 400 + 600 with full steps; the global ones keep it from
    # freezing on one basin.
    GLOBAL_CANDIDATES = 100
    LOCAL_CANDIDATES = 900
    XI = 0.01

    def __init__(
        self, space: Space, *, seed: int, n_initial_points: int | None = None,
        warm_theta: Sequence[float] | None = None,
    ) -> None:
        self.space = space
        # numpy and skopt take seeds in [0, 2**32); experiments created before `--seed` was
        # range-checked may hold a negative one
        seed = self._seed = seed % 2**32
        self._rng = np.random.default_rng(seed)
        self._model = None
        self._warm_theta = warm_theta
        self._rows: dict[tuple, np.ndarray] = {}
        if n_initial_points is None:
            n_initial_points = initial_design_size(len(space))
        self._opt = _pristine_skopt(space, seed, n_initial_points)

    def _point(self, params: Mapping[str, Any]) -> list[Any]:
        return [encode(p, params[p.name] if p.name in params else _fallback(p)) for p in self.space.parameters]

    def _decode(self, point: Sequence[Any]) -> dict[str, Value]:
        return {p.name: decode(p, c) for p, c in zip(self.space.parameters, point)}

    def tell_many(self, pairs: Sequence[tuple[Mapping[str, Any], float]]) -> None:
        # Rebuilt from history each time: the random stream depends on how much was seen.
        self._rng = np.random.default_rng((self._seed, len(self._opt.yi) + len(pairs)))
        if not pairs:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt.tell([self._point(p) for p, _ in pairs], [float(v) for _, v in pairs], fit=False)
        self._fit()

    def tell(self, params: Mapping[str, Value], value: float) -> None:
        self.tell_many([(params, value)])

    def _fit(self) -> None:
        from sklearn.base import clone

        if self._opt._n_initial_points > 0 or len(self._opt.yi) < 3 or len(set(self._opt.yi)) < 2:
            self._model = None
            return
        model = clone(self._opt.base_estimator_)
        model.optimizer = _WarmLbfgs(self._warm_theta, len(self._opt.yi))
        X = self._transform(self._opt.Xi)
        y = np.asarray(self._opt.yi, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X, y)
        self._model = model

    @property
    def has_model(self) -> bool:
        return self._model is not None

    def posterior_mean(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The model's mean (engine units, lower is better) at each configuration."""
        if self._model is None:
            raise RuntimeError("no model fitted yet")
        return self._predict([self._point(c) for c in configs])

    def posterior(self, configs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """The model's joint posterior at the configurations: mean (engine units, lower is better)
        and covariance, so differences between them come with their uncertainty."""
        if self._model is None:
            raise RuntimeError("no model fitted yet")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, cov = self._model.predict(self._transform([self._point(c) for c in configs]), return_cov=True)
        return np.asarray(mean, dtype=float), np.asarray(cov, dtype=float)

    def ask(self) -> dict[str, Value]:
        if self._model is None:
            if self._opt._n_initial_points > 0 and self._opt._initial_samples is not None:
                # The k-th proposal is the design's k-th point (same seed -> same design).
                return self._decode(self._opt._ask())
            return {p.name: sample(p, self._rng) for p in self.space.parameters}
        evaluated = self._opt.Xi
        mean_e = self._predict(evaluated)
        order = np.argsort(mean_e)
        anchors = [evaluated[i] for i in order[:3]]
        candidates = self._global_candidates(self.GLOBAL_CANDIDATES)
        candidates += self._local_candidates(anchors, self.LOCAL_CANDIDATES)
        X = self._opt.space.transform(candidates)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ei = _expected_improvement(self._model, X, float(np.min(mean_e)), self.XI)
        seen = {tuple(map(str, x)) for x in evaluated}
        for index in np.argsort(-ei):
            if tuple(map(str, candidates[index])) in seen:
                continue
            params = self._decode(candidates[index])
            # Relations are checked here so the best-EI candidate that satisfies them is chosen.
            if not self.space.satisfies(params):
                return params
        return self._decode(candidates[int(np.argmax(ei))])

    def _transform(self, points: Sequence[Sequence[Any]]) -> np.ndarray:
        """skopt's transform (normalized, log, one-hot), memoized per point: one proposal
        transforms the evaluated points three times (fit, EI reference, racing rank)."""
        keys = [tuple(point) for point in points]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            for key, row in zip(missing, self._opt.space.transform([list(k) for k in missing])):
                self._rows[key] = row
        return np.array([self._rows[k] for k in keys])

    def exploit(self) -> dict[str, Value] | None:
        """The configuration the model believes best: the posterior mean minimized by coordinate
        search (each knob in turn over a grid of its values, twice over), from the three best
        evaluated configurations by posterior mean; a knob moves only where the model is confident
        it helps (EXPLOIT_KAPPA). With an additive model this composes the best value of every
        knob, a combination no single trial may have measured. Relations hold."""
        assert self._model is not None
        evaluated = self._opt.Xi
        mean_e = self._predict(evaluated)
        best_point, best_mean = None, math.inf
        # only from measured configurations that satisfy the relations: the baseline (the host as
        # it was) need not, and a search that never moves would return it
        starts = [i for i in np.argsort(mean_e) if not self.space.satisfies(self._decode(evaluated[i]))][:EXPLOIT_STARTS]
        for index in starts:
            point = list(evaluated[index])
            mean = float(mean_e[index])
            for _ in range(EXPLOIT_PASSES):
                for j, param in enumerate(self.space.parameters):
                    variants = [point[:j] + [v] + point[j + 1:] for v in _grid(param, point[j])]
                    variants = [v for v in variants if not self.space.satisfies(self._decode(v))]
                    if not variants:
                        continue
                    means = self._predict(variants)
                    k = int(np.argmin(means))
                    if means[k] < mean and self._confident(point, variants[k]):
                        point, mean = variants[k], float(means[k])
            if mean < best_mean:
                best_point, best_mean = point, mean
        return None if best_point is None else self._decode(best_point)

    def _confident(self, current: Sequence[Any], moved: Sequence[Any]) -> bool:
        """Whether the model is sure enough that `moved` beats `current`: the posterior mean
        difference is at least EXPLOIT_KAPPA standard deviations of that difference."""
        if not EXPLOIT_KAPPA:
            return True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mean, cov = self._model.predict(self._transform([current, moved]), return_cov=True)
        var = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
        return float(mean[0] - mean[1]) >= EXPLOIT_KAPPA * math.sqrt(max(var, 0.0))

    def _predict(self, points: Sequence[Sequence[Any]]) -> np.ndarray:
        """The posterior mean at engine points (engine units, lower is better)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self._model.predict(self._transform(points)), dtype=float)

    def _global_candidates(self, n: int) -> list[list[Any]]:
        columns = [[encode(p, sample(p, self._rng)) for _ in range(n)] for p in self.space.parameters]
        return [list(row) for row in zip(*columns)]

    def _local_candidates(self, anchors: Sequence[Sequence[Any]], n: int) -> list[list[Any]]:
        """Copies of the best configurations with 1-3 knobs moved: numeric ones by a Gaussian step
        (in log space for log knobs), categorical ones to another choice."""
        params = self.space.parameters
        weights = np.array([0.6, 0.25, 0.15][: len(anchors)])
        cdf = weights.cumsum()
        cdf /= cdf[-1]
        out: list[list[Any]] = []
        dims = len(params)
        for _ in range(n):
            # what rng.choice(len(anchors), p=weights) draws (one uniform), without its overhead
            anchor = anchors[int(cdf.searchsorted(self._rng.random(), side="right"))]
            point = list(anchor)
            moves = min(dims, 1 + int(self._rng.binomial(2, 0.35)))
            for j in self._rng.choice(dims, size=moves, replace=False):
                point[j] = _perturb(params[j], point[j], self._rng)
            out.append(point)
        return out

    def fitted_theta(self) -> list[float] | None:
        """The GP's fitted kernel hyperparameters (log scale), stored with the proposal so the
        next rebuild can start its fit from them."""
        if self._model is None or not hasattr(self._model, "kernel_"):
            return None
        with np.errstate(divide="ignore"):
            theta = np.array(self._model.kernel_.theta, dtype=float)
        # skopt zeroes the fitted WhiteKernel in kernel_ after the fit (predictions are noise-free)
        # and keeps the fitted noise level in noise_; the white term is the kernel's last parameter.
        # Without this the stored theta was one value short and the warm start never applied.
        noise = getattr(self._model, "noise_", None)
        if noise is not None and noise > 0 and not np.isfinite(theta[-1]):
            theta[-1] = math.log(noise)
        return [round(float(v), 6) for v in theta if np.isfinite(v)]


#: pristine (nothing told) skopt optimizers by (space, seed, initial design size): building one
#: costs ~50 ms (scipy distributions frozen per dimension), a deep copy ~5 ms. A copy is exactly
#: what a fresh build would be (same seed, same design, same random state), so this is a memo of
#: a pure function, not state carried between proposals.
_PRISTINE: dict[tuple, Any] = {}
NOISE_BOUNDS = (1e-4, 10.0)


def _pristine_skopt(space: Space, seed: int, n_initial_points: int):  # type: ignore[no-untyped-def]
    import copy

    # Keyed by the dimensions in order (not space.hash(), which ignores the parameters' order:
    # a space re-read from the database lists them in another order than the run's YAML).
    dims = tuple((p.name, p.type, p.low, p.high, bool(p.log), tuple(map(str, p.choices or ())))
                 for p in space.parameters)
    key = (dims, seed, n_initial_points)
    if key not in _PRISTINE:
        from skopt import Optimizer as SkOptimizer
        from skopt.sampler import Lhs
        from skopt.space import Space as SkSpace

        dimensions = [_dimension(p) for p in space.parameters]
        # skopt's own Sum and WhiteKernel: its GP only finds (and zeroes for prediction) a noise
        # term built from these classes
        from skopt.learning import GaussianProcessRegressor
        from skopt.learning.gaussian_process.kernels import Sum, WhiteKernel
        from tuner.gp_kernel import additive_kernel, column_groups

        groups = column_groups([d.transformed_size for d in SkSpace(dimensions).dimensions])
        estimator = GaussianProcessRegressor(
            kernel=Sum(additive_kernel(groups), WhiteKernel(0.1, NOISE_BOUNDS)), normalize_y=True,
            noise="gaussian", n_restarts_optimizer=0, random_state=seed)
        estimator.optimizer = _WarmLbfgs(None, 0)  # replaced per fit, see SkoptOptimizer._fit
        if len(_PRISTINE) >= 16:
            _PRISTINE.pop(next(iter(_PRISTINE)))
        _PRISTINE[key] = SkOptimizer(
            dimensions,
            base_estimator=estimator,
            n_initial_points=n_initial_points,
            # Classic LHS without the 1000-iteration maximin search (0.3 s per rebuild).
            initial_point_generator=Lhs(lhs_type="centered", criterion=None),
            acq_func="EI",
            acq_optimizer="sampling",
            random_state=seed,
        )
    return copy.deepcopy(_PRISTINE[key])


def _expected_improvement(model, X: np.ndarray, y_opt: float, xi: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """skopt's gaussian_ei, with the posterior standard deviation computed the way scikit-learn
    does (triangular solves against the Cholesky factor) instead of skopt's three-operand einsum,
    which took ~45 ms for 1000 candidates at 200 observations. Same numbers."""
    from scipy.stats import norm
    from sklearn.gaussian_process import GaussianProcessRegressor as SkLearnGP

    mu, std = SkLearnGP.predict(model, X, return_std=True)
    mu, std = np.asarray(mu, dtype=float).ravel(), np.asarray(std, dtype=float).ravel()
    values = np.zeros_like(mu)
    mask = std > 0
    improve = y_opt - xi - mu[mask]
    z = improve / std[mask]
    values[mask] = improve * norm.cdf(z) + std[mask] * norm.pdf(z)
    return values


def initial_design_size(dims: int) -> int:
    """Space-filling points before the model takes over (the baseline and profile trials count)."""
    return max(5, min(INITIAL_DESIGN_MAX, int(round(INITIAL_DESIGN_PER_DIM * dims))))


#: measured on bench/quality.py (20 seeds x 3 functions, additive kernel): 1.5 points per knob
#: (at most 20) beat 1 per knob (at most 10) on two functions and tied on the third; 2 per knob
#: left too few model-guided trials in 40. Balanced points are what an additive model learns
#: each knob's main effect from.
INITIAL_DESIGN_MAX = 20
INITIAL_DESIGN_PER_DIM = 1.5


#: standard deviation of a local step, as a share of the knob's (log) range: usually small
#: (refining around the incumbent, where the recommendation will come from), sometimes wider
LOCAL_STEP = 0.06
LOCAL_STEP_WIDE = 0.15


def _perturb(param: Parameter, coordinate: Any, rng: np.random.Generator) -> Any:
    if param.type in ("bool", "categorical"):
        options = ["false", "true"] if param.type == "bool" else [str(c) for c in param.choices]
        others = [o for o in options if o != coordinate] or options
        return others[int(rng.integers(0, len(others)))]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log:
        lo, hi, x = math.log(low), math.log(high), math.log(max(float(coordinate), low))
    else:
        lo, hi, x = low, high, float(coordinate)
    step = rng.normal(0.0, LOCAL_STEP if rng.random() < 0.7 else LOCAL_STEP_WIDE) * (hi - lo)
    x = min(max(x + step, lo), hi)
    value = math.exp(x) if param.log else x
    if param.type == "int":
        return int(min(max(round(value), param.low), param.high))  # type: ignore[type-var]
    return float(value)


#: the exploit search: passes over the knobs, and grid points per numeric knob
EXPLOIT_PASSES = 2
EXPLOIT_STARTS = 3
#: a knob moves in the exploit search only when the model's improvement is at least this many
#: posterior standard deviations of the difference: without it the search followed weak, noisy
#: trends to the edges of ranges (read-ahead 8 kB, bfq) on bench/quality.py; with 0.5 or 1.0 the
#: median regret on haltpoll fell 0.0083 -> 0.0072 over 40 seeds, the others within noise
EXPLOIT_KAPPA = 1.0
EXPLOIT_GRID = 41


def _grid(param: Parameter, current: Any) -> list[Any]:
    """Values of one knob to try in the exploit search: every choice, or an even grid over the
    (log) range plus the current value."""
    if param.type in ("bool", "categorical"):
        return ["false", "true"] if param.type == "bool" else [str(c) for c in param.choices]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log:
        values = np.exp(np.linspace(math.log(low), math.log(high), EXPLOIT_GRID))
    else:
        values = np.linspace(low, high, EXPLOIT_GRID)
    if param.type == "int":
        return sorted({int(round(v)) for v in values} | {int(current)})
    return sorted({float(v) for v in values} | {float(current)})


class _WarmLbfgs:
    """GP hyperparameter fit by L-BFGS-B, the dominant cost of a proposal at hundreds of trials.

    - under `WARM_FROM` observations: a cold fit from skopt's initial values (bounded iterations),
      so early proposals do not depend on how earlier fits went (this is what bench/quality.py
      measured);
    - from then on, the previous proposal's fitted values (stored in trials.proposal_json) are
      refined by a few iterations every `REFIT_EVERY` observations and reused as they are in
      between: one point more barely moves them, and the model itself (the Cholesky factor of all
      observations) is still rebuilt from the whole history every time.
    Which case applies depends only on the history, so a rebuild is deterministic."""

    COLD_MAXITER = 50
    WARM_MAXITER = 5
    WARM_FROM = 60
    REFIT_EVERY = 10

    def __init__(self, warm_theta: Sequence[float] | None, observations: int) -> None:
        self.warm_theta = None if warm_theta is None else np.asarray(warm_theta, dtype=float)
        self.observations = observations

    def __call__(self, obj_func, initial_theta, bounds):  # type: ignore[no-untyped-def]
        from scipy.optimize import minimize

        start, maxiter = initial_theta, self.COLD_MAXITER
        if (self.observations >= self.WARM_FROM and self.warm_theta is not None
                and self.warm_theta.shape == np.shape(initial_theta)):
            start = np.clip(self.warm_theta, bounds[:, 0], bounds[:, 1])
            if self.observations % self.REFIT_EVERY:
                return start, float(obj_func(start, eval_gradient=False))
            maxiter = self.WARM_MAXITER
        result = minimize(obj_func, start, method="L-BFGS-B", jac=True, bounds=bounds,
                          options={"maxiter": maxiter})
        return result.x, result.fun


class RandomOptimizer:
    """Uniform random search (log-uniform for log parameters): the baseline any engine must beat."""

    name = "random"

    def __init__(self, space: Space, *, seed: int, **_: Any) -> None:
        self.space = space
        self._seed = seed % 2**32  # as SkoptOptimizer
        self._rng = np.random.default_rng(self._seed)

    def tell_many(self, pairs: Sequence[tuple[Mapping[str, Any], float]]) -> None:
        # Rebuilt from history each time: draw from a stream that depends on how much was seen.
        self._rng = np.random.default_rng((self._seed, len(pairs)))

    def tell(self, params: Mapping[str, Value], value: float) -> None:
        pass

    def ask(self) -> dict[str, Value]:
        return {p.name: sample(p, self._rng) for p in self.space.parameters}


def sample(param: Parameter, rng: np.random.Generator) -> Value:
    if param.type == "bool":
        return bool(rng.integers(0, 2))
    if param.type == "categorical":
        return param.choices[int(rng.integers(0, len(param.choices)))]
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return int(round(value)) if param.type == "int" else value


def _fallback(param: Parameter) -> Any:
    """A value for a parameter a stored trial lacks (added or skipped at the time)."""
    if param.default is not None:
        return param.default
    if param.type in ("int", "float"):
        return param.low
    return param.choices[0] if param.choices else False


ENGINES = {"skopt": SkoptOptimizer, "random": RandomOptimizer}
MAX_RELATION_RETRIES = 50


def propose(
    space: Space, observations: Sequence[Observation], *, seed: int, maximize: bool,
    engine: str = "skopt", warm_theta: Sequence[float] | None = None, racing: bool = True,
    remaining: int | None = None,
) -> Proposal:
    """Rebuild the engine from history and ask it for one configuration satisfying the
    space's relations. Deterministic for a given seed and history."""
    from threadpoolctl import threadpool_limits

    # Multi-threaded BLAS spins on these tiny matrices: one thread makes a proposal ~4x faster.
    with threadpool_limits(limits=1):
        return _propose(space, observations, seed=seed, maximize=maximize, engine=engine, warm_theta=warm_theta,
                        racing=racing, remaining=remaining)


def _theta_note(optimizer: Any) -> dict[str, Any]:
    """The engine's fitted hyperparameters for the proposal's notes (the next rebuild starts its
    fit from them), if it has any."""
    theta = getattr(optimizer, "fitted_theta", lambda: None)()
    return {"theta": theta} if theta else {}


def _propose(
    space: Space, observations: Sequence[Observation], *, seed: int, maximize: bool, engine: str,
    warm_theta: Sequence[float] | None, racing: bool = True, remaining: int | None = None,
) -> Proposal:
    started = time.perf_counter()
    pairs = model_targets(observations, maximize=maximize)
    # The engine is built with the experiment's seed every time, so its space-filling initial
    # design is the same across rebuilds and the k-th proposal is the design's k-th point.
    optimizer = ENGINES[engine](space, seed=seed, warm_theta=warm_theta)
    step_seed = (seed * 1_000_003 + len(observations)) % (2**32)
    optimizer.tell_many(pairs)
    from tuner import racing as race

    if racing and getattr(optimizer, "has_model", False) and race.rerun_due(observations, remaining=remaining):
        ranked = race.rank(space, race.group(space, observations), optimizer, maximize=maximize)
        rerun = race.next_rerun(ranked, observations, remaining=remaining)
        if rerun is not None:
            return Proposal(
                params=dict(rerun.params), engine=optimizer.name, observations=len(pairs),
                propose_ms=(time.perf_counter() - started) * 1000.0, source="rerun",
                notes={"rerun_of": rerun.trials[:1], "measurements": rerun.measurements,
                       "estimate": round(float(rerun.estimate or 0.0), 6), **_theta_note(optimizer)},
            )
    if (racing and remaining is not None and remaining == race.EXPLOIT_AT and hasattr(optimizer, "exploit")
            and getattr(optimizer, "has_model", False)):
        # The end game opens with the model's own best guess, then races it (tuner/racing.py)
        best_guess = optimizer.exploit()
        if best_guess is not None:
            return Proposal(params=best_guess, engine=optimizer.name, observations=len(pairs),
                            propose_ms=(time.perf_counter() - started) * 1000.0, source="optimizer",
                            notes={"exploit": True, **_theta_note(optimizer)})
    params = optimizer.ask()
    rejected = repeats = 0
    # Before the model (the initial design, or an engine without one), a configuration already
    # measured is passed over: the k-th proposal is the design's k-th point, so one design point
    # passed over for a relation made the next proposal repeat the point after it, measured
    # already. With a model, ask() itself never returns a measured configuration.
    measured = {} if getattr(optimizer, "has_model", False) else {race.config_key(space, p): v for p, v in pairs}
    rng = np.random.default_rng(step_seed)
    worst = max((v for _, v in pairs), default=0.0)
    while rejected + repeats < MAX_RELATION_RETRIES:
        if space.satisfies(params):
            rejected += 1
            # Tell this throwaway engine the violating point is bad so the next ask moves away.
            optimizer.tell(params, worst + 1.0)
        elif (key := race.config_key(space, params)) in measured:
            repeats += 1
            if rejected + repeats < 10:  # what it measured: true, and moves the design on (later: random
                optimizer.tell(params, measured[key])  # draws, and no model refit per repeat)
        else:
            break
        params = optimizer.ask() if rejected + repeats < 10 else {p.name: sample(p, rng) for p in space.parameters}
    if space.satisfies(params):
        from tuner.errors import SpaceError

        raise SpaceError(f"no configuration satisfying the relations found in {rejected} tries")
    notes: dict[str, Any] = {"relation_rejects": rejected, **_theta_note(optimizer)}
    if repeats:
        notes["measured_skipped"] = repeats
    return Proposal(
        params=params, engine=optimizer.name, observations=len(pairs),
        propose_ms=(time.perf_counter() - started) * 1000.0, notes=notes,
    )
