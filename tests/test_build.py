"""The build step with real cmake and ninja, on a small CMake project standing in for llama.cpp."""

from __future__ import annotations

import json
import os

import pytest
from conftest import Sandbox

from harness import build as b
from harness.errors import BuildError

CMAKE = """cmake_minimum_required(VERSION 3.16)
project(stand_in C)
add_executable(hello src/main.c src/a.c)
add_executable(bee src/b.c)
"""


@pytest.fixture
def project(sandbox: Sandbox) -> Sandbox:
    src = sandbox.paths.checkout / "src"
    src.mkdir(parents=True)
    (sandbox.paths.checkout / "CMakeLists.txt").write_text(CMAKE)
    (src / "main.c").write_text("int a(void);\nint main(void) { return a() - 1; }\n")
    (src / "a.c").write_text("int a(void) { return 1; }\n")
    (src / "b.c").write_text("int main(void) { return 0; }\n")
    (sandbox.paths.kernels / "CMakeLists.txt").write_text("# kernels stand-in\n")
    return sandbox


OPTS = b.BuildOptions(targets=("hello", "bee"))


def _build(sb: Sandbox, options: b.BuildOptions = OPTS, series: str = "s1") -> b.BuildResult:
    return b.build(sb.paths, sb.pin.commit, series, options)


def test_build_then_nothing_to_rebuild(project: Sandbox) -> None:
    first = _build(project)
    assert first.steps >= 4 and not first.reset
    assert (first.bin / "hello").is_file() or (first.directory / "hello").is_file()
    record = json.loads((first.directory / b.STAMP).read_text())
    assert record["upstream"] == project.pin.commit
    assert record["series"] == "s1"
    assert set(record["tools"]) == {"cc", "cxx", "cmake", "ninja", "ccache"}
    second = _build(project)
    assert second.steps == 0 and not second.reset


def test_touching_one_source_rebuilds_only_its_users(project: Sandbox) -> None:
    _build(project)
    b_c = project.paths.checkout / "src/b.c"
    os.utime(b_c)
    result = _build(project)
    assert result.steps == 2  # compile b.c, link bee; hello untouched
    assert not result.reset


@pytest.mark.parametrize(
    "change",
    ["option", "series", "upstream", "kernels_cmake"],
)
def test_changed_configuration_resets_the_build_directory(project: Sandbox, change: str) -> None:
    first = _build(project)
    sentinel = first.directory / "sentinel"
    sentinel.write_text("from the previous configuration")
    options, series, pin = OPTS, "s1", project.pin.commit
    if change == "option":
        options = b.BuildOptions(targets=OPTS.targets, defines=("TQ_EXTRA=ON",))
    elif change == "series":
        series = "s2"
    elif change == "upstream":
        pin = "f" * 40
    else:
        (project.paths.kernels / "CMakeLists.txt").write_text("# kernels stand-in, edited\n")
    result = b.build(project.paths, pin, series, options)
    assert result.reset
    assert not sentinel.exists()
    assert result.steps >= 4


def test_targets_and_jobs_are_not_configuration(project: Sandbox) -> None:
    _build(project)
    result = _build(project, b.BuildOptions(targets=("bee",), jobs=1))
    assert not result.reset and result.steps == 0


def test_compile_error_raises_build_error_with_the_tail(project: Sandbox) -> None:
    _build(project)
    (project.paths.checkout / "src/a.c").write_text("int a(void) { return nope; }\n")
    with pytest.raises(BuildError) as info:
        _build(project)
    assert info.value.exit_code == 19
    assert "nope" in str(info.value)
    assert "full log:" in str(info.value)


def test_missing_source_tree_is_a_config_error(sandbox: Sandbox) -> None:
    from harness.errors import ConfigError

    with pytest.raises(ConfigError):
        b.build(sandbox.paths, sandbox.pin.commit, "s", OPTS)


def test_cmake_defines_follow_the_backend() -> None:
    cuda = b.BuildOptions(backend=b.Backend.CUDA, cuda_architectures="90").cmake_defines()
    assert "-DGGML_CUDA=ON" in cuda and "-DCMAKE_CUDA_ARCHITECTURES=90" in cuda
    metal = b.BuildOptions(backend=b.Backend.METAL).cmake_defines()
    assert "-DGGML_METAL=ON" in metal and "-DGGML_CUDA=OFF" in metal
    cpu = b.BuildOptions().cmake_defines()
    assert "-DGGML_METAL=OFF" in cpu and "-DLLAMA_USE_PREBUILT_UI=OFF" in cpu


def test_kernels_digest_changes_with_any_kernel_file(project: Sandbox) -> None:
    before = b.kernels_digest(project.paths)
    (project.paths.kernels / "x.c").write_text("int x;\n")
    assert b.kernels_digest(project.paths) != before
