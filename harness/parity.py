"""Parity of the native kernels with the numpy reference (``nox -s parity``).

For every format (turbo2..turbo5 at blocks 128 and 64) and every case:

- the packed bytes of every encoder (libturboquant's scalar, SIMD and dispatching paths, and
  the Metal and CUDA headers' math through their host shims) equal
  ``reference.formats.encode``, bit for bit, which covers the indices and the fp16 scale;
- the floats of every decoder (the same paths, plus the Metal 4-value path and the CUDA
  flash-attention path) equal ``reference.formats.decode`` of those bytes, bit for bit;
- with ``gpu=True`` (``--backend cuda``), the same CUDA functions run on the GPU
  (libturboquant_cuda_gpu) and are held to the same rules;
- the rotation (scalar, SIMD, dispatching) equals ``reference.rotation``, bit for bit, NaN
  compared as a class (``ROTATION_NAN_AS_CLASS`` says why).

Cases are seeded random chunks (Gaussian, Gaussian with outlier channels, rotated outlier
data, Gaussian at extreme scales) and an adversarial set built to hit exact midpoints,
fp16 rounding edges and every special value. A case's name carries all its parameters
(``turbo3/n128/gaussian/seed=4/m=32768``): the same name regenerates the same data, so
``filter`` replays one case. Any mismatch raises ParityError naming the first failing case.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Literal

import numpy as np

from harness import proc
from harness.errors import ConfigError, ParityError
from harness.progress import Progress
from reference import codebook, rotation
from reference import formats as ref
from reference.formats import Format

# The tolerances, in one place. Everything not named here is compared bit for bit.
ROTATION_NAN_AS_CLASS = (
    "rotation outputs that are NaN match any NaN: IEEE 754 does not fix which NaN an "
    "operation on two NaN operands returns, and a + b may be computed as b + a"
)
FA_DECODE_NAN_AS_CLASS = (
    "the flash-attention decoders (-fa) decode a NaN scale to some NaN: they multiply "
    "without a NaN test, and a GPU multiply returns its canonical NaN, not the scale's"
)
FA16_DECODE = (
    "the GPU flash-attention kernels' fp16 levels (cuda-fa16, turbo2..4) equal the "
    "reference's float32 levels rounded to fp16 (nearest-even), times d, bit for bit; a NaN "
    "scale as for the -fa decoders"
)
TOLERANCES = {
    "decode": "bit-exact",
    "encode": "bit-exact",
    "rotation": ROTATION_NAN_AS_CLASS,
    "flash-attention decode": FA_DECODE_NAN_AS_CLASS,
    "flash-attention fp16 levels": FA16_DECODE,
}

ENCODERS = ("scalar", "simd", "dispatch", "metal", "cuda")
DECODERS = ("scalar", "simd", "dispatch", "metal", "metal-t4", "cuda", "cuda-fa")
# Decoders of fp16 levels, checked against reference_fp16_levels; formats of at most 4 bits.
FP16_DECODERS = ("cuda-fa16",)
ROTATORS = ("scalar", "simd", "dispatch")

CHUNK = 32768
DEFAULT_VECTORS = 1_000_000
RANDOM_KINDS = ("gaussian", "outliers", "rotated", "scales")
ADVERSARIAL_KINDS = (
    "zeros",
    "signed-zeros",
    "exact-ties",
    "near-ties",
    "subnormals",
    "huge",
    "tiny",
    "fp16-edges",
    "nan",
    "inf",
    "constant",
    "one-hot",
    "random-bits",
)
DECODE_KINDS = ("random-bytes", "every-scale")
ROTATION_KINDS = ("gaussian", "outliers", "scales", "random-bits")
BLOCKS = (128, 64)

Op = Literal["encode", "decode", "rotate"]


def library_file(lib_dir: Path, stem: str) -> Path:
    """The shared library ``lib{stem}`` in ``lib_dir`` (.so, .dylib or .dll); raises
    ConfigError when there is none."""
    for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (lib_dir / name).is_file():
            return lib_dir / name
    raise ConfigError(
        f"{lib_dir} holds no lib{stem} shared library",
        hint="build the kernels first (`nox -s build`)",
    )


def reference_fp16_levels(blocks: np.ndarray, fmt: Format) -> np.ndarray:
    """What the GPU flash-attention kernels decode from blocks (vectors x nbytes bytes):
    vectors x block float32 values d * float(fp16(C[idx])), the reference's float32 levels
    rounded to fp16 (nearest-even) and multiplied by the fp16 scale d in float32."""
    indices, d_bits = ref.unpack(blocks, fmt)
    levels = ref.float32_levels(fmt.bits, fmt.block).astype(np.float16).astype(np.float32)
    scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
    return scale[:, None] * levels[indices]


class Kernels:
    """libturboquant and the Metal and CUDA shims, loaded with ctypes; with ``gpu`` also the
    CUDA GPU runner (libturboquant_cuda_gpu, built by ``--backend cuda``). Raises
    ConfigError when a library is missing."""

    def __init__(self, lib_dir: Path, *, gpu: bool = False) -> None:
        self.lib = ctypes.CDLL(str(library_file(lib_dir, "turboquant")))
        self.shim = ctypes.CDLL(str(library_file(lib_dir, "turboquant_metal_shim")))
        self.cuda = ctypes.CDLL(str(library_file(lib_dir, "turboquant_cuda_shim")))
        row = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        rot = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int64]
        suffix = {"scalar": "_scalar", "simd": "_simd", "dispatch": ""}
        self.encoders = {p: self.lib[f"tq_quantize_row{s}"] for p, s in suffix.items()}
        self.encoders["metal"] = self.shim.tq_metal_quantize_row
        self.decoders = {p: self.lib[f"tq_dequantize_row{s}"] for p, s in suffix.items()}
        self.decoders["metal"] = self.shim.tq_metal_dequantize_row
        self.decoders["metal-t4"] = self.shim.tq_metal_dequantize_row_t4
        runners = [("cuda", self.cuda)]
        if gpu:
            gpu_lib = ctypes.CDLL(str(library_file(lib_dir, "turboquant_cuda_gpu")))
            runners.append(("cuda-gpu", gpu_lib))
            # SET_ROWS's quantizer: one warp per block, only on a GPU.
            self.encoders["cuda-gpu-warp"] = gpu_lib.tq_cuda_quantize_row_warp
        for name, runner in runners:
            self.encoders[name] = runner.tq_cuda_quantize_row
            self.decoders[name] = runner.tq_cuda_dequantize_row
            self.decoders[f"{name}-fa"] = runner.tq_cuda_dequantize_row_fa
        self.fp16_decoders = {"cuda-fa16": self.cuda.tq_cuda_dequantize_row_fa16}
        self.rotators = {
            (p, d): self.lib[f"tq_rotate_{d}{s}"]
            for p, s in suffix.items()
            for d in ("forward", "inverse")
        }
        for fn in (*self.encoders.values(), *self.decoders.values(), *self.fp16_decoders.values()):
            fn.argtypes, fn.restype = row, ctypes.c_int
        for fn in self.rotators.values():
            fn.argtypes, fn.restype = rot, ctypes.c_int
        self.lib.tq_simd_path.restype = ctypes.c_char_p
        self.simd_path = self.lib.tq_simd_path().decode()

    @staticmethod
    def _call(fn: Callable[..., int], what: str, *args: object) -> None:
        rc = fn(*args)
        if rc != 0:
            raise ParityError(f"{what} rejected a valid row (return code {rc})")

    def encode(self, path: str, fmt: Format, y: np.ndarray) -> np.ndarray:
        """Encode rows ``y`` (vectors x block floats) through ``path``: vectors x nbytes
        bytes. Raises ParityError when the native code rejects a valid row."""
        y = np.ascontiguousarray(y, np.float32)
        out = np.empty((y.shape[0], fmt.nbytes), np.uint8)
        self._call(
            self.encoders[path],
            f"{path} encode",
            fmt.bits,
            fmt.block,
            y.ctypes.data,
            out.ctypes.data,
            y.size,
        )
        return out

    def decode(self, path: str, fmt: Format, blocks: np.ndarray) -> np.ndarray:
        """Decode blocks (vectors x nbytes bytes) through ``path``: vectors x block floats."""
        blocks = np.ascontiguousarray(blocks, np.uint8)
        out = np.empty((blocks.shape[0], fmt.block), np.float32)
        self._call(
            self.decoders[path] if path in self.decoders else self.fp16_decoders[path],
            f"{path} decode",
            fmt.bits,
            fmt.block,
            blocks.ctypes.data,
            out.ctypes.data,
            out.size,
        )
        return out

    def rotate(self, path: str, direction: str, x: np.ndarray) -> np.ndarray:
        """Rotate rows ``x`` (vectors x block floats) forward or back through ``path``."""
        out = np.array(x, np.float32, order="C")
        self._call(
            self.rotators[path, direction],
            f"{path} rotate",
            out.shape[1],
            out.ctypes.data,
            out.size,
        )
        return out


# ---- cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One batch of vectors and what to do with it. ``data`` is y (encode), packed blocks
    (decode) or x (rotate); ``stats`` cases feed the MSE-vs-theory column."""

    name: str
    op: Op
    block: int
    fmt: Format | None
    data: np.ndarray
    stats: bool = False


def _format(bits: int, block: int) -> Format:
    return ref.FORMATS[f"turbo{bits}" if block == 128 else f"turbo{bits}_{block}"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([*key])


def _gaussian(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    return rng.standard_normal((m, n)).astype(np.float32)


def _outliers(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """K-cache-like rows: a few channels (the same in every row) far larger than the rest."""
    y = rng.standard_normal((m, n))
    channels = rng.choice(n, size=4, replace=False)
    y[:, channels] *= rng.uniform(10, 100, size=4)
    return y.astype(np.float32)


def _rotated(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """What the cache stores: outlier rows after the reference rotation."""
    return rotation.forward(_outliers(rng, m, n))


def _scales(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    """Rows scaled over 2^-40 .. 2^40: subnormal floats, fp16-subnormal and saturated d."""
    scale = np.exp2(rng.uniform(-40, 40, size=(m, 1)))
    with np.errstate(under="ignore"):
        return (rng.standard_normal((m, n)) * scale).astype(np.float32)


GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "gaussian": _gaussian,
    "outliers": _outliers,
    "rotated": _rotated,
    "scales": _scales,
}
KIND_IDS = {kind: i for i, kind in enumerate(RANDOM_KINDS)}


def random_case(bits: int, block: int, kind: str, seed: int, m: int) -> Case:
    """The case named ``turbo{bits}/n{block}/{kind}/seed={seed}/m={m}``."""
    y = GENERATORS[kind](_rng(bits, block, KIND_IDS[kind], seed), m, block)
    name = f"turbo{bits}/n{block}/{kind}/seed={seed}/m={m}"
    return Case(name, "encode", block, _format(bits, block), y, stats=kind == "gaussian")


def _float_neighbours(x: float, count: int) -> list[float]:
    """x and the `count` doubles on each side of it."""
    out = [x]
    lo = hi = x
    for _ in range(count):
        lo, hi = math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)
        out += [lo, hi]
    return out


def _tie_block(rng: np.random.Generator, mid: float, n: int) -> np.ndarray | None:
    """A block with one value t whose u = t * (1/gamma) lands exactly on ``mid``.

    Values sit in distinct lanes so the 8-lane sum of squares is
    S = ((B² + e²) + (a2 + a6)) + ((t² + f²) + (a3 + a7)), lanes 2, 3, 6, 7 holding random
    values. Working back from mid: a double inv with fl(t * inv) == mid, a gamma with
    fl(1 / gamma) == inv, the S with fl(sqrt(S)) == gamma; then B and e come within a few
    ulps of that S and a scan over consecutive floats f hits it exactly."""
    for _ in range(40):
        t = float(np.float32(mid * rng.uniform(1.0, 4.0)))
        for inv in _float_neighbours(mid / t, 4):
            if t * inv != mid:
                continue
            for gamma in _float_neighbours(1.0 / inv, 4):
                if 1.0 / gamma != inv:
                    continue
                targets = [s for s in _float_neighbours(gamma * gamma, 4) if math.sqrt(s) == gamma]
                y = _tie_fill(rng, t, targets, n)
                if y is not None:
                    return y
    return None


def _tie_fill(
    rng: np.random.Generator, t: float, targets: list[float], n: int
) -> np.ndarray | None:
    if not targets:
        return None
    y = np.zeros(n, np.float32)
    rows = n // 8
    free = [8 * r + lane for r in range(rows) for lane in (2, 3, 6, 7)]
    y[free] = (rng.standard_normal(len(free)) * abs(t) * 0.1).astype(np.float32)
    acc = np.zeros(8)
    for r in range(rows):
        acc = acc + y[8 * r : 8 * r + 8].astype(np.float64) ** 2
    even, odd = acc[2] + acc[6], acc[3] + acc[7]
    s_star = targets[len(targets) // 2]
    rest = s_star - t * t - even - odd
    if rest <= 0:
        return None
    b = float(np.float32(math.sqrt(rest * (1 - 2.0**-18))))
    e = float(np.float32(math.sqrt(max(rest - b * b, 0.0) * (1 - 2.0**-12))))
    f0 = np.float32(math.sqrt(max(rest - b * b - e * e, 0.0)))
    f = (f0.view(np.int32) + np.arange(-4096, 4097, dtype=np.int32)).view(np.float32)
    f = f[np.isfinite(f) & (f >= 0)].astype(np.float64)
    s = ((b * b + e * e) + even) + ((t * t + f * f) + odd)
    hit = np.nonzero(np.isin(s, targets))[0]
    if len(hit) == 0:
        return None
    pos = rng.permutation(rows)[:4] * 8
    y[pos[0] + 0], y[pos[1] + 4], y[pos[2] + 1], y[pos[3] + 5] = b, e, t, f[hit[0]]
    return y


def exact_ties(y: np.ndarray, fmt: Format) -> int:
    """How many nonzero values of y sit exactly on a midpoint (u == m), computed as the
    contract does: a self-check that the tie generator does what it claims."""
    yd = y.astype(np.float64)
    gamma = np.sqrt(ref.lane8_sum(yd * yd))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = yd * np.where(gamma > 0, 1.0 / gamma, 0.0)[:, None]
    mids = codebook.midpoints(fmt.bits, fmt.block)
    return int(np.sum(np.isin(u, mids[mids != 0]) & (yd != 0)))


# Scales d the fp16 conversion must round exactly: the saturation edge (65504, the float
# 65520 that would round to Inf), the subnormal edges (2^-24, half of it, 2^-14).
FP16_EDGES = (65504.0, 65512.0, 65519.999, 65520.0, 2.0**-24, 1.5 * 2.0**-24, 2.0**-25, 2.0**-14)


def scale_of(y: np.ndarray, fmt: Format) -> np.ndarray:
    """The double scale d = P / Q of each row, before its fp16 rounding."""
    idx, _ = ref.quantize(y, fmt)
    c = ref.float32_levels(fmt.bits, fmt.block).astype(np.float64)[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        return ref.lane8_sum(y.astype(np.float64) * c) / ref.lane8_sum(c * c)


def _fp16_edge_rows(rng: np.random.Generator, fmt: Format) -> np.ndarray:
    """Rows whose scale d sweeps across each FP16_EDGES value in steps finer than fp16's."""
    rows = []
    for target in FP16_EDGES:
        y = rng.standard_normal((1, fmt.block))
        for _ in range(3):
            y = (y * (target / scale_of(y.astype(np.float32), fmt))[:, None]).astype(np.float32)
        sweep = 1.0 + np.arange(-256, 257) * 2.0**-27
        rows.append((y.astype(np.float64) * sweep[:, None]).astype(np.float32))
    return np.concatenate(rows)


def _special_rows(rng: np.random.Generator, n: int, values: Iterable[float]) -> np.ndarray:
    """Gaussian rows with one special value each, at a random position."""
    values = list(values)
    y = rng.standard_normal((len(values), n)).astype(np.float32)
    y[np.arange(len(values)), rng.integers(0, n, len(values))] = np.array(values, np.float32)
    return y


@cache
def adversarial_rows(fmt: Format) -> dict[str, np.ndarray]:
    """Named sets of rows (rows x block floats) at the contract's edges: zeros and signed
    zeros, exact and near ties at codebook midpoints, subnormals, huge and tiny values, NaN,
    infinities, constant and one-hot rows, and random bit patterns."""
    n = fmt.block
    rng = _rng(fmt.bits, n, 99)
    f32 = np.float32
    tiny, big = np.finfo(f32).smallest_subnormal, np.finfo(f32).max
    nan_bits = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0xFFFFFFFF], np.uint32)
    mids = codebook.midpoints(fmt.bits, n)
    ties = [
        row
        for mid in mids[mids != 0]
        for row in [_tie_block(rng, float(mid), n)]
        if row is not None
    ]
    tie_rows = np.array(ties, np.float32).reshape(-1, n)
    t_pos = np.argmax(np.abs(tie_rows) * (np.arange(n) % 8 == 1), axis=1)
    near = []
    for direction in (-np.inf, np.inf):
        r = tie_rows.copy()
        rows = np.arange(len(r))
        r[rows, t_pos] = np.nextafter(r[rows, t_pos], f32(direction))
        near.append(r)
    signed_zero = np.where(rng.random((64, n)) < 0.5, f32(0.0), f32(-0.0)).astype(f32)
    signed_zero[32:, 0] = rng.standard_normal(32)
    subnormal = rng.integers(1, 0x800000, size=(64, n), dtype=np.uint32)
    subnormal |= rng.integers(0, 2, size=(64, n), dtype=np.uint32) << 31
    mixed = _gaussian(rng, 64, n)
    mixed[:, ::3] = subnormal[:, ::3].view(f32)
    one_hot = np.zeros((5 * n, n), f32)
    for i, v in enumerate((1.0, -1.0, big, tiny, -2.5)):
        one_hot[np.arange(n) + i * n, np.arange(n)] = v
    constants = [0.0, -0.0, 1.0, -1.0, 0.1, -3.0, tiny, -tiny, big, -big, 1e-30, 65504.0]
    with np.errstate(over="ignore"):
        huge = np.concatenate(
            [
                _gaussian(rng, 64, n) * np.exp2(rng.uniform(16, 120, (64, 1))).astype(f32),
                np.full((4, n), big, f32),
                np.where(rng.random((16, n)) < 0.5, big, -big).astype(f32),
            ]
        )
    with np.errstate(under="ignore"):
        small = _gaussian(rng, 64, n) * np.exp2(rng.uniform(-149, -20, (64, 1))).astype(f32)
    inf_rows = _special_rows(rng, n, [np.inf, -np.inf] * 8)
    inf_rows[8:12] = np.inf
    inf_rows[12:14, :2] = [np.inf, -np.inf]
    inf_rows[14:16, :2] = [np.inf, np.nan]
    nan_rows = _special_rows(rng, n, np.tile(nan_bits, 4).view(f32))
    nan_rows[:4] = np.nan
    rows = {
        "zeros": np.zeros((4, n), f32),
        "signed-zeros": signed_zero,
        "exact-ties": tie_rows,
        "near-ties": np.concatenate(near),
        "subnormals": np.concatenate([subnormal.view(f32), mixed]),
        "huge": huge,
        "tiny": small,
        "fp16-edges": _fp16_edge_rows(rng, fmt),
        "nan": nan_rows,
        "inf": inf_rows,
        "constant": np.repeat(np.array(constants, f32)[:, None], n, axis=1),
        "one-hot": one_hot,
        "random-bits": rng.integers(0, 2**32, size=(256, n), dtype=np.uint32).view(f32),
    }
    assert tuple(rows) == ADVERSARIAL_KINDS
    return rows


@cache
def _decode_rows(fmt: Format) -> dict[str, np.ndarray]:
    """Blocks no encoder writes: arbitrary bytes, and every fp16 scale pattern."""
    rng = _rng(fmt.bits, fmt.block, 98)
    every_scale = rng.integers(0, 256, size=(65536, fmt.nbytes), dtype=np.uint8)
    every_scale[:, :2] = np.arange(65536, dtype="<u2").view(np.uint8).reshape(-1, 2)
    rows = {
        "random-bytes": rng.integers(0, 256, size=(4096, fmt.nbytes), dtype=np.uint8),
        "every-scale": every_scale,
    }
    assert tuple(rows) == DECODE_KINDS
    return rows


@cache
def _rotation_rows(block: int) -> dict[str, np.ndarray]:
    rng = _rng(block, 97)
    with np.errstate(under="ignore"):
        scaled = _gaussian(rng, 1024, block) * np.exp2(rng.uniform(-140, 120, (1024, 1)))
    rows = {
        "gaussian": _gaussian(rng, 4096, block),
        "outliers": _outliers(rng, 4096, block),
        "scales": scaled.astype(np.float32),
        "random-bits": rng.integers(0, 2**32, size=(1024, block), dtype=np.uint32).view(np.float32),
    }
    assert tuple(rows) == ROTATION_KINDS
    return rows


@dataclass(frozen=True)
class CaseSpec:
    """A case's name, and how to build it: filtering by name never generates data."""

    name: str
    make: Callable[[], Case]


def generate_cases(vectors: int = DEFAULT_VECTORS) -> Iterator[CaseSpec]:
    """Every case of a run, lazily: per format ``vectors`` random vectors split evenly over
    RANDOM_KINDS in chunks of CHUNK, then the adversarial encode and decode cases; then the
    rotation cases of each block size."""
    per_kind = max(1, -(-vectors // len(RANDOM_KINDS)))
    for block in BLOCKS:
        for bits in (2, 3, 4, 5):
            fmt = _format(bits, block)
            for kind in RANDOM_KINDS:
                for seed, start in enumerate(range(0, per_kind, CHUNK)):
                    m = min(CHUNK, per_kind - start)
                    yield CaseSpec(
                        f"turbo{bits}/n{block}/{kind}/seed={seed}/m={m}",
                        partial(random_case, bits, block, kind, seed, m),
                    )
            for what in ADVERSARIAL_KINDS:
                name = f"turbo{bits}/n{block}/adversarial-{what}/seed=0"
                yield CaseSpec(name, partial(_adversarial_case, name, fmt, what))
            for what in DECODE_KINDS:
                name = f"turbo{bits}/n{block}/decode-{what}/seed=0"
                yield CaseSpec(name, partial(_decode_case, name, fmt, what))
    for block in BLOCKS:
        for what in ROTATION_KINDS:
            name = f"rotate/n{block}/{what}/seed=0"
            yield CaseSpec(name, partial(_rotation_case, name, block, what))


def _adversarial_case(name: str, fmt: Format, what: str) -> Case:
    return Case(name, "encode", fmt.block, fmt, adversarial_rows(fmt)[what])


def _decode_case(name: str, fmt: Format, what: str) -> Case:
    return Case(name, "decode", fmt.block, fmt, _decode_rows(fmt)[what])


def _rotation_case(name: str, block: int, what: str) -> Case:
    return Case(name, "rotate", block, None, _rotation_rows(block)[what])


def matches(name: str, pattern: str | None) -> bool:
    """A glob if ``pattern`` has one of *?[, else a substring; None matches everything."""
    if pattern is None:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def select(specs: Iterable[CaseSpec], pattern: str | None) -> Iterator[CaseSpec]:
    """The cases whose name matches the glob ``pattern`` (all when it is None)."""
    return (spec for spec in specs if matches(spec.name, pattern))


# ---- checks -----------------------------------------------------------------------------


def _row_mismatches(a: np.ndarray, b: np.ndarray, *, nan_as_class: bool = False) -> np.ndarray:
    """Boolean per row: does a differ from b in any bit (NaN matching NaN if asked)?"""
    if a.dtype == np.float32:
        diff = a.view(np.uint32) != b.view(np.uint32)
        if nan_as_class:
            diff &= ~(np.isnan(a) & np.isnan(b))
    else:
        diff = a != b
    return diff.reshape(len(a), -1).any(axis=1)


def _max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(a[finite].astype(np.float64) - b[finite])))


@dataclass
class CaseResult:
    """One case checked: vectors, mismatched vectors in all and per path, the largest
    |native - reference| and the squared error for the MSE column."""

    name: str
    op: Op
    block: int
    format: str | None
    vectors: int
    mismatched_vectors: int
    mismatches: dict[str, int]  # path -> mismatched vectors
    max_abs_error: float
    first_row: int | None = None
    sq_error: float = 0.0  # sum over stats rows of |y - y_hat|² / |y|²
    stats_rows: int = 0


def check_case(case: Case, kernels: Kernels, pool: ThreadPoolExecutor) -> CaseResult:
    """Run every native path on one case and compare it with the reference."""
    bad: dict[str, np.ndarray] = {}
    max_err = 0.0
    sq_error, stats_rows = 0.0, 0
    # Special values overflow and turn into NaN on purpose here; numpy need not warn.
    with np.errstate(all="ignore"):
        if case.op == "rotate":
            for direction, fn in (("forward", rotation.forward), ("inverse", rotation.inverse)):
                want = fn(case.data)
                for path in ROTATORS:
                    got = kernels.rotate(path, direction, case.data)
                    bad[f"{path}-{direction}"] = _row_mismatches(got, want, nan_as_class=True)
                    max_err = max(max_err, _max_abs_error(got, want))
        else:
            fmt = case.fmt
            assert fmt is not None
            if case.op == "encode":
                # The Metal shim is the slow path: it runs while numpy computes the reference.
                metal = pool.submit(kernels.encode, "metal", fmt, case.data)
                blocks = ref.encode(case.data, fmt)
                for path in kernels.encoders:
                    got = (
                        metal.result() if path == "metal" else kernels.encode(path, fmt, case.data)
                    )
                    bad[f"{path}-encode"] = _row_mismatches(got, blocks)
            else:
                blocks = case.data
            want = ref.decode(blocks, fmt)
            for path in kernels.decoders:
                got = kernels.decode(path, fmt, blocks)
                bad[f"{path}-decode"] = _row_mismatches(
                    got, want, nan_as_class=path.endswith("-fa")
                )
                max_err = max(max_err, _max_abs_error(got, want))
            if fmt.bits <= 4:
                want16 = reference_fp16_levels(blocks, fmt)
                for path in kernels.fp16_decoders:
                    got = kernels.decode(path, fmt, blocks)
                    bad[f"{path}-decode"] = _row_mismatches(got, want16, nan_as_class=True)
            if case.stats:
                y = case.data.astype(np.float64)
                err = np.sum((y - want) ** 2, axis=1) / np.sum(y * y, axis=1)
                sq_error, stats_rows = float(np.sum(err)), len(y)
    any_bad = np.logical_or.reduce(list(bad.values()))
    rows = np.nonzero(any_bad)[0]
    return CaseResult(
        name=case.name,
        op=case.op,
        block=case.block,
        format=case.fmt.name if case.fmt else None,
        vectors=len(case.data),
        mismatched_vectors=len(rows),
        mismatches={k: int(v.sum()) for k, v in bad.items()},
        max_abs_error=max_err,
        first_row=int(rows[0]) if len(rows) else None,
        sq_error=sq_error,
        stats_rows=stats_rows,
    )


@dataclass
class FormatRow:
    """One line of the parity table."""

    format: str
    block: int
    vectors: int = 0
    mismatches: int = 0
    max_abs_error: float = 0.0
    mse: float | None = None
    theory: float | None = None
    sq_error: float = field(default=0.0, repr=False)
    stats_rows: int = field(default=0, repr=False)

    def add(self, r: CaseResult) -> None:
        """Fold one case into the format's totals and its MSE."""
        self.vectors += r.vectors
        self.mismatches += r.mismatched_vectors
        self.max_abs_error = max(self.max_abs_error, r.max_abs_error)
        self.sq_error += r.sq_error
        self.stats_rows += r.stats_rows
        if self.stats_rows:
            self.mse = self.sq_error / self.stats_rows


def format_table(rows: list[FormatRow]) -> str:
    """The per-format table: vectors, mismatches, max |Δ|, MSE against theory."""
    head = (
        f"{'format':<10} {'block':>5} {'vectors':>9} {'mismatches':>10} {'max |Δ|':>8} "
        f"{'MSE':>9} {'theory':>9} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mse = f"{r.mse:9.5f}" if r.mse is not None else f"{'-':>9}"
        theory = f"{r.theory:9.5f}" if r.theory is not None else f"{'-':>9}"
        ratio = f"{r.mse / r.theory:6.3f}" if r.mse is not None and r.theory else f"{'-':>6}"
        lines.append(
            f"{r.format:<10} {r.block:>5} {r.vectors:>9} {r.mismatches:>10} "
            f"{r.max_abs_error:>8.2g} {mse} {theory} {ratio}"
        )
    return "\n".join(lines)


def run_checks(
    lib_dir: Path, specs: Sequence[CaseSpec], *, gpu: bool = False
) -> tuple[list[FormatRow], list[CaseResult], str]:
    """Check each case (on the GPU runner too with ``gpu``); return the table rows, every
    case's result and the SIMD path."""
    kernels = Kernels(lib_dir, gpu=gpu)
    rows: dict[tuple[str, int], FormatRow] = {}
    results = []
    progress = Progress("parity")
    with ThreadPoolExecutor(max_workers=1) as pool:
        for i, spec in enumerate(specs):
            case = spec.make()
            r = check_case(case, kernels, pool)
            results.append(r)
            key = (case.fmt.name if case.fmt else "rotation", case.block)
            if key not in rows:
                theory = codebook.expected_mse(case.fmt.bits, case.block) if case.fmt else None
                rows[key] = FormatRow(key[0], key[1], theory=theory)
            rows[key].add(r)
            if r.mismatched_vectors:
                print(f"\nMISMATCH {case.name}: {r.mismatches}", file=sys.stderr, flush=True)
            # Progress draws its bar from ninja's "[done/total]" prefix.
            progress.ninja(f"[{i + 1}/{len(specs)}]")
    failed = sum(1 for r in results if r.mismatched_vectors)
    progress.done(f"{len(results)} cases, {failed} with mismatches")
    return list(rows.values()), results, kernels.simd_path


# ---- benchmark --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One throughput measurement on one core: GB/s of float32 data through a path, and
    the ratio to memcpy of the same buffer measured beside it."""

    path: str
    format: str
    block: int
    op: str
    gbps: float
    memcpy_gbps: float
    x_memcpy: float


BENCH_MIB = 16.0


def run_bench(bin_dir: Path, *, mib: float = BENCH_MIB, seconds: float = 0.3) -> list[BenchRow]:
    """Run tq_bench: encode and decode GB/s of float32 data on one core, each next to memcpy
    of the same buffer timed in alternation with it (kernels/tools/tq_bench.c)."""
    exe = Path(bin_dir) / "tq_bench"
    out = proc.run([exe, str(mib), str(seconds)], what="run tq_bench", quiet=True).output
    rows = []
    for line in out.splitlines()[1:]:
        path, fmt, block, op, gbps, memcpy_gbps, ratio = line.split("\t")
        rows.append(
            BenchRow(path, fmt, int(block), op, float(gbps), float(memcpy_gbps), float(ratio))
        )
    return rows


def format_bench(rows: list[BenchRow], mib: float = BENCH_MIB) -> str:
    """The throughput table, GB/s and x memcpy per format, block and op."""
    lines = [
        f"throughput on one core, {mib:g} MiB of float32 per call, {rows[0].path} path; "
        "GB/s of float32 data, x memcpy = ratio to memcpy of the same buffer",
        f"{'format':<8} {'block':>5} {'encode GB/s':>11} {'x memcpy':>8} "
        f"{'decode GB/s':>11} {'x memcpy':>8} {'memcpy GB/s':>11}",
    ]
    by_key: dict[tuple[str, int], dict[str, BenchRow]] = {}
    for r in rows:
        by_key.setdefault((r.format, r.block), {})[r.op] = r
    for (fmt, block), ops in by_key.items():
        e, d = ops["encode"], ops["decode"]
        lines.append(
            f"{fmt:<8} {block:>5} {e.gbps:>11.2f} {e.x_memcpy:>8.2f} {d.gbps:>11.2f} "
            f"{d.x_memcpy:>8.2f} {(e.memcpy_gbps + d.memcpy_gbps) / 2:>11.2f}"
        )
    return "\n".join(lines)


# ---- entry points -----------------------------------------------------------------------


def run_parity(
    lib_dir: Path,
    *,
    vectors: int = DEFAULT_VECTORS,
    filter: str | None = None,
    json_out: Path,
    bench: bool = True,
    gpu: bool = False,
) -> None:
    """Check every case (or those matching ``filter``), print the table and the throughput
    benchmark, write everything to ``json_out``; raise ParityError on any mismatch.
    ``gpu`` adds the CUDA functions run on the GPU (libturboquant_cuda_gpu in ``lib_dir``)."""
    lib_dir = Path(lib_dir)
    specs = list(select(generate_cases(vectors), filter))
    if not specs:
        names = [s.name for s in generate_cases(vectors)]
        examples = ", ".join(names[:: max(1, len(names) // 4)][:4])
        raise ConfigError(
            f"no parity case matches {filter!r}",
            hint=f"-k takes a glob over case names such as {examples} ({len(names)} in all)",
        )
    rows, results, simd_path = run_checks(lib_dir, specs, gpu=gpu)
    where = ", CUDA on the GPU" if gpu else ""
    print(f"\nparity against reference/ (SIMD path: {simd_path}{where})")
    for check, rule in TOLERANCES.items():
        print(f"  {check}: {rule}")
    print(format_table(rows))
    bench_rows = run_bench(lib_dir) if bench and filter is None else []
    if bench_rows:
        print()
        print(format_bench(bench_rows))
    failed = [r for r in results if r.mismatched_vectors]
    report = {
        "simd_path": simd_path,
        "gpu": gpu,
        "vectors_per_format": vectors,
        "filter": filter,
        "tolerances": TOLERANCES,
        "table": [asdict(r) for r in rows],
        "bench": [asdict(r) for r in bench_rows],
        "cases": [asdict(r) for r in results],
        "first_failure": failed[0].name if failed else None,
    }
    json_out = Path(json_out)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if failed:
        first = failed[0]
        paths = ", ".join(k for k, v in first.mismatches.items() if v)
        raise ParityError(
            f"{len(failed)} case(s) disagree with the reference; first: {first.name} "
            f"(row {first.first_row}; paths: {paths}); details in {json_out}"
        )


# ---- sanitizer replay -------------------------------------------------------------------

SELFTEST_KINDS = {"encode": 0, "decode": 1, "rotate": 2}


def write_selftest_cases(path: Path, cases: Iterable[Case]) -> int:
    """Write ``cases`` with the reference's expectations in tq_selftest's format (described
    in kernels/tools/tq_selftest.c); return how many were written."""
    body = bytearray()
    count = 0
    for case in cases:
        data = np.ascontiguousarray(case.data)
        name = case.name.encode()
        bits = case.fmt.bits if case.fmt else 0
        header = np.array([SELFTEST_KINDS[case.op], bits, case.block], "<u4").tobytes()
        body += header + np.array([data.shape[0] * case.block], "<i8").tobytes()
        body += np.array([len(name)], "<u4").tobytes() + name
        with np.errstate(all="ignore"):
            if case.op == "rotate":
                arrays = [data, rotation.forward(data), rotation.inverse(data)]
            elif case.op == "encode":
                blocks = ref.encode(data, case.fmt)
                arrays = [data, blocks, ref.decode(blocks, case.fmt)]
            else:
                arrays = [data, ref.decode(data, case.fmt)]
        for a in arrays:
            body += np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        count += 1
    Path(path).write_bytes(b"TQSELF01" + np.array([count], "<u4").tobytes() + bytes(body))
    return count
