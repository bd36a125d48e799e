"""Parsing real llama-perplexity output (captured from the harness's own runs on SmolLM2)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.errors import CommandFailed, ConfigError
from harness.perplexity import CacheConfig, ParseError, parse_base, parse_kld

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
