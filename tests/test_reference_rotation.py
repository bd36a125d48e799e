"""The randomized Hadamard rotation: sign streams, exact float32 order, orthogonality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference import rotation

BLOCKS = rotation.BLOCK_SIZES
# The rotation's accuracy: forward∘inverse and orthonormality, relative to the vector norm.
ROUND_TRIP_TOL = 1e-6
# Pinned so that a change to the sign streams (and hence to every stored block) is loud.
D1_BITS_128 = 0x22DDE0F20FB29C21B4E1BA5702C8AA5E
D2_BITS_128 = 0x3A4C89897AFDB1172383FC0349990FA5


def test_splitmix64_reference_vector() -> None:
    # The first outputs of Vigna's splitmix64.c for seed 0.
    assert rotation.splitmix64(0, 3) == [
        0xE220A8397B1DCDAF,
        0x6E789E6AA1B965F4,
        0x06C45D188009454F,
    ]


def bits_of(signs: np.ndarray) -> int:
    """Sign i as bit i (1 for −1)."""
    return sum(1 << i for i, s in enumerate(signs) if s < 0)


def test_signs_follow_top_bit_of_splitmix64() -> None:
    d1, d2 = rotation.signs(128)
    for signs, seed in ((d1, rotation.D1_SEED), (d2, rotation.D2_SEED)):
        expected = [-1.0 if z >> 63 else 1.0 for z in rotation.splitmix64(seed, 128)]
        np.testing.assert_array_equal(signs, np.array(expected, np.float32))
        assert signs.dtype == np.float32
    assert bits_of(d1) == D1_BITS_128
    assert bits_of(d2) == D2_BITS_128


def test_block_64_uses_prefix_of_the_128_streams() -> None:
    for short, long in zip(rotation.signs(64), rotation.signs(128), strict=True):
        np.testing.assert_array_equal(short, long[:64])


def contract_forward_row(x: np.ndarray, inverse: bool = False) -> np.ndarray:
    """docs/format-contract.md's loop, one float32 scalar operation at a time."""
    n = len(x)
    d1, d2 = rotation.signs(n)
    first, last = (d2, d1) if inverse else (d1, d2)
    v = [np.float32(a) * first[i] for i, a in enumerate(x)]
    h = 1
    while h < n:
        for j in range(n):
            if j & h == 0:
                a, b = v[j], v[j + h]
                v[j], v[j + h] = a + b, a - b
        h *= 2
    s = np.float32(1.0 / math.sqrt(n))
    return np.array([v[i] * s * last[i] for i in range(n)], np.float32)


@pytest.mark.parametrize("n", BLOCKS)
def test_bit_exact_with_contract_loop(n: int) -> None:
    x = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32) * 10
    fwd = rotation.forward(x)
    inv = rotation.inverse(x)
    for row in range(3):
        np.testing.assert_array_equal(fwd[row], contract_forward_row(x[row]))
        np.testing.assert_array_equal(inv[row], contract_forward_row(x[row], inverse=True))


def dense_rotation(n: int) -> np.ndarray:
    """D2 · H · D1 / √n in float64, H[i][j] = (−1)^popcount(i & j)."""
    i = np.arange(n)
    parity = np.vectorize(lambda v: bin(v).count("1") & 1)(i[:, None] & i[None, :])
    h = 1.0 - 2.0 * parity
    d1, d2 = (s.astype(np.float64) for s in rotation.signs(n))
    return d2[:, None] * h * d1[None, :] / math.sqrt(n)


@pytest.mark.parametrize("n", BLOCKS)
def test_matches_dense_matrix_and_is_orthonormal(n: int) -> None:
    columns = rotation.forward(np.eye(n, dtype=np.float32)).T.astype(np.float64)
    np.testing.assert_allclose(columns, dense_rotation(n), rtol=0, atol=ROUND_TRIP_TOL)
    np.testing.assert_allclose(columns @ columns.T, np.eye(n), rtol=0, atol=ROUND_TRIP_TOL)


@pytest.mark.parametrize("n", BLOCKS)
def test_inverse_undoes_forward_and_norm_is_preserved(n: int) -> None:
    x = np.random.default_rng(7).standard_normal((500, n)).astype(np.float32)
    y = rotation.forward(x)
    back = rotation.inverse(y)
    assert y.dtype == np.float32 and back.dtype == np.float32
    norm = np.linalg.norm(x.astype(np.float64), axis=1)
    err = np.max(np.abs(back.astype(np.float64) - x), axis=1)
    assert np.all(err <= ROUND_TRIP_TOL * norm)
    ynorm = np.linalg.norm(y.astype(np.float64), axis=1)
    np.testing.assert_allclose(ynorm, norm, rtol=ROUND_TRIP_TOL)


def test_rejects_other_dtypes_and_sizes() -> None:
    with pytest.raises(TypeError):
        rotation.forward(np.zeros((1, 128)))
    with pytest.raises(ValueError):
        rotation.forward(np.zeros((1, 96), np.float32))
