"""kernels/cuda on a machine without a GPU: the device code compiles for sm_90 with the flags
ggml-cuda uses, and the generated CUDA tables hold the reference's numbers.

Bit-exactness of the CUDA math itself is checked through its host shim by
test_kernels_parity.py (every parity case) and, on a GPU, by `nox -s parity -- --backend
cuda`; these tests cover what the host compiler cannot see."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.config import REPO_ROOT
from reference import codebook, formats

CUDA = REPO_ROOT / "kernels" / "cuda"
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed on this machine")


@needs_nvcc
def test_gpu_runner_compiles_for_hopper_with_ggml_flags(tmp_path: Path) -> None:
    # The runner instantiates every per-thread function, the warp quantizer and SET_ROWS
    # kernel, and the staged decoder of every format, for the device and the host.
    out = subprocess.run(
        [
            NVCC,
            "-std=c++17",
            "-arch=sm_90",
            "-use_fast_math",
            "-Werror",
            "all-warnings",
            f"-I{REPO_ROOT / 'kernels' / 'include'}",
            f"-I{CUDA}",
            "-c",
            CUDA / "tools" / "tq_cuda_gpu.cu",
            "-o",
            tmp_path / "runner.o",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr


def _cuda_tables() -> str:
    return (CUDA / "turboquant_cuda_tables.cuh").read_text()


@pytest.mark.parametrize("fmt", list(formats.FORMATS.values()), ids=lambda f: f.name)
def test_cuda_tables_hold_the_reference_numbers(fmt: formats.Format) -> None:
    text = _cuda_tables()
    start = text.index(f"struct tq_cu_codebook<{fmt.bits}, {fmt.block}> {{")
    body = text[start : text.index("};", start)]
    level_part, index_part = body.split("index(double u)")
    levels = {np.float32(float(x[:-1])) for x in re.findall(r"\d\.\d+(?:e-?\d+)?f", level_part)}
    positive = formats.float32_levels(fmt.bits, fmt.block)[1 << (fmt.bits - 1) :]
    assert levels == set(positive)
    mids = [float(x) for x in re.findall(r"u >= (-?[\d.e-]+)", index_part)]
    assert sorted(mids) == list(codebook.midpoints(fmt.bits, fmt.block))
    # A binary tree of compares: B compares on every path, 2^B - 1 midpoints in all.
    assert len(mids) == (1 << fmt.bits) - 1


def _sass_loops():
    path = Path(__file__).resolve().parent.parent / "kernels" / "cuda" / "tools" / "sass_loops.py"
    spec = importlib.util.spec_from_file_location("sass_loops", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sass_loop_counter_finds_the_innermost_loop() -> None:
    """docs/measurements.md's per-trip counts: a backward branch to a label closes a loop,
    the innermost one counts its own instructions, predicates are not opcodes, and a
    forward branch closes nothing."""
    sass = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;
.L_x_1:
        /*0020*/              @P0 PRMT R3, R2, 0x5410, R4 ;
        /*0030*/                   ISETP.GE.AND P0, PT, R2, 0x10, PT ;
        /*0040*/              @!P0 BRA `(.L_x_1) ;
        /*0050*/                   BRA `(.L_x_2) ;
.L_x_2:
        /*0060*/              @P1 BRA `(.L_x_0) ;
        /*0070*/                   EXIT ;
"""
    tool = _sass_loops()
    loops = tool.innermost_loops(sass)
    assert [(first, last) for first, last, _ in loops] == [(2, 4)]
    assert tool.opcodes(loops[0][2]) == {"PRMT": 1, "ISETP.GE.AND": 1, "BRA": 1}
