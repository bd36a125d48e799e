"""The parity cases: seeded random chunks and an adversarial set per format and block, each
named by all its parameters so the name regenerates its data, and the sanitizer replay file
(tq_selftest) written from them."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Literal

import numpy as np

from reference import codebook, rotation
from reference import formats as ref
from reference.formats import Format

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
