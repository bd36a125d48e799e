"""The real thing: the pinned llama.cpp built with the patch series, checked end to end.

These tests run `python -m harness build` for this clone (a warm ccache makes it take
seconds; a cold one several minutes), then check the binary users run: ggml's own type
traits against the reference, and test-backend-ops on every turbo case.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness import build as build_mod
from harness import ggml_parity
from harness.config import Paths

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built() -> build_mod.BuildResult:
    subprocess.run([sys.executable, "-m", "harness", "build"], check=True)
    paths = Paths.default()
    return build_mod.BuildResult(build_mod.build_dir(paths, build_mod.BuildOptions()), 0, False)


def test_second_build_rebuilds_nothing(built: build_mod.BuildResult) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness", "build"], check=True, capture_output=True, text=True
    )
    assert "up to date, nothing rebuilt" in out.stderr


def test_built_ggml_matches_the_reference(built: build_mod.BuildResult) -> None:
    paths = Paths.default()
    cases = ggml_parity.run_ggml_parity(
        built.bin, paths.checkout / "ggml/include/ggml.h", vectors=2000
    )
    assert {c.name.split("/")[0] for c in cases} == set(ggml_parity.ref.FORMATS)
    assert all(c.ok for c in cases)


@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY", "FLASH_ATTN_EXT"])
def test_backend_ops_turbo_cases_pass_on_cpu(built: build_mod.BuildResult, op: str) -> None:
    out = subprocess.run(
        [built.bin / "test-backend-ops", "-b", "CPU", "-o", op, "-p", "turbo"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    m = re.search(r"(\d+)/(\d+) tests passed", out.stdout)
    assert m, out.stdout[-2000:]
    assert m.group(1) == m.group(2) and int(m.group(2)) >= 16


def test_unsupported_combination_is_a_clear_error(built: build_mod.BuildResult) -> None:
    """turbo V without flash attention: upstream's message, exit code 1, no crash."""
    paths = Paths.default()
    from harness import models

    lock = models.load_lock(paths.repo / "models.toml")
    model = models.ensure_model(paths, lock.model("smollm2-135m"))
    out = subprocess.run(
        [
            built.bin / "llama-perplexity",
            "-m",
            model,
            "-f",
            paths.repo / "README.md",
            "-ctk",
            "turbo3",
            "-ctv",
            "turbo3",
            "-fa",
            "off",
            "-c",
            "128",
            "--chunks",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1
    assert "quantized V cache requires flash_attn" in out.stdout + out.stderr
