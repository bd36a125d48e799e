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
from harness.config import Paths
from harness.parity import ggml as ggml_parity

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


@pytest.mark.parametrize(
    "op",
    [
        "SET_ROWS",
        "HADAMARD_SET_ROWS",
        "GET_ROWS",
        "CPY",
        "FLASH_ATTN_EXT",
        "FLASH_ATTN_EXT_HADAMARD",
        "ROPE_HADAMARD",
    ],
)
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


def test_the_long_suite_runs_two_lengths_with_the_real_llama_perplexity(
    built: build_mod.BuildResult,
) -> None:
    """--suite long at a tiny long context (1024, one window; 512 with the two windows that
    cover the same tokens) on SmolLM2 and the long text: both lengths measured against their
    own f16 base, the growth of turbo3 and q4_0 reported and gated, the plot written."""
    import json

    run = [sys.executable, "-m", "harness", "perplexity", "--suite", "long"]
    run += ["--models", "smollm2-135m", "--configs", "turbo3", "--ctx", "1024", "--chunks", "1"]
    out = subprocess.run(run, capture_output=True, text=True, timeout=900)
    # one window each is too few to promise the growth gate's verdict: it may fail (exit
    # 21), nothing else may
    assert out.returncode in (0, 21), out.stderr[-3000:]
    latest = Paths.default().repo / "reports/latest"
    data = json.loads((latest / "report.json").read_text())
    failed = [g for m in [*data["models"], *data["depth"]] for g in m["gates"] if not g["passed"]]
    assert all(g["check"].startswith("growth(") for g in failed), failed
    assert (out.returncode == 21) == bool(failed)
    assert data["suite"] == "long" and data["text"]["bytes"] == 212048
    assert data["settings"]["contexts"] == {"smollm2-135m": {"512": 2, "1024": 1}}
    assert [(m["ctx"], m["scored_positions"]) for m in data["models"]] == [(512, 512), (1024, 512)]
    for m in data["models"]:
        assert m["base"]["key"]["ctx"] == m["ctx"]
        assert {r["ctx"] for r in m["configs"]} == {m["ctx"]}
    (depth,) = data["depth"]
    rows = {r["config"]: r for r in depth["configs"]}
    assert set(rows) == {"f16", "q4_0", "turbo3"}
    for c in ("q4_0", "turbo3"):
        k512, k1024 = rows[c]["kld"]["512"]["value"], rows[c]["kld"]["1024"]["value"]
        assert k512 > 0 and k1024 > 0
        # the window of 1024 scores tokens 512-1023: the second window of 512 scores 768-1023
        (w1024,), (_, w512) = rows[c]["kld_windows"]["1024"], rows[c]["kld_windows"]["512"]
        assert w1024 == pytest.approx(k1024, abs=1e-5)
        assert rows[c]["growth"]["value"] == pytest.approx(w1024 / w512)
    (gate,) = depth["gates"]
    assert gate["check"].startswith("growth(turbo3) <= ") and " <= " in gate["detail"]
    assert (latest / "kld-vs-ctx.png").read_bytes().startswith(b"\x89PNG")
    assert "## smollm2-135m: KLD against context length" in (latest / "report.md").read_text()


def _harness(args: list[str], cache: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` with its own harness cache (a user's files need nothing
    fetched, so what the run leaves in the cache is all there)."""
    import os

    env = {**os.environ, "TQH_CACHE_DIR": str(cache)}
    env.pop("LLAMA_TURBO_BLOCK64", None)
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _smollm2() -> Path:
    from harness import models

    paths = Paths.default()
    lock = models.load_lock(paths.repo / "models.toml")
    return models.ensure_model(paths, lock.model("smollm2-135m"))


def _own_text(path: Path) -> Path:
    """Real prose the test writes itself: this project's README (about 5,000 SmolLM2
    tokens), so a context of 128 has windows to spare."""
    path.write_text((Paths.default().repo / "README.md").read_text(encoding="utf-8"))
    return path


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("hint: ") and "Traceback" not in stderr, stderr[-3000:]
    return lines[-2]


def test_a_model_and_text_given_by_path_run_the_suite(
    built: build_mod.BuildResult, tmp_path: Path
) -> None:
    """Issue 12: the real llama-perplexity on a GGUF and a text given by path; the report
    records the files and the model as llama.cpp logged it; the base logits are keyed by
    the files' bytes. 3 suites of 4 runs at c=128 x 2 chunks: about 20 s on 2 cores."""
    import hashlib
    import json

    model, text, cache = _smollm2(), _own_text(tmp_path / "mine.txt"), tmp_path / "cache"
    args = ["perplexity", "--model-file", str(model), "--text", str(text), "--configs", "turbo3"]
    args += ["--ctx", "128", "--chunks", "2"]
    first = _harness(args, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    data = json.loads((Paths.default().repo / "reports/latest/report.json").read_text())
    (m,) = data["models"]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert m["user_file"] == {"path": str(model), "sha256": sha, "bytes": model.stat().st_size}
    assert data["text"]["sha256"] == hashlib.sha256(text.read_bytes()).hexdigest()
    logged = m["llama_cpp"]
    assert (logged["architecture"], logged["layers"], logged["n_head"], logged["n_head_kv"]) == (
        "llama",
        30,
        [9],
        [3],
    )
    assert (logged["head_dim_k"], logged["head_dim_v"], logged["n_gqa"]) == (64, 64, [3])
    assert m["base"]["key"]["model_sha256"] == sha and m["base"]["key"]["ctx"] == 128
    rows = {r["config"]: r for r in m["configs"]}
    assert rows["turbo3"]["kv"]["k_type"] == "turbo3_64" and rows["turbo3"]["kld"]["value"] > 0
    assert [g["passed"] for g in m["gates"]] == [True]  # the per-bit turbo3 gate

    again = _harness(args, cache)
    assert again.returncode == 0 and "reusing the f16 base logits" in again.stderr
    with text.open("a", encoding="utf-8") as fh:
        fh.write("\nOne more paragraph, and the text is another text.\n")
    edited = _harness(args, cache)
    assert edited.returncode == 0 and "reusing the f16 base logits" not in edited.stderr
    assert len(list((cache / "kld-base").iterdir())) == 2


def test_bad_user_files_end_in_one_line_and_leave_nothing_cached(
    built: build_mod.BuildResult, tmp_path: Path
) -> None:
    """A truncated GGUF (exit 22), a text that is not UTF-8 (exit 22) and a text too short
    for the context (exit 11), each one line and no traceback, with the real llama-perplexity
    (about 3 s)."""
    model, cache = _smollm2(), tmp_path / "cache"
    text = _own_text(tmp_path / "mine.txt")
    truncated = tmp_path / "truncated.gguf"
    with model.open("rb") as fh:
        truncated.write_bytes(fh.read(20_000_000))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Ein Text über Straßen.\n".encode("latin-1") * 100)
    short = tmp_path / "short.txt"
    short.write_text("Too short for two windows of 128 tokens.\n")
    run = ["perplexity", "--configs", "turbo3", "--ctx", "128", "--chunks", "2"]

    out = _harness([*run, "--model-file", str(truncated), "--text", str(text)], cache)
    assert out.returncode == 22
    assert re.fullmatch(
        f"error: llama.cpp cannot load {re.escape(str(truncated))}: tensor '[^']+' data is not "
        "within the file bounds, model is corrupted or incomplete",
        _error_line(out.stderr),
    )
    out = _harness([*run, "--model-file", str(model), "--text", str(latin1)], cache)
    assert out.returncode == 22
    assert _error_line(out.stderr) == (
        f"error: --text {latin1} is not UTF-8 text: byte 0xfc at offset 9 is not UTF-8 "
        "(invalid start byte)"
    )
    out = _harness([*run, "--model-file", str(model), "--text", str(short)], cache)
    assert out.returncode == 11
    assert _error_line(out.stderr).startswith(
        "error: a context of 128 tokens needs at least 256 tokens of text; the text holds "
    )
    assert list((cache / "kld-base").iterdir()) == []  # no base logits, no .tmp


def test_a_head_size_the_turbo_types_cannot_take_is_named(
    built: build_mod.BuildResult, tmp_path: Path
) -> None:
    """A GGUF the test writes with heads of 96 values (random weights, SmolLM2's
    vocabulary): llama.cpp refuses turbo3 on it; the suite measures q4_0, says which
    configuration was refused and why, and exits 11 (about 10 s)."""
    import json

    from harness import speed_model

    tok = tmp_path / "tok.json.gz"
    speed_model.export_tokenizer(_smollm2(), tok)
    shape = speed_model.SpeedShape(head_dim=64, n_layer=2, n_embd=192, n_ff=256, gqa=1)
    object.__setattr__(shape, "head_dim", 96)  # a head size the speed shapes do not allow
    model = tmp_path / "heads96.gguf"
    speed_model.write_model(tok, model, shape)
    text = _own_text(tmp_path / "mine.txt")

    # llama.cpp itself refuses it: what the harness predicts is what llama.cpp does
    direct = subprocess.run(
        [built.bin / "llama-perplexity", "-m", model, "-f", text, "-c", "128", "--chunks", "1"]
        + ["-fa", "on", "-ctk", "turbo3", "-ctv", "turbo3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert direct.returncode == 1
    assert "K cache type turbo3 with block size 128 does not divide n_embd_head_k=96" in (
        direct.stdout + direct.stderr
    )

    run = ["perplexity", "--model-file", str(model), "--text", str(text), "--ctx", "128"]
    out = _harness([*run, "--chunks", "2", "--configs", "q4_0,turbo3"], tmp_path / "cache")
    assert out.returncode == 11, out.stderr[-3000:]
    line = _error_line(out.stderr)
    assert line.startswith(
        "error: heads96: head size 96 (K) / 96 (V) cannot take turbo3: turbo types need heads "
        "that are a multiple of 64 values (the block-64 variants) or 128, q8_0 and q4_0 of 32; "
        "measured instead: f16, q4_0 (report: "
    ), line
    assert "heads96 turbo3: not run, llama.cpp would refuse it: K and V heads of 96" in out.stderr
    data = json.loads((Paths.default().repo / "reports/latest/report.json").read_text())
    (m,) = data["models"]
    assert (m["llama_cpp"]["head_dim_k"], m["llama_cpp"]["n_gqa"]) == (96, [1])
    rows = {r["config"]: r for r in m["configs"]}
    assert rows["q4_0"]["kld"]["value"] >= 0 and "refused" in rows["turbo3"]


def test_a_peer_runs_beside_ours_with_its_own_environment(built: build_mod.BuildResult) -> None:
    """perplexity --peer with the real llama-perplexity: our own build stands in for a peer
    whose switch (LLAMA_ATTN_ROT_DISABLE=1: upstream's attention rotation of quantized caches
    off) must reach its runs: its q4_0 loses the rotation and its KLD rises several times over
    ours, against its own f16 base (cached apart from ours); a type it lacks is "not
    supported" and the command still passes."""
    import json

    from harness import suite
    from harness.peers import Peer

    peer = Peer(
        "rotless",
        "this build with the attention rotation off",
        "https://example.invalid/rotless",
        "0" * 40,
        env=(("LLAMA_ATTN_ROT_DISABLE", "1"),),
    )
    options = suite.SuiteOptions(
        models=("smollm2-135m",),
        configs=("q4_0", "turbo5"),
        chunks=2,
        peer=peer,
        peer_binary=built.bin / "llama-perplexity",
    )
    directory = suite.run(Paths.default(), options)
    (model,) = json.loads((directory / "report.json").read_text())["models"]
    ours = {r["config"]: r for r in model["configs"]}
    theirs = {r["config"]: r for r in model["peer"]["configs"]}
    assert theirs["q4_0"]["kld"]["value"] > 2 * ours["q4_0"]["kld"]["value"]
    assert theirs["turbo5"]["error"] == "refused: rotless has no such type"
    assert model["peer"]["base"]["key"]["digest"] != model["base"]["key"]["digest"]
    md = (directory / "report.md").read_text()
    assert "### Beside it: peer rotless" in md
    assert "| turbo5 | – | 5.125 | not supported: rotless has no such type |" in md
