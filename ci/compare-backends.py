#!/usr/bin/env python3
"""Usage: ci/compare-backends.py LLAMA_PERPLEXITY MODEL TEXT OUT.json [--ngl N] [--chunks N]
                                  [--ubatch N]

Runs the perplexity suite's runs (harness.perplexity: the f16 base, then each KV-cache
configuration with --kl-divergence against it) on one model file and text with the given
llama-perplexity, and writes every number to OUT.json. Run it with a CPU build and with a GPU
build (--ngl 99) on the same file, then compare the two JSON files with --compare: each
turbo KLD of the GPU run must lie within the CPU run's error bars (2 standard errors of the
difference). `--ubatch 1` evaluates one token per step, so the decode kernels (not the
prompt path) produce every scored logit.

    ci/compare-backends.py --compare cpu.json gpu.json

It needs only the harness package and numpy, so it runs on a GPU machine without a package
index (`nox -s perplexity -- --backend cuda` needs the model wheels from models.toml).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cache_types import CacheConfig
from harness.config import Paths  # noqa: E402
from harness.perplexity import BaseKey, Runner, RunSettings, build_identity

CONFIGS = ("q8_0", "q4_0", "turbo3", "turbo4", "turbo5/turbo3", "q8_0/turbo3")


def measure(
    binary: Path,
    model: Path,
    text: Path,
    out: Path,
    ngl: int | None,
    chunks: int,
    ubatch: int | None = None,
) -> None:
    """The runs' logs go beside OUT (OUT-logs/), the f16 base logits to a temporary cache
    that is removed afterwards."""
    logs = out.with_name(out.stem + "-logs")
    with tempfile.TemporaryDirectory(prefix="tqh-compare-") as tmp:
        work = Path(tmp)
        paths = Paths(repo=Path.cwd(), cache=work / "cache", build=work / "build")
        settings = RunSettings(
            binary=binary, chunks=chunks, threads=2, gpu_layers=ngl, ubatch=ubatch
        )
        runner = Runner(paths, settings, logs)
        key = BaseKey(
            f"file:{model.name}", f"file:{text.name}", build_identity(binary), 512, chunks
        )
        base, base_run, _ = runner.base(model.stem, model, text, key)
        runs = {"f16": asdict(base_run)}
        for name in CONFIGS:
            config = CacheConfig.parse(name)
            runs[name] = asdict(runner.candidate(model.stem, model, text, base, config))
    out.write_text(
        json.dumps({"model": str(model), "ngl": ngl, "ubatch": ubatch, "runs": runs}, indent=1)
    )
    print(f"wrote {out} (logs in {logs})")


def compare(cpu_file: Path, gpu_file: Path) -> int:
    cpu, gpu = (json.loads(f.read_text())["runs"] for f in (cpu_file, gpu_file))
    bad = 0
    print(f"{'config':<14} {'KLD cpu':>17} {'KLD gpu':>17} {'|diff|/se':>9}")
    for name in CONFIGS:
        a, b = cpu[name]["kld"], gpu[name]["kld"]
        se = math.hypot(a["error"], b["error"])
        z = abs(a["value"] - b["value"]) / se if se else math.inf
        bad += z > 2.0
        print(
            f"{name:<14} {a['value']:9.5f} ± {a['error']:.5f} {b['value']:9.5f} ± "
            f"{b['error']:.5f} {z:9.2f}"
        )
    print("every KLD agrees within 2 standard errors" if not bad else f"{bad} disagree")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("args", nargs="+", type=Path)
    parser.add_argument("--ngl", type=int)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--ubatch", type=int, help="-ub of llama-perplexity (1: decode path)")
    parser.add_argument("--compare", action="store_true")
    ns = parser.parse_args()
    if ns.compare:
        return compare(*ns.args)
    measure(*ns.args, ngl=ns.ngl, chunks=ns.chunks, ubatch=ns.ubatch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
