"""kernels/ used the way llama.cpp's ggml uses it: add_subdirectory, the static library
linked into a shared one (so it must be position independent), no tools unless asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import proc
from harness.build import KERNELS

PARENT = """\
cmake_minimum_required(VERSION 3.16)
project(parent C)
add_subdirectory({kernels} turboquant)
add_library(fakeggml SHARED fakeggml.c)
target_link_libraries(fakeggml PRIVATE turboquant)
add_executable(use use.c)
target_link_libraries(use PRIVATE fakeggml)
"""

FAKE_GGML = """\
#include "turboquant.h"
size_t fake_row_size(void) { return tq_block_bytes(3, 128); }
int fake_roundtrip(void)
{
    float y[128], back[128];
    unsigned char blk[50];
    for (int i = 0; i < 128; i++) y[i] = (float)(i % 7) - 3.0f;
    if (tq_quantize_row(3, 128, y, blk, 128) != 0) return 1;
    if (tq_dequantize_row(3, 128, blk, back, 128) != 0) return 2;
    return back[0] < 0.0f ? 0 : 3;
}
"""

USE = """\
#include <stdio.h>
#include <stddef.h>
size_t fake_row_size(void);
int fake_roundtrip(void);
int main(void) { printf("%zu %d\\n", fake_row_size(), fake_roundtrip()); return 0; }
"""


def test_add_subdirectory_into_a_shared_library(tmp_path: Path) -> None:
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        pytest.skip("cmake and ninja are needed")
    src, build = tmp_path / "src", tmp_path / "build"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(PARENT.format(kernels=KERNELS.as_posix()))
    (src / "fakeggml.c").write_text(FAKE_GGML)
    (src / "use.c").write_text(USE)
    proc.run(["cmake", "-G", "Ninja", "-S", src, "-B", build], quiet=True)
    proc.run(["cmake", "--build", build], quiet=True)
    assert proc.run([build / "use"], quiet=True).output.split() == ["50", "0"]
    # Only the static library is built under a parent project.
    assert not list((build / "turboquant").glob("libturboquant.so*"))
    assert not (build / "turboquant" / "tq_bench").exists()
