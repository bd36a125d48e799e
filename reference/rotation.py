"""The randomized Walsh-Hadamard rotation y = D2 · H_n · D1 · x / √n, in float32.

Every operation here is a float32 operation in the order the C kernels use (sign flips,
butterflies h = 1, 2, ..., n/2, one scale multiply, sign flips), so the results are
bit-identical to C compiled without FMA contraction. Nothing is widened to float64.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

BLOCK_SIZES = (64, 128)
SIGN_STREAM_LENGTH = 128
D1_SEED = 0x5451524F54310001
D2_SEED = 0x5451524F54310002

_MASK64 = (1 << 64) - 1


def splitmix64(seed: int, count: int) -> list[int]:
    """The first ``count`` outputs of SplitMix64 started at ``seed``."""
    state = seed & _MASK64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def sign_stream(seed: int, count: int) -> np.ndarray:
    """float32 ±1: −1 where the top bit of the SplitMix64 output is set."""
    return np.array([-1.0 if z >> 63 else 1.0 for z in splitmix64(seed, count)], np.float32)


@cache
def _signs(n: int) -> tuple[np.ndarray, np.ndarray]:
    _check_block(n)
    # Both block sizes read the same 128-long streams, so n = 64 is a prefix of n = 128.
    d1 = sign_stream(D1_SEED, SIGN_STREAM_LENGTH)[:n]
    d2 = sign_stream(D2_SEED, SIGN_STREAM_LENGTH)[:n]
    d1.flags.writeable = False
    d2.flags.writeable = False
    return d1, d2


def signs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(D1, D2) as float32 arrays of ±1, length n."""
    return _signs(n)


def scale(n: int) -> np.float32:
    """(float)(1.0 / sqrt((double)n)): computed in double, rounded once to float32."""
    return np.float32(1.0 / math.sqrt(n))


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalized Sylvester Walsh-Hadamard transform along the last axis, in x's dtype.

    Butterfly order: h = 1, 2, ..., n/2; pairs (j, j+h) with j & h == 0 become (a+b, a−b).
    """
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"length must be a power of two, got {n}")
    out = np.array(x, order="C").reshape(-1, n)
    m = out.shape[0]
    h = 1
    while h < n:
        pairs = out.reshape(m, n // (2 * h), 2, h)
        a = pairs[:, :, 0, :].copy()
        b = pairs[:, :, 1, :]
        pairs[:, :, 0, :] = a + b
        pairs[:, :, 1, :] = a - b
        h *= 2
    return out.reshape(x.shape)


def forward(x: np.ndarray) -> np.ndarray:
    """y = D2 · H · D1 · x / √n for each row of a float32 (m, n) array."""
    n = _check_rows(x)
    d1, d2 = signs(n)
    return (fwht(x * d1) * scale(n)) * d2


def inverse(y: np.ndarray) -> np.ndarray:
    """x = D1 · H · D2 · y / √n, the transpose (and inverse) of ``forward``."""
    n = _check_rows(y)
    d1, d2 = signs(n)
    return (fwht(y * d2) * scale(n)) * d1


def _check_block(n: int) -> None:
    if n not in BLOCK_SIZES:
        raise ValueError(f"block size must be one of {BLOCK_SIZES}, got {n}")


def _check_rows(x: np.ndarray) -> int:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError("expected a float32 array of shape (m, n)")
    _check_block(x.shape[1])
    return x.shape[1]
