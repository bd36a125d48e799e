"""What llama-perplexity prints, parsed: PPL and KL-divergence statistics, the KV cache it
allocated, the model it loaded, and the refusals that end a run.

Every parser raises ParseError (exit 23) when a statistic the gates need is missing, so a
broken or different build is an error and never a silent pass. Numbers keep llama.cpp's
units: PPL, KLD in nats, probabilities in percent, sizes in MiB as logged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.cache_types import HeadSizeRefused
from harness.errors import CommandFailed, ConfigError, ModelError
from harness.models import ModelInfo


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
# a row of the table printed after each window: chunk, PPL, ln(PPL ratio), KLD (the running
# means over the windows so far), Δp RMS, same top p
KLD_ROW = re.compile(rf"^ +(\d+) +{PM} +{PM} +{PM} +{PM} % +{PM} %$", re.M)


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
    # each window's mean KLD in nats, in order (harness.windows; empty where not printed)
    kld_windows: tuple[float, ...] = ()
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


def check_text_long_enough(text: str, ctx: int) -> None:
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


BLOCK_REFUSED = re.compile(
    r"([KV]) cache type (\S+) with block size (\d+) does not divide n_embd_head_[kv]=(\d+)"
)
LOAD_FAILED = re.compile(r"error loading model: (.+)")
GGUF_FAILED = re.compile(r"gguf_init_from_\w+: (.+)")


def check_head_size_accepted(text: str, label: str) -> None:
    """Raises HeadSizeRefused (exit 11) when llama.cpp refused a cache type by head size."""
    if m := BLOCK_REFUSED.search(text):
        which, cache_type, block, head = m.groups()
        raise HeadSizeRefused(
            f"{label}: llama.cpp refuses a {which} cache of {cache_type}: {which} heads of "
            f"{head} values are not a multiple of its {block}-value blocks",
            hint="measure the configurations this model can take (--configs)",
        )


def check_model_loaded(text: str, model: Path) -> None:
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


def check_cache_type_known(text: str) -> None:
    """Raises CommandFailed (exit 23) when this llama-perplexity does not know a cache type
    it was given (a build without the series)."""
    if m := UNSUPPORTED.search(text):
        raise CommandFailed(
            f"this llama-perplexity does not support the KV cache type {m.group(1)}",
            hint="the turbo types arrive with the TurboQuant patch series: rebuild with "
            "`nox -s build`, or pick configurations this build has with --configs",
        )


BASE_UNREADABLE = re.compile(r"kl_divergence: failed to open (\S.*?)\s*$", re.M)


def check_base_readable(text: str) -> None:
    """Raises CommandFailed (exit 23) when llama-perplexity could not open the f16 base
    logits it was given (it says so and exits 0, with no statistics)."""
    if m := BASE_UNREADABLE.search(text):
        raise CommandFailed(
            f"llama-perplexity could not open the f16 base logits {m.group(1)}",
            hint="the cached base was deleted while this run used it: run the command again "
            "and it is computed anew",
        )


def parse_base(text: str, config: str = "f16", where: str = "llama-perplexity") -> RunResult:
    """A ``--kl-divergence-base`` (plain perplexity) run."""
    check_cache_type_known(text)
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


def window_means(running: Sequence[float]) -> tuple[float, ...]:
    """Each window's mean KLD (nats) from the running means after windows 1..n (nats): with
    equal scored positions per window, window k's mean is k * m_k - (k - 1) * m_(k-1). The
    running means are printed to 5 decimals, so window k's value is good to about k x 1e-5."""
    prev = (0.0, *running[:-1])
    return tuple(k * m - (k - 1) * p for k, (m, p) in enumerate(zip(running, prev, strict=True), 1))


def _kld_windows(text: str) -> tuple[float, ...]:
    """Each window's mean KLD (nats) from the running means of the per-window table; empty
    unless the rows are numbered 1..n with none missing (a build that prints no table)."""
    rows = KLD_ROW.findall(text)
    if not rows or [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
        return ()
    return window_means([float(r[5]) for r in rows])


def parse_kld(text: str, config: str, where: str = "llama-perplexity") -> RunResult:
    """A ``--kl-divergence`` run: every statistic the gates use must be there."""
    check_cache_type_known(text)
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
        kld_windows=_kld_windows(text),
        kv=kv_allocation(text, where),
        rotation=_rotation(text),
        ppl_base=found["ppl_base"],
        ppl_ratio=found["ppl_ratio"],
        kld=found["kld"],
        kld_percentiles=percentiles,
        rms_dp=found["rms_dp"],
        same_top_p=found["same_top_p"],
    )
