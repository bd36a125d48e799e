"""Block formats: byte layout, the contract's rules bit for bit, and every kind of bad input."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from reference import codebook, formats
from reference.formats import FORMATS, Format

ALL = list(FORMATS.values())
ids = [f.name for f in ALL]
FP16_MAX_BITS = 0x7BFF


def fp16_reference(d: float) -> int:
    """The contract's rule, literally: double → float32 → fp16, both nearest-even (numpy for
    the first step, CPython's struct for the second), then saturate at 65504."""
    with np.errstate(over="ignore"):
        f = float(np.float32(d))
    try:
        h = struct.unpack("<H", struct.pack("<e", f))[0]
    except OverflowError:
        h = 0x7C00 | (0x8000 if f < 0 else 0)
    if h & 0x7FFF == 0x7C00:
        h = (h & 0x8000) | FP16_MAX_BITS
    return h


def lane8(values: list[float]) -> float:
    acc = [0.0] * 8
    for i, v in enumerate(values):
        acc[i % 8] += v
    return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))


def contract_quantize_block(y: np.ndarray, bits: int) -> tuple[list[int], int]:
    """docs/format-contract.md's quantizer for one block, in Python scalars."""
    n = len(y)
    levels32 = [float(np.float32(c)) for c in codebook.levels(bits, n)]
    mids = [float(m) for m in codebook.midpoints(bits, n)]
    yd = [float(v) for v in y]
    gamma = math.sqrt(lane8([v * v for v in yd]))
    if not math.isfinite(gamma):
        return [0] * n, 0x7E00
    u = [0.0] * n if gamma == 0 else [v * (1.0 / gamma) for v in yd]
    idx = [sum(1 for m in mids if ui >= m) for ui in u]
    c = [levels32[i] for i in idx]
    p = lane8([a * b for a, b in zip(yd, c, strict=True)])
    q = lane8([a * a for a in c])
    d = p / q if q != 0 and gamma != 0 else 0.0
    return idx, fp16_reference(d)


def contract_pack_block(idx: list[int], d_bits: int, fmt: Format) -> bytes:
    n, bits = fmt.block, fmt.bits
    low = 2 if bits in (2, 3) else 4
    out = bytearray(fmt.nbytes)
    out[0:2] = d_bits.to_bytes(2, "little")
    for j, v in enumerate(idx):
        out[2 + j * low // 8] |= (v & ((1 << low) - 1)) << (j * low % 8)
        if bits in (3, 5):
            out[2 + n * low // 8 + j // 8] |= (v >> low) << (j % 8)
    return bytes(out)


def test_format_table() -> None:
    sizes = {
        "turbo2": 34, "turbo3": 50, "turbo4": 66, "turbo5": 82,
        "turbo2_64": 18, "turbo3_64": 26, "turbo4_64": 34, "turbo5_64": 42,
    }  # fmt: skip
    assert {name: f.nbytes for name, f in FORMATS.items()} == sizes
    for name, f in FORMATS.items():
        assert f.name == name
        assert f.block == (64 if name.endswith("_64") else 128)
        assert f.bits == int(name[5])


def test_layout_is_lsb_first() -> None:
    def first_bytes(fmt: Format, head: list[int]) -> np.ndarray:
        idx = np.zeros((1, fmt.block), np.uint8)
        idx[0, : len(head)] = head
        return formats.pack(idx, np.array([0x3C00], np.uint16), fmt)[0]

    b = first_bytes(FORMATS["turbo2"], [1, 2, 3, 0, 3])
    assert list(b[:4]) == [0x00, 0x3C, 0b00_11_10_01, 0b11]
    b = first_bytes(FORMATS["turbo3"], [5, 0, 7, 2])  # 0b101, 0, 0b111, 0b010
    assert b[2] == 0b10_11_00_01 and b[2 + 32] == 0b0101
    b = first_bytes(FORMATS["turbo4_64"], [0xA, 0x3, 0xF])
    assert list(b[2:4]) == [0x3A, 0x0F]
    b = first_bytes(FORMATS["turbo5"], [0, 17, 31])  # 17 = 0b1_0001, 31 = 0b1_1111
    assert list(b[2:4]) == [0x10, 0x0F] and b[2 + 64] == 0b110


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_pack_matches_contract_loop(fmt: Format) -> None:
    rng = np.random.default_rng(fmt.nbytes)
    idx = rng.integers(0, 2**fmt.bits, (5, fmt.block), dtype=np.uint8)
    d = rng.integers(0, 2**16, 5, dtype=np.uint16)
    packed = formats.pack(idx, d, fmt)
    for row in range(5):
        assert bytes(packed[row]) == contract_pack_block(list(idx[row]), int(d[row]), fmt)


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_pack_unpack_round_trip(fmt: Format) -> None:
    """Every byte string is a block (NaN scales included): pack∘unpack is the identity, and
    unpack∘pack on valid indices too."""
    rng = np.random.default_rng(fmt.bits * 1000 + fmt.block)
    blocks = rng.integers(0, 256, (300, fmt.nbytes), dtype=np.uint8)
    np.testing.assert_array_equal(formats.pack(*formats.unpack(blocks, fmt), fmt), blocks)
    idx = rng.integers(0, 2**fmt.bits, (300, fmt.block), dtype=np.uint8)
    d = rng.integers(0, 2**16, 300, dtype=np.uint16)
    got_idx, got_d = formats.unpack(formats.pack(idx, d, fmt), fmt)
    np.testing.assert_array_equal(got_idx, idx)
    np.testing.assert_array_equal(got_d, d)


def special_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows covering normal, tiny, huge, partly zero, signed-zero and fp16-subnormal scales."""
    rows = [
        rng.standard_normal(n),
        rng.standard_normal(n) * 1e-30,
        rng.standard_normal(n) * 1e30,
        rng.standard_normal(n) * 3e-6,
        np.where(rng.random(n) < 0.5, 0.0, rng.standard_normal(n)),
        np.where(rng.random(n) < 0.5, -0.0, 0.0),
        rng.uniform(-1, 1, n) ** 9,
    ]
    return np.array(rows).astype(np.float32)


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_quantize_matches_contract_loop(fmt: Format) -> None:
    rng = np.random.default_rng(fmt.bits + fmt.block)
    y = np.concatenate(
        [rng.standard_normal((6, fmt.block)).astype(np.float32), special_rows(fmt.block, rng)]
    )
    idx, d = formats.quantize(y, fmt)
    assert idx.dtype == np.uint8 and d.dtype == np.uint16
    for row in range(len(y)):
        want_idx, want_d = contract_quantize_block(y[row], fmt.bits)
        assert list(idx[row]) == want_idx
        assert int(d[row]) == want_d


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [64, 128])
def test_index_rule_on_crafted_u(bits: int, n: int) -> None:
    mids = codebook.midpoints(bits, n)
    k = np.arange(len(mids))
    np.testing.assert_array_equal(formats.index_of(mids, bits, n), k + 1)
    below = np.nextafter(mids, -np.inf)
    np.testing.assert_array_equal(formats.index_of(below, bits, n), k)
    zeros = np.array([0.0, -0.0])
    np.testing.assert_array_equal(formats.index_of(zeros, bits, n), [2 ** (bits - 1)] * 2)


KNOB_SCALES = (2.0**-4, 2.0**-8, 2.0**-12, 2.0**-16, 2.0**-20)


def first_u(blocks: np.ndarray) -> np.ndarray:
    """u_0 of each block, computed as the contract computes it."""
    yd = blocks.astype(np.float64)
    return yd[:, 0] * (1.0 / np.sqrt(formats.lane8_sum(yd * yd)))


def block_on_midpoint(target: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 block whose u_0 is exactly ``target``. Coordinates 1..5 are knobs of
    shrinking size: sweeping each over 4096 consecutive floats moves ‖y‖ (and so u_0) in
    steps fine enough for the next knob to take over, the last one below a double's ulp."""
    candidates = 4096
    steps = np.arange(-candidates // 2, candidates // 2, dtype=np.int32)
    knobs = range(1, 1 + len(KNOB_SCALES))
    for _ in range(8):
        # A random overall size changes which doubles u_0 = y_0 · inv can reach.
        size = rng.uniform(1.0, 2.0)
        y = rng.standard_normal(n)
        y *= size / np.linalg.norm(y[len(knobs) + 1 :])
        y[1 : len(knobs) + 1] = np.array(KNOB_SCALES) * size
        y[0] = target * math.sqrt(float(np.sum(y[1:] ** 2)) / (1 - target * target))
        best = y.astype(np.float32)
        for knob in knobs:
            trial = np.repeat(best[None], candidates, 0)
            trial[:, knob] = (best[knob].view(np.int32) + steps).view(np.float32)
            best = trial[np.argmin(np.abs(first_u(trial) - target))]
        if first_u(best[None])[0] == target:
            return best
    raise AssertionError(f"could not build a block with u_0 == {target!r}")


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_value_exactly_on_a_midpoint_takes_the_upper_level(fmt: Format) -> None:
    rng = np.random.default_rng(99)
    mids = codebook.midpoints(fmt.bits, fmt.block)
    for k, m in enumerate(mids):
        block = block_on_midpoint(m, fmt.block, rng) if m != 0 else None
        if block is None:
            block = rng.standard_normal(fmt.block).astype(np.float32)
            block[0] = 0.0
        idx, _ = formats.quantize(block[None], fmt)
        assert idx[0, 0] == k + 1, (k, m)
        lower = block.copy()
        lower[0] = np.nextafter(block[0], np.float32(-np.inf))
        assert formats.quantize(lower[None], fmt)[0][0, 0] == k


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_zero_and_signed_zero_blocks(fmt: Format) -> None:
    n = fmt.block
    rng = np.random.default_rng(3)
    y = np.zeros((3, n), np.float32)
    y[1] = -0.0
    y[2] = np.where(rng.random(n) < 0.5, -0.0, 0.0)
    idx, d = formats.quantize(y, fmt)
    assert np.all(d == 0)
    assert np.all(idx == 2 ** (fmt.bits - 1))
    blocks = formats.encode(y, fmt)
    assert np.all(blocks == blocks[0])
    out = formats.decode(blocks, fmt)
    assert np.all(out == 0) and not np.any(np.signbit(out))


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_non_finite_blocks_are_poisoned_alone(fmt: Format) -> None:
    n = fmt.block
    rng = np.random.default_rng(4)
    y = rng.standard_normal((5, n)).astype(np.float32)
    y[1, 7] = np.nan
    y[2, 0] = np.inf
    y[3, n - 1] = -np.inf
    y[4, :2] = [np.inf, -np.inf]
    clean = formats.quantize(y[:1], fmt)
    idx, d = formats.quantize(y, fmt)
    assert np.all(d[1:] == formats.FP16_NAN_BITS)
    assert np.all(idx[1:] == 0)
    np.testing.assert_array_equal(idx[:1], clean[0])
    np.testing.assert_array_equal(d[:1], clean[1])
    out = formats.decode(formats.encode(y, fmt), fmt)
    assert np.all(np.isnan(out[1:])) and np.all(np.isfinite(out[0]))


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_denormal_blocks_keep_their_indices_and_decode_to_zero(fmt: Format) -> None:
    rng = np.random.default_rng(5)
    mantissas = rng.integers(-(2**23) + 1, 2**23, (4, fmt.block))
    tiny = (mantissas * 2.0**-149).astype(np.float32)  # exact float32 subnormals
    assert np.all(np.abs(tiny) < np.finfo(np.float32).tiny)
    scaled = (tiny.astype(np.float64) * 2.0**100).astype(np.float32)  # the same, exactly
    idx_tiny, d_tiny = formats.quantize(tiny, fmt)
    idx_big, _ = formats.quantize(scaled, fmt)
    np.testing.assert_array_equal(idx_tiny, idx_big)
    assert np.all(d_tiny == 0)
    assert np.all(formats.decode(formats.encode(tiny, fmt), fmt) == 0)


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_huge_norms_saturate_at_65504(fmt: Format) -> None:
    rng = np.random.default_rng(6)
    y = np.concatenate(
        [
            (rng.standard_normal((2, fmt.block)) * 1e6).astype(np.float32),
            np.full((1, fmt.block), np.finfo(np.float32).max, np.float32),
            np.full((1, fmt.block), -np.finfo(np.float32).max, np.float32),
        ]
    )
    idx, d = formats.quantize(y, fmt)
    assert np.all(d == FP16_MAX_BITS)
    out = formats.decode(formats.encode(y, fmt), fmt)
    levels = formats.float32_levels(fmt.bits, fmt.block)
    np.testing.assert_array_equal(out, np.float32(65504) * levels[idx])


def test_fp16_rule_against_an_independent_rounding() -> None:
    rng = np.random.default_rng(8)
    magnitudes = 10.0 ** rng.uniform(-10, 6, 20000)
    d = np.concatenate(
        [
            magnitudes * rng.choice([-1.0, 1.0], magnitudes.size),
            [0.0, -0.0, 65504.0, 65519.99, 65520.0, 65536.0, 1e300, -1e300],
            [2.0**-24, 2.0**-25, 2.0**-25 * (1 + 2.0**-20), 2.0**-26, 6.0e-5],
            [float(np.finfo(np.float32).max), 3.5e38],
            # halfway between two fp16 values: ties go to the even mantissa
            [1 + 2.0**-11, 1 + 3 * 2.0**-11, 2048 + 1, 2048 + 3],
            # just above a tie in double, exactly a tie after rounding to float32: the two
            # roundings give 1.0 where one rounding would give 1 + 2^-10
            [1 + 2.0**-11 + 2.0**-40],
        ]
    )
    got = formats.fp16_bits(d)
    want = np.array([fp16_reference(v) for v in d], np.uint16)
    np.testing.assert_array_equal(got, want)
    assert got[-1] == 0x3C00


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_lsq_scale_against_numpy_float16(fmt: Format) -> None:
    """d = Σ y·C / Σ C² rounded by numpy's float16, with sums from math.fsum: the 8-lane order
    changes d by at most an ulp of a double, which reaches the fp16 bits about once in 2^29."""
    rng = np.random.default_rng(9)
    y = (rng.standard_normal((400, fmt.block)) * 10.0 ** rng.uniform(-3, 3, (400, 1))).astype(
        np.float32
    )
    idx, d = formats.quantize(y, fmt)
    c = formats.float32_levels(fmt.bits, fmt.block).astype(np.float64)[idx]
    yd = y.astype(np.float64)
    exact = np.array([math.fsum(a * b) / math.fsum(b * b) for a, b in zip(yd, c, strict=True)])
    np.testing.assert_array_equal(d, exact.astype(np.float32).astype(np.float16).view(np.uint16))


@pytest.mark.parametrize("fmt", ALL, ids=ids)
def test_decode_is_one_float32_multiply(fmt: Format) -> None:
    rng = np.random.default_rng(10)
    idx = rng.integers(0, 2**fmt.bits, (50, fmt.block), dtype=np.uint8)
    d = rng.integers(0, 0x7C00, 50, dtype=np.uint16)
    out = formats.decode(formats.pack(idx, d, fmt), fmt)
    levels = formats.float32_levels(fmt.bits, fmt.block)
    for row in range(50):
        half = np.float32(np.uint16(d[row]).view(np.float16))
        expected = np.array([half * levels[i] for i in idx[row]], np.float32)
        np.testing.assert_array_equal(out[row], expected)


def test_rejects_wrong_shapes() -> None:
    fmt = FORMATS["turbo3"]
    with pytest.raises(ValueError):
        formats.quantize(np.zeros((1, 64), np.float32), fmt)
    with pytest.raises(TypeError):
        formats.quantize(np.zeros((1, 128)), fmt)
    with pytest.raises(ValueError):
        formats.unpack(np.zeros((1, 49), np.uint8), fmt)
