"""Parity of the built llama.cpp: ggml's own type traits against the numpy reference.

The kernels' parity proves libturboquant computes what reference/ says. This module proves
the binary users run does too: it loads ``libggml-base`` and ``libggml-cpu`` from the build
directory, quantizes through ``ggml_quantize_chunk`` (what tools use), the CPU backend's
``from_float`` (what SET_ROWS writes into the KV cache) and the reference ``from_float_ref``,
dequantizes through ``to_float`` (what flash attention reads for V), and dots through the
CPU ``vec_dot`` (how K is read against the query). Bytes and decoded values must be
bit-exact; the dot product, whose summation order is the library's own, must agree with a
float64 dot of the reference decode within ``DOT_RTOL``.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import ParityError
from harness.parity.binding import library_file
from harness.parity.cases import adversarial_rows
from reference import formats as ref

# float32 summation of at most a few hundred products, against float64: a relative error
# bound of k * 2^-24 for k = 256 terms is 1.5e-5; a mismatch in the data is far larger.
DOT_RTOL = 2e-5

_FLOAT_P = ctypes.POINTER(ctypes.c_float)
_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, _FLOAT_P, ctypes.c_int64)
_FROM_FLOAT = ctypes.CFUNCTYPE(None, _FLOAT_P, ctypes.c_void_p, ctypes.c_int64)
_VEC_DOT = ctypes.CFUNCTYPE(
    None,
    ctypes.c_int,
    _FLOAT_P,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
)


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


class _CpuTraits(ctypes.Structure):
    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


@dataclass(frozen=True)
class GgmlCase:
    """One turbo type through the built ggml: rows whose bytes differ from the reference
    (from_float_ref, the CPU from_float, ggml_quantize_chunk), rows whose decoded values
    differ bit for bit, and the largest relative error of vec_dot against the reference."""

    name: str
    vectors: int
    mismatched_bytes: int
    mismatched_values: int
    max_dot_rel_error: float

    @property
    def ok(self) -> bool:
        """No byte or value differs and vec_dot stays within DOT_RTOL."""
        return (
            self.mismatched_bytes == 0
            and self.mismatched_values == 0
            and self.max_dot_rel_error <= DOT_RTOL
        )


def turbo_type_ids(ggml_h: Path) -> dict[str, int]:
    """The turbo type ids, read from the ggml.h the binary was built from."""
    ids = {
        m.group(1).lower(): int(m.group(2))
        for m in re.finditer(r"GGML_TYPE_(TURBO\d(?:_64)?)\s*=\s*(\d+)", ggml_h.read_text())
    }
    return ids


def _ptr(a: np.ndarray, kind=ctypes.c_void_p):
    return a.ctypes.data_as(kind)


class GgmlLibrary:
    """The built libggml-base and libggml-cpu loaded with ctypes, with the turbo type ids
    read from the patched ggml.h."""

    def __init__(self, bin_dir: Path, ggml_h: Path) -> None:
        mode = ctypes.RTLD_GLOBAL
        self.base = ctypes.CDLL(str(library_file(bin_dir, "ggml-base")), mode=mode)
        self.cpu = ctypes.CDLL(str(library_file(bin_dir, "ggml-cpu")), mode=mode)
        self.base.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        self.base.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
        self.cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
        self.cpu.ggml_cpu_init.restype = None
        self.cpu.ggml_cpu_init()
        self.base.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.base.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            _FLOAT_P,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            _FLOAT_P,
        ]
        self.ids = turbo_type_ids(ggml_h)

    def check(self, fmt: ref.Format, y: np.ndarray, name: str) -> GgmlCase:
        """Push rows ``y`` (rows x block floats) through every path of ``fmt``'s type traits
        and compare with reference/; the vec_dot check uses up to 2,000 pairs of blocks."""
        tid = self.ids[fmt.name]
        traits = self.base.ggml_get_type_traits(tid).contents
        cpu = self.cpu.ggml_get_type_traits_cpu(tid).contents
        assert traits.type_name.decode() == fmt.name, (traits.type_name, fmt.name)
        assert (traits.blck_size, traits.type_size) == (fmt.block, fmt.nbytes)
        m = y.shape[0]
        y = np.ascontiguousarray(y, dtype=np.float32)
        want = ref.encode(y, fmt)
        bad_bytes = 0
        writers = {
            "from_float_ref": _FROM_FLOAT(traits.from_float_ref),
            "cpu.from_float": _FROM_FLOAT(cpu.from_float),
        }
        for writer in writers.values():
            got = np.zeros((m, fmt.nbytes), dtype=np.uint8)
            writer(_ptr(y, _FLOAT_P), _ptr(got), y.size)
            bad_bytes += int(np.count_nonzero((got != want).any(axis=1)))
        got = np.zeros((m, fmt.nbytes), dtype=np.uint8)
        self.base.ggml_quantize_chunk(tid, _ptr(y, _FLOAT_P), _ptr(got), 0, m, fmt.block, None)
        bad_bytes += int(np.count_nonzero((got != want).any(axis=1)))

        decoded = np.zeros_like(y)
        _TO_FLOAT(traits.to_float)(_ptr(want), _ptr(decoded, _FLOAT_P), y.size)
        ref_decoded = ref.decode(want, fmt)
        same = (decoded.view(np.uint32) == ref_decoded.view(np.uint32)) | (
            np.isnan(decoded) & np.isnan(ref_decoded)
        )
        bad_values = int(np.count_nonzero(~same.all(axis=1)))

        # One row of two blocks against a query, as flash attention reads K.
        rng = np.random.default_rng(len(name))
        q = rng.standard_normal(2 * fmt.block).astype(np.float32)
        dot = _VEC_DOT(cpu.vec_dot)
        worst = 0.0
        finite = np.isfinite(ref_decoded).all(axis=1)
        rows = np.flatnonzero(finite[: m - m % 2].reshape(-1, 2).all(axis=1))[:2000]
        for r in rows:
            pair = np.ascontiguousarray(want[2 * r : 2 * r + 2])
            s = np.zeros(1, dtype=np.float32)
            dot(2 * fmt.block, _ptr(s, _FLOAT_P), 0, _ptr(pair), 0, _ptr(q), 0, 1)
            exact = float(ref_decoded[2 * r : 2 * r + 2].astype(np.float64).ravel() @ q)
            scale = float(np.abs(ref_decoded[2 * r : 2 * r + 2]).ravel() @ np.abs(q)) or 1.0
            worst = max(worst, abs(float(s[0]) - exact) / scale)
        return GgmlCase(name, m, bad_bytes, bad_values, worst)


def _rows_for(fmt: ref.Format, vectors: int) -> dict[str, np.ndarray]:
    """Seeded Gaussian rows plus the kernels parity's adversarial rows, by case name."""
    rng = np.random.default_rng([fmt.bits, fmt.block, 7])
    rows = {
        f"{fmt.name}/gaussian/m={vectors}": rng.standard_normal((vectors, fmt.block)).astype(
            np.float32
        )
    }
    for kind, data in adversarial_rows(fmt).items():
        rows[f"{fmt.name}/adversarial/{kind}"] = data
    return rows


def run_ggml_parity(bin_dir: Path, ggml_h: Path, *, vectors: int) -> list[GgmlCase]:
    """Check every turbo type of the built ggml; print a table; raise ParityError on a miss."""
    lib = GgmlLibrary(bin_dir, ggml_h)
    cases = [
        lib.check(fmt, data, name)
        for fmt in ref.FORMATS.values()
        for name, data in _rows_for(fmt, vectors).items()
    ]
    print("\nparity of the built ggml (type traits, quantize_chunk, CPU from_float/vec_dot)")
    print(f"{'format':<10} {'vectors':>9} {'byte mism.':>10} {'value mism.':>11}", end="")
    print(f" {'dot rel.err':>11}")
    for fmt in ref.FORMATS.values():
        mine = [c for c in cases if c.name.startswith(fmt.name + "/")]
        print(
            f"{fmt.name:<10} {sum(c.vectors for c in mine):>9} "
            f"{sum(c.mismatched_bytes for c in mine):>10} "
            f"{sum(c.mismatched_values for c in mine):>11} "
            f"{max(c.max_dot_rel_error for c in mine):>11.2e}"
        )
    failed = [c for c in cases if not c.ok]
    if failed:
        raise ParityError(
            f"{len(failed)} ggml case(s) disagree with the reference; first: {failed[0]}"
        )
    return cases
