"""The benchmark's reading of llama-bench, on a real run and on recorded log lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import bench
from harness.perplexity import ParseError

# Lines of a real `llama-bench -v -d 0,4096` log (SmolLM2, f16; one context per test).
CONTEXT = bench.CONTEXT_START + "\nllama_context: n_ctx                 = {cells}\n"
KV = (
    "llama_kv_cache: size = {size:8.2f} MiB ({cells:6d} cells,  30 layers,  1/1 seqs), "
    "K ({k}): {half:8.2f} MiB, V ({v}): {half:8.2f} MiB\n"
)


def _log(*contexts: tuple[int, str, str]) -> str:
    text = "main: loading model\n"
    for cells, k, v in contexts:
        size = cells * 22.5 / 1024
        text += CONTEXT.format(cells=cells) + KV.format(
            size=size, cells=cells, k=k, v=v, half=size / 2
        )
    return text


def test_first_context_of_several_is_read() -> None:
    out = _log((512, "f16", "f16"), (256, "f16", "f16"), (4608, "f16", "f16"))
    kv = bench.first_context_kv(out, "llama-bench f16")
    assert (kv.k_type, kv.cells) == ("f16", 512)
    assert kv.bytes_per_token == pytest.approx(22.5 * 1024, rel=1e-3)


def test_contexts_storing_different_types_are_an_error() -> None:
    out = _log((512, "turbo3_64", "turbo3_64"), (256, "turbo3", "turbo3"))
    with pytest.raises(ParseError, match="different cache types"):
        bench.first_context_kv(out, "llama-bench turbo3")


def test_a_log_without_contexts_is_an_error() -> None:
    with pytest.raises(ParseError, match="constructing llama_context"):
        bench.first_context_kv("no log here\n", "llama-bench f16")


@pytest.mark.slow
def test_bench_runs_at_two_depths() -> None:
    """The session users run, shrunk: two depths make llama-bench build several contexts."""
    subprocess.run([sys.executable, "-m", "harness", "build"], check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, "-m", "harness", "bench", "--types", "f16,turbo3",
         "--depths", "0,64", "--pp", "16", "--tg", "4", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| turbo3 | turbo3_64 |" in out.stdout
    assert "pp d64" in out.stdout
