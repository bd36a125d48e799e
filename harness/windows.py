"""KLD window by window: how much a mean KLD moves between the windows of a long text, and
the growth of KLD with the context length measured on the same tokens.

llama-perplexity scores the second half of each window of ``n_ctx`` tokens and prints, after
every window, the running mean KLD over the windows so far (``llama_log.RunResult
.kld_windows`` holds each window's own mean, recovered from them). The ``±`` it prints is the
standard error over tokens, which treats every token as independent; the tokens of one
window share their text, and on this project's texts the window means spread 3-6 times more
than that error says (Gemma 3, turbo3, 8 windows of 4096: 0.005 over tokens, 0.030 over
windows; docs/measurements.md). Errors here are taken over windows.

Growth (``growth(CONFIG)`` in gates.toml) compares a configuration's KLD at a long context
L with its KLD at a short one S on the same text. The scored tokens differ: the second half
of each window of L, and of each window of S. So each window of L is compared with the
windows of S that lie inside the half it scores, on the same text, and the spread between
regions of text cancels in the ratio; its error is a jackknife over the windows of L.

An error over windows needs MIN_WINDOWS of them: from 2 it rests on one degree of freedom
(SmolLM2's turbo4 at 8192: two windows 0.04849 and 0.04857, "± 0.00004"). With fewer, the
error over tokens stands in, which understates it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from harness.llama_log import Estimate, RunResult

MIN_WINDOWS = 3


def over_windows(r: RunResult) -> Estimate | None:
    """Mean KLD of ``r`` (nats) with the standard error of the mean over its windows; None
    with fewer than MIN_WINDOWS windows."""
    w = r.kld_windows
    if len(w) < MIN_WINDOWS:
        return None
    return Estimate(statistics.fmean(w), statistics.stdev(w) / math.sqrt(len(w)))


def _region(long: RunResult, short: RunResult) -> list[tuple[int, int]] | None:
    """For each window of ``long`` (L tokens), the slice [a, b) of ``short``'s windows (S
    tokens) that lie inside the half the long window scores, [wL + L/2, (w+1)L); None when
    the windows are missing, do not start at the same token, or a slice is empty."""
    n_long, n_short = len(long.kld_windows), len(short.kld_windows)
    big, small = long.ctx, short.ctx
    if n_long == 0 or small <= 0 or big < 2 * small or n_short * small < n_long * big:
        return None
    out = []
    for w in range(n_long):
        a = -(-(w * big + big // 2) // small)  # ceil
        b = ((w + 1) * big) // small
        if b <= a:
            return None
        out.append((a, b))
    return out


def _jackknife(stat: Callable[[Sequence[int]], float], n: int, fallback: float) -> Estimate:
    """``stat`` over all n windows, with the jackknife standard error over leaving one out;
    with fewer than MIN_WINDOWS windows, ``fallback`` (relative to the value) instead."""
    full = stat(range(n))
    if n < MIN_WINDOWS:
        return Estimate(full, abs(full) * fallback)
    loo = [stat([i for i in range(n) if i != j]) for j in range(n)]
    mean = statistics.fmean(loo)
    return Estimate(full, math.sqrt((n - 1) / n * sum((x - mean) ** 2 for x in loo)))


def _growth_stat(long: RunResult, short: RunResult) -> Callable[[Sequence[int]], float] | None:
    """The same-token growth of the long windows ``ws``: their KLD sum over the sum of the
    mean KLD of the short windows inside their scored halves; None when the windows do not
    line up or a sum cannot be positive (f16 against itself)."""
    region = _region(long, short)
    if region is None:
        return None
    means = [statistics.fmean(short.kld_windows[a:b]) for a, b in region]
    if min(means) <= 0 or sum(long.kld_windows) <= 0:
        return None

    def stat(ws: Sequence[int]) -> float:
        return sum(long.kld_windows[w] for w in ws) / sum(means[w] for w in ws)

    return stat


def _token_error(*runs: RunResult) -> float:
    """The relative error over tokens of a ratio of these runs' mean KLDs, in quadrature."""
    return math.hypot(*(r.kld.error / r.kld.value for r in runs if r.kld and r.kld.value > 0))


def growth(long: RunResult, short: RunResult) -> Estimate | None:
    """KLD at ``long``'s context over KLD at ``short``'s on the same tokens (a ratio, no
    unit), with its jackknife standard error over the long windows (over tokens below
    MIN_WINDOWS of them); None when the window means are missing or do not line up (then
    the caller compares the plain means), or a KLD sum is not positive (f16 against
    itself)."""
    stat = _growth_stat(long, short)
    if stat is None:
        return None
    return _jackknife(stat, len(long.kld_windows), _token_error(long, short))


def growth_vs(
    long: RunResult, short: RunResult, long_ref: RunResult, short_ref: RunResult
) -> Estimate | None:
    """growth(long, short) / growth(long_ref, short_ref), windows paired (the reference,
    q4_0 for the growth gates, ran on the same windows), with its jackknife standard error;
    None where either growth is or the two runs' windows differ."""
    mine, theirs = _growth_stat(long, short), _growth_stat(long_ref, short_ref)
    if mine is None or theirs is None or _region(long, short) != _region(long_ref, short_ref):
        return None
    fallback = _token_error(long, short, long_ref, short_ref)
    return _jackknife(lambda ws: mine(ws) / theirs(ws), len(long.kld_windows), fallback)
