"""The optimizer behind a two-verb interface (ask / tell), rebuilt from stored history.

An engine never sees the database: the loop turns stored trials into Observations, builds a
fresh engine from them before every proposal (so a restarted process continues the same search),
and asks it for one configuration.

Rules for what the model is told (see README "How results feed the optimizer"):
- succeeded trials: their objective, log-transformed for latency-like positive objectives, negated
  when maximizing (engines always minimize);
- failed and infeasible trials: the worst transformed value observed so far plus a margin, so the
  model learns to avoid the region without the +inf that would wreck a GP; skipped until a
  succeeded trial exists;
- aborted (interrupted) and running trials: ignored, they say nothing about the configuration.
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


@dataclass
class Proposal:
    params: dict[str, Value]
    engine: str
    observations: int
    propose_ms: float
    notes: dict[str, Any] = field(default_factory=dict)


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


def model_targets(
    observations: Sequence[Observation], *, maximize: bool
) -> list[tuple[Mapping[str, Any], float]]:
    """(params, engine value) pairs per the rules in the module docstring."""
    succeeded = [o for o in observations if o.status == "succeeded" and o.objective is not None]
    log = bool(succeeded) and all(o.objective > 0 for o in succeeded)  # type: ignore[operator]
    pairs = [(o.params, transform_objective(o.objective, maximize=maximize, log=log)) for o in succeeded]  # type: ignore[arg-type]
    if not pairs:
        return []
    values = [v for _, v in pairs]
    spread = (max(values) - min(values)) or abs(max(values)) or 1.0
    penalty = max(values) + 0.25 * spread
    pairs += [(o.params, penalty) for o in observations if o.status in ("failed", "infeasible")]
    return pairs


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
        return str(param.coerce(value))
    number = param.coerce(value)
    return min(max(number, param.low), param.high)  # type: ignore[type-var]


def decode(param: Parameter, coordinate: Any) -> Value:
    if param.type == "bool":
        return coordinate == "true"
    if param.type == "categorical":
        return param.coerce(coordinate)
    if param.type == "int":
        return int(coordinate)
    return float(coordinate)


class SkoptOptimizer:
    """scikit-optimize's GP-based Optimizer, set up for small, noisy, mixed kernel spaces."""

    name = "skopt-gp"

    def __init__(
        self, space: Space, *, seed: int, n_initial_points: int = 8, warm_theta: Sequence[float] | None = None,
    ) -> None:
        from skopt import Optimizer as SkOptimizer
        from skopt.sampler import Lhs
        from skopt.space import Space as SkSpace
        from skopt.utils import cook_estimator

        self.space = space
        dimensions = [_dimension(p) for p in space.parameters]
        # Noise-aware GP (a fitted WhiteKernel) with a bounded hyperparameter search: skopt's
        # default restarts L-BFGS several times per fit, which cost seconds per proposal.
        estimator = cook_estimator(
            "GP", space=SkSpace(dimensions), random_state=seed, noise="gaussian",
            n_restarts_optimizer=0,
        )
        estimator.optimizer = _WarmLbfgs(warm_theta)
        self._opt = SkOptimizer(
            dimensions,
            base_estimator=estimator,
            n_initial_points=n_initial_points,
            # Classic LHS without the 1000-iteration maximin search (0.3 s per rebuild).
            initial_point_generator=Lhs(lhs_type="centered", criterion=None),
            acq_func="EI",
            # Sampling the acquisition at random points is ~50x cheaper than L-BFGS restarts and
            # ranks as well on spaces this small; skopt's default made proposals take seconds.
            acq_optimizer="sampling",
            # skopt's predictive variance is a naive 3-operand einsum, O(points x n^2): 500 random
            # candidates keep a proposal at 200 trials near 100 ms.
            acq_optimizer_kwargs={"n_points": 500},
            random_state=seed,
        )

    def _point(self, params: Mapping[str, Any]) -> list[Any]:
        return [encode(p, params[p.name] if p.name in params else _fallback(p)) for p in self.space.parameters]

    def tell_many(self, pairs: Sequence[tuple[Mapping[str, Any], float]]) -> None:
        if not pairs:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._opt.tell([self._point(p) for p, _ in pairs], [float(v) for _, v in pairs])

    def tell(self, params: Mapping[str, Value], value: float) -> None:
        self.tell_many([(params, value)])

    def ask(self) -> dict[str, Value]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            point = self._opt.ask()
        return {p.name: decode(p, c) for p, c in zip(self.space.parameters, point)}

    def fitted_theta(self) -> list[float] | None:
        """The GP's fitted kernel hyperparameters (log scale), stored with the proposal so the
        next rebuild can start its fit from them."""
        if not self._opt.models:
            return None
        with np.errstate(divide="ignore"):
            theta = self._opt.models[-1].kernel_.theta
        return [round(float(v), 6) for v in theta if np.isfinite(v)]


class _WarmLbfgs:
    """GP hyperparameter fit by L-BFGS-B: from the previous proposal's fitted values when the
    history provides them (a few iterations suffice, the data changed by one point), else cold
    with a bounded iteration count. Fitting dominates proposal time at hundreds of trials."""

    COLD_MAXITER = 50
    WARM_MAXITER = 5

    def __init__(self, warm_theta: Sequence[float] | None) -> None:
        self.warm_theta = None if warm_theta is None else np.asarray(warm_theta, dtype=float)

    def __call__(self, obj_func, initial_theta, bounds):  # type: ignore[no-untyped-def]
        from scipy.optimize import minimize

        start, maxiter = initial_theta, self.COLD_MAXITER
        if self.warm_theta is not None and self.warm_theta.shape == np.shape(initial_theta):
            start = np.clip(self.warm_theta, bounds[:, 0], bounds[:, 1])
            maxiter = self.WARM_MAXITER
        result = minimize(obj_func, start, method="L-BFGS-B", jac=True, bounds=bounds,
                          options={"maxiter": maxiter})
        return result.x, result.fun


class RandomOptimizer:
    """Uniform random search (log-uniform for log parameters): the baseline any engine must beat."""

    name = "random"

    def __init__(self, space: Space, *, seed: int, **_: Any) -> None:
        self.space = space
        self._seed = seed
        self._rng = np.random.default_rng(seed)

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
    engine: str = "skopt", warm_theta: Sequence[float] | None = None,
) -> Proposal:
    """Rebuild the engine from history and ask it for one configuration satisfying the
    space's relations. Deterministic for a given seed and history."""
    from threadpoolctl import threadpool_limits

    # Multi-threaded BLAS spins on these tiny matrices: one thread makes a proposal ~4x faster.
    with threadpool_limits(limits=1):
        return _propose(space, observations, seed=seed, maximize=maximize, engine=engine, warm_theta=warm_theta)


def _propose(
    space: Space, observations: Sequence[Observation], *, seed: int, maximize: bool, engine: str,
    warm_theta: Sequence[float] | None,
) -> Proposal:
    started = time.perf_counter()
    pairs = model_targets(observations, maximize=maximize)
    # The engine is built with the experiment's seed every time, so its space-filling initial
    # design is the same across rebuilds and the k-th proposal is the design's k-th point.
    optimizer = ENGINES[engine](space, seed=seed, warm_theta=warm_theta)
    step_seed = (seed * 1_000_003 + len(observations)) % (2**32)
    optimizer.tell_many(pairs)
    params = optimizer.ask()
    rejected = 0
    if space.relations:
        rng = np.random.default_rng(step_seed)
        worst = max((v for _, v in pairs), default=0.0)
        while space.satisfies(params) and rejected < MAX_RELATION_RETRIES:
            rejected += 1
            # Tell this throwaway engine the violating point is bad so the next ask moves away.
            optimizer.tell(params, worst + 1.0)
            params = optimizer.ask() if rejected < 10 else {p.name: sample(p, rng) for p in space.parameters}
        if space.satisfies(params):
            from tuner.errors import SpaceError

            raise SpaceError(f"no configuration satisfying the relations found in {rejected} tries")
    notes: dict[str, Any] = {"relation_rejects": rejected}
    theta = getattr(optimizer, "fitted_theta", lambda: None)()
    if theta is not None:
        notes["theta"] = theta
    return Proposal(
        params=params, engine=optimizer.name, observations=len(pairs),
        propose_ms=(time.perf_counter() - started) * 1000.0, notes=notes,
    )
