"""Configure and build the patched llama.cpp with cmake + ninja (+ ccache when present).

The build directory records what configured it (upstream commit, patch-series digest,
the kernels' CMake files, options, compiler and tool versions) in ``tqh-configure.json``
and is wiped when any of it changes, instead of trusting a stale CMake cache. Kernel
*sources* are not part of that record: ninja tracks them, so editing one kernel file
rebuilds only what depends on it.

``build_kernels`` builds kernels/ alone, without llama.cpp, for the tests and parity.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from harness import proc
from harness.config import REPO_ROOT, Paths, environment
from harness.errors import BuildError, ConfigError
from harness.progress import NINJA_STEP, Progress

STAMP = "tqh-configure.json"

# What the later stages run: perplexity gates, benchmarks, backend tests, and the kernels
# library with the shared objects and programs the parity session loads.
TOOL_TARGETS = ("llama-perplexity", "llama-bench", "test-backend-ops")
# What the state session runs, built by that session alone: the server and its tools add
# about 4 minutes to a cold build on 2 cores, which the default run does not need.
STATE_TARGETS = ("test-save-load-state", "llama-server", "llama-completion")
KERNEL_TARGETS = (
    "turboquant",
    "turboquant_shared",
    "turboquant_metal_shim",
    "turboquant_cuda_shim",
    "tq_bench",
)
# With --backend cuda: the CUDA math as GPU kernels, for `parity --backend cuda`.
CUDA_KERNEL_TARGETS = ("turboquant_cuda_gpu",)


class Backend(Enum):
    """The ggml backend a build enables; its value names the build folder (build/cpu, ...)."""

    CPU = "cpu"
    METAL = "metal"
    CUDA = "cuda"


@dataclass(frozen=True)
class BuildOptions:
    """How to configure and what to build; everything but ``targets`` and ``jobs`` is part
    of the configuration record, so changing it resets the build folder."""

    backend: Backend = Backend.CPU
    build_type: str = "Release"
    native: bool = True
    cuda_architectures: str = "90"
    defines: tuple[str, ...] = ()
    targets: tuple[str, ...] = TOOL_TARGETS + KERNEL_TARGETS
    jobs: int | None = None

    def cmake_defines(self) -> list[str]:
        """The ``-DVAR=VALUE`` arguments of the cmake configure step, ``defines`` last."""
        d = [
            f"-DCMAKE_BUILD_TYPE={self.build_type}",
            f"-DGGML_NATIVE={'ON' if self.native else 'OFF'}",
            "-DLLAMA_BUILD_TESTS=ON",
            "-DLLAMA_BUILD_TOOLS=ON",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_APP=OFF",
            "-DLLAMA_OPENSSL=OFF",
            # Otherwise the build tries to download a prebuilt web UI.
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            f"-DGGML_METAL={'ON' if self.backend is Backend.METAL else 'OFF'}",
            f"-DGGML_CUDA={'ON' if self.backend is Backend.CUDA else 'OFF'}",
            # The kernels' shared library, Metal shim and benchmark, for the parity session.
            "-DTURBOQUANT_BUILD_TOOLS=ON",
        ]
        if self.backend is Backend.CUDA:
            d.append(f"-DCMAKE_CUDA_ARCHITECTURES={self.cuda_architectures}")
            d.append("-DTURBOQUANT_CUDA=ON")
        return d + [f"-D{x}" for x in self.defines]


@dataclass(frozen=True)
class BuildResult:
    """A finished build: its folder, the ninja steps it ran, whether the folder was reset."""

    directory: Path
    steps: int
    reset: bool
    record: dict[str, object] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        """The programs and shared libraries (llama-perplexity, libggml, ...)."""
        return self.directory / "bin"

    @property
    def kernels(self) -> Path:
        """The kernels' libraries and tools (libturboquant*, tq_bench)."""
        return self.directory / "turboquant"


def build_dir(paths: Paths, options: BuildOptions) -> Path:
    """The build folder of ``options``' backend under ``paths.build``."""
    return paths.build / options.backend.value


def _tree_digest(root: Path, patterns: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for pattern in patterns:
        for f in sorted(p for p in root.rglob(pattern) if p.is_file()):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        return "absent"
    # The version, not the path: each nox session has its own venv copy of cmake and ninja,
    # and the same tool at another path must not reset the build directory.
    out = proc.run([path, "--version"], check=False, quiet=True).output.strip()
    return out.splitlines()[0] if out else "?"


def _compilers() -> dict[str, str]:
    cc = os.environ.get("CC") or ("clang" if sys.platform == "darwin" else "cc")
    cxx = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "c++")
    return {"cc": _version(cc), "cxx": _version(cxx)}


def configuration_record(
    paths: Paths,
    upstream_commit: str,
    series_digest: str,
    options: BuildOptions,
    source: Path | None = None,
    kernels: bool = True,
) -> dict[str, object]:
    """Everything that, when changed, makes the build directory untrustworthy. ``source``
    is the llama.cpp tree (default: the patched checkout); ``kernels`` whether kernels/ is
    built into it (not for a peer's tree)."""
    opts = asdict(options)
    opts["backend"] = options.backend.value
    del opts["targets"], opts["jobs"]  # what to build, not how it is configured
    record = {
        "upstream": upstream_commit,
        "series": series_digest,
        "source": str(source or paths.checkout),
        "kernels_dir": str(paths.kernels) if kernels else None,
        "kernels_cmake": (
            _tree_digest(paths.kernels, ("CMakeLists.txt", "*.cmake")) if kernels else None
        ),
        "options": opts,
        "platform": platform.platform(),
        "tools": {
            **_compilers(),
            "cmake": _version("cmake"),
            "ninja": _version("ninja"),
            "ccache": _version("ccache"),
        },
    }
    return json.loads(json.dumps(record))  # the form it has when read back from the stamp


def kernels_digest(paths: Paths) -> str:
    """Digest of every kernel file: for reports, which state of kernels/ a result came from."""
    return _tree_digest(paths.kernels, ("*",))


def _ccache(paths: Paths) -> tuple[list[str], dict[str, str]]:
    if shutil.which("ccache") is None:
        return [], {}
    defines = [
        "-DCMAKE_C_COMPILER_LAUNCHER=ccache",
        "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
        "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache",
        "-DGGML_CCACHE=OFF",
    ]
    # BASEDIR makes paths inside the repository relative, so another clone of the project
    # (CI's fresh one) hits the same cache entries.
    env = {
        "CCACHE_DIR": str(paths.ccache),
        "CCACHE_BASEDIR": str(paths.repo),
        "CCACHE_NOHASHDIR": "true",
        "CCACHE_MAXSIZE": environment().ccache_maxsize,
    }
    return defines, env


def build(
    paths: Paths,
    upstream_commit: str,
    series_digest: str,
    options: BuildOptions,
    *,
    source: Path | None = None,
    directory: Path | None = None,
) -> BuildResult:
    """Configure (if needed) and build ``options.targets``; return where they are. By
    default the patched checkout with kernels/ in build/BACKEND; a peer passes its own
    ``source`` tree (built without kernels/) and ``directory``. Raises ConfigError when
    the source holds no llama.cpp tree and BuildError when cmake or the build fails."""
    tree = source or paths.checkout
    kernels = source is None
    if not (tree / "CMakeLists.txt").is_file():
        raise ConfigError(f"{tree} holds no llama.cpp tree; apply the series first")
    directory = directory or build_dir(paths, options)
    record = configuration_record(paths, upstream_commit, series_digest, options, tree, kernels)
    stamp = directory / STAMP
    try:
        previous = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    reset = previous != record and directory.exists()
    if reset:
        changed = sorted(k for k in record if previous is None or previous.get(k) != record[k])
        print(
            f"{directory}: configuration changed ({', '.join(changed)}); starting afresh",
            file=sys.stderr,
        )
        shutil.rmtree(directory)
    log = paths.logs / f"build-{options.backend.value}.log"
    launcher_defines, env = _ccache(paths)
    if not (directory / "build.ninja").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        proc.run(
            [
                "cmake",
                "-G",
                "Ninja",
                "-S",
                tree,
                "-B",
                directory,
                *([f"-DGGML_TURBOQUANT_DIR={paths.kernels}"] if kernels else []),
                *options.cmake_defines(),
                *launcher_defines,
            ],
            log=log,
            env=env,
            error=BuildError,
            what="cmake configure",
        )
        stamp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    progress = Progress(f"building {options.backend.value}")
    jobs = ["-j", str(options.jobs)] if options.jobs else []
    out = proc.run(
        ["cmake", "--build", directory, "--target", *options.targets, *jobs],
        log=log,
        env=env,
        on_line=progress.ninja,
        error=BuildError,
        what="build",
    )
    steps = sum(1 for line in out.output.splitlines() if NINJA_STEP.match(line))
    progress.done(f"{steps} step(s)" if steps else "up to date, nothing rebuilt")
    return BuildResult(directory, steps, reset, record)


KERNELS = REPO_ROOT / "kernels"
SANITIZE_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"


def build_kernels(build_dir: Path, *, sanitize: bool = False, defines: Sequence[str] = ()) -> Path:
    """Configure and build kernels/ alone in ``build_dir`` (libturboquant, the Metal and
    CUDA shims, tq_selftest, tq_bench), for the tests and parity runs without llama.cpp (the
    llama.cpp build compiles the same CMake project through add_subdirectory); return the
    directory of the built libraries and programs. ``sanitize`` builds everything with ASan
    and UBSan; ``defines`` are more ``-DNAME=VALUE`` options (a cross compiler, for
    instance). ccache as for llama.cpp (the shared cache). Raises BuildError."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    flags = SANITIZE_FLAGS if sanitize else ""
    launcher_defines, env = _ccache(Paths.default())
    options = [
        f"-DCMAKE_BUILD_TYPE={'RelWithDebInfo' if sanitize else 'Release'}",
        f"-DCMAKE_C_FLAGS={flags}",
        f"-DCMAKE_CXX_FLAGS={flags}",
        f"-DCMAKE_EXE_LINKER_FLAGS={flags}",
        f"-DCMAKE_SHARED_LINKER_FLAGS={flags}",
        *launcher_defines,
    ]
    log = build_dir / "kernels-build.log"
    proc.run(
        ["cmake", "-G", "Ninja", "-S", KERNELS, "-B", build_dir, *options, *defines],
        log=log,
        env=env,
        error=BuildError,
        what="configure kernels",
    )
    proc.run(
        ["cmake", "--build", build_dir], log=log, env=env, error=BuildError, what="build kernels"
    )
    return build_dir
