"""The benchmark's reading of llama-bench, on a real run and on recorded log lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import bench, models, speed_model
from harness.cache_types import CacheConfig
from harness.config import Paths
from harness.llama_log import ParseError

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
        [sys.executable, "-m", "harness", "bench", "--configs", "f16,turbo3,q8_0/turbo3",
         "--depths", "0,64", "--pp", "16", "--tg", "4", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| turbo3 | turbo3_64 |" in out.stdout
    assert "| q8_0/turbo3 | q8_0/turbo3_64 |" in out.stdout  # SmolLM2's heads of 64
    assert "pp d64" in out.stdout


def test_configs_are_pairs_with_f16_first() -> None:
    configs = CacheConfig.parse_list("turbo3, q8_0/turbo3,turbo3,f16")
    assert [c.name for c in configs] == ["f16", "turbo3", "q8_0/turbo3"]
    assert configs[2] == CacheConfig("q8_0", "turbo3")


def _result(name: str, stored: str, kv: float, **speed: list[float]) -> bench.TypeResult:
    res = bench.TypeResult(name, stored, kv)
    res.speed = {k.replace("_", "@"): v for k, v in speed.items()}
    return res


def _side_by_side(
    config: str, kv: float, depth: int, f16: dict[str, list[float]], ours: dict[str, list[float]]
) -> tuple[bench.BenchPlan, dict[str, bench.TypeResult]]:
    """A plan of f16 and ``config`` at one depth and their rounds' t/s (keys pp and tg)."""
    plan = bench.BenchPlan(
        model=Path("m.gguf"), configs=CacheConfig.parse_list(f"f16,{config}"), depths=(depth,)
    )
    speeds = {
        name: {f"{k}_{depth}": v for k, v in sp.items()}
        for name, sp in (("f16", f16), (config, ours))
    }
    results = {
        "f16": _result("f16", "f16", 1000, **speeds["f16"]),
        config: _result(config, config, kv, **speeds[config]),
    }
    return plan, results


def _row(text: str, config: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {config} |"))


def test_table_shows_the_spread_and_the_backend_targets() -> None:
    """Ratios are per round against f16 of the same round; CUDA's targets are issue 10's."""
    plan, results = _side_by_side(
        "turbo3", 200, 32768,
        f16={"pp": [100.0, 200.0], "tg": [600.0, 590.0]},
        ours={"pp": [90.0, 190.0], "tg": [612.0, 620.0]},
    )  # fmt: skip
    text, missed = bench.table(results, plan, "cuda")
    row = _row(text, "turbo3")
    # tg: 612/600 = 1.02 and 620/590 = 1.05 per round; median t/s 616 over 595: 1.04
    assert "1.02-1.05 misses 1.35" in row
    assert "0.90-0.95 meets 0.9" in row  # pp: 90/100, 190/200
    assert missed == ["turbo3 tg at depth 32768: 1.04x f16 < 1.35"]
    _, missed_cpu = bench.table(results, plan, "cpu")
    assert missed_cpu == []  # no CPU target at depth 32768


def test_speed_model_is_written_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached speed model is reused, and a failed write leaves no file under its name."""
    paths = Paths(repo=Paths.default().repo, cache=tmp_path, build=tmp_path / "build")
    lock = models.load_lock(paths.repo / "models.toml")
    calls: list[Path] = []
    monkeypatch.setattr(bench.models, "ensure_model", lambda p, pin: tmp_path / "smollm2.gguf")
    monkeypatch.setattr(
        bench.speed_model, "export_tokenizer", lambda src, out: out.write_bytes(b"t")
    )

    def write(tok: Path, out: Path, shape: speed_model.SpeedShape) -> int:
        calls.append(out)
        if shape.head_dim == 256:
            out.write_bytes(b"half")
            raise OSError("disk full")
        out.write_bytes(b"GGUF")
        return 4

    monkeypatch.setattr(bench.speed_model, "write_model", write)
    first = bench.speed_model_file(paths, lock, 128)
    assert bench.speed_model_file(paths, lock, 128) == first and len(calls) == 1
    assert first.name == "llama-hd128-l16-e2048-gqa2.gguf" and first.read_bytes() == b"GGUF"
    with pytest.raises(OSError):
        bench.speed_model_file(paths, lock, 256)
    assert not list(tmp_path.glob("speed-models/llama-hd256*.gguf"))


def test_plot_draws_median_speed_against_depth_for_every_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13's speed-vs-depth picture: one line per configuration and side, the medians
    of write_json's numbers at each depth, a peer's dashed."""
    import matplotlib.axes

    drawn: list[tuple[str, list[int], list[float], str]] = []
    original = matplotlib.axes.Axes.plot

    def record(self, x, y, **kw):
        drawn.append((kw["label"], list(x), list(y), kw["linestyle"]))
        return original(self, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    plan = bench.BenchPlan(
        model=Path("m.gguf"), configs=CacheConfig.parse_list("f16,turbo3"), depths=(0, 4096)
    )
    speeds = {"pp_0": [300.0, 310.0, 290.0], "pp_4096": [100.0, 90.0, 95.0]}
    speeds |= {"tg_0": [130.0, 132.0, 120.0], "tg_4096": [47.0, 50.0, 45.0]}
    ours = {
        "f16": _result("f16", "f16", 1, **speeds),
        "turbo3": _result("turbo3", "t", 1, **speeds),
    }
    fork = {
        "turbo3": _result("turbo3", "t", 1, tg_0=[100.0], tg_4096=[3.3], pp_0=[1.0], pp_4096=[1.0])
    }
    sides = [bench.Side("ours", Path("bin"), plan), bench.Side("fork", Path("peer"), plan)]
    out = bench.plot(sides, {"ours": ours, "fork": fork}, tmp_path / "bench.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    decode = [d for d in drawn if d[2][0] in (130.0, 100.0)]
    assert ("f16", [0, 4096], [130.0, 47.0], "-") in decode
    assert ("fork: turbo3", [0, 4096], [100.0, 3.3], "--") in decode
    assert len(drawn) == 6  # 3 lines (f16, turbo3, the fork's turbo3) in each of 2 panels


def test_depth_zero_is_repeated_and_deeper_tests_run_once() -> None:
    """At depth 0 a test lasts about 0.1 s on the CPU, so one repetition is mostly noise;
    at depth llama-bench refills the cache for every repetition, so one is what is paid."""
    plan = bench.BenchPlan(model=Path("m.gguf"), depths=(0, 4096, 16384))
    assert bench._depth_groups(plan) == [((0,), plan.reps_at_depth0), ((4096, 16384), 1)]
    assert plan.reps_at_depth0 > 1
    deep = bench.BenchPlan(model=Path("m.gguf"), depths=(8192,))
    assert bench._depth_groups(deep) == [((8192,), 1)]
    shallow = bench.BenchPlan(model=Path("m.gguf"), depths=(0,))
    assert bench._depth_groups(shallow) == [((0,), plan.reps_at_depth0)]


def test_cpu_targets_are_issue_13s() -> None:
    """Decode >= 1.0x f16 at 4096 and >= 1.1x at 16384, prompt >= 0.95x at every depth."""
    plan, results = _side_by_side(
        "turbo4", 257, 16384,
        f16={"pp": [100.0, 100.0], "tg": [40.0, 40.0]},
        ours={"pp": [90.0, 92.0], "tg": [46.0, 46.8]},
    )  # fmt: skip
    text, missed = bench.table(results, plan, "cpu")
    row = _row(text, "turbo4")
    assert "meets 1.1" in row  # tg: 46/40 = 1.15, 46.8/40 = 1.17
    assert missed == ["turbo4 pp at depth 16384: 0.91x f16 < 0.95"]
