"""The real thing: the pinned llama.cpp built with the patch series, checked end to end.

These tests run `python -m harness build` for this clone (a warm ccache makes it take
seconds; a cold one several minutes), then check the binary users run: ggml's own type
traits against the reference, and test-backend-ops on every turbo case.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_speed_model_and_its_truncation_load_in_llama_bench(
    built: build_mod.BuildResult, tmp_path: Path
) -> None:
    """A small random-weight model with SmolLM2's vocabulary decodes with a turbo cache, and
    a real model cut to fewer layers still loads: the two files issue 10 carries to a GPU."""
    paths = Paths.default()
    from harness import models, speed_model

    lock = models.load_lock(paths.repo / "models.toml")
    smollm2 = models.ensure_model(paths, lock.model("smollm2-135m"))
    tok = tmp_path / "tok.json.gz"
    assert speed_model.export_tokenizer(smollm2, tok) == 49152
    shape = speed_model.SpeedShape(head_dim=128, n_layer=2, n_embd=512, n_ff=512)
    random_model = tmp_path / "speed.gguf"
    speed_model.write_model(tok, random_model, shape)
    short = tmp_path / "short.gguf"
    speed_model.truncate_layers(smollm2, short, 3)
    for model, log_needle in ((random_model, r"n_head_kv\s+= 2\n"), (short, r"n_layer\s+= 3\n")):
        out = subprocess.run(
            [
                built.bin / "llama-bench",
                "-m",
                model,
                "-p",
                "0",
                "-n",
                "4",
                "-r",
                "1",
                "-t",
                "2",
                "-fa",
                "1",
                "-ctk",
                "turbo3",
                "-ctv",
                "turbo3",
                "-o",
                "csv",
                "-v",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert re.search(log_needle, out.stderr), out.stderr[-2000:]
        assert '"turbo3","turbo3"' in out.stdout


def test_the_suite_runs_at_the_context_length_asked_for(built: build_mod.BuildResult) -> None:
    """--ctx reaches llama-perplexity and the base-logit cache key, --text long runs on the
    whole pinned text (issue 12), and a text shorter than two windows is one clear error
    naming both numbers, exit 11."""
    import json

    run = [sys.executable, "-m", "harness", "perplexity", "--models", "smollm2-135m"]
    ok = subprocess.run(
        [*run, "--configs", "turbo3", "--text", "long", "--ctx", "1024", "--chunks", "1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    data = json.loads((Paths.default().repo / "reports/latest/report.json").read_text())
    assert data["settings"]["ctx"] == 1024
    # the whole GNU Coding Standards of [long_text], verified against its pin
    assert data["text"]["bytes"] == 212048
    model = data["models"][0]
    assert model["base"]["key"]["ctx"] == 1024
    assert {r["ctx"] for r in model["configs"]} == {1024}
    short = subprocess.run(
        [*run, "--configs", "turbo3", "--ctx", "8192", "--chunks", "1"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert short.returncode == 11, short.stderr[-3000:]
    assert "a context of 8192 tokens needs at least 16384 tokens of text" in short.stderr
    assert "Traceback" not in short.stderr
