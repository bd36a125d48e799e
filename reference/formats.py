"""The turbo block formats: quantize, pack, unpack, encode and decode, bit-exact with C.

A block is n = 64 or 128 already rotated float32 values. It is stored as one fp16 scale d
followed by the b-bit codebook indices, LSB-first. Every step below follows
docs/format-contract.md; reference/SPEC.md states the same rules for a stranger.

Double-precision sums use the fixed "8-lane" order of the C code, never numpy's pairwise
summation, so the scale d (and thus its fp16 bits) matches C exactly. Products of two
float32 values are exact in double, so only the summation order matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from reference import codebook

NormRule = Literal["lsq", "plain", "corrected"]

FP16_MAX = 65504.0
FP16_NAN_BITS = 0x7E00
# Bit widths of the planes that store each format's indices, low bits first.
_PLANES = {2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1)}


@dataclass(frozen=True)
class Format:
    name: str
    bits: int
    block: int
    nbytes: int


def _format(bits: int, block: int) -> Format:
    name = f"turbo{bits}" if block == 128 else f"turbo{bits}_{block}"
    return Format(name, bits, block, 2 + block * bits // 8)


FORMATS: dict[str, Format] = {
    f.name: f for f in (_format(bits, block) for block in (128, 64) for bits in (2, 3, 4, 5))
}


@cache
def float32_levels(bits: int, n: int) -> np.ndarray:
    """(float)C[k]: the levels the decoder multiplies by."""
    c = codebook.levels(bits, n).astype(np.float32)
    c.flags.writeable = False
    return c


def lane8_sum(v: np.ndarray) -> np.ndarray:
    """Row sums of a float64 (m, n) array in the C order: acc[i % 8] += v[i] for ascending
    i (acc starts at +0.0), then ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))."""
    m, n = v.shape
    lanes = v.reshape(m, n // 8, 8)
    acc = np.zeros((m, 8))
    for k in range(n // 8):
        acc = acc + lanes[:, k, :]
    a = acc.T
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))


def fp16_bits(d: np.ndarray) -> np.ndarray:
    """IEEE fp16 bits of double d: rounded to float32, then to fp16 (both nearest-even),
    magnitudes past 65504 saturating there. Clamping first is the same thing (rounding is
    monotonic and 65504 is exact in both formats) and keeps C away from float overflow."""
    clamped = np.clip(np.asarray(d, np.float64), -FP16_MAX, FP16_MAX)
    return clamped.astype(np.float32).astype(np.float16).view(np.uint16)


def index_of(u: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Number of midpoints m_k with u >= m_k: a value on a midpoint takes the upper level,
    and ±0.0 the smallest positive one."""
    return np.searchsorted(codebook.midpoints(bits, n), u, side="right").astype(np.uint8)


def quantize_with_norm_rule(
    y: np.ndarray, bits: int, rule: NormRule = "lsq"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and fp16 scale bits of each row of a float32 (m, n) array, at any codebook
    width 1..5. Only ``"lsq"`` is the format; the other rules exist to measure against it.

    lsq:       d = <y, C[idx]> / ||C[idx]||², the scale that minimizes ||y − d·C[idx]||².
    plain:     d = gamma = ||y||.
    corrected: d = gamma / ||C[idx]||, so the decoded block has the input's norm.
    """
    n = _check_rows(y)
    with np.errstate(invalid="ignore"):  # signalling NaN inputs turn quiet, as in C
        yd = y.astype(np.float64)
    gamma = np.sqrt(lane8_sum(yd * yd))
    finite = np.isfinite(gamma)
    nonzero = finite & (gamma > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(nonzero, 1.0 / gamma, 0.0)
        u = yd * inv[:, None]
    idx = index_of(u, bits, n)
    idx[~finite] = 0
    c = float32_levels(bits, n).astype(np.float64)[idx]
    q = lane8_sum(c * c)
    if rule == "lsq":
        with np.errstate(invalid="ignore"):
            p = lane8_sum(yd * c)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = p / q
    elif rule == "plain":
        d = gamma
    elif rule == "corrected":
        with np.errstate(divide="ignore", invalid="ignore"):
            d = gamma / np.sqrt(q)
    else:
        raise ValueError(f"unknown norm rule {rule!r}")
    d = np.where(nonzero & (q > 0), d, 0.0)
    bits16 = fp16_bits(d)
    bits16[~finite] = FP16_NAN_BITS
    return idx, bits16


def dequantize(indices: np.ndarray, d_bits: np.ndarray, bits: int) -> np.ndarray:
    """x_i = (float)half(d) * (float)C[idx_i], one float32 multiply."""
    n = indices.shape[1]
    scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
    return scale[:, None] * float32_levels(bits, n)[indices]


def quantize(y: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """(indices uint8 (m, n), d fp16 bits uint16 (m,)) of rotated float32 blocks."""
    _check_format_rows(y, fmt)
    return quantize_with_norm_rule(y, fmt.bits, "lsq")


def pack(indices: np.ndarray, d_bits: np.ndarray, fmt: Format) -> np.ndarray:
    """Blocks of fmt.nbytes: d little-endian, then each index plane LSB-first."""
    indices = np.asarray(indices, np.uint8)
    m, n = indices.shape
    if n != fmt.block:
        raise ValueError(f"{fmt.name} packs rows of {fmt.block}, got {n}")
    head = np.asarray(d_bits, "<u2").reshape(m, 1).view(np.uint8)
    planes = []
    shift = 0
    for width in _PLANES[fmt.bits]:
        field = (indices >> shift) & ((1 << width) - 1)
        per_byte = 8 // width
        grouped = field.reshape(m, n // per_byte, per_byte).astype(np.uint8)
        offsets = (width * np.arange(per_byte)).astype(np.uint8)
        planes.append(np.bitwise_or.reduce(grouped << offsets, axis=2))
        shift += width
    return np.concatenate([head, *planes], axis=1)


def unpack(blocks: np.ndarray, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of ``pack``: (indices uint8 (m, n), d bits uint16 (m,))."""
    blocks = _check_blocks(blocks, fmt)
    m, n = blocks.shape[0], fmt.block
    d_bits = blocks[:, :2].copy().view("<u2").reshape(m).astype(np.uint16)
    indices = np.zeros((m, n), np.uint8)
    start, shift = 2, 0
    for width in _PLANES[fmt.bits]:
        per_byte = 8 // width
        plane = blocks[:, start : start + n // per_byte]
        offsets = (width * np.arange(per_byte)).astype(np.uint8)
        field = (plane[:, :, None] >> offsets) & ((1 << width) - 1)
        indices |= field.reshape(m, n).astype(np.uint8) << shift
        start += n // per_byte
        shift += width
    return indices, d_bits


def encode(y: np.ndarray, fmt: Format) -> np.ndarray:
    """Rotated float32 (m, n) blocks to packed uint8 (m, fmt.nbytes)."""
    return pack(*quantize(y, fmt), fmt)


def decode(blocks: np.ndarray, fmt: Format) -> np.ndarray:
    """Packed uint8 (m, fmt.nbytes) to float32 (m, n), still in the rotated domain."""
    return dequantize(*unpack(blocks, fmt), fmt.bits)


def _check_rows(y: np.ndarray) -> int:
    if not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.ndim != 2:
        raise TypeError("expected a float32 array of shape (m, n)")
    if y.shape[1] % 8:
        raise ValueError(f"block length must be a multiple of 8, got {y.shape[1]}")
    return y.shape[1]


def _check_format_rows(y: np.ndarray, fmt: Format) -> None:
    _check_rows(y)
    if y.shape[1] != fmt.block:
        raise ValueError(f"{fmt.name} quantizes rows of {fmt.block}, got {y.shape[1]}")


def _check_blocks(blocks: np.ndarray, fmt: Format) -> np.ndarray:
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.ndim != 2 or blocks.shape[1] != fmt.nbytes:
        raise ValueError(f"{fmt.name} blocks must be uint8 of shape (m, {fmt.nbytes})")
    return blocks
