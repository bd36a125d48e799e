"""Standalone build of kernels/ (libturboquant, the Metal shim, tq_selftest, tq_bench).

The llama.cpp build compiles the same CMake project through add_subdirectory; this one
serves the tests (including the sanitizer build) and parity runs without llama.cpp.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from harness import proc
from harness.config import REPO_ROOT
from harness.errors import BuildError

KERNELS = REPO_ROOT / "kernels"
SANITIZE_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"


def build_kernels(build_dir: Path, *, sanitize: bool = False, defines: Sequence[str] = ()) -> Path:
    """Configure and build kernels/ in ``build_dir``; return the directory of the built
    libraries and programs. ``sanitize`` builds everything with ASan and UBSan; ``defines``
    are more ``-DNAME=VALUE`` options (a cross compiler, for instance)."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    flags = SANITIZE_FLAGS if sanitize else ""
    options = [
        f"-DCMAKE_BUILD_TYPE={'RelWithDebInfo' if sanitize else 'Release'}",
        f"-DCMAKE_C_FLAGS={flags}",
        f"-DCMAKE_CXX_FLAGS={flags}",
        f"-DCMAKE_EXE_LINKER_FLAGS={flags}",
        f"-DCMAKE_SHARED_LINKER_FLAGS={flags}",
    ]
    if shutil.which("ccache") is not None:
        options += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    log = build_dir / "kernels-build.log"
    proc.run(
        ["cmake", "-G", "Ninja", "-S", KERNELS, "-B", build_dir, *options, *defines],
        log=log,
        error=BuildError,
        what="configure kernels",
    )
    proc.run(["cmake", "--build", build_dir], log=log, error=BuildError, what="build kernels")
    return build_dir
