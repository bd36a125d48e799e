"""The NEON path, cross-compiled for arm64 and run under qemu-user against a parity subset.

Needs Debian's gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu and qemu-user; without the
cross compiler the test is skipped (macOS CI runs the NEON path natively through parity).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import parity, proc
from harness.build import build_kernels

CROSS = {
    "CMAKE_SYSTEM_NAME": "Linux",
    "CMAKE_SYSTEM_PROCESSOR": "aarch64",
    "CMAKE_C_COMPILER": "aarch64-linux-gnu-gcc",
    "CMAKE_CXX_COMPILER": "aarch64-linux-gnu-g++",
}
SYSROOT = Path("/usr/aarch64-linux-gnu")
ROWS_PER_CASE = 1024


@pytest.fixture(scope="module")
def arm64_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [
        c for c in (CROSS["CMAKE_C_COMPILER"], CROSS["CMAKE_CXX_COMPILER"]) if not shutil.which(c)
    ]
    if missing:
        pytest.skip(f"no arm64 cross compiler ({', '.join(missing)})")
    defines = [f"-D{k}={v}" for k, v in CROSS.items()]
    return build_kernels(tmp_path_factory.mktemp("kernels-arm64"), defines=defines)


def test_neon_path_compiles(arm64_build: Path) -> None:
    nm = shutil.which("aarch64-linux-gnu-nm")
    assert (arm64_build / "libturboquant.a").is_file()
    if nm is not None:
        symbols = proc.run([nm, arm64_build / "libturboquant.a"], quiet=True).output
        assert "tq_quantize_blocks_neon" in symbols


def test_neon_path_matches_the_reference_under_qemu(arm64_build: Path, tmp_path: Path) -> None:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-aarch64 (Debian's qemu-user) is not installed")
    cases = []
    for spec in parity.generate_cases(vectors=4 * ROWS_PER_CASE):
        case = spec.make()
        cases.append(
            parity.Case(case.name, case.op, case.block, case.fmt, case.data[:ROWS_PER_CASE])
        )
    case_file = tmp_path / "cases.bin"
    parity.write_selftest_cases(case_file, cases)
    result = proc.run(
        [qemu, "-L", SYSROOT, arm64_build / "tq_selftest", case_file, "2000", "5"],
        what="run the arm64 tq_selftest under qemu",
        check=False,
        quiet=True,
    )
    assert result.returncode == 0, result.output
    assert "simd path neon, 0 mismatches" in result.output
