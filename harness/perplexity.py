"""Run llama-perplexity on the pinned models and text, and parse what it prints.

One f16-KV run per model writes the base logits (``--kl-divergence-base``); every KV-cache
configuration then runs against them with ``--kl-divergence``. The base is cached by
everything that determines it, so a second suite run only pays for the candidates.

Nothing here decides pass or fail (that is ``harness.gates``); but a run that exits non-zero,
or whose log lacks a statistic the gates need, is an error and never a silent pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness import proc
from harness.build import STAMP
from harness.config import Paths, environment
from harness.errors import CommandFailed, ConfigError, ModelError
from harness.lock import exclusive
from harness.models import ModelInfo
from harness.progress import Progress

# llama-perplexity logs the KV-cache allocation only at verbosity 4; the gates need it.
VERBOSITY = "4"
BATCH = 512


@dataclass(frozen=True)
class CacheConfig:
    """A K and a V cache type, written ``q4_0`` (both) or ``q8_0/turbo3`` (K/V)."""

    k: str
    v: str

    @classmethod
    def parse(cls, name: str) -> CacheConfig:
        """``TYPE`` or ``K/V``; raises ConfigError (exit 11) for anything else."""
        parts = name.strip().split("/")
        if len(parts) == 1 and parts[0]:
            return cls(parts[0], parts[0])
        if len(parts) == 2 and all(parts):
            return cls(parts[0], parts[1])
        raise ConfigError(
            f"cannot read the KV configuration {name!r}",
            hint="write a configuration as TYPE (K and V alike) or K/V, e.g. turbo3 or q8_0/turbo3",
        )

    @property
    def name(self) -> str:
        """``q4_0`` when K and V agree, ``q8_0/turbo3`` otherwise."""
        return self.k if self.k == self.v else f"{self.k}/{self.v}"

    @property
    def is_base(self) -> bool:
        """f16 K and V: the configuration the others are measured against."""
        return self.k == "f16" and self.v == "f16"

    @classmethod
    def parse_list(cls, text: str) -> tuple[CacheConfig, ...]:
        """Comma-separated configurations, each of known cache types (CACHE_TYPES), f16
        first (added when missing: every ratio is to it), no repeats. Raises ConfigError
        (exit 11) naming the first unreadable or unknown one."""
        configs = [cls.parse(c) for c in text.split(",") if c.strip()]
        for cfg in configs:
            for t in (cfg.k, cfg.v):
                if t not in CACHE_TYPES:
                    raise ConfigError(
                        f"unknown cache type {t!r} in {cfg.name!r}",
                        hint=f"use cache types among {', '.join(CACHE_TYPES)}",
                    )
        base = cls("f16", "f16")
        ordered = [base] + [c for c in configs if c != base]
        return tuple(dict.fromkeys(ordered))


# Cache types llama.cpp's -ctk/-ctv take in this build (upstream's and patch 0003's turbo
# names; a turbo type on heads of 64 is stored as its block-64 variant).
CACHE_TYPES = (
    "f16", "bf16", "f32", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl",
    "turbo2", "turbo3", "turbo4", "turbo5", "turbo2_64", "turbo3_64", "turbo4_64", "turbo5_64",
)  # fmt: skip


# --- parsing -------------------------------------------------------------------------------


class ParseError(CommandFailed):
    """llama-perplexity's output lacks something the harness needs (wrong or broken build)."""


@dataclass(frozen=True)
class Estimate:
    """A number llama-perplexity prints as ``value ± error`` (error: one standard error)."""

    value: float
    error: float


@dataclass(frozen=True)
class KvAllocation:
    """What llama.cpp allocated, summed over its caches (gemma3 has a SWA and a full one):
    cells is the largest cache's (the context), k_mib and v_mib are MiB summed; caches holds
    each cache's (cells, layers, K MiB, V MiB) where they differ in cells (a sliding-window
    cache holds fewer cells than the context: 1024 of 8192 for Gemma 3), else nothing.

    The log prints MiB with two decimals, so each figure is good to about +-0.005 MiB.
    """

    k_type: str
    v_type: str
    cells: int
    layers: int
    k_mib: float
    v_mib: float
    caches: tuple[tuple[int, int, float, float], ...] = ()

    @property
    def bytes_per_token(self) -> float:
        """K plus V bytes per cache cell (token), all layers together: each cache's bytes over
        its own cells, so a sliding-window cache counts at what it stores per token, the same
        at any context length."""
        if self.caches:
            return sum((k + v) * 2**20 / cells for cells, _, k, v in self.caches)
        return (self.k_mib + self.v_mib) * 2**20 / self.cells

    def bits_per_value(self, values_per_token_layer: int) -> float:
        """Allocated bits per K/V value; ``values_per_token_layer`` counts K plus V."""
        return self.bytes_per_token * 8 / (self.layers * values_per_token_layer)


KV_LINE = re.compile(
    r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers,.*?\), "
    r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB"
)
ROTATION = re.compile(r"llama_kv_cache: attn_rot_([kv]) = (\d+)")
UNSUPPORTED = re.compile(r"Unsupported cache type: (\S+)")
CHUNKS = re.compile(r"(?:calculating perplexity|computing) over (\d+) chunks, n_ctx=(\d+)")
FINAL = re.compile(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)")
NUM = r"(-?(?:[\d.]+(?:e[-+]?\d+)?|nan|inf))"  # llama.cpp prints -nan too
PM = rf"{NUM} ± +{NUM}"
STATS = {
    "ppl": re.compile(rf"^Mean PPL\(Q\) +: +{PM}", re.M),
    "ppl_base": re.compile(rf"^Mean PPL\(base\) +: +{PM}", re.M),
    "ppl_ratio": re.compile(rf"^Mean PPL\(Q\)/PPL\(base\) +: +{PM}", re.M),
    "kld": re.compile(rf"^Mean +KLD: +{PM}", re.M),
    "rms_dp": re.compile(rf"^RMS Δp +: +{PM} %", re.M),
    "same_top_p": re.compile(rf"^Same top p: +{PM} %", re.M),
}
PERCENTILE = re.compile(rf"^(Maximum|Median|Minimum| ?[\d.]+%) +KLD: +{NUM}$", re.M)


@dataclass(frozen=True)
class RunResult:
    """One llama-perplexity run. Base runs have no KLD statistics."""

    config: str
    chunks: int
    ctx: int
    ppl: Estimate
    kv: KvAllocation
    rotation: dict[str, int]
    ppl_base: Estimate | None = None
    ppl_ratio: Estimate | None = None
    kld: Estimate | None = None
    kld_percentiles: dict[str, float] = field(default_factory=dict)
    rms_dp: Estimate | None = None
    same_top_p: Estimate | None = None
    seconds: float = 0.0
    # base runs only: the model as llama.cpp described it (None where the log lacks it)
    model: LoggedModel | None = None


def ppl_change_pct(result: RunResult, f16: RunResult | None) -> float | None:
    """PPL change in % against the f16-KV run over the same tokens.

    Not against llama.cpp's PPL(base): the base file keeps log-probabilities at 16-bit
    resolution, which alone moves PPL(base) by a few tenths of a percent (0.24% on Gemma 3
    here, with a KLD of exactly 0), the same offset for every configuration.
    """
    return None if f16 is None else (result.ppl.value / f16.ppl.value - 1.0) * 100.0


def kv_allocation(text: str, where: str) -> KvAllocation:
    """The KV allocation llama.cpp logged in ``text`` (its ``llama_kv_cache: size = ...``
    lines, summed; caches of different sizes, such as a sliding-window cache beside the full
    one, each kept too); raises ParseError naming ``where`` when there is none or the types
    disagree between caches."""
    rows = KV_LINE.findall(text)
    if not rows:
        raise ParseError(f"{where}: no `llama_kv_cache: size = ...` line (run with -lv 4?)")
    k_types = {r[3] for r in rows}
    v_types = {r[5] for r in rows}
    cells = {int(r[1]) for r in rows}
    if len(k_types) != 1 or len(v_types) != 1:
        raise ParseError(f"{where}: KV caches disagree on types: {rows}")
    caches = tuple((int(r[1]), int(r[2]), float(r[4]), float(r[6])) for r in rows)
    return KvAllocation(
        k_type=k_types.pop(),
        v_type=v_types.pop(),
        cells=max(cells),
        layers=sum(int(r[2]) for r in rows),
        k_mib=sum(float(r[4]) for r in rows),
        v_mib=sum(float(r[6]) for r in rows),
        caches=caches if len(cells) > 1 else (),
    )


def _rotation(text: str) -> dict[str, int]:
    # One line per cache and tensor; a cache type counts as rotated if any cache rotates it.
    found: dict[str, int] = {}
    for which, on in ROTATION.findall(text):
        found[which] = max(found.get(which, 0), int(on))
    return found


def _chunks(text: str, where: str) -> tuple[int, int]:
    m = CHUNKS.search(text)
    if not m:
        raise ParseError(f"{where}: no `... over N chunks, n_ctx=...` line")
    return int(m.group(1)), int(m.group(2))


TOO_SHORT = re.compile(r"you need at least (\d+) tokens to evaluate perplexity")
TOKENS = re.compile(r"tokenizes to only (\d+) tokens")


def _too_short(text: str, ctx: int) -> None:
    """Raises ConfigError (exit 11) when llama-perplexity refused a text shorter than two
    windows of ``ctx`` tokens, naming what was needed and what the text holds."""
    need = TOO_SHORT.search(text)
    if need is None:
        return
    have = TOKENS.search(text)
    holds = f"the text holds {have.group(1)}" if have else "the text holds fewer"
    raise ConfigError(
        f"a context of {ctx} tokens needs at least {need.group(1)} tokens of text; {holds}",
        hint="give a smaller --ctx (at most half the text's tokens) or a longer text",
    )


PRINT_INFO = re.compile(r"print_info: (\S.*?)\s+= (.*?)\s*$", re.M)


def _ints(value: str, key: str, where: str) -> tuple[int, ...]:
    """``9`` -> (9,); ``[4, 4, 0]`` (llama.cpp's per-layer form, printed when layers differ)
    -> (4, 4, 0). Raises ParseError for anything else."""
    try:
        return tuple(int(v) for v in value.strip("[]").split(","))
    except ValueError:
        raise ParseError(f"{where}: print_info {key} = {value!r} is not a number") from None


@dataclass(frozen=True)
class LoggedModel:
    """The model as llama.cpp described it in its ``print_info:`` lines (llama_model's
    hyperparameters, after loading): architecture, layers, query heads, KV heads and GQA
    ratio (n_head / n_head_kv) as llama.cpp printed them, one number or, where layers differ,
    one per layer; head sizes of K and V in values; trained context and sliding window in
    tokens (0: none); vocabulary size in tokens; and the name, file type and file size as
    printed (None where the log has no such line)."""

    architecture: str
    layers: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    n_gqa: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    context_length: int
    sliding_window: int
    vocab_size: int | None
    name: str | None
    file_type: str | None
    file_size: str | None

    def info(self, fallback_name: str) -> ModelInfo:
        """The same facts as the ModelInfo the report and the KV arithmetic use (the first
        layer's head counts where they vary by layer, as ``models.read_info`` does);
        ``fallback_name`` where llama.cpp logged no general.name."""
        return ModelInfo(
            name=self.name or fallback_name,
            architecture=self.architecture,
            layers=self.layers,
            n_head=self.n_head[0],
            n_head_kv=self.n_head_kv[0],
            head_dim_k=self.head_dim_k,
            head_dim_v=self.head_dim_v,
            context_length=self.context_length,
            sliding_window=self.sliding_window or None,
            vocab_size=self.vocab_size,
        )


def logged_model(text: str, where: str = "llama-perplexity") -> LoggedModel | None:
    """The ``print_info:`` lines of a llama.cpp log as a LoggedModel (the first line of each
    key counts); None when the log has no ``print_info: arch`` line. Raises ParseError when
    it has one but lacks a line the model description needs."""
    found: dict[str, str] = {}
    for key, value in PRINT_INFO.findall(text):
        found.setdefault(key, value)
    if "arch" not in found:
        return None

    def need(key: str) -> str:
        if key not in found:
            raise ParseError(f"{where}: no `print_info: {key} = ...` line")
        return found[key]

    vocab = found.get("n_vocab")
    return LoggedModel(
        architecture=found["arch"],
        layers=int(need("n_layer")),
        n_head=_ints(need("n_head"), "n_head", where),
        n_head_kv=_ints(need("n_head_kv"), "n_head_kv", where),
        n_gqa=_ints(need("n_gqa"), "n_gqa", where),
        head_dim_k=int(need("n_embd_head_k")),
        head_dim_v=int(need("n_embd_head_v")),
        context_length=int(need("n_ctx_train")),
        sliding_window=int(found.get("n_swa", "0")),
        vocab_size=int(vocab) if vocab is not None else None,
        name=found.get("general.name"),
        file_type=found.get("file type"),
        file_size=found.get("file size"),
    )


# Values per block of the KV cache types: with flash attention, llama.cpp refuses a
# quantized type whose block does not divide the head size (llama_init_from_model). Turbo
# types hold 128 values a block; on heads that are not a multiple of 128 but are of 64,
# patch 0003 switches to the block-64 variant unless LLAMA_TURBO_BLOCK64=0.
BLOCK_VALUES = {
    **{t: 1 for t in ("f32", "f16", "bf16")},
    **{t: 32 for t in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")},
    **{f"turbo{b}": 128 for b in (2, 3, 4, 5)},
    **{f"turbo{b}_64": 64 for b in (2, 3, 4, 5)},
}


def block64_allowed(env: dict[str, str] | None = None) -> bool:
    """Whether llama.cpp may switch a turbo type to its block-64 variant: LLAMA_TURBO_BLOCK64
    unset, or an integer other than 0 (read like C's atoi, as patch 0003 reads it)."""
    value = (os.environ if env is None else env).get("LLAMA_TURBO_BLOCK64")
    if value is None:
        return True
    m = re.match(r"\s*[-+]?\d+", value)
    return m is not None and int(m.group()) != 0


def head_size_refusal(config: CacheConfig, info: ModelInfo, block64: bool) -> str | None:
    """Why llama.cpp (flash attention on) will refuse ``config`` on a model whose heads hold
    ``info.head_dim_k`` K and ``info.head_dim_v`` V values, in words naming the head size;
    None when it can take it, or when the harness does not know the type's block size (then
    llama.cpp decides, and its refusal ends in HeadSizeRefused all the same)."""
    problems: dict[str, list[str]] = {}  # what is wrong -> "K", "V" or both
    for which, cache_type, head in (
        ("K", config.k, info.head_dim_k),
        ("V", config.v, info.head_dim_v),
    ):
        block = BLOCK_VALUES.get(cache_type)
        if block is None or head % block == 0:
            continue
        if cache_type.startswith("turbo") and not cache_type.endswith("_64"):
            if head % 64 == 0 and block64:
                continue  # llama.cpp stores the block-64 variant
            if head % 64 == 0:
                problem = (
                    f"heads of {head} values are not a multiple of 128 ({cache_type}), and "
                    "LLAMA_TURBO_BLOCK64=0 turns off its block-64 variant"
                )
            else:
                problem = (
                    f"heads of {head} values are not a multiple of 64 or 128 "
                    f"({cache_type}_64 and {cache_type} blocks)"
                )
        else:
            problem = f"heads of {head} values are not a multiple of {block} ({cache_type} blocks)"
        problems.setdefault(problem, []).append(which)
    return "; ".join(f"{' and '.join(w)} {p}" for p, w in problems.items()) or None


class HeadSizeRefused(ConfigError):
    """llama.cpp refused a KV cache type whose blocks do not divide the model's heads."""


BLOCK_REFUSED = re.compile(
    r"([KV]) cache type (\S+) with block size (\d+) does not divide n_embd_head_[kv]=(\d+)"
)
LOAD_FAILED = re.compile(r"error loading model: (.+)")
GGUF_FAILED = re.compile(r"gguf_init_from_\w+: (.+)")


def _refused(text: str, label: str) -> None:
    """Raises HeadSizeRefused (exit 11) when llama.cpp refused a cache type by head size."""
    if m := BLOCK_REFUSED.search(text):
        which, cache_type, block, head = m.groups()
        raise HeadSizeRefused(
            f"{label}: llama.cpp refuses a {which} cache of {cache_type}: {which} heads of "
            f"{head} values are not a multiple of its {block}-value blocks",
            hint="measure the configurations this model can take (--configs)",
        )


def _load_failed(text: str, model: Path) -> None:
    """Raises ModelError (exit 22) when llama.cpp could not load ``model``, with its reason."""
    m = LOAD_FAILED.search(text)
    if m is None:
        return
    # A truncated header says why in gguf's own line; the loader only says that it failed.
    detail = GGUF_FAILED.search(text)
    reason = detail.group(1) if detail and "failed to load model" in m.group(1) else m.group(1)
    raise ModelError(
        f"llama.cpp cannot load {model}: {reason.strip()}",
        hint="the file is truncated or corrupt, or needs a newer llama.cpp than the pinned one: "
        "compare its size and sha256 with where it came from, or download it again",
    )


def _unsupported(text: str) -> None:
    if m := UNSUPPORTED.search(text):
        raise CommandFailed(
            f"this llama-perplexity does not support the KV cache type {m.group(1)}",
            hint="the turbo types arrive with the TurboQuant patch series: rebuild with "
            "`nox -s build`, or pick configurations this build has with --configs",
        )


def parse_base(text: str, config: str = "f16", where: str = "llama-perplexity") -> RunResult:
    """A ``--kl-divergence-base`` (plain perplexity) run."""
    _unsupported(text)
    m = FINAL.search(text)
    if not m:
        raise ParseError(f"{where}: no `Final estimate: PPL = ...` line (run cut short?)")
    chunks, ctx = _chunks(text, where)
    return RunResult(
        config=config,
        chunks=chunks,
        ctx=ctx,
        ppl=Estimate(float(m.group(1)), float(m.group(2))),
        kv=kv_allocation(text, where),
        rotation=_rotation(text),
        model=logged_model(text, where),
    )


def parse_kld(text: str, config: str, where: str = "llama-perplexity") -> RunResult:
    """A ``--kl-divergence`` run: every statistic the gates use must be there."""
    _unsupported(text)
    found: dict[str, Estimate] = {}
    for key, pattern in STATS.items():
        m = pattern.search(text)
        if not m:
            raise ParseError(
                f"{where}: no `{pattern.pattern.split(' ')[0].lstrip('^')}...` statistic for "
                f"{config} (a truncated run, or llama-perplexity skipped the statistics)"
            )
        found[key] = Estimate(float(m.group(1)), float(m.group(2)))
    # Older builds print fewer percentile rows; the gates only use what every build prints.
    percentiles = {label.strip(): float(value) for label, value in PERCENTILE.findall(text)}
    chunks, ctx = _chunks(text, where)
    return RunResult(
        config=config,
        chunks=chunks,
        ctx=ctx,
        ppl=found["ppl"],
        kv=kv_allocation(text, where),
        rotation=_rotation(text),
        ppl_base=found["ppl_base"],
        ppl_ratio=found["ppl_ratio"],
        kld=found["kld"],
        kld_percentiles=percentiles,
        rms_dp=found["rms_dp"],
        same_top_p=found["same_top_p"],
    )


# --- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How every llama-perplexity run of a suite is made: the binary, context length in
    tokens, chunks, threads, and the optional -ngl and -ub."""

    binary: Path
    ctx: int = 512
    chunks: int = 8
    threads: int = 2
    # -ngl; None passes none, so a CPU build runs as it always did.
    gpu_layers: int | None = None
    # -ub; 1 sends every token through the decode kernels (one query per step) instead of the
    # prompt path, at the cost of speed; None keeps llama-perplexity's own.
    ubatch: int | None = None

    def common(self, model: Path, text: Path) -> list[str | Path]:
        """The llama-perplexity command line every run shares (model, text, context of
        ``ctx`` tokens, ``chunks`` chunks, flash attention on, threads, -ngl, -ub)."""
        # llama-perplexity block-buffers stdout into a pipe, which would hold back the
        # per-chunk rows the progress line counts until the run ends.
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        offload = [] if self.gpu_layers is None else ["-ngl", str(self.gpu_layers)]
        ubatch = [] if self.ubatch is None else ["-ub", str(self.ubatch)]
        return [
            *line_buffered,
            self.binary,
            "-m",
            model,
            "-f",
            text,
            "-c",
            str(self.ctx),
            "-b",
            str(BATCH),
            "-t",
            str(self.threads),
            "-fa",
            "on",
            "--chunks",
            str(self.chunks),
            "-lv",
            VERBOSITY,
            *offload,
            *ubatch,
        ]


def build_identity(binary: Path) -> dict[str, object]:
    """What built ``binary``: the build stamp if there is one, else the files' own hash."""
    stamp = binary.parent.parent / STAMP
    try:
        record = json.loads(stamp.read_text(encoding="utf-8"))
        return {
            "upstream": record["upstream"],
            "series": record["series"],
            "options": record.get("options"),
        }
    except (OSError, ValueError, KeyError):
        h = hashlib.sha256()
        for f in sorted(binary.parent.iterdir()):
            if f.is_file() and not f.is_symlink() and (f == binary or ".so" in f.name):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        return {"unstamped_binaries": h.hexdigest()}


@dataclass(frozen=True)
class BaseKey:
    """What the cached f16 base logits depend on: model and text (sha256), the build, the
    context length and the number of chunks."""

    model_sha256: str
    text_sha256: str
    build: dict[str, object]
    ctx: int
    chunks: int

    def digest(self) -> str:
        """24 hex digits of the sha256 of the key: the name of its cache entry."""
        blob = json.dumps(self.__dict__, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


class ChunkProgress:
    """Feeds llama-perplexity's lines to a Progress line: chunk n of N and an ETA."""

    PASS = re.compile(r"([\d.]+) seconds per pass")
    ROW = re.compile(r"^ *(\d+) +[\d.]+ ± ")

    def __init__(self, label: str, chunks: int, expected: float | None) -> None:
        self.progress = Progress(label, every=10.0)
        self.chunks = chunks
        self.per_pass: float | None = None
        self.expected = expected

    def __call__(self, line: str) -> None:
        if m := self.PASS.search(line):
            self.per_pass = float(m.group(1))
        done = int(m.group(1)) if (m := self.ROW.match(line)) else None
        self.progress.steps(done, self.chunks, self._eta(done))

    def _eta(self, done: int | None) -> float | None:
        elapsed = self.progress.elapsed
        if done:
            return elapsed / done * (self.chunks - done)
        if self.per_pass is not None:
            return max(self.per_pass * self.chunks - elapsed, 0.0)
        return None if self.expected is None else max(self.expected - elapsed, 0.0)


class Runner:
    """Runs llama-perplexity one at a time (each run uses every thread it is given)."""

    def __init__(self, paths: Paths, settings: RunSettings, log_dir: Path) -> None:
        self.paths = paths
        self.settings = settings
        self.log_dir = log_dir
        self.seconds_per_chunk: float | None = None

    def _run(
        self, label: str, log: Path, cmd: Sequence[str | Path], model: Path
    ) -> tuple[str, float]:
        """Run ``cmd`` (a llama-perplexity run on ``model``) with a progress line; its output
        and seconds. Raises ConfigError for a text too short for the context, ModelError when
        llama.cpp cannot load ``model``, HeadSizeRefused when it refuses a cache type by head
        size, CommandFailed for any other non-zero exit."""
        log.unlink(missing_ok=True)
        expected = (
            None
            if self.seconds_per_chunk is None
            else self.seconds_per_chunk * self.settings.chunks
        )
        progress = ChunkProgress(label, self.settings.chunks, expected)
        start = time.monotonic()
        result = proc.run(cmd, log=log, on_line=progress, check=False, quiet=True, what=label)
        seconds = time.monotonic() - start
        progress.progress.done(f"exit {result.returncode}")
        # llama-perplexity refuses a short text with exit 0, so this is checked first
        _too_short(result.output, self.settings.ctx)
        if result.returncode != 0:
            _unsupported(result.output)
            _load_failed(result.output, model)
            _refused(result.output, label)
            tail = "\n".join("    " + t for t in result.output.splitlines()[-15:])
            raise CommandFailed(
                f"{label}: llama-perplexity exited {result.returncode}\n{tail}\n  full log: {log}"
            )
        self.seconds_per_chunk = seconds / max(self.settings.chunks, 1)
        return result.output, seconds

    def base(
        self, model_name: str, model: Path, text: Path, key: BaseKey
    ) -> tuple[Path, RunResult, bool]:
        """The f16 base logits for this key, its run (with the model as llama.cpp logged it),
        and whether they came from the cache. A run that fails leaves nothing in the cache.
        Raises what ``_run`` raises, and ParseError for output without a final estimate."""
        # The cache is shared by every clone: one run writes (or evicts) a base at a time.
        with exclusive(self.paths.locks / "kld-base.lock"):
            return self._base(model_name, model, text, key)

    def _base(
        self, model_name: str, model: Path, text: Path, key: BaseKey
    ) -> tuple[Path, RunResult, bool]:
        entry = self.paths.cache / "kld-base" / f"{model_name}-{key.digest()}"
        logits, log_copy = entry / "base.kld", entry / "base.log"
        if logits.is_file() and log_copy.is_file():
            print(f"{model_name}: reusing the f16 base logits in {entry}", file=sys.stderr)
            os.utime(entry)  # most recently used: the eviction below keeps it
            result = parse_base(log_copy.read_text(encoding="utf-8"), where=str(log_copy))
            return logits, result, True
        tmp = entry.with_name(entry.name + ".tmp")
        # This run holds the lock every base run takes, so any .tmp here is what an
        # interrupted run left (eviction skips them): remove them all, not just this key's.
        for stale in entry.parent.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = self.log_dir / f"{model_name}-f16-base.log"
        cmd = [
            *self.settings.common(model, text),
            "--kl-divergence-base",
            tmp / "base.kld",
        ]
        try:
            output, seconds = self._run(f"{model_name} f16 (base)", log, cmd, model)
            result = parse_base(output, where=str(log))
            shutil.copyfile(log, tmp / "base.log")
            (tmp / "key.json").write_text(json.dumps(key.__dict__, indent=1), encoding="utf-8")
        except BaseException:
            # a refused text or model, a crash or Ctrl-C: nothing of this run stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
        evict_bases(self.paths.cache / "kld-base", keep=entry)
        return entry / "base.kld", replace(result, seconds=seconds), False

    def candidate(
        self, model_name: str, model: Path, text: Path, base: Path, config: CacheConfig
    ) -> RunResult:
        """One configuration's run with --kl-divergence against the base logits ``base``:
        PPL, KLD and same-top with their errors, KV bytes per token. Raises CommandFailed
        when llama-perplexity fails, ParseError when its output lacks a number, and
        HeadSizeRefused when llama.cpp refuses the cache type for the model's head size."""
        log = self.log_dir / f"{model_name}-{config.name.replace('/', '-')}.log"
        cmd = [
            *self.settings.common(model, text),
            "--kl-divergence-base",
            base,
            "--kl-divergence",
            "-ctk",
            config.k,
            "-ctv",
            config.v,
        ]
        output, seconds = self._run(f"{model_name} {config.name}", log, cmd, model)
        return replace(parse_kld(output, config.name, where=str(log)), seconds=seconds)


def evict_bases(root: Path, keep: Path) -> None:
    """Drop the least recently used base logits beyond TQH_KLD_CACHE_GB (default 8)."""
    limit = environment().kld_cache_bytes
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")]

    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())

    total = sum(size(p) for p in entries)
    for p in sorted(entries, key=lambda p: p.stat().st_mtime):
        if total <= limit:
            break
        if p == keep:
            continue
        total -= size(p)
        shutil.rmtree(p, ignore_errors=True)
