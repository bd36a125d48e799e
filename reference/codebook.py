"""Lloyd-Max scalar codebooks for the coordinates of a rotated unit vector.

After a random rotation, each coordinate t of a unit vector in R^n has the density
f(t) = Γ(n/2) / (√π Γ((n−1)/2)) · (1 − t²)^((n−3)/2) on [−1, 1] (``"exact"``), which tends to
N(0, 1/n) (``"gaussian"``). Both are symmetric and log-concave, so the MSE-optimal quantizer
is unique and symmetric: we solve for the positive half only, with the boundary between the
two middle levels fixed at 0.

All cell integrals are closed forms or regularized incomplete beta / normal tail functions,
evaluated on the upper tail so that the thin outer cells keep their relative precision.
Lloyd's iteration gets close; Newton's method on the same fixed-point equations (whose
Jacobian is tridiagonal and known in closed form) then converges quadratically, so the
stated tolerance is reached and not merely a slowdown of the iteration.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Literal

import numpy as np
from scipy.special import betainc, erfinv, gammaln, ndtr

Density = Literal["exact", "gaussian"]

BITS = (1, 2, 3, 4, 5)
# Converged means a Newton step moved no level by more than this (levels are O(1/√n)).
TOLERANCE = 1e-13
MAX_LLOYD_STEPS = 200
MAX_NEWTON_STEPS = 50


class _Cells:
    """Moments ∫ t^k f(t) dt over cells [a, b] of [0, ∞), for one density."""

    def __init__(self, density: Density, n: int) -> None:
        self.density = density
        self.n = n
        if density == "exact":
            self.top = 1.0
            self.log_norm = gammaln(n / 2) - gammaln((n - 1) / 2) - 0.5 * math.log(math.pi)
        else:
            self.top = math.inf
            self.sigma = 1.0 / math.sqrt(n)

    def pdf(self, t: np.ndarray) -> np.ndarray:
        if self.density == "exact":
            return np.exp(self.log_norm + (self.n - 3) / 2 * np.log1p(-t * t))
        z = t / self.sigma
        return np.exp(-0.5 * z * z) / (self.sigma * math.sqrt(2 * math.pi))

    def upper_moments(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """∫_t^top s^k f(s) ds for k = 0, 1, 2 (t >= 0)."""
        if self.density == "exact":
            n = self.n
            w = 1.0 - t * t
            # t² ~ Beta(1/2, (n-1)/2); the upper tail of t is the lower tail of 1 - t².
            m0 = 0.5 * betainc((n - 1) / 2, 0.5, w)
            m1 = np.exp(self.log_norm + (n - 1) / 2 * np.log(w)) / (n - 1)
            m2 = 0.5 / n * betainc((n - 1) / 2, 1.5, w)
            return m0, m1, m2
        s = self.sigma
        z = t / s
        phi = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        tail = ndtr(-z)
        return tail, s * phi, s * s * (z * phi + tail)

    def cell_moments(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Moments of the cells between consecutive edges; the last edge is the top."""
        upper = self.upper_moments(edges[:-1])
        return tuple(u - np.append(u[1:], 0.0) for u in upper)


def _edges(cells: _Cells, positive: np.ndarray) -> np.ndarray:
    inner = (positive[:-1] + positive[1:]) / 2
    return np.concatenate(([0.0], inner, [cells.top]))


def _centroids(cells: _Cells, positive: np.ndarray) -> np.ndarray:
    m0, m1, _ = cells.cell_moments(_edges(cells, positive))
    return m1 / m0


def _newton_step(cells: _Cells, positive: np.ndarray) -> np.ndarray:
    """One Newton step on g(c) = centroids(c) - c = 0."""
    edges = _edges(cells, positive)
    m0, m1, _ = cells.cell_moments(edges)
    cent = m1 / m0
    f_edge = cells.pdf(edges[:-1])
    h = len(positive)
    jac = -np.eye(h)
    for k in range(h):
        lo, hi = edges[k], edges[k + 1]
        # d(centroid_k)/d(edge) is f(edge)·(edge − centroid)/mass with the sign of the side;
        # each inner edge is the mean of its two neighbouring levels.
        if k > 0:
            d_lo = f_edge[k] * (cent[k] - lo) / m0[k]
            jac[k, k - 1] += 0.5 * d_lo
            jac[k, k] += 0.5 * d_lo
        if k < h - 1:
            d_hi = f_edge[k + 1] * (hi - cent[k]) / m0[k]
            jac[k, k] += 0.5 * d_hi
            jac[k, k + 1] += 0.5 * d_hi
    return positive - np.linalg.solve(jac, cent - positive)


@cache
def _positive_levels(bits: int, n: int, density: Density) -> tuple[float, ...]:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits}")
    if n < 4:
        raise ValueError(f"n must be at least 4, got {n}")
    if density not in ("exact", "gaussian"):
        raise ValueError(f"unknown density {density!r}")
    cells = _Cells(density, n)
    h = 2 ** (bits - 1)
    # Start from equal-mass cells: every cell is non-empty, which Lloyd's step preserves.
    sigma = 1.0 / math.sqrt(n)
    positive = sigma * np.sqrt(2.0) * _erfinv_grid(h)
    for _ in range(MAX_LLOYD_STEPS):
        nxt = _centroids(cells, positive)
        done = np.max(np.abs(nxt - positive)) < 1e-6 * sigma
        positive = nxt
        if done:
            break
    for _ in range(MAX_NEWTON_STEPS):
        nxt = _newton_step(cells, positive)
        step = np.max(np.abs(nxt - positive))
        positive = nxt
        if step < TOLERANCE:
            break
    else:
        raise ArithmeticError(f"Lloyd-Max did not converge: bits={bits} n={n} {density}")
    return tuple(float(c) for c in positive)


def _erfinv_grid(h: int) -> np.ndarray:
    """erfinv((k + 1/2)/h), k < h: the positive half-normal's equal-mass cell centres."""
    return erfinv((np.arange(h) + 0.5) / h)


def levels(bits: int, n: int, density: Density = "exact") -> np.ndarray:
    """The 2^bits Lloyd-Max levels, ascending, exactly symmetric (float64)."""
    positive = np.array(_positive_levels(bits, n, density))
    return np.concatenate((-positive[::-1], positive))


def midpoints(bits: int, n: int, density: Density = "exact") -> np.ndarray:
    """The 2^bits − 1 decision boundaries (C[k] + C[k+1]) / 2; the middle one is exactly 0."""
    c = levels(bits, n, density)
    return (c[:-1] + c[1:]) / 2


@cache
def _unit_mse(codebook: tuple[float, ...], n: int) -> float:
    positive = np.array(codebook)
    cells = _Cells("exact", n)
    m0, m1, m2 = cells.cell_moments(_edges(cells, positive))
    per_coordinate = 2.0 * float(np.sum(m2 - 2 * positive * m1 + positive * positive * m0))
    return n * per_coordinate


def expected_mse(bits: int, n: int, density: Density = "exact") -> float:
    """E‖x − x̂‖² for x uniform on the unit sphere of R^n, each rotated coordinate quantized
    with the ``density`` codebook at its nearest level and the true norm (1) as the scale.

    The data are always the exact sphere coordinates: for ``"gaussian"`` this is what the
    Gaussian approximation actually costs."""
    return _unit_mse(_positive_levels(bits, n, density), n)
