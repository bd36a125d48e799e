"""The Metal header stays inside the Metal Shading Language subset.

The shim compiles the header as C++17, which accepts things Metal rejects. These checks
cover what C++ would let through: a pointer or reference without an address space, double,
library calls, and numbers that belong in the generated tables."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from harness import proc
from harness.config import REPO_ROOT

METAL = REPO_ROOT / "kernels" / "metal"
CODE = [METAL / "turboquant_metal.h", METAL / "turboquant_metal_ggml.h"]
HEADERS = [*CODE, METAL / "turboquant_metal_tables.h"]
ADDRESS_SPACES = ("device", "constant", "thread", "threadgroup")


def _code(path: Path) -> str:
    """The header as the Metal compiler sees it: preprocessed with __METAL_VERSION__ set and
    no system headers (comments go, the headers it includes are inlined)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C preprocessor")
    out = proc.run(
        [
            cc,
            "-E",
            "-P",
            "-undef",
            "-nostdinc",
            "-D__METAL_VERSION__=300",
            "-I",
            METAL,
            "-x",
            "c",
            path,
        ],
        quiet=True,
    )
    return out.output


def _signatures(code: str) -> list[tuple[str, str]]:
    """(function name, parameter list) of every inline or template function."""
    return re.findall(r"(?:inline|template\s*<[^>]*>)\s+[\w\s*]+?\b(\w+)\s*\(([^)]*)\)\s*\{", code)


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.name)
def test_no_constructs_metal_rejects(path: Path) -> None:
    code = _code(path)
    for banned in (
        r"\bdouble\b",
        r"\blong\s+long\b",
        r"std::",
        r"\bgoto\b",
        r"\bnew\b",
        r"\bmalloc\b",
        r"\bprintf\b",
        r"\bmemcpy\b",
        r"\bstatic\b",
    ):
        assert not re.search(banned, code), f"{path.name}: {banned}"
    # Preprocessing with -nostdinc already failed on any system include Metal would see.


def test_every_pointer_and_reference_parameter_has_an_address_space() -> None:
    signatures = _signatures(_code(METAL / "turboquant_metal_ggml.h"))
    names = {name for name, _ in signatures}
    assert {"quantize_turbo", "dequantize_turbo", "dequantize_turbo_t4"} <= names
    assert {"tq_quantize_block", "tq_dequantize_4", "tq_metal_level", "tq_metal_mid"} <= names
    for name, params in signatures:
        # Commas inside template arguments (block_tq<B, N>) do not split parameters.
        for param in filter(None, (p.strip() for p in re.split(r",(?![^<]*>)", params))):
            if "*" in param or "&" in param:
                assert param.split()[0] in ADDRESS_SPACES, f"{name}: {param}"


@pytest.mark.parametrize("path", CODE, ids=lambda p: p.name)
def test_no_table_numbers_in_the_metal_code(path: Path) -> None:
    """Levels and midpoints live only in the generated turboquant_metal_tables.h."""
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    code = re.sub(r"0[xX][0-9a-fA-F]+", "", text)
    assert not re.search(r"\d\.\d|\d[eE][+-]?\d", code)


def test_shim_defines_address_spaces_as_nothing() -> None:
    shim = (METAL / "shim" / "metal_shim.h").read_text()
    for space in ADDRESS_SPACES:
        assert re.search(rf"#define {space}\s*$", shim, flags=re.M)
