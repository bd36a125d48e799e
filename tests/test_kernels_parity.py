"""libturboquant and the Metal and CUDA shims against the numpy reference, on a reduced
vector count.

`nox -s parity` runs the same checks on a million vectors per format; here each format gets
20,000 random vectors plus the whole adversarial set, so a regression shows up in the tests.
"""

from __future__ import annotations

import ctypes
import json
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import parity
from harness.build import build_kernels
from harness.errors import ConfigError, ParityError
from reference import codebook
from reference import formats as ref

REDUCED_VECTORS = 20_000
ALL = list(ref.FORMATS.values())


@pytest.fixture(scope="module")
def lib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_kernels(tmp_path_factory.mktemp("kernels-release"))


@pytest.fixture(scope="module")
def kernels(lib_dir: Path) -> parity.Kernels:
    return parity.Kernels(lib_dir)


def test_reduced_parity_is_bit_exact(lib_dir: Path) -> None:
    rows, results, _ = parity.run_checks(lib_dir, list(parity.generate_cases(REDUCED_VECTORS)))
    bad = [r.name for r in results if r.mismatched_vectors]
    assert bad == []
    by_format = {(r.format, r.block): r for r in rows}
    for fmt in ALL:
        row = by_format[fmt.name, fmt.block]
        assert row.vectors >= REDUCED_VECTORS
        assert row.max_abs_error == 0.0
        # The lsq scale never does worse than the true norm the theory assumes.
        assert row.mse is not None and row.mse < 1.01 * codebook.expected_mse(fmt.bits, fmt.block)
    assert {r.op for r in results} == {"encode", "decode", "rotate"}


def test_simd_path_is_used_where_the_cpu_has_it(kernels: parity.Kernels) -> None:
    machine = platform.machine().lower()
    cpuinfo = Path("/proc/cpuinfo")
    if machine in ("x86_64", "amd64") and cpuinfo.is_file():
        has_avx2 = " avx2" in cpuinfo.read_text(encoding="utf-8")
        assert kernels.simd_path == ("avx2" if has_avx2 else "scalar")
    elif machine in ("aarch64", "arm64"):
        assert kernels.simd_path == "neon"


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_adversarial_set_hits_what_it_claims(fmt: ref.Format) -> None:
    rows = parity.adversarial_rows(fmt)
    mids = codebook.midpoints(fmt.bits, fmt.block)
    # One exact tie (u == m, computed as the contract does) for every nonzero midpoint...
    assert parity.exact_ties(rows["exact-ties"], fmt) == np.count_nonzero(mids)
    assert parity.exact_ties(rows["near-ties"], fmt) == 0
    # ...and scales d inside the narrow windows where fp16 rounding changes its answer.
    d = parity.scale_of(rows["fp16-edges"], fmt)
    assert np.any((d > 65519.998) & (d < 65520.0))  # float 65520: would round to Inf
    assert np.any((d > 65504.0) & (d < 65520.0))  # rounds down to 65504 without saturating
    assert np.any((d > 2.0**-25) & (d < 2.0**-25 * (1 + 2.0**-20)))  # just over half of 2^-24
    assert np.any((d < 2.0**-25) & (d > 2.0**-25 * (1 - 2.0**-20)))  # just under: rounds to 0
    blocks = ref.encode(rows["zeros"], fmt)
    assert not blocks[:, :2].any()


def test_named_case_replays_identical_data() -> None:
    specs = list(parity.generate_cases(REDUCED_VECTORS))
    name = specs[5].name
    chosen = list(parity.select(specs, name))
    assert [s.name for s in chosen] == [name]
    a, b = chosen[0].make(), specs[5].make()
    assert np.array_equal(a.data.view(np.uint32), b.data.view(np.uint32))
    assert len(list(parity.select(specs, "turbo3/n64/adversarial-*"))) == len(
        parity.ADVERSARIAL_KINDS
    )


def test_run_parity_prints_the_table_and_writes_json(
    lib_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "parity.json"
    parity.run_parity(lib_dir, vectors=2000, filter="turbo3/n128/", json_out=out)
    printed = capsys.readouterr().out
    assert "turbo3" in printed and "mismatches" in printed and "theory" in printed
    report = json.loads(out.read_text())
    assert report["first_failure"] is None
    assert {row["format"] for row in report["table"]} == {"turbo3"}
    assert all(c["name"].startswith("turbo3/n128/") for c in report["cases"])


def test_unknown_filter_is_a_config_error(lib_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parity.run_parity(lib_dir, vectors=100, filter="no-such-case", json_out=tmp_path / "j")
    # The hint shows what case names look like, so the next -k can hit one.
    assert "turbo2/n128/gaussian/seed=0" in err.value.hint


@pytest.mark.parametrize("stage", ["encode", "decode"])
def test_corrupted_expectation_is_caught(
    lib_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """The check can fail: one flipped bit in the reference's output is reported, by name."""
    real = getattr(parity.ref, stage)

    def corrupted(data: np.ndarray, fmt: ref.Format) -> np.ndarray:
        out = real(data, fmt).copy()
        if stage == "encode":
            out[3, -1] ^= 0x10
        else:
            out.view(np.uint32)[3, 7] ^= 1
        return out

    monkeypatch.setattr(parity.ref, stage, corrupted)
    case = "turbo4/n64/gaussian/seed=0/m=500"
    out = tmp_path / "parity.json"
    with pytest.raises(ParityError, match=re.escape(case)):
        parity.run_parity(lib_dir, vectors=2000, filter=case, json_out=out)
    report = json.loads(out.read_text())
    assert report["first_failure"] == case
    (result,) = report["cases"]
    assert result["first_row"] == 3 and result["mismatched_vectors"] == 1
    paths = parity.ENCODERS if stage == "encode" else parity.DECODERS
    assert all(result["mismatches"][f"{p}-{stage}"] == 1 for p in paths)


def test_corrupted_f16_expectation_is_caught(
    lib_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion to f16 is compared with the reference rounded to fp16: a flipped bit
    that survives the rounding (float bit 16, fp16 mantissa bit 3) is reported for it."""
    real = parity.ref.decode

    def corrupted(data: np.ndarray, fmt: ref.Format) -> np.ndarray:
        out = real(data, fmt).copy()
        out.view(np.uint32)[3, 7] ^= 1 << 16
        return out

    monkeypatch.setattr(parity.ref, "decode", corrupted)
    case = "turbo3/n128/gaussian/seed=0/m=500"
    with pytest.raises(ParityError, match=re.escape(case)):
        parity.run_parity(lib_dir, vectors=2000, filter=case, json_out=tmp_path / "p.json")
    (result,) = json.loads((tmp_path / "p.json").read_text())["cases"]
    assert all(result["mismatches"][f"{p}-decode"] == 1 for p in parity.F16_CONVERTERS)


ROW_FUNCTIONS = [
    ("lib", "tq_quantize_row"),
    ("lib", "tq_quantize_row_scalar"),
    ("lib", "tq_quantize_row_simd"),
    ("lib", "tq_dequantize_row"),
    ("lib", "tq_dequantize_row_scalar"),
    ("lib", "tq_dequantize_row_simd"),
    ("shim", "tq_metal_quantize_row"),
    ("shim", "tq_metal_dequantize_row"),
    ("shim", "tq_metal_dequantize_row_t4"),
    ("cuda", "tq_cuda_quantize_row"),
    ("cuda", "tq_cuda_dequantize_row"),
    ("cuda", "tq_cuda_dequantize_row_fa"),
    ("cuda", "tq_cuda_dequantize_row_fa16"),
    ("cuda", "tq_cuda_dequantize_row_fa8"),
    ("cuda", "tq_cuda_dequantize_row_f16"),
]


@pytest.mark.parametrize(("where", "name"), ROW_FUNCTIONS, ids=[n for _, n in ROW_FUNCTIONS])
@pytest.mark.parametrize(
    ("bits", "n", "k", "expected"),
    [
        (3, 128, 127, -2),  # not a multiple of the block
        (3, 128, -128, -2),  # negative
        (3, 128, 64, -2),  # a 64-block row under the 128-block format
        (1, 128, 128, -1),  # no 1-bit format
        (6, 64, 64, -1),
        (3, 96, 96, -1),  # no 96-value block
        (3, 0, 0, -1),
    ],
)
def test_bad_rows_are_rejected_without_touching_memory(
    kernels: parity.Kernels, where: str, name: str, bits: int, n: int, k: int, expected: int
) -> None:
    fn = getattr({"lib": kernels.lib, "shim": kernels.shim, "cuda": kernels.cuda}[where], name)
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    src = np.full(4, 0x5A, np.uint8)
    dst = np.full(4, 0xA5, np.uint8)
    assert fn(bits, n, src.ctypes.data, dst.ctypes.data, k) == expected
    assert np.all(dst == 0xA5) and np.all(src == 0x5A)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("path", parity.ROTATORS)
def test_rotation_rejects_bad_rows(kernels: parity.Kernels, path: str, direction: str) -> None:
    fn = kernels.rotators[path, direction]
    x = np.ones(8, np.float32)
    assert fn(96, x.ctypes.data, 96) == -1
    assert fn(64, x.ctypes.data, 63) == -2
    assert np.all(x == 1.0)


def test_k_zero_is_a_no_op(kernels: parity.Kernels) -> None:
    for fn in (
        *kernels.encoders.values(),
        *kernels.decoders.values(),
        *kernels.f16_converters.values(),
        *kernels.fp16_decoders.values(),
        *kernels.int8_decoders.values(),
    ):
        assert fn(4, 128, None, None, 0) == 0


def test_corrupted_fp16_levels_are_caught(
    lib_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU kernels' fp16 levels are checked bit for bit: levels rounded toward zero
    instead of to nearest (what a float -> half truncation would give) are reported."""

    def truncated(blocks: np.ndarray, fmt: ref.Format) -> np.ndarray:
        indices, d_bits = ref.unpack(blocks, fmt)
        levels = ref.float32_levels(fmt.bits, fmt.block)
        bits16 = levels.view(np.uint32) >> 13  # drop the low mantissa bits: round to zero
        levels = ((bits16 << 13).view(np.float32)).astype(np.float16).astype(np.float32)
        scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
        return scale[:, None] * levels[indices]

    monkeypatch.setattr(parity.checks, "reference_fp16_levels", truncated)
    case = "turbo3/n128/gaussian/seed=0/m=500"
    with pytest.raises(ParityError, match=re.escape(case)):
        parity.run_parity(lib_dir, vectors=2000, filter=case, json_out=tmp_path / "p.json")
    (result,) = json.loads((tmp_path / "p.json").read_text())["cases"]
    assert result["mismatches"]["cuda-fa16-decode"] > 0
    assert all(v == 0 for k, v in result["mismatches"].items() if k != "cuda-fa16-decode")


def test_corrupted_int8_levels_are_caught(
    lib_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The int8 K levels are checked bit for bit: levels rounded toward zero instead of to
    nearest (a float -> int truncation) are reported, and only there."""

    def truncated(blocks: np.ndarray, fmt: ref.Format) -> np.ndarray:
        indices, d_bits = ref.unpack(blocks, fmt)
        levels = ref.float32_levels(fmt.bits, fmt.block)
        top = levels[-1]
        i8 = np.trunc(levels * (np.float32(127) / top)).astype(np.float32)
        scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
        return scale[:, None] * ((top / np.float32(127)) * i8)[indices]

    monkeypatch.setattr(parity.checks, "reference_int8_levels", truncated)
    case = "turbo3/n128/gaussian/seed=0/m=500"
    with pytest.raises(ParityError, match=re.escape(case)):
        parity.run_parity(lib_dir, vectors=2000, filter=case, json_out=tmp_path / "p.json")
    (result,) = json.loads((tmp_path / "p.json").read_text())["cases"]
    assert result["mismatches"]["cuda-fa8-decode"] > 0
    assert all(v == 0 for k, v in result["mismatches"].items() if k != "cuda-fa8-decode")


def test_int8_levels_are_symmetric_and_reject_turbo5(kernels: parity.Kernels) -> None:
    """turbo5 has no int8 levels (TQ_ERR_FORMAT, output untouched); for turbo2..4 the int8
    table keeps the codebook's symmetry (level 2^B - 1 - k = -level k, as rint rounds both
    signs alike) and its largest level is 127, the full int8 range."""
    fn = kernels.int8_decoders["cuda-fa8"]
    src = np.zeros(82, np.uint8)
    dst = np.full(128, 7.0, np.float32)
    assert fn(5, 128, src.ctypes.data, dst.ctypes.data, 128) == -1
    assert np.all(dst == 7.0)
    for bits in (2, 3, 4):
        levels = ref.float32_levels(bits, 128)
        i8 = np.rint(levels * (np.float32(127) / levels[-1]))
        assert np.array_equal(i8, -i8[::-1]) and i8[-1] == 127


def test_fp16_levels_reject_unknown_widths(kernels: parity.Kernels) -> None:
    """A width with no format gets TQ_ERR_FORMAT (-1) from the fp16-level decoder and the
    output stays as it was; turbo5 (the 16-level tables and the sign, by the codebook's
    symmetry) is decoded and checked bit for bit by the parity cases."""
    fn = kernels.fp16_decoders["cuda-fa16"]
    src = np.zeros(82, np.uint8)
    dst = np.full(128, 7.0, np.float32)
    for bits in (1, 6):
        assert fn(bits, 128, src.ctypes.data, dst.ctypes.data, 128) == -1
    assert np.all(dst == 7.0)
    assert fn(5, 128, src.ctypes.data, dst.ctypes.data, 128) == 0
    assert not np.all(dst == 7.0)


def test_fp16_conversion_matches_numpy(kernels: parity.Kernels) -> None:
    """The library's own float <-> fp16 (no F16C): every fp16 pattern widens exactly, and
    float -> fp16 rounds like numpy except that overflow saturates at 65504."""
    lib = kernels.lib
    lib.tq_fp16_to_float.argtypes, lib.tq_fp16_to_float.restype = [ctypes.c_uint16], ctypes.c_float
    lib.tq_fp16_from_float.argtypes = [ctypes.c_float]
    lib.tq_fp16_from_float.restype = ctypes.c_uint16
    every = np.arange(65536, dtype=np.uint16)
    want = every.view(np.float16).astype(np.float32)
    got = np.array([lib.tq_fp16_to_float(int(h)) for h in every], np.float32)
    finite = np.isfinite(want)
    assert np.array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))
    assert np.all(np.isnan(got[np.isnan(want)]))
    rng = np.random.default_rng(7)
    floats = np.concatenate(
        [
            rng.integers(0, 2**32, 20000, dtype=np.uint32).view(np.float32),
            np.array([65504, 65519.996, 65520, 2.0**-24, 2.0**-25, 2.0**-14, 3e-8], np.float32),
        ]
    )
    floats = floats[~np.isnan(floats)]
    with np.errstate(over="ignore"):
        expected = floats.astype(np.float16).view(np.uint16).copy()
    expected[np.isinf(expected.view(np.float16))] ^= 0x7C00 ^ 0x7BFF
    got16 = np.array([lib.tq_fp16_from_float(float(f)) for f in floats], np.uint16)
    assert np.array_equal(got16, expected)


def test_benchmark_reports_every_format(lib_dir: Path) -> None:
    rows = parity.run_bench(lib_dir, mib=1, seconds=0.03)
    assert {(r.format, r.block, r.op) for r in rows} == {
        (f"turbo{f.bits}", f.block, op) for f in ALL for op in ("encode", "decode")
    }
    assert all(r.gbps > 0 and r.memcpy_gbps > 0 for r in rows)
    assert all(r.x_memcpy == pytest.approx(r.gbps / r.memcpy_gbps, abs=0.01) for r in rows)
    assert "x memcpy" in parity.format_bench(rows, mib=1)


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_vec_dot_paths_agree_bit_for_bit(kernels: parity.Kernels, fmt: ref.Format) -> None:
    """The fused SIMD dot (no buffer) sums in the scalar path's order, so both give the same
    float; rows of 1..11 blocks cross the 512-float chunk where the sum restarts. Random
    bytes reach every index and scale, NaN and Inf included."""
    rng = np.random.default_rng(fmt.bits * 1000 + fmt.block)
    dot = {}
    for path in ("scalar", "simd"):
        fn = getattr(kernels.lib, f"tq_vec_dot_f32_{path}")
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_int64, ctypes.c_void_p]  # fmt: skip
        dot[path] = fn
    for nblocks in range(1, 12):
        k = nblocks * fmt.block
        y = rng.standard_normal(k).astype(np.float32)
        for source in ("encoded", "random-bytes"):
            if source == "encoded":
                x = kernels.encode("scalar", fmt, rng.standard_normal((nblocks, fmt.block)))
            else:
                x = rng.integers(0, 256, (nblocks, fmt.nbytes), dtype=np.uint8)
            out = {p: np.zeros(1, np.float32) for p in dot}
            for p, fn in dot.items():
                assert (
                    fn(fmt.bits, fmt.block, x.ctypes.data, y.ctypes.data, k, out[p].ctypes.data)
                    == 0
                )
            assert out["simd"].view(np.uint32)[0] == out["scalar"].view(np.uint32)[0] or (
                np.isnan(out["simd"][0]) and np.isnan(out["scalar"][0])
            ), (nblocks, source, out)
            if source == "encoded":
                decoded = kernels.decode("scalar", fmt, x).astype(np.float64).ravel()
                exact = float(decoded @ y.astype(np.float64))
                assert abs(out["simd"][0] - exact) <= 1e-5 * np.abs(decoded * y).sum()


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_strided_rows_decode_like_single_rows(kernels: parity.Kernels, fmt: ref.Format) -> None:
    """tq_dequantize_rows reads a strided view (one head of a KV cache: rows of 2 blocks with
    other heads' bytes between them) and writes what tq_dequantize_row writes per row."""
    rng = np.random.default_rng(fmt.bits * 7 + fmt.block)
    nrows, per_row, heads = 5, 2, 3
    cache = rng.integers(0, 256, (nrows, heads * per_row * fmt.nbytes), dtype=np.uint8)
    head = 1
    k = per_row * fmt.block
    fn = kernels.lib.tq_dequantize_rows
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                   ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]  # fmt: skip
    out = np.full((nrows + 1, k), -7.0, np.float32)  # one row more: must stay untouched
    start = cache.ctypes.data + head * per_row * fmt.nbytes
    assert fn(fmt.bits, fmt.block, start, cache.strides[0], out.ctypes.data, k, nrows) == 0
    for r in range(nrows):
        view = cache[r, head * per_row * fmt.nbytes : (head + 1) * per_row * fmt.nbytes]
        one = kernels.decode("simd", fmt, view.reshape(per_row, fmt.nbytes)).ravel()
        assert np.array_equal(out[r].view(np.uint32), one.view(np.uint32))
    assert np.all(out[nrows] == -7.0)
    assert fn(fmt.bits, fmt.block, start, cache.strides[0], out.ctypes.data, k, -1) == -2
    assert fn(fmt.bits, fmt.block, start, cache.strides[0], out.ctypes.data, k + 1, 1) == -2


def _rows_fns(kernels: parity.Kernels, name: str) -> dict[str, Any]:
    fns = {}
    for path, suffix in (("scalar", "_scalar"), ("simd", "_simd"), ("dispatch", "")):
        fn = getattr(kernels.lib, f"tq_vec_{name}_rows_f32{suffix}")
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                       ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                       ctypes.c_void_p]  # fmt: skip
        fns[path] = fn
    return fns


def _tile(rng: np.random.Generator, kernels: parity.Kernels, fmt: ref.Format, nrows: int,
          nblocks: int) -> tuple[np.ndarray, int]:  # fmt: skip
    """nrows rows of nblocks blocks with 3 bytes of another head between rows (a strided KV
    head), the last row random bytes (every index and scale, NaN and Inf included)."""
    rows = kernels.encode("scalar", fmt, rng.standard_normal((nrows * nblocks, fmt.block)))
    rows = rows.reshape(nrows, nblocks * fmt.nbytes)
    rows[-1] = rng.integers(0, 256, nblocks * fmt.nbytes, dtype=np.uint8)
    stride = nblocks * fmt.nbytes + 3
    tile = np.zeros((nrows, stride), np.uint8)
    tile[:, : nblocks * fmt.nbytes] = rows
    return tile, stride


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_tile_dots_equal_the_single_row_dot(kernels: parity.Kernels, fmt: ref.Format) -> None:
    """tq_vec_dot_rows_f32 (K * Q for a GQA group) gives, on every path, what
    tq_vec_dot_f32_scalar gives for each row and query, bit for bit: 1..6 queries (the AVX2
    path takes them 4 at a time), rows of 1..5 blocks (5 x 128 crosses the 512-float chunk)."""
    rng = np.random.default_rng(fmt.bits * 7 + fmt.block)
    one = kernels.lib.tq_vec_dot_f32_scalar
    one.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                    ctypes.c_int64, ctypes.c_void_p]  # fmt: skip
    fns = _rows_fns(kernels, "dot")
    for nq, nrows, nblocks in ((1, 16, 1), (3, 16, 1), (4, 7, 2), (6, 5, 5), (2, 1, 3)):
        tile, stride = _tile(rng, kernels, fmt, nrows, nblocks)
        k = nblocks * fmt.block
        q = rng.standard_normal((nq, k)).astype(np.float32)
        want = np.zeros((nq, nrows), np.float32)
        for j in range(nq):
            for r in range(nrows):
                row = np.ascontiguousarray(tile[r])
                assert one(fmt.bits, fmt.block, row.ctypes.data, q[j].ctypes.data, k,
                           want[j, r:].ctypes.data) == 0  # fmt: skip
        for path, fn in fns.items():
            got = np.full((nq, nrows), np.nan, np.float32)
            assert fn(fmt.bits, fmt.block, tile.ctypes.data, stride, nrows, q.ctypes.data, nq, k,
                      got.ctypes.data) == 0  # fmt: skip
            assert _same_bits(got, want), (path, nq, nrows, nblocks)


@pytest.mark.parametrize("fmt", ALL, ids=[f.name for f in ALL])
def test_tile_multiply_adds_equal_float32_arithmetic(
    kernels: parity.Kernels, fmt: ref.Format
) -> None:
    """tq_vec_mad_rows_f32 (P * V for a GQA group) adds w * decode(row) to each query's
    accumulator in row order, one float32 multiply and one add per value, on every path bit
    for bit; a weight of 0 skips its row, so the random-bytes row (NaN scales) poisons
    nothing where it is masked."""
    rng = np.random.default_rng(fmt.bits * 11 + fmt.block)
    fns = _rows_fns(kernels, "mad")
    for nq, nrows, nblocks in ((1, 16, 1), (3, 16, 1), (4, 7, 2), (6, 5, 5)):
        tile, stride = _tile(rng, kernels, fmt, nrows, nblocks)
        k = nblocks * fmt.block
        decoded = kernels.decode(
            "scalar",
            fmt,
            np.ascontiguousarray(tile[:, : nblocks * fmt.nbytes]).reshape(-1, fmt.nbytes),
        ).reshape(nrows, k)
        w = rng.random((nq, nrows)).astype(np.float32)
        w[:, -1] = 0.0  # the random-bytes row is masked
        w[0, 0] = 0.0
        acc0 = rng.standard_normal((nq, k)).astype(np.float32)
        want = acc0.copy()
        for r in range(nrows):
            for j in range(nq):
                if w[j, r] != 0.0:
                    want[j] = want[j] + w[j, r] * decoded[r]
        for path, fn in fns.items():
            got = acc0.copy()
            assert fn(fmt.bits, fmt.block, tile.ctypes.data, stride, nrows, w.ctypes.data, nq, k,
                      got.ctypes.data) == 0  # fmt: skip
            assert _same_bits(got, want), (path, nq, nrows, nblocks)


def test_tile_calls_reject_bad_shapes(kernels: parity.Kernels) -> None:
    dot = _rows_fns(kernels, "dot")["dispatch"]
    buf = np.zeros(4096, np.float32)
    assert dot(3, 128, buf.ctypes.data, 50, 1, buf.ctypes.data, 0, 128, buf.ctypes.data) != 0
    assert dot(3, 128, buf.ctypes.data, 50, -1, buf.ctypes.data, 1, 128, buf.ctypes.data) != 0
    assert dot(3, 128, buf.ctypes.data, 50, 1, buf.ctypes.data, 1, 100, buf.ctypes.data) != 0
    assert dot(6, 128, buf.ctypes.data, 50, 1, buf.ctypes.data, 1, 128, buf.ctypes.data) != 0
