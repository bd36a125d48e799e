"""KLD window by window (harness.windows): the per-window means read from llama-perplexity's
table, errors over windows, and growth with the context length on the same tokens."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from harness import gates, windows
from harness.llama_log import Estimate, RunResult, parse_kld, window_means

DATA = Path(__file__).parent / "data" / "perplexity"


def _recorded() -> RunResult:
    return parse_kld((DATA / "smollm2-135m-q4_0.log").read_text(encoding="utf-8"), "q4_0")


def _run(ctx: int, per_window: list[float]) -> RunResult:
    mean = statistics.fmean(per_window) if per_window else 0.1
    return replace(_recorded(), ctx=ctx, kld=Estimate(mean, 0.001), kld_windows=tuple(per_window))


def test_window_means_from_the_recorded_table() -> None:
    """The log's 6 running means (0.07258, 0.05390, ...) give back the windows whose mean is
    the final Mean KLD, each good to k x 1e-5."""
    r = _recorded()
    assert len(r.kld_windows) == r.chunks == 6
    assert r.kld_windows[0] == pytest.approx(0.07258)
    assert r.kld_windows[1] == pytest.approx(2 * 0.05390 - 0.07258)
    assert statistics.fmean(r.kld_windows) == pytest.approx(r.kld.value, abs=6e-5)  # type: ignore[union-attr]


def test_window_means_invert_running_means() -> None:
    values = [0.5, 0.2, 0.9, 0.4]
    running = [statistics.fmean(values[: k + 1]) for k in range(len(values))]
    assert window_means(running) == pytest.approx(values)


def test_a_table_with_a_missing_row_gives_no_windows() -> None:
    text = (DATA / "smollm2-135m-q4_0.log").read_text(encoding="utf-8")
    row3 = next(line for line in text.splitlines() if line.startswith("   3  "))
    assert parse_kld(text.replace(row3 + "\n", ""), "q4_0").kld_windows == ()


def test_the_error_over_windows_is_the_spread_of_the_window_means() -> None:
    r = _run(4096, [0.4, 0.6, 0.5, 0.7])
    e = windows.over_windows(r)
    assert e is not None and e.value == pytest.approx(0.55)
    assert e.error == pytest.approx(statistics.stdev([0.4, 0.6, 0.5, 0.7]) / 2)
    assert windows.over_windows(_run(4096, [0.4])) is None


def test_growth_pairs_each_long_window_with_the_short_windows_of_the_half_it_scores() -> None:
    """Two windows of 2048 over eight of 512: window w of 2048 scores tokens 2048w+1024 ..
    2048w+2047, the 512-windows 4w+2 and 4w+3. The text's regions differ 4-fold; on the same
    tokens the long context is 1.1x the short one, which the plain ratio of means misses."""
    short = [9.0, 9.0, 0.1, 0.3, 9.0, 9.0, 0.4, 0.4]
    long = [1.1 * 0.2, 1.1 * 0.4]
    g = windows.growth(_run(2048, long), _run(512, short))
    assert g is not None
    assert g.value == pytest.approx(1.1)
    plain = statistics.fmean(long) / statistics.fmean(short)
    assert abs(plain - 1.1) > 0.5


def test_the_jackknife_error_of_a_growth() -> None:
    """Three long windows at 1.0x, 1.4x and 1.2x of their regions (all 0.5): growth 1.2;
    leaving one out gives 1.3, 1.1, 1.2, so the error is sqrt(2/3 x 0.02) = 0.1155."""
    g = windows.growth(_run(1024, [0.5, 0.7, 0.6]), _run(512, [0.0, 0.5] * 3))
    assert g is not None and g.value == pytest.approx(1.2)
    assert g.error == pytest.approx((2 / 3 * 0.02) ** 0.5)


def test_below_three_windows_the_error_is_over_tokens() -> None:
    """Two windows give one degree of freedom (SmolLM2's turbo4 at 8192: 0.04849 and 0.04857):
    the error over tokens stands in, the relative errors in quadrature."""
    long, short = _run(1024, [0.5, 0.7]), _run(512, [0.0, 0.5, 0.0, 0.5])
    g = windows.growth(long, short)
    assert g is not None and g.value == pytest.approx(1.2)
    rel = ((0.001 / 0.6) ** 2 + (0.001 / 0.25) ** 2) ** 0.5
    assert g.error == pytest.approx(1.2 * rel)
    assert windows.over_windows(long) is None
    assert windows.over_windows(_run(1024, [0.5, 0.7, 0.6])) is not None


def test_windows_that_do_not_line_up_give_no_same_token_growth() -> None:
    # fewer short windows than the long ones cover, and a short context not under half
    assert windows.growth(_run(2048, [0.2, 0.4]), _run(512, [0.1] * 7)) is None
    assert windows.growth(_run(1024, [0.2]), _run(1024, [0.1])) is None
    assert windows.growth(_run(2048, []), _run(512, [0.1] * 8)) is None


def test_growth_against_q4_0_pairs_the_windows_of_both() -> None:
    """turbo3 grows 1.2x in each of 3 windows, q4_0 by 1.0x, 1.5x and 1.0x: the ratio of the
    two growths, its error a jackknife of that ratio with the windows paired."""
    short = [0.0, 0.2, 0.0, 0.4, 0.0, 0.3]
    mine, ref = [0.24, 0.48, 0.36], [0.2, 0.6, 0.3]
    t3 = windows.growth_vs(_run(1024, mine), _run(512, short), _run(1024, ref), _run(512, short))
    assert t3 is not None
    assert t3.value == pytest.approx((1.08 / 0.9) / (1.1 / 0.9))
    # turbo3 is 1.2x in every window; leaving one out, q4_0 is 0.9/0.7, 0.5/0.5, 0.8/0.6
    loo = [1.2 / (0.9 / 0.7), 1.2 / 1.0, 1.2 / (0.8 / 0.6)]
    m = statistics.fmean(loo)
    assert t3.error == pytest.approx((2 / 3 * sum((x - m) ** 2 for x in loo)) ** 0.5)


def test_the_growth_gate_reads_the_same_token_growth(tmp_path: Path) -> None:
    """On the tokens the long window scores, turbo3 grew 1.5x and q4_0 stayed level, so
    growth(turbo3) <= 1.25 * growth(q4_0) fails; the plain means (turbo3 0.3 / 4.6, q4_0
    0.1 / 0.055) would have passed it."""
    path = tmp_path / "gates.toml"
    path.write_text(
        "[suite]\nmodels = ['m']\nconfigs = ['f16']\nchunks = 1\n"
        "[suite.quick]\nmodels = ['m']\nconfigs = ['f16']\nchunks = 1\n"
        "[bits]\nf16 = 16.0\nq4_0 = 4.5\nturbo3 = 3.125\n"
        '[[gate]]\ncheck = "growth(turbo3) <= 1.25 * growth(q4_0)"\n'
    )
    g = gates.load(path)
    short = {
        "turbo3": _run(1024, [9.0, 9.0, 0.2, 0.2]),
        "q4_0": _run(1024, [0.01, 0.01, 0.1, 0.1]),
    }
    long = {"turbo3": _run(4096, [0.3]), "q4_0": _run(4096, [0.1])}
    (o,) = gates.evaluate_growth(g, "m", ["turbo3"], long, short)
    assert not o.passed and o.detail.startswith("1.5 <= 1.25")
