"""How a llama-perplexity run that llama.cpp refuses ends: one typed error, nothing cached.

A stand-in binary replays real llama-perplexity output (tests/data/perplexity) with its
exit code, so each refusal is checked against the words the pinned llama.cpp prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cache_types import CacheConfig, HeadSizeRefused
from harness.config import Paths
from harness.errors import CommandFailed, ConfigError, ModelError
from harness.perplexity import IN_USE, BaseKey, Runner, RunSettings, evict_bases

DATA = Path(__file__).parent / "data" / "perplexity"

REPLAY = f"""#!{sys.executable}
import os, sys
print(open(os.environ["REPLAY_LOG"], encoding="utf-8").read())
sys.exit(int(os.environ["REPLAY_EXIT"]))
"""


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    binary = tmp_path / "bin" / "llama-perplexity"
    binary.parent.mkdir()
    binary.write_text(REPLAY)
    binary.chmod(0o755)
    paths = Paths(repo=tmp_path, cache=tmp_path / "cache", build=tmp_path / "build")
    return Runner(paths, RunSettings(binary=binary, ctx=128, chunks=2), tmp_path / "logs")


def _replay(monkeypatch: pytest.MonkeyPatch, log: str, exit_code: int) -> None:
    monkeypatch.setenv("REPLAY_LOG", str(DATA / log))
    monkeypatch.setenv("REPLAY_EXIT", str(exit_code))


KEY = BaseKey("a" * 64, "b" * 64, {"build": "test"}, 128, 2)


def _left_in_cache(runner: Runner) -> list[str]:
    root = runner.paths.cache / "kld-base"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


@pytest.mark.parametrize(
    ("log", "says"),
    [
        (
            "model-truncated.log",
            "llama.cpp cannot load /m.gguf: tensor 'blk.16.ffn_down.weight' data is not within "
            "the file bounds, model is corrupted or incomplete",
        ),
        # the loader only says it failed; gguf's own line says why
        ("model-header-truncated.log", "llama.cpp cannot load /m.gguf: failed to read key-value"),
    ],
)
def test_a_model_llama_cpp_cannot_load_is_a_model_error_and_caches_nothing(
    runner: Runner, monkeypatch: pytest.MonkeyPatch, log: str, says: str
) -> None:
    _replay(monkeypatch, log, 1)
    with pytest.raises(ModelError) as err, runner.base("m", Path("/m.gguf"), Path("/t.txt"), KEY):
        pass
    assert err.value.exit_code == 22
    assert str(err.value).startswith(says) and "\n" not in str(err.value)
    assert _left_in_cache(runner) == []


def test_a_text_too_short_for_the_context_caches_nothing(
    runner: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short = tmp_path / "short.log"
    short.write_text(
        "0.00.259.493 E perplexity: you need at least 256 tokens to evaluate perplexity with a "
        "context of 128\n0.00.259.494 E perplexity: the data file you provided tokenizes to "
        "only 7 tokens\n"
    )
    monkeypatch.setenv("REPLAY_LOG", str(short))
    monkeypatch.setenv("REPLAY_EXIT", "0")  # llama-perplexity refuses it with exit 0
    with pytest.raises(ConfigError) as err, runner.base("m", Path("/m.gguf"), Path("/t.txt"), KEY):
        pass
    assert str(err.value) == (
        "a context of 128 tokens needs at least 256 tokens of text; the text holds 7"
    )
    assert _left_in_cache(runner) == []


def test_a_cache_type_llama_cpp_refuses_by_head_size_is_named(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLAMA_TURBO_BLOCK64=0 on SmolLM2 (heads of 64): llama.cpp's own refusal, exit 1."""
    _replay(monkeypatch, "turbo3-block-refused.log", 1)
    with pytest.raises(HeadSizeRefused) as err:
        runner.candidate(
            "m", Path("/m.gguf"), Path("/t.txt"), Path("/b"), CacheConfig.parse("turbo3")
        )
    assert err.value.exit_code == 11
    assert str(err.value) == (
        "m turbo3: llama.cpp refuses a K cache of turbo3: K heads of 64 values are not a "
        "multiple of its 128-value blocks"
    )


def _entry(root: Path, name: str, nbytes: int, age_s: float) -> Path:
    entry = root / name
    entry.mkdir(parents=True)
    (entry / "base.kld").write_bytes(b"\0" * nbytes)
    then = os.stat(entry).st_mtime - age_s
    os.utime(entry, (then, then))
    return entry


HOLD = """
import sys, time
from pathlib import Path
from harness.lock import in_use
with in_use(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_eviction_skips_a_base_another_run_is_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the size limit, the oldest base goes, unless another process holds it in use (a
    long-context suite reading its base while a second run adds one): then it stays, and
    goes once that process has ended."""
    monkeypatch.setenv("TQH_KLD_CACHE_GB", str(3000 / 2**30))  # 3000 bytes
    root = tmp_path / "kld-base"
    old = _entry(root, "old", 2000, age_s=100)
    new = _entry(root, "new", 2000, age_s=0)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(old / IN_USE)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        evict_bases(root, keep=new)
        assert (old / "base.kld").is_file() and (new / "base.kld").is_file()
    finally:
        holder.kill()
        holder.wait()
    evict_bases(root, keep=new)
    assert not old.exists() and (new / "base.kld").is_file()


def test_a_base_is_held_while_its_candidates_run(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runner.base holds the base it returns until its block ends: another run's eviction
    passes it by inside the block and removes it after."""
    monkeypatch.setenv("TQH_KLD_CACHE_GB", "0")
    root = runner.paths.cache / "kld-base"
    entry = root / f"m-{KEY.digest()}"
    entry.mkdir(parents=True)
    (entry / "base.kld").write_bytes(b"\0" * 10)
    (entry / "base.log").write_text((DATA / "smollm2-135m-f16-base.log").read_text())
    other = _entry(root, "other", 10, age_s=-100)  # the newest: what another run keeps
    with runner.base("m", Path("/m.gguf"), Path("/t.txt"), KEY) as (logits, _, cached):
        assert cached and logits == entry / "base.kld"
        evict_bases(root, keep=other)
        assert logits.is_file()
    evict_bases(root, keep=other)
    assert not entry.exists()


def test_a_base_llama_perplexity_cannot_open_is_named(
    runner: Runner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """llama-perplexity's words (and exit 0) when the base file is gone mid-suite: one
    CommandFailed naming the file, not "no statistic"."""
    gone = tmp_path / "gone.log"
    gone.write_text(
        "0.04.625.144 E kl_divergence: failed to open /c/kld-base/g-585fa/base.kld\n\n"
        "0.04.625.294 I llama_perf_context_print:        load time =    1065.96 ms\n"
    )
    monkeypatch.setenv("REPLAY_LOG", str(gone))
    monkeypatch.setenv("REPLAY_EXIT", "0")
    with pytest.raises(CommandFailed) as err:
        runner.candidate(
            "m", Path("/m.gguf"), Path("/t.txt"), Path("/b"), CacheConfig.parse("turbo3")
        )
    assert str(err.value) == (
        "llama-perplexity could not open the f16 base logits /c/kld-base/g-585fa/base.kld"
    )
