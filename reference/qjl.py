"""TurboQuant_prod: b−1 bits of the MSE quantizer, then 1-bit QJL on the residual.

Works on rotated blocks y (the rotation is orthogonal, so inner products are the same as in
the original domain). With r = y − ŷ the MSE stage's residual and z = sign(S·r), the
estimate of y is ŷ + κ·‖r‖·Sᵀz, and ⟨q, estimate⟩ estimates ⟨q, y⟩ without bias over S.

Two sketches S:
- ``GaussianSketch``: i.i.d. N(0, 1) entries, κ = √(π/2)/n (the paper's QJL).
- ``HadamardSketch``: S = H·D4·H·D3/n, orthonormal, D3 and D4 random ±1, κ = 1/(n·E|T_n|)
  with E|T_n| = Γ(n/2)/(√π·Γ((n+1)/2)) the mean absolute coordinate of a uniform unit
  vector (SPEC.md derives both constants and why one Hadamard layer is not enough).

This is a float64 reference for measuring QJL, not a storage format: ‖r‖ is kept exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from reference import formats, rotation


def gaussian_scale(n: int) -> float:
    return math.sqrt(math.pi / 2) / n


def hadamard_scale(n: int) -> float:
    mean_abs = math.exp(gammaln(n / 2) - gammaln((n + 1) / 2)) / math.sqrt(math.pi)
    return 1.0 / (n * mean_abs)


@dataclass(frozen=True)
class GaussianSketch:
    """S with i.i.d. N(0, 1) entries: shape (n, n), or (m, n, n) for one S per row."""

    matrix: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, rows: int | None = None) -> GaussianSketch:
        shape = (n, n) if rows is None else (rows, n, n)
        return cls(rng.standard_normal(shape))

    @property
    def scale(self) -> float:
        return gaussian_scale(self.matrix.shape[-1])

    def project(self, v: np.ndarray) -> np.ndarray:
        return np.matmul(self.matrix, v[..., None])[..., 0]

    def project_t(self, z: np.ndarray) -> np.ndarray:
        return np.matmul(np.swapaxes(self.matrix, -1, -2), z[..., None])[..., 0]


@dataclass(frozen=True)
class HadamardSketch:
    """S = H·D4·H·D3/n, two randomized Hadamard layers: D3 and D4 of shape (n,), or (m, n)
    for one S per row. One layer (H·D3/√n) has Rademacher rows, which leave a bias of
    relative size O(1/n) that does not scale with ⟨q, r⟩; the second layer removes it."""

    inner: np.ndarray
    outer: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, rows: int | None = None) -> HadamardSketch:
        shape = (n,) if rows is None else (rows, n)
        pm1 = np.array([-1.0, 1.0])
        return cls(rng.choice(pm1, shape), rng.choice(pm1, shape))

    @property
    def scale(self) -> float:
        return hadamard_scale(self.inner.shape[-1])

    def project(self, v: np.ndarray) -> np.ndarray:
        root_n = math.sqrt(v.shape[-1])
        return rotation.fwht(rotation.fwht(v * self.inner) / root_n * self.outer) / root_n

    def project_t(self, z: np.ndarray) -> np.ndarray:
        root_n = math.sqrt(z.shape[-1])
        return rotation.fwht(rotation.fwht(z) / root_n * self.outer) / root_n * self.inner


Sketch = GaussianSketch | HadamardSketch


@dataclass(frozen=True)
class ProdCode:
    bits: int  # total bits per value: bits − 1 for the MSE stage, 1 for QJL
    indices: np.ndarray  # (m, n) uint8, MSE-stage codebook indices
    d_bits: np.ndarray  # (m,) uint16, MSE-stage fp16 scale
    qjl_signs: np.ndarray  # (m, n) int8, sign(S·r), +1 for 0
    residual_norm: np.ndarray  # (m,) float64, ‖r‖


def encode(y: np.ndarray, bits: int, sketch: Sketch) -> ProdCode:
    """TurboQuant_prod of rotated float32 (m, n) blocks at ``bits`` per value (2..6)."""
    if not 2 <= bits <= 6:
        raise ValueError(f"TurboQuant_prod needs 2..6 bits (1..5 for the MSE stage), got {bits}")
    indices, d_bits = formats.quantize_with_norm_rule(y, bits - 1)
    residual = y.astype(np.float64) - formats.dequantize(indices, d_bits, bits - 1)
    z = np.where(sketch.project(residual) >= 0, 1, -1).astype(np.int8)
    return ProdCode(bits, indices, d_bits, z, np.linalg.norm(residual, axis=-1))


def mse_part(code: ProdCode) -> np.ndarray:
    """ŷ, the MSE stage's reconstruction (float64)."""
    return formats.dequantize(code.indices, code.d_bits, code.bits - 1).astype(np.float64)


def decode(code: ProdCode, sketch: Sketch) -> np.ndarray:
    """ŷ + κ·‖r‖·Sᵀz (float64 (m, n))."""
    correction = sketch.project_t(code.qjl_signs.astype(np.float64))
    return mse_part(code) + (sketch.scale * code.residual_norm)[:, None] * correction


def inner_product(q: np.ndarray, code: ProdCode, sketch: Sketch) -> np.ndarray:
    """Unbiased estimate of ⟨q, y⟩ per row: ⟨q, ŷ⟩ + κ·‖r‖·⟨S·q, z⟩ (the query is sketched
    once, the keys' signs are only read)."""
    q = np.asarray(q, np.float64)
    q = np.broadcast_to(q, code.indices.shape)
    sketched = np.sum(sketch.project(q) * code.qjl_signs, axis=-1)
    return np.sum(q * mse_part(code), axis=-1) + sketch.scale * code.residual_norm * sketched
