"""Parsing real llama-perplexity output (captured from the harness's own runs on SmolLM2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cache_types import CacheConfig, block64_allowed, head_size_refusal
from harness.errors import CommandFailed, ConfigError
from harness.llama_log import ParseError, logged_model, parse_base, parse_kld
from harness.models import ModelInfo

DATA = Path(__file__).parent / "data" / "perplexity"


def read(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def test_base_run() -> None:
    r = parse_base(read("smollm2-135m-f16-base.log"))
    final = re.search(
        r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", read("smollm2-135m-f16-base.log")
    )
    assert final is not None
    assert (r.ppl.value, r.ppl.error) == (float(final.group(1)), float(final.group(2)))
    assert r.kld is None and r.ppl_ratio is None
    assert (r.kv.k_type, r.kv.v_type, r.kv.cells, r.kv.layers) == ("f16", "f16", 512, 30)
    # f16: 3 KV heads x 64 dims x 2 bytes, K and V, 30 layers = 23,040 bytes per token; the
    # log rounds MiB to two decimals.
    assert r.kv.bytes_per_token == pytest.approx(23040, rel=0.002)
    assert r.kv.bits_per_value(384) == pytest.approx(16.0, rel=0.002)
    assert r.rotation == {"k": 0, "v": 0}


@pytest.mark.parametrize(
    ("name", "config", "bits"),
    [("smollm2-135m-q8_0.log", "q8_0", 8.5), ("smollm2-135m-q4_0.log", "q4_0", 4.5)],
)
def test_kld_runs(name: str, config: str, bits: float) -> None:
    text = read(name)
    r = parse_kld(text, config)
    kld = re.search(r"Mean +KLD: +([\d.]+) ± +([\d.]+)", text)
    assert kld is not None
    assert r.kld is not None and (r.kld.value, r.kld.error) == (
        float(kld.group(1)),
        float(kld.group(2)),
    )
    assert r.ppl_base is not None and r.ppl_ratio is not None
    assert r.rms_dp is not None and 0 < r.rms_dp.value < 100
    assert r.same_top_p is not None and 50 < r.same_top_p.value <= 100
    assert set(r.kld_percentiles) >= {"Maximum", "99.9%", "99.0%", "Median", "Minimum"}
    assert r.kld_percentiles["99.0%"] >= r.kld_percentiles["Median"]
    assert (r.kv.k_type, r.kv.v_type) == (config, config)
    assert r.kv.bits_per_value(384) == pytest.approx(bits, rel=0.005)
    # Upstream rotates quantized K and V (Hadamard) as shipped.
    assert r.rotation == {"k": 1, "v": 1}


def test_f16_against_its_own_base_is_exact() -> None:
    r = parse_kld(read("smollm2-135m-f16.log"), "f16")
    assert r.kld is not None and abs(r.kld.value) <= 1e-6
    assert r.same_top_p is not None and r.same_top_p.value == 100.0


def test_missing_percentile_rows_are_tolerated() -> None:
    """Older builds print fewer percentile rows; the statistics the gates need remain."""
    lines = read("smollm2-135m-q4_0.log").splitlines(keepends=True)
    kept = "".join(
        line for line in lines if not re.match(r"^( ?[\d.]+%|Median|Maximum|Minimum) +KLD", line)
    )
    assert kept != "".join(lines)
    r = parse_kld(kept, "q4_0")
    assert r.kld_percentiles == {}
    assert r.kld is not None and r.kld.value > 0


@pytest.mark.parametrize(
    "marker",
    ["====== KL divergence statistics ======", "RMS Δp", "====== Perplexity statistics ======"],
)
def test_truncated_output_is_a_parse_error(marker: str) -> None:
    text = read("smollm2-135m-q4_0.log")
    truncated = text[: text.index(marker)]
    with pytest.raises(ParseError) as err:
        parse_kld(truncated, "q4_0", where="q4_0.log")
    assert "q4_0.log" in str(err.value)
    assert err.value.exit_code == 23


def test_a_log_without_the_kv_cache_line_is_a_parse_error() -> None:
    """Without -lv 4 llama.cpp does not log the allocation; that must not pass silently."""
    text = "\n".join(
        line for line in read("smollm2-135m-q8_0.log").splitlines() if "llama_kv_cache" not in line
    )
    with pytest.raises(ParseError, match="llama_kv_cache"):
        parse_kld(text, "q8_0")


def test_an_unsupported_cache_type_is_named() -> None:
    """Real output of a build without the TurboQuant types, asked for turbo3."""
    with pytest.raises(CommandFailed, match="does not support the KV cache type turbo3") as err:
        parse_kld(read("turbo3-unsupported.log"), "turbo3")
    assert not isinstance(err.value, ParseError)


def test_config_names() -> None:
    assert CacheConfig.parse("q4_0") == CacheConfig("q4_0", "q4_0")
    assert CacheConfig.parse("q8_0/turbo3").name == "q8_0/turbo3"
    assert CacheConfig.parse("turbo4/turbo4").name == "turbo4"
    for bad in ("", "a/b/c", "/q4_0", "turbo3/"):
        with pytest.raises(ConfigError, match="cannot read the KV configuration"):
            CacheConfig.parse(bad)


def test_the_model_as_llama_cpp_logged_it() -> None:
    """print_info lines of a real base run on SmolLM2 (issue 12: the report records them)."""
    m = parse_base(read("smollm2-135m-f16-base.log")).model
    assert m is not None
    assert (m.architecture, m.layers, m.n_head, m.n_head_kv, m.n_gqa) == (
        "llama",
        30,
        (9,),
        (3,),
        (3,),
    )
    assert (m.head_dim_k, m.head_dim_v, m.context_length, m.sliding_window) == (64, 64, 8192, 0)
    assert (m.vocab_size, m.file_type) == (49152, "Q4_1")
    info = m.info("fallback")
    assert (info.name, info.n_head, info.n_head_kv, info.kv_values_per_token) == (
        "Smollm2 135M 8k Lc100K Mix1 Ep2",
        9,
        3,
        384,
    )
    # candidate runs do not carry it; a log without print_info lines has none
    assert parse_kld(read("smollm2-135m-q8_0.log"), "q8_0").model is None
    assert logged_model(read("turbo3-unsupported.log")) is None


def test_per_layer_head_counts_and_a_missing_line() -> None:
    """llama.cpp prints a list where layers differ (e.g. recurrent layers with no KV heads)."""
    text = read("smollm2-135m-f16-base.log")
    varied = re.sub(r"(print_info: n_head_kv +=) 3", r"\1 [3, 3, 0]", text)
    m = logged_model(varied)
    assert m is not None and m.n_head_kv == (3, 3, 0) and m.info("x").n_head_kv == 3
    no_heads = re.sub(r".*print_info: n_embd_head_k .*\n", "", text)
    with pytest.raises(ParseError, match="n_embd_head_k"):
        logged_model(no_heads, where="base.log")


def _heads(k: int, v: int) -> ModelInfo:
    return ModelInfo("m", "llama", 2, 4, 2, k, v, 4096, None, 100)


@pytest.mark.parametrize(
    ("config", "k", "v", "block64", "says"),
    [
        ("turbo3", 128, 128, True, None),
        ("turbo3", 256, 256, False, None),
        ("turbo3", 64, 64, True, None),  # llama.cpp stores turbo3_64
        ("turbo3", 64, 64, False, "K and V heads of 64 values are not a multiple of 128 (turbo3)"),
        ("turbo3", 96, 96, True, "K and V heads of 96 values are not a multiple of 64 or 128"),
        ("q8_0/turbo4", 96, 96, True, "V heads of 96 values are not a multiple of 64 or 128"),
        ("q4_0", 96, 96, True, None),
        ("q4_0", 80, 80, True, "K and V heads of 80 values are not a multiple of 32 (q4_0"),
        ("f16", 80, 80, True, None),
        ("turbo5/turbo3", 128, 96, True, "V heads of 96 values"),
        ("turbo3_64", 64, 64, False, None),
    ],
)
def test_which_configurations_a_head_size_allows(
    config: str, k: int, v: int, block64: bool, says: str | None
) -> None:
    why = head_size_refusal(CacheConfig.parse(config), _heads(k, v), block64)
    if says is None:
        assert why is None
    else:
        assert why is not None and why.startswith(says), why


@pytest.mark.parametrize(
    ("value", "allowed"), [(None, True), ("1", True), ("0", False), ("00", False), ("x", False)]
)
def test_llama_turbo_block64_is_read_like_atoi(value: str | None, allowed: bool) -> None:
    env = {} if value is None else {"LLAMA_TURBO_BLOCK64": value}
    assert block64_allowed(env) is allowed


def test_a_nan_error_is_read_not_refused() -> None:
    """llama-perplexity prints `± -nan` for the paired PPL ratio when a run and its base agree
    to the last bit (an f16 run of a small random-weight model did): a number, not a missing
    statistic."""
    text = read("smollm2-135m-f16.log")
    nan = re.sub(
        r"^(Mean PPL\(Q\)/PPL\(base\) +: +[\d.]+ ± +)[\d.]+", r"\1-nan", text, count=1, flags=re.M
    )
    assert nan != text
    r = parse_kld(nan, "f16")
    assert r.ppl_ratio is not None and r.ppl_ratio.value == 1.000315
    assert r.ppl_ratio.error != r.ppl_ratio.error  # nan
