"""Lloyd-Max codebooks against published values and against independent quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import gammaln

from reference import codebook

# TURBOQUANT.md §4, positive halves as printed. Exact density at n = 128 (raw values):
EXACT_128 = {
    2: ["0.039992", "0.133042"],
    3: ["0.021604", "0.066586", "0.118140", "0.188397"],
    4: [
        "0.011302", "0.034152", "0.057772", "0.082828",
        "0.110288", "0.141805", "0.180836", "0.237664",
    ],
}  # fmt: skip
# Gaussian N(0, 1) Lloyd-Max levels; divided by √n they are the N(0, 1/n) codebook.
GAUSSIAN = {
    2: ["0.4528", "1.5104"],
    3: ["0.245094", "0.756005", "1.343909", "2.151945"],
    4: [
        "0.128395", "0.388048", "0.656759", "0.942340",
        "1.256231", "1.618046", "2.069017", "2.732590",
    ],
}  # fmt: skip
# E‖x − x̂‖² at n = 128 for 1..4 bits (TURBOQUANT.md §5).
MSE_128 = {1: "0.3609", 2: "0.1160", 3: "0.03397", 4: "0.00931"}


def last_digit(printed: str) -> float:
    """One unit in the last printed place: the sources print some values rounded and some
    truncated (3-bit Gaussian 2.151945 is 2.15194570... to 10 digits), so a half unit is
    too strict for the truncated ones."""
    return 10.0 ** -len(printed.split(".")[1])


@pytest.mark.parametrize("bits", sorted(EXACT_128))
def test_exact_levels_match_published(bits: int) -> None:
    positive = codebook.levels(bits, 128)[2 ** (bits - 1) :]
    for got, printed in zip(positive, EXACT_128[bits], strict=True):
        assert abs(got - float(printed)) <= last_digit(printed) / 2, (got, printed)


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("bits", sorted(GAUSSIAN))
def test_gaussian_levels_match_published(bits: int, n: int) -> None:
    positive = codebook.levels(bits, n, "gaussian")[2 ** (bits - 1) :] * math.sqrt(n)
    for got, printed in zip(positive, GAUSSIAN[bits], strict=True):
        assert abs(got - float(printed)) <= last_digit(printed), (got, printed)


@pytest.mark.parametrize("bits", sorted(MSE_128))
def test_expected_mse_matches_published(bits: int) -> None:
    printed = MSE_128[bits]
    assert abs(codebook.expected_mse(bits, 128) - float(printed)) <= last_digit(printed) / 2


def exact_pdf(n: int):
    log_norm = gammaln(n / 2) - gammaln((n - 1) / 2) - 0.5 * math.log(math.pi)
    return lambda t: math.exp(log_norm + (n - 3) / 2 * math.log1p(-t * t))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("bits", codebook.BITS)
def test_levels_are_centroids_of_their_cells(bits: int, n: int) -> None:
    """The Lloyd-Max fixed point, checked with adaptive quadrature instead of the closed
    forms the solver uses."""
    f = exact_pdf(n)
    c = codebook.levels(bits, n)
    edges = np.concatenate(([-1.0], codebook.midpoints(bits, n), [1.0]))
    for k, level in enumerate(c):
        lo, hi = edges[k], edges[k + 1]
        mass = integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-13)[0]
        first = integrate.quad(lambda t: t * f(t), lo, hi, epsabs=0, epsrel=1e-13)[0]
        assert first / mass == pytest.approx(level, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("bits", [1, 3, 5])
def test_expected_mse_matches_quadrature(bits: int, n: int) -> None:
    f = exact_pdf(n)
    c = codebook.levels(bits, n)
    edges = np.concatenate(([-1.0], codebook.midpoints(bits, n), [1.0]))
    total = sum(
        integrate.quad(lambda t, lv=lv: (t - lv) ** 2 * f(t), edges[k], edges[k + 1])[0]
        for k, lv in enumerate(c)
    )
    assert codebook.expected_mse(bits, n) == pytest.approx(n * total, rel=1e-9)


@pytest.mark.parametrize("density", ["exact", "gaussian"])
@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("bits", codebook.BITS)
def test_codebook_shape(bits: int, n: int, density: str) -> None:
    c = codebook.levels(bits, n, density)
    m = codebook.midpoints(bits, n, density)
    assert c.dtype == np.float64 and c.shape == (2**bits,)
    assert np.all(np.diff(c) > 0)
    np.testing.assert_array_equal(c, -c[::-1])
    assert m[len(m) // 2] == 0.0
    assert np.all((c[:-1] < m) & (m < c[1:]))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("bits", codebook.BITS)
def test_exact_codebook_beats_gaussian_on_real_coordinates(bits: int, n: int) -> None:
    exact = codebook.expected_mse(bits, n)
    gaussian = codebook.expected_mse(bits, n, "gaussian")
    assert exact <= gaussian
    assert exact < math.sqrt(3) * math.pi / 2 * 4.0**-bits
