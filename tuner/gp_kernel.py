"""The optimizer's GP kernel: additive over knobs, plus a small joint term for interactions.

Why additive: a kernel knob's effect on latency mostly does not depend on the other knobs (a
polling window, a scheduler choice, a THP mode each multiply latency by their own factor, which
the log transform turns into a sum). A GP whose kernel is a sum of one-knob kernels can learn each
knob's curve from every trial, while the usual joint Matern kernel must learn the whole 13-D
surface from 40 points and mostly learns noise. Each knob has its own amplitude (how much it
matters: an irrelevant knob's shrinks towards zero) and length scale (how smooth its effect is).
The joint Matern term, with one isotropic length scale and its own amplitude, catches what is not
additive (a cliff where two knobs together starve the CPU, a ratio between two writeback limits).
This is the additive-GP idea of Duvenaud et al. (2011) and Kandasamy et al. (2015), in the form of
one scikit-learn kernel so scikit-optimize's GP fits its hyperparameters by marginal likelihood.

A knob is a group of transformed columns: one for a number or a two-choice knob, the one-hot
columns of a categorical knob.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel, StationaryKernelMixin

SQRT5 = math.sqrt(5.0)


def _matern52(r: np.ndarray) -> np.ndarray:
    """(1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r), in place where possible: with 1000 candidates x 200
    trials per knob these temporaries are much of a proposal's time."""
    decay = np.exp(-SQRT5 * r)
    m = np.multiply(r, 5.0 / 3.0)
    m += SQRT5
    m *= r
    m += 1.0
    m *= decay
    return m


def _group_distance(X: np.ndarray, Y: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    """(n_x, n_y) Euclidean distances within one knob's columns."""
    if len(columns) == 1:
        d = np.subtract.outer(X[:, columns[0]], Y[:, columns[0]])
        return np.abs(d, out=d)
    # one-hot rows: the dot product is 1 for the same choice, 0 for another (distance sqrt 2);
    # computed as |x|^2 + |y|^2 - 2 x.y so any row values stay exact
    xg, yg = X[:, list(columns)], Y[:, list(columns)]
    d = (xg * xg).sum(1)[:, None] + (yg * yg).sum(1)[None, :] - 2.0 * (xg @ yg.T)
    np.maximum(d, 0.0, out=d)
    return np.sqrt(d, out=d)


class AdditiveKernel(StationaryKernelMixin, Kernel):
    """k(x, y) = sum_g a_g * m(|x_g - y_g| / l_g)  +  a_joint * m(|x - y| / l_joint), m = Matern 5/2."""

    def __init__(
        self,
        groups: Sequence[Sequence[int]],
        amplitudes: Sequence[float],
        length_scales: Sequence[float],
        joint_amplitude: float = 0.05,
        joint_length_scales: Sequence[float] = (1.0,),
        amplitude_bounds: tuple[float, float] = (1e-4, 10.0),
        length_scale_bounds: tuple[float, float] = (0.03, 20.0),
    ) -> None:
        self.groups = groups
        self.amplitudes = amplitudes
        self.length_scales = length_scales
        self.joint_amplitude = joint_amplitude
        self.joint_length_scales = joint_length_scales
        self.amplitude_bounds = amplitude_bounds
        self.length_scale_bounds = length_scale_bounds

    @property
    def _n(self) -> int:
        return len(self.groups)

    @property
    def hyperparameter_amplitudes(self) -> Hyperparameter:
        return Hyperparameter("amplitudes", "numeric", self.amplitude_bounds, self._n)

    @property
    def hyperparameter_length_scales(self) -> Hyperparameter:
        return Hyperparameter("length_scales", "numeric", self.length_scale_bounds, self._n)

    @property
    def hyperparameter_joint_amplitude(self) -> Hyperparameter:
        return Hyperparameter("joint_amplitude", "numeric", self.amplitude_bounds)

    @property
    def hyperparameter_joint_length_scales(self) -> Hyperparameter:
        # one (isotropic) or one per knob
        return Hyperparameter("joint_length_scales", "numeric", self.length_scale_bounds,
                              np.atleast_1d(self.joint_length_scales).size)

    def _training_distances(self, X: np.ndarray) -> np.ndarray:
        """(n, n, groups) per-knob distances of the training inputs, memoized on X's bytes:
        fitting the hyperparameters evaluates k(X, X) with its gradient at every step."""
        key = (X.shape, hash(np.ascontiguousarray(X).tobytes()))
        cached = getattr(self, "_distance_memo", None)
        if cached is None or cached[0] != key:
            cached = (key, np.stack([_group_distance(X, X, columns) for columns in self.groups], axis=2))
            self._distance_memo = cached
        return cached[1]

    def __call__(self, X, Y=None, eval_gradient=False):  # type: ignore[no-untyped-def]
        X = np.atleast_2d(X)
        same = Y is None
        Y = X if same else np.atleast_2d(Y)
        if eval_gradient and not same:
            raise ValueError("gradient can only be evaluated when Y is None")
        amplitudes = np.broadcast_to(np.asarray(self.amplitudes, dtype=float), (self._n,))
        lengths = np.broadcast_to(np.asarray(self.length_scales, dtype=float), (self._n,))
        joint_amplitude = float(self.joint_amplitude)
        joint_lengths = np.atleast_1d(np.asarray(self.joint_length_scales, dtype=float))
        if not eval_gradient:
            return self._value(X, Y, amplitudes, lengths, joint_amplitude, joint_lengths)
        d = self._training_distances(X)
        r = d / lengths
        decay = np.exp(-SQRT5 * r)
        m = (1.0 + SQRT5 * r + (5.0 / 3.0) * r * r) * decay
        K = m @ amplitudes
        # joint term: r_joint^2 = sum over knobs of (d_g / l_g)^2 (one shared l_g when isotropic)
        scaled_sq = (d / joint_lengths) ** 2 if joint_lengths.size > 1 else (d / joint_lengths[0]) ** 2
        r_joint = np.sqrt(scaled_sq.sum(axis=2))
        m_joint = _matern52(r_joint)
        K = K + joint_amplitude * m_joint
        # gradient with respect to log hyperparameters, in the order of `theta` (dir() order of the
        # hyperparameter_* properties): amplitudes, joint_amplitude, joint_length_scales, length_scales
        joint_decay = joint_amplitude * (5.0 / 3.0) * (1.0 + SQRT5 * r_joint) * np.exp(-SQRT5 * r_joint)
        if joint_lengths.size > 1:
            joint_length_grad = joint_decay[:, :, None] * scaled_sq
        else:
            joint_length_grad = (joint_decay * r_joint ** 2)[:, :, None]
        parts = [m * amplitudes, (joint_amplitude * m_joint)[:, :, None], joint_length_grad,
                 ((5.0 / 3.0) * r * r * (1.0 + SQRT5 * r) * decay) * amplitudes]
        return K, np.concatenate(parts, axis=2)

    def _value(self, X: np.ndarray, Y: np.ndarray, amplitudes: np.ndarray, lengths: np.ndarray,
               joint_amplitude: float, joint_lengths: np.ndarray) -> np.ndarray:
        """k(X, Y) without gradient, one knob at a time: predictions for 1000 candidates against
        200 trials are what a proposal spends most of its time on, and (n_x, n_y) slices stay in
        cache where the (n_x, n_y, knobs) array of the gradient path does not."""
        K = np.zeros((X.shape[0], Y.shape[0]))
        joint_sq = np.zeros_like(K)
        for g, columns in enumerate(self.groups):
            d = _group_distance(X, Y, columns)
            scale = joint_lengths[g] if joint_lengths.size > 1 else joint_lengths[0]
            joint_sq += (d / scale) ** 2
            d /= lengths[g]
            m = _matern52(d)
            m *= amplitudes[g]
            K += m
        np.sqrt(joint_sq, out=joint_sq)
        return K + joint_amplitude * _matern52(joint_sq)

    def diag(self, X):  # type: ignore[no-untyped-def]
        total = float(np.sum(np.broadcast_to(np.asarray(self.amplitudes, dtype=float), (self._n,))))
        return np.full(np.atleast_2d(X).shape[0], total + float(self.joint_amplitude))

    def __repr__(self) -> str:
        amplitudes = np.broadcast_to(np.asarray(self.amplitudes, dtype=float), (self._n,))
        lengths = np.broadcast_to(np.asarray(self.length_scales, dtype=float), (self._n,))
        knobs = ", ".join(f"{a:.3g}/{l:.3g}" for a, l in zip(amplitudes, lengths))
        joint = "/".join(f"{v:.3g}" for v in [self.joint_amplitude, *np.atleast_1d(self.joint_length_scales)])
        return f"AdditiveKernel([{knobs}], joint={joint})"


def column_groups(transformed_sizes: Sequence[int]) -> list[list[int]]:
    """Transformed-column indices per knob, from each dimension's transformed size."""
    groups, start = [], 0
    for size in transformed_sizes:
        groups.append(list(range(start, start + size)))
        start += size
    return groups


AMPLITUDE_BOUNDS = (0.01, 10.0)
LENGTH_SCALE_BOUNDS = (0.03, 20.0)


def additive_kernel(groups: Sequence[Sequence[int]]) -> AdditiveKernel:
    """Every knob starting equally relevant (amplitude 0.1) and equally smooth (length 0.3), with
    an isotropic joint term."""
    return AdditiveKernel([list(g) for g in groups], [0.1] * len(groups), [0.3] * len(groups),
                          amplitude_bounds=AMPLITUDE_BOUNDS, length_scale_bounds=LENGTH_SCALE_BOUNDS)
