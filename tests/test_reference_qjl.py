"""QJL (TurboQuant_prod): unbiased inner products for both sketches, and their variance.

Each check fixes a key y and a query q and averages over fresh sketches S, since S is the
estimator's only randomness. Two queries: q = y (along the residual, where a wrong scale
shows at full size) and an independent q (the attention case).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln

from reference import measure, qjl, rotation

N = 128
Z99 = 2.5758  # two-sided 99% normal quantile
DRAWS = {qjl.GaussianSketch: 4000, qjl.HadamardSketch: 20000}
BATCH = 500
# The structured variance matches its first-order formula this closely (O(1/n) terms).
HADAMARD_VARIANCE_REL_TOL = 0.10


def key_and_queries(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((2, N))
    unit = np.stack([x / np.linalg.norm(x), w / np.linalg.norm(w)]).astype(np.float32)
    y, q = rotation.forward(unit)
    return y[None], {"self": y.astype(np.float64), "independent": q.astype(np.float64)}


@cache
def estimates(kind, bits: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Errors (estimate − true) per query over DRAWS[kind] sketches, the residual r, queries."""
    y, queries = key_and_queries(bits)
    rng = np.random.default_rng(1000 + bits)
    errors = {name: [] for name in queries}
    for _ in range(DRAWS[kind] // BATCH):
        sketch = kind.draw(rng, N, rows=BATCH)
        code = qjl.encode(np.repeat(y, BATCH, axis=0), bits, sketch)
        for name, q in queries.items():
            true = float(q @ y[0].astype(np.float64))
            errors[name].append(qjl.inner_product(q, code, sketch) - true)
    residual = y[0].astype(np.float64) - qjl.mse_part(code)[0]
    return {k: np.concatenate(v) for k, v in errors.items()}, residual, queries


def variance_ci(err: np.ndarray) -> tuple[float, float]:
    """Sample variance and its standard error (from the fourth central moment)."""
    centered = err - err.mean()
    var = float(np.mean(centered**2))
    m4 = float(np.mean(centered**4))
    return var, math.sqrt(max(m4 - var * var, 0.0) / len(err))


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("kind", [qjl.GaussianSketch, qjl.HadamardSketch], ids=["gauss", "had"])
def test_inner_product_is_unbiased(kind, bits: int) -> None:
    errors, residual, queries = estimates(kind, bits)
    for name, err in errors.items():
        stderr = err.std(ddof=1) / math.sqrt(len(err))
        assert abs(err.mean()) <= Z99 * stderr, (name, err.mean(), stderr)
        if name == "self":
            # Power: a scale 5% off would put the mean outside the interval.
            assert Z99 * stderr < 0.05 * abs(float(queries[name] @ residual))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gaussian_variance_is_exact_and_under_the_bound(bits: int) -> None:
    """Var = π/(2n)·‖r‖²·(‖q‖² − (2/π)·⟨q, r̂⟩²) ≤ π/(2n)·‖q‖²·‖r‖² (the paper's bound)."""
    errors, r, queries = estimates(qjl.GaussianSketch, bits)
    rn2 = float(r @ r)
    for name, q in queries.items():
        along = float(q @ r) ** 2 / rn2
        exact = math.pi / (2 * N) * rn2 * (float(q @ q) - 2 / math.pi * along)
        bound = math.pi / (2 * N) * rn2 * float(q @ q)
        var, se = variance_ci(errors[name])
        assert abs(var - exact) <= Z99 * se, (name, var, exact, se)
        assert var <= bound + Z99 * se
        assert exact <= bound


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_hadamard_variance(bits: int) -> None:
    """Orthogonal rows remove the part of sign(S·r) along S·r: Var ≈ (π/2 − 1)/n·‖r‖²·
    (‖q‖² − ⟨q, r̂⟩²), about 1 − 2/π = 36% of the Gaussian sketch's."""
    errors, r, queries = estimates(qjl.HadamardSketch, bits)
    rn2 = float(r @ r)
    for name, q in queries.items():
        approx = (math.pi / 2 - 1) / N * rn2 * (float(q @ q) - float(q @ r) ** 2 / rn2)
        var, _ = variance_ci(errors[name])
        assert var == pytest.approx(approx, rel=HADAMARD_VARIANCE_REL_TOL), name
        assert var < math.pi / (2 * N) * rn2 * float(q @ q)


def test_scales() -> None:
    assert qjl.gaussian_scale(N) == math.sqrt(math.pi / 2) / N
    # 1/(n·E|T|), E|T| the mean absolute coordinate of a uniform unit vector in R^n.
    log_norm = gammaln(N / 2) - gammaln((N - 1) / 2) - 0.5 * math.log(math.pi)
    density = lambda t: math.exp(log_norm + (N - 3) / 2 * math.log1p(-t * t))  # noqa: E731
    mean_abs = 2 * integrate.quad(lambda t: t * density(t), 0, 1)[0]
    assert qjl.hadamard_scale(N) == pytest.approx(1 / (N * mean_abs), rel=1e-10)
    assert qjl.hadamard_scale(N) == pytest.approx(math.sqrt(math.pi / (2 * N)), rel=1 / N)


@pytest.mark.parametrize("kind", [qjl.GaussianSketch, qjl.HadamardSketch], ids=["gauss", "had"])
def test_sketch_transpose_and_decode_agree(kind) -> None:
    rng = np.random.default_rng(11)
    sketch = kind.draw(rng, N)
    a, b = rng.standard_normal((2, 3, N))
    np.testing.assert_allclose(
        np.sum(sketch.project(a) * b, axis=1), np.sum(a * sketch.project_t(b), axis=1)
    )
    y, queries = key_and_queries(12)
    code = qjl.encode(y, 3, sketch)
    q = queries["independent"]
    np.testing.assert_allclose(
        qjl.inner_product(q, code, sketch), qjl.decode(code, sketch) @ q, rtol=1e-12
    )


def test_hadamard_sketch_is_orthonormal() -> None:
    sketch = qjl.HadamardSketch.draw(np.random.default_rng(13), N)
    s = sketch.project(np.eye(N))
    np.testing.assert_allclose(s @ s.T, np.eye(N), atol=1e-12)


def test_qjl_costs_accuracy_at_equal_bits() -> None:
    """At equal bits, the b-bit codebook beats b−1 bits + QJL on inner-product error, and
    the Hadamard sketch beats the Gaussian one (SPEC.md §10)."""
    for row in measure.qjl_table(pairs=500):
        assert row.mse_only < row.prod_hadamard < row.prod_gaussian, row
