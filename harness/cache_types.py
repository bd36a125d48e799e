"""KV-cache configurations: the K and V cache types llama.cpp's -ctk/-ctv take in this build,
their values per block, and whether a model's head size can hold them.

A configuration is written ``q4_0`` (both) or ``q8_0/turbo3`` (K/V); head sizes are in values
per head (``ModelInfo.head_dim_k``/``head_dim_v`` from the GGUF).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.models import ModelInfo


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
