"""The native libraries under test, loaded with ctypes: libturboquant (scalar, SIMD and
dispatching paths), the Metal and CUDA host shims, and with a GPU the CUDA GPU runner; one
library finder for .so, .dylib and .dll."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.errors import ConfigError, ParityError
from reference.formats import Format


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
        # K/V to f16 before flash attention's tensor-core kernels: fp16 results, widened.
        self.f16_converters = {f"{n}-f16": r.tq_cuda_dequantize_row_f16 for n, r in runners}
        self.fp16_decoders = {"cuda-fa16": self.cuda.tq_cuda_dequantize_row_fa16}
        self.int8_decoders = {"cuda-fa8": self.cuda.tq_cuda_dequantize_row_fa8}
        self.rotators = {
            (p, d): self.lib[f"tq_rotate_{d}{s}"]
            for p, s in suffix.items()
            for d in ("forward", "inverse")
        }
        for fn in (
            *self.encoders.values(),
            *self.decoders.values(),
            *self.f16_converters.values(),
            *self.fp16_decoders.values(),
            *self.int8_decoders.values(),
        ):
            fn.argtypes, fn.restype = row, ctypes.c_int
        for fn in self.rotators.values():
            fn.argtypes, fn.restype = rot, ctypes.c_int
        # flash attention's decode over a tile of rows for a GQA group: K * Q and P * V
        tile = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]
        tile += [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p]
        self.tile_ops = {
            (p, op): self.lib[f"tq_vec_{op}_rows_f32{s}"]
            for p, s in suffix.items()
            for op in ("dot", "mad")
        }
        for fn in self.tile_ops.values():
            fn.argtypes, fn.restype = tile, ctypes.c_int
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
        fn = {
            **self.decoders,
            **self.f16_converters,
            **self.fp16_decoders,
            **self.int8_decoders,
        }[path]
        self._call(
            fn,
            f"{path} decode",
            fmt.bits,
            fmt.block,
            blocks.ctypes.data,
            out.ctypes.data,
            out.size,
        )
        return out

    def tile(self, path: str, op: str, fmt: Format, blocks: np.ndarray, x: np.ndarray,
             acc: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """A tile of rows (blocks: rows x nbytes bytes, one block per row) through ``path``:
        op "dot" with queries ``x`` (nq x block floats) gives nq x rows scores; op "mad" with
        weights ``x`` (nq x rows floats) adds into a copy of ``acc`` (nq x block floats) and
        returns it."""
        blocks = np.ascontiguousarray(blocks, np.uint8)
        x = np.ascontiguousarray(x, np.float32)
        nq, rows = x.shape[0], blocks.shape[0]
        out = np.empty((nq, rows), np.float32) if op == "dot" else np.array(acc, np.float32)
        self._call(
            self.tile_ops[path, op],
            f"{path} tile {op}",
            fmt.bits,
            fmt.block,
            blocks.ctypes.data,
            fmt.nbytes,
            rows,
            x.ctypes.data,
            nq,
            fmt.block,
            out.ctypes.data,
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
