"""The kernels under ASan + UBSan: a parity subset replayed by tq_selftest, plus decodes of
random bytes at random lengths into buffers of exactly the size the API may touch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness import parity, proc
from harness.build import build_kernels

# Rows per case: enough to reach every adversarial value, small enough for an instrumented
# build to replay every format in seconds.
ROWS_PER_CASE = 512
# LeakSanitizer runs on Linux only; asking for it elsewhere is an error.
LEAKS = "1" if sys.platform.startswith("linux") else "0"
SANITIZER_ENV = {
    "ASAN_OPTIONS": f"halt_on_error=1:detect_leaks={LEAKS}:strict_string_checks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


@pytest.fixture(scope="module")
def sanitized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_kernels(tmp_path_factory.mktemp("kernels-asan"), sanitize=True)


def _subset() -> list[parity.Case]:
    cases = []
    for spec in parity.generate_cases(vectors=4 * ROWS_PER_CASE):
        case = spec.make()
        cases.append(
            parity.Case(case.name, case.op, case.block, case.fmt, case.data[:ROWS_PER_CASE])
        )
    return cases


@pytest.fixture(scope="module")
def case_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("selftest") / "cases.bin"
    assert parity.write_selftest_cases(path, _subset()) > 0
    return path


def _selftest(sanitized: Path, case_file: Path, *extra: str) -> proc.Completed:
    return proc.run(
        [sanitized / "tq_selftest", case_file, *extra],
        env=SANITIZER_ENV,
        what="run tq_selftest",
        check=False,
        quiet=True,
    )


def test_selftest_is_clean_under_asan_and_ubsan(sanitized: Path, case_file: Path) -> None:
    for binary in (
        sanitized / "tq_selftest",
        parity.library_file(sanitized, "turboquant_metal_shim"),
    ):
        image = binary.read_bytes()
        assert b"__asan_report" in image and b"__ubsan_handle" in image, binary.name
    result = _selftest(sanitized, case_file, "3000", "11")
    assert result.returncode == 0, result.output
    assert ", 0 mismatches" in result.output
    assert "ERROR: AddressSanitizer" not in result.output
    assert "runtime error" not in result.output


def test_selftest_catches_a_wrong_expectation(sanitized: Path, tmp_path: Path) -> None:
    """The C driver can fail: one flipped index bit in the expected blocks is reported."""
    case = parity.random_case(3, 64, "gaussian", seed=0, m=16)
    path = tmp_path / "broken.bin"
    parity.write_selftest_cases(path, [case])
    data = bytearray(path.read_bytes())
    blocks_at = 12 + 3 * 4 + 8 + 4 + len(case.name) + case.data.nbytes
    data[blocks_at + 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = _selftest(sanitized, path, "0")
    assert result.returncode == 1
    assert f"MISMATCH {case.name}: encode scalar" in result.output


def test_selftest_refuses_a_truncated_file(
    sanitized: Path, case_file: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(case_file.read_bytes()[:1000])
    assert _selftest(sanitized, truncated, "0").returncode == 2
