"""Speed and KV memory of KV cache configurations, as ratios to f16 measured side by side.

Machines are noisy, so absolute tokens/s mean little; the ratios come from llama-bench runs
interleaved configuration by configuration (f16, q8_0, ..., then again), one repetition
each at depth (where llama-bench fills the cache again for every repetition) and
``BenchPlan.reps_at_depth0`` at depth 0 (a test of about 0.1 s, where one repetition is mostly
noise), and each number is the median over the rounds (the spread is printed beside it). A
configuration is a K and a V type (``turbo3`` or ``q8_0/turbo3``). KV bytes per token come
from llama.cpp's own log line (``llama_kv_cache: size = ... K (type): x MiB, V (type): y
MiB``), not from nominal bits. On a GPU backend every layer is offloaded (-ngl 99).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness import models, proc, speed_model
from harness.cache_types import CacheConfig
from harness.config import Paths
from harness.errors import CommandFailed, GateFailed
from harness.llama_log import KvAllocation, ParseError, kv_allocation
from harness.progress import Progress

# Issue targets: memory is deterministic and gated; speed is reported against its target,
# per backend: (configuration, pp or tg, depth in tokens) -> ratio to f16. CPU: issue 13
# (decode >= 1.0x at 4096 and >= 1.1x at 16384, prompt >= 0.95x at every depth it names);
# CUDA: issue 10 on the hd128 speed model (-d 0,8192,32768, -p 2048 for pp).
MEMORY_TARGETS = {"turbo3": 0.20, "turbo4": 0.26}
SPEED_TARGETS: dict[str, dict[tuple[str, str, int], float]] = {
    "cpu": {
        **{(t, "tg", 4096): 1.0 for t in ("turbo3", "turbo4")},
        **{(t, "tg", 16384): 1.1 for t in ("turbo3", "turbo4")},
        **{(t, "pp", d): 0.95 for t in ("turbo3", "turbo4") for d in (0, 4096, 16384)},
    },
    "cuda": {
        ("turbo3", "tg", 0): 0.9,
        ("turbo3", "tg", 8192): 1.1,
        ("turbo3", "tg", 32768): 1.35,
        ("turbo4", "tg", 0): 0.9,
        ("turbo4", "tg", 8192): 1.05,
        ("turbo4", "tg", 32768): 1.25,
        ("q8_0/turbo3", "tg", 32768): 1.0,
        ("turbo5/turbo3", "tg", 32768): 1.0,
        ("turbo3", "pp", 32768): 0.9,
    },
}
DEFAULT_CONFIGS = "f16,q8_0,q4_0,turbo3,turbo4"


@dataclass(frozen=True)
class BenchPlan:
    """One bench run: the model, the KV configurations (f16 first), KV depths in tokens,
    prompt and generated tokens per test (pp/tg), interleaved rounds, llama-bench's own
    repetitions at depth 0 (their mean is the round's t/s; 1 at every other depth), CPU
    threads, the layers offloaded to a GPU (-ngl; None on the CPU) and more environment for
    llama-bench (a peer's switches)."""

    model: Path
    configs: tuple[CacheConfig, ...] = CacheConfig.parse_list(DEFAULT_CONFIGS)
    depths: tuple[int, ...] = (0, 4096)
    n_prompt: int = 512
    n_gen: int = 128
    rounds: int = 3
    reps_at_depth0: int = 5
    threads: int = 2
    gpu_layers: int | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class TypeResult:
    """One configuration's results: the K/V types llama.cpp stored (turbo3 may become
    turbo3_64), KV bytes per token from its log line, and t/s per test key (``tg@4096``),
    one per round."""

    config: str
    stored_type: str = ""
    kv_bytes_per_token: float = 0.0
    speed: dict[str, list[float]] = field(default_factory=dict)

    def median(self, key: str) -> float:
        """The median t/s of ``key`` (``pp@0``, ``tg@4096``, ...) over the rounds."""
        return statistics.median(self.speed[key])


def _depth_groups(plan: BenchPlan) -> list[tuple[tuple[int, ...], int]]:
    """The llama-bench calls of one configuration: (depths, repetitions) each."""
    deep = tuple(d for d in plan.depths if d != 0)
    groups = [((0,), plan.reps_at_depth0)] if 0 in plan.depths else []
    return groups + ([(deep, 1)] if deep else [])


def _run_one(bench: Path, plan: BenchPlan, cfg: CacheConfig, log: Path) -> tuple[list[dict], str]:
    offload = [] if plan.gpu_layers is None else ["-ngl", str(plan.gpu_layers)]
    rows: list[dict] = []
    outs = []
    for depths, reps in _depth_groups(plan):
        out = proc.run(
            [
                bench,
                "-m",
                plan.model,
                "-p",
                str(plan.n_prompt),
                "-n",
                str(plan.n_gen),
                "-d",
                ",".join(str(d) for d in depths),
                "-r",
                str(reps),
                "-fa",
                "1",
                "-t",
                str(plan.threads),
                "-ctk",
                cfg.k,
                "-ctv",
                cfg.v,
                *offload,
                "-o",
                "jsonl",
                "-v",
            ],
            log=log,
            env=dict(plan.env) or None,
            what=f"llama-bench {cfg.name}",
            quiet=True,
        ).output
        # -v sends llama.cpp's log (the KV line) to stderr, which the wrapper merges with
        # stdout; jsonl keeps each result on one line of its own, so the two cannot tangle.
        got = [json.loads(line) for line in out.splitlines() if line.startswith('{"build_commit"')]
        if len(got) != 2 * len(depths):
            raise CommandFailed(
                f"llama-bench {cfg.name}: expected {2 * len(depths)} results at depths "
                f"{depths}, read {len(got)} (log: {log})"
            )
        rows += got
        outs.append(out)
    return rows, "".join(outs)


CONTEXT_START = "llama_context: constructing llama_context"


def first_context_kv(out: str, where: str) -> KvAllocation:
    """The KV cache of the first context llama-bench builds, summed over llama.cpp's caches
    (Gemma 3 has a full and a sliding one). llama-bench builds one context per test, of the
    test's own size, so the log holds one group of KV lines per test; every group must name
    the same stored types."""
    groups = out.split(CONTEXT_START)[1:]
    if not groups:
        raise ParseError(f"{where}: no `{CONTEXT_START}` line (run with -v?)")
    allocations = [kv_allocation(g, f"{where}, context {i + 1}") for i, g in enumerate(groups)]
    types = {(a.k_type, a.v_type) for a in allocations}
    if len(types) != 1:
        raise ParseError(f"{where}: the contexts store different cache types: {sorted(types)}")
    return allocations[0]


@dataclass(frozen=True)
class Side:
    """One build measured in a run: a name (``ours`` or a peer's), its programs folder and
    the plan it runs (its own cache-type names and environment)."""

    name: str
    bin_dir: Path
    plan: BenchPlan


def run_bench(sides: list[Side], log: Path) -> dict[str, dict[str, TypeResult]]:
    """llama-bench once per configuration per round for every side, all of them interleaved
    within each round (so a drift of the machine hits every side alike); output to ``log``.
    Returns, per side, each configuration's results. Raises CommandFailed when llama-bench
    fails and ParseError when its output lacks the JSON rows or the KV log line."""
    results = {s.name: {c.name: TypeResult(c.name) for c in s.plan.configs} for s in sides}
    progress = Progress("llama-bench", every=30)
    runs = [(s, c) for s in sides for c in s.plan.configs]
    rounds = max(s.plan.rounds for s in sides)
    total = rounds * len(runs)
    for r in range(rounds):
        for i, (side, cfg) in enumerate(runs):
            progress.steps(r * len(runs) + i, total, None)
            where = f"llama-bench {cfg.name}" + ("" if side.name == "ours" else f" ({side.name})")
            rows, out = _run_one(side.bin_dir / "llama-bench", side.plan, cfg, log)
            res = results[side.name][cfg.name]
            kv = first_context_kv(out, where)
            stored = CacheConfig(kv.k_type, kv.v_type)
            res.stored_type, res.kv_bytes_per_token = stored.name, kv.bytes_per_token
            for row in rows:
                kind = "pp" if row["n_prompt"] else "tg"
                res.speed.setdefault(f"{kind}@{row['n_depth']}", []).append(row["avg_ts"])
    progress.done(f"{total} llama-bench runs")
    return results


def round_ratios(res: TypeResult, base: TypeResult, key: str) -> list[float]:
    """t/s of ``key`` over f16's of the same round, one ratio per round (the spread)."""
    return [a / b for a, b in zip(res.speed[key], base.speed[key], strict=True)]


def table(
    results: dict[str, TypeResult], plan: BenchPlan, backend: str = "cpu"
) -> tuple[str, list[str]]:
    """Markdown table of medians, ratios to f16 (median, and the range over the rounds) and
    the backend's SPEED_TARGETS; the list of missed targets."""
    base = results["f16"]
    keys = [f"{k}@{d}" for d in plan.depths for k in ("pp", "tg")]
    targets = SPEED_TARGETS.get(backend, {})
    head = (
        "| K/V | stored as | KV B/token | vs f16 | "
        + " | ".join(f"{k.replace('@', ' d')} t/s (vs f16)" for k in keys)
        + " |"
    )
    lines = [head, "|" + "---|" * (4 + len(keys))]
    missed: list[str] = []
    for t, res in results.items():
        mem = res.kv_bytes_per_token / base.kv_bytes_per_token
        cells = []
        for k in keys:
            ratio = res.median(k) / base.median(k)
            per_round = round_ratios(res, base, k)
            spread = f", {min(per_round):.2f}-{max(per_round):.2f}" if len(per_round) > 1 else ""
            kind, depth = k.split("@")
            target = targets.get((t, kind, int(depth)))
            mark = ""
            if target is not None:
                mark = f" {'meets' if ratio >= target else 'misses'} {target}"
                if ratio < target:
                    missed.append(f"{t} {kind} at depth {depth}: {ratio:.2f}x f16 < {target}")
            cells.append(f"{res.median(k):.1f} ({ratio:.2f}x{spread}{mark})")
        lines.append(
            f"| {t} | {res.stored_type} | {res.kv_bytes_per_token:.0f} | {mem:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines), missed


def check_memory(results: dict[str, TypeResult]) -> None:
    """Raises GateFailed (exit 21) when a type's KV bytes per token exceed MEMORY_TARGETS
    (fractions of f16's); block-64 variants are exempt (1/8 bit per value more by design)."""
    base = results["f16"].kv_bytes_per_token
    failures = [
        f"{t}: KV {results[t].kv_bytes_per_token / base:.3f} of f16 > {limit}"
        for t, limit in MEMORY_TARGETS.items()
        if t in results
        and results[t].kv_bytes_per_token / base > limit
        and results[t].stored_type == t  # block-64 variants pay 1/8 bit more by design
    ]
    if failures:
        raise GateFailed("KV memory target missed: " + "; ".join(failures))


def write_json(
    sides: list[Side], results: dict[str, dict[str, TypeResult]], path: Path, **extra: object
) -> None:
    """Every side's plan and every round's t/s per configuration as JSON at ``path``, with
    ``extra`` (a peer's title, commit and unsupported configurations) beside them."""
    data = {
        side.name: {
            "plan": {
                **asdict(side.plan),
                "model": str(side.plan.model),
                "configs": [c.name for c in side.plan.configs],
            },
            "results": {t: asdict(r) for t, r in results[side.name].items()},
        }
        for side in sides
    }
    data.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def plot(sides: list[Side], results: dict[str, dict[str, TypeResult]], path: Path) -> Path:
    """``path`` (PNG): t/s against KV depth in tokens, prompt processing and decode side by
    side, one line per configuration (the median over the rounds; a peer's dashed, named
    ``peer: config``). The numbers are write_json's. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = sides[0].plan
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, title in zip(axes, ("pp", "tg"), ("prompt processing", "decode"), strict=True):
        for side in sides:
            depths = side.plan.depths
            for name, res in results[side.name].items():
                label = name if side.name == "ours" else f"{side.name}: {name}"
                ax.plot(
                    depths,
                    [res.median(f"{kind}@{d}") for d in depths],
                    marker="o",
                    linestyle="-" if side.name == "ours" else "--",
                    label=label,
                )
        tokens = plan.n_prompt if kind == "pp" else plan.n_gen
        ax.set_title(f"{title} ({kind}{tokens})")
        ax.set_xlabel("KV depth (tokens)")
        ax.set_ylabel("t/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"llama-bench on {plan.model.name}, median of {plan.rounds} rounds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def speed_model_file(paths: Paths, lock: models.Lock, head_dim: int) -> Path:
    """The random-weight speed model of issue 10 (speed_model.SpeedShape with ``head_dim``
    64, 128 or 256: 16 layers, n_embd 2048, GQA 2, f16 weights, about 1.0 GB) in the cache,
    written once from SmolLM2's vocabulary (about 10 s) and reused; a half-written file never
    takes the final name."""
    shape = speed_model.SpeedShape(head_dim=head_dim)
    folder = paths.cache / "speed-models"
    target = folder / f"llama-hd{head_dim}-l{shape.n_layer}-e{shape.n_embd}-gqa{shape.gqa}.gguf"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = folder / "smollm2-tokenizer.json.gz"
    if not tokenizer.is_file():
        smollm2 = models.ensure_model(paths, lock.model("smollm2-135m"))
        tmp = tokenizer.with_suffix(".tmp")
        speed_model.export_tokenizer(smollm2, tmp)
        tmp.replace(tokenizer)
    tmp = target.with_suffix(".tmp")
    speed_model.write_model(tokenizer, tmp, shape)
    tmp.replace(target)
    return target
