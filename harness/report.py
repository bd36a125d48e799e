"""The perplexity report: JSON with everything measured, a Markdown table, PNG plots.

A depth suite (``--suite long``) adds, per model, its mean KLD at every context length, the
growth from the shortest to the longest, and a plot of KLD against context length.

Written under ``reports/<UTC timestamp>/``; ``reports/latest`` points at the newest (a copy
where the file system has no symlinks).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import windows
from harness.cache_types import CacheConfig
from harness.gates import GateFile, Outcome
from harness.llama_log import Estimate, LoggedModel, RunResult, ppl_change_pct
from harness.models import ModelInfo, ModelPin
from harness.user_files import UserFile


@dataclass
class PeerRuns:
    """A peer's runs (``perplexity --peer NAME``) of one model at one context, beside ours:
    the peer (name, one-line title, commit, the environment its programs ran with), its f16
    base (cached or not, and the cache key), and per configuration of ours the peer's own
    K/V names (``names``), its result, its failure, or why it was not run (``refused``: a
    type the peer lacks, or its head-size refusal). KLD is against the peer's own f16 run."""

    name: str
    title: str
    commit: str
    env: tuple[tuple[str, str], ...]
    info: ModelInfo
    names: dict[str, str] = field(default_factory=dict)
    results: dict[str, RunResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    base_cached: bool = False
    base_key: dict[str, Any] = field(default_factory=dict)

    @property
    def env_text(self) -> str:
        """The environment as ``K=V K=V``, or "no environment"."""
        return " ".join(f"{k}={v}" for k, v in self.env) or "no environment"


@dataclass
class ModelReport:
    """One model's part of a perplexity report: its pin and GGUF metadata, the configurations
    run, their results or failures, the configurations refused for the model's head size
    (each with the reason), the gate outcomes, the base-logit cache key, the model as
    llama.cpp logged it, and for a model given by path (``--model-file``) that file."""

    pin: ModelPin
    info: ModelInfo
    configs: list[str]
    results: dict[str, RunResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    base_cached: bool = False
    base_key: dict[str, Any] = field(default_factory=dict)
    logged: LoggedModel | None = None
    user: UserFile | None = None
    ctx: int | None = None  # context length of these runs, tokens
    chunks: int | None = None  # windows of ctx tokens asked for
    base_chunks: int | None = None  # windows the f16 base run made (a short text holds fewer)
    base_seconds: float = 0.0  # the f16 base run's wall time, s (0 when reused from the cache)
    peer: PeerRuns | None = None  # --peer: the same configurations through the peer's build

    @property
    def scored_positions(self) -> int | None:
        """Tokens each number of these runs rests on: windows made x ctx/2 (llama-perplexity
        scores the second half of each window); None when the context is not recorded."""
        if self.ctx is None:
            return None
        windows = self.base_chunks or self.chunks or 0
        return windows * self.ctx // 2

    @property
    def seconds(self) -> float:
        """Wall time of this model's runs at this context, s: the f16 base and every
        configuration."""
        return self.base_seconds + sum(r.seconds for r in self.results.values())


def ratio(top: Estimate, bottom: Estimate) -> Estimate:
    """top / bottom with one standard error, the relative errors added in quadrature (the two
    treated as independent: runs on the same tokens are positively correlated, so this
    overstates the error of a ratio of such runs rather than understating it)."""
    value = top.value / bottom.value
    rel = math.hypot(top.error / top.value, bottom.error / bottom.value)
    return Estimate(value, abs(value) * rel)


@dataclass
class DepthReport:
    """One model of a depth suite: its ModelReport at each context length in tokens
    (shortest first), and the outcomes of its growth() gates (longest against shortest)."""

    model: str
    by_ctx: dict[int, ModelReport]
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def contexts(self) -> list[int]:
        """The context lengths in tokens, shortest first."""
        return sorted(self.by_ctx)

    @property
    def configs(self) -> list[str]:
        """Every configuration run at some context, in the order of the tables."""
        return list(dict.fromkeys(c for m in self.by_ctx.values() for c in m.configs))

    def kld(self, config: str, ctx: int) -> Estimate | None:
        """Mean KLD of ``config`` at ``ctx`` tokens (nats) with its standard error over the
        windows (harness.windows), or over tokens as llama-perplexity prints it where there
        are fewer than 2 windows; None: not measured there."""
        r = self.by_ctx[ctx].results.get(config)
        if r is None or r.kld is None:
            return None
        return windows.over_windows(r) or r.kld

    def windows(self, config: str, ctx: int) -> tuple[float, ...]:
        """Each window's mean KLD of ``config`` at ``ctx`` tokens (nats), in text order; empty
        when not measured there or not printed."""
        r = self.by_ctx[ctx].results.get(config)
        return () if r is None else r.kld_windows

    def growth_at(self, config: str, ctx: int) -> Estimate | None:
        """KLD at ``ctx`` / KLD at the shortest context, on the same tokens where the window
        means line up (harness.windows.growth), else the plain ratio of the means; None when
        either is missing or zero (f16)."""
        long = self.by_ctx[ctx].results.get(config)
        short = self.by_ctx[min(self.by_ctx)].results.get(config)
        if long is None or short is None or long.kld is None or short.kld is None:
            return None
        if long.kld.value <= 0 or short.kld.value <= 0:
            return None
        return windows.growth(long, short) or ratio(long.kld, short.kld)

    def growth(self, config: str) -> Estimate | None:
        """growth_at the longest context: what the growth() gates read."""
        return self.growth_at(config, max(self.by_ctx))

    def growth_vs(self, config: str, reference: str = "q4_0") -> Estimate | None:
        """``config``'s growth / ``reference``'s growth, the quantity the growth() gates
        bound, with its standard error (windows paired where they line up); None when either
        growth is missing."""
        mine, theirs = self.growth(config), self.growth(reference)
        if mine is None or theirs is None:
            return None
        long, short = max(self.by_ctx), min(self.by_ctx)
        runs = [self.by_ctx[x].results[c] for c in (config, reference) for x in (long, short)]
        return windows.growth_vs(*runs) or ratio(mine, theirs)


def new_dir(root: Path) -> Path:
    """A new folder ``root``/<UTC time> (with -2, -3 ... for runs in the same second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = root / stamp
    n = 1
    while path.exists():  # two runs in one second
        n += 1
        path = root / f"{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def link_latest(root: Path, target: Path) -> Path:
    """Point ``root``/latest at ``target``, replacing the old link in one rename."""
    latest = root / "latest"
    tmp = root / ".latest.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink() if tmp.is_symlink() else shutil.rmtree(tmp)
    try:
        tmp.symlink_to(target.name, target_is_directory=True)
        if latest.exists() and not latest.is_symlink():
            shutil.rmtree(latest)
        os.replace(tmp, latest)
    except OSError:
        if latest.is_symlink():
            latest.unlink()
        elif latest.exists():
            shutil.rmtree(latest)
        shutil.copytree(target, latest)
    return latest


def _bits(gate_file: GateFile, config: str) -> float:
    c = CacheConfig.parse(config)
    return (gate_file.bits[c.k] + gate_file.bits[c.v]) / 2


def _row_data(m: ModelReport | PeerRuns, gate_file: GateFile, config: str) -> dict[str, Any]:
    r = m.results.get(config)
    base = m.results.get("f16")
    row: dict[str, Any] = {"config": config, "bits_per_value": _bits(gate_file, config)}
    if r is None:
        if config in m.refused:
            row["refused"] = m.refused[config]
        row["error"] = m.failures.get(config) or (
            f"refused: {m.refused[config]}" if config in m.refused else "not run"
        )
        return row
    row.update(json.loads(json.dumps(asdict(r))))
    row.pop("model", None)  # the model is described once, not in every row
    row["kv_bytes_per_token"] = r.kv.bytes_per_token
    row["kv_bits_per_value_allocated"] = r.kv.bits_per_value(m.info.kv_values_per_token)
    if base is not None:
        row["kv_ratio_to_f16"] = r.kv.bytes_per_token / base.kv.bytes_per_token
    row["ppl_change_pct"] = ppl_change_pct(r, base)
    return row


def _gate_status(m: ModelReport, config: str) -> str:
    mine = [o for o in m.outcomes if config in o.gate.subjects]
    if not mine:
        return "–"
    failed = [o for o in mine if not o.passed]
    if not failed:
        return f"pass ({len(mine)})"
    return "**FAIL** " + ", ".join(f"line {o.gate.line}" for o in failed)


def _pm(value: float | None, error: float | None, digits: int) -> str:
    if value is None:
        return "–"
    shown = f"{round(value, digits) + 0.0:.{digits}f}"  # no -0.00000 for a KLD of -1e-7
    return shown if error is None else f"{shown} ± {error:.{digits}f}"


def _measured_cells(row: dict[str, Any], r: RunResult, f16: RunResult | None) -> list[str]:
    """The cells every results table shares, from a row of ``_row_data`` and its run: bits per
    value (allocated), KV bytes per token, x f16, PPL, ΔPPL % against ``f16``, mean KLD."""
    ratio = row.get("kv_ratio_to_f16")
    dppl = ppl_change_pct(r, f16)
    return [
        f"{row['bits_per_value']:g} ({row['kv_bits_per_value_allocated']:.2f})",
        f"{row['kv_bytes_per_token']:.0f}",
        "–" if ratio is None else f"{ratio:.3f}",
        _pm(r.ppl.value, r.ppl.error, 3),
        "–" if dppl is None else f"{dppl:+.2f}",
        "–" if r.kld is None else _pm(r.kld.value, r.kld.error, 5),
    ]


def _stored_as(config: str, r: RunResult) -> str:
    """The configuration, and what llama.cpp really stored when it adapted the type (turbo
    types on heads that are not a multiple of 128 use their block-64 variant)."""
    k, _, v = config.partition("/")
    wanted = (k, v or k)
    stored = (r.kv.k_type, r.kv.v_type)
    return config if stored == wanted else f"{config} (stored {stored[0]}/{stored[1]})"


def _text_name(text: dict[str, Any]) -> str:
    """The pinned package and version, or the path of the user's own text."""
    return f"{text['package']} {text['version']}" if "package" in text else str(text["path"])


def _per_layer(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(values) == 1 else "per layer " + ",".join(map(str, values))


def _logged_line(g: LoggedModel) -> str:
    """What llama.cpp logged about the model (its ``print_info:`` lines), in one sentence."""
    parts = [
        f"architecture {g.architecture}",
        f"{g.layers} layers",
        f"n_head {_per_layer(g.n_head)}",
        f"n_head_kv {_per_layer(g.n_head_kv)}",
        f"GQA ratio {_per_layer(g.n_gqa)}",
        f"head size K {g.head_dim_k} / V {g.head_dim_v}",
        f"trained context {g.context_length}",
    ]
    if g.sliding_window:
        parts.append(f"sliding window {g.sliding_window}")
    if g.file_type:
        parts.append(f"file type {g.file_type}")
    return "llama.cpp logged: " + ", ".join(parts) + "."


def markdown(
    report: dict[str, Any],
    models: list[ModelReport],
    gate_file: GateFile,
    depths: list[DepthReport] | None = None,
) -> str:
    """report.md: the settings, then (a depth suite) each model's KLD against context length
    with its growth and growth gates, then per model (and context) a table of PPL, KLD and
    same-top with their errors, bits per value and KV bytes, and the gate outcomes."""
    s = report["settings"]
    windows = (
        f"c={s['ctx']}, {s['chunks']} chunk(s) (each number rests on chunks x c/2 = "
        f"{s['chunks'] * s['ctx'] // 2} scored positions)"
        if s.get("ctx")
        else f"suite {report.get('suite', '?')}: each model at several context lengths (c), "
        "each number on windows x c/2 scored positions, stated per table"
    )
    out = [
        f"# Perplexity and KL divergence, {report['created']}",
        "",
        f"Text: {_text_name(report['text'])}, "
        f"{report['text']['bytes']} bytes (sha256 {report['text']['sha256'][:12]}); "
        f"{windows}, {s['threads']} thread(s), "
        "flash attention on. "
        f"Build: {report['build'].get('upstream', '?')[:12]} + series "
        f"{str(report['build'].get('series', '?'))[:12]}. Gates: {gate_file.path.name} "
        f"(sha256 {gate_file.sha256[:12]}). Wall time {report['wall_seconds']:.0f} s.",
        "",
    ]
    if report.get("gates", {}).get("edited"):
        out[2:2] = [
            f"**{gate_file.path.name} differs from the committed file: the gates below are not "
            "the project's, and a pass here is not the project's pass.**",
            "",
        ]
    for d in depths or []:
        out += _depth_markdown(d, gate_file)
    if depths:
        out += ["![mean KLD against context length](kld-vs-ctx.png)", ""]
    for m in models:
        i = m.info
        window = f", sliding window {i.sliding_window}" if i.sliding_window else ""
        source = (
            f"GGUF {m.user.given} ({m.user.size} bytes, sha256 {m.user.sha256})"
            if m.user is not None
            else f"GGUF sha256 {m.pin.sha256[:12]}"
        )
        at = "" if s.get("ctx") or m.ctx is None else f", c={m.ctx}"
        out += [
            f"## {m.pin.name}{at}",
            "",
            f"{i.name} ({i.architecture}): {i.layers} layers, {i.n_head} heads / "
            f"{i.n_head_kv} KV heads, head_dim {i.head_dim_k}{window}; {source}. f16 base "
            f"logits {'reused from the cache' if m.base_cached else 'computed in this run'}.",
            "",
        ]
        if m.logged is not None:
            out += [_logged_line(m.logged), ""]
        ctx, asked = m.ctx or s["ctx"], m.chunks or s["chunks"]
        if at:
            out += [
                f"c={ctx}, {m.base_chunks or asked} window(s): each number rests on "
                f"{m.scored_positions} scored positions; the f16 base and these "
                f"{len(m.results)} runs took {m.seconds:.0f} s.",
                "",
            ]
        chunks = {r.chunks for r in m.results.values()}
        if chunks and max(chunks) < asked:
            out += [
                f"The text holds only {max(chunks)} window(s) of {ctx} tokens for this "
                f"model, so each number rests on {max(chunks) * ctx // 2} scored "
                f"positions, not the {asked * ctx // 2} asked for.",
                "",
            ]
        out += [
            "| config | bits/value | KV bytes/token | × f16 | PPL | ΔPPL % | mean KLD | KLD p99 "
            "| RMS Δp % | same top p % | gates |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for config in m.configs:
            row = _row_data(m, gate_file, config)
            r = m.results.get(config)
            if r is None:
                err = row["error"].splitlines()[0]
                what = "**refused**" if config in m.refused else "**not measured**"
                err = err.removeprefix("refused: ")
                out.append(
                    f"| {config} | {row['bits_per_value']:g} | – | – | – | – | – | – | – | – "
                    f"| {what}: {err} {_gate_status(m, config)} |"
                )
                continue
            p99 = r.kld_percentiles.get("99.0%")
            out.append(
                "| "
                + " | ".join(
                    [
                        _stored_as(config, r),
                        *_measured_cells(row, r, m.results.get("f16")),
                        "–" if p99 is None else f"{p99:.4f}",
                        "–" if r.rms_dp is None else _pm(r.rms_dp.value, r.rms_dp.error, 2),
                        "–"
                        if r.same_top_p is None
                        else _pm(r.same_top_p.value, r.same_top_p.error, 2),
                        _gate_status(m, config),
                    ]
                )
                + " |"
            )
        out += ["", _beats_q4_0(m, gate_file), ""]
        failed = [o for o in m.outcomes if not o.passed]
        if failed:
            out += ["Failing gates:", ""] + [f"- `{o.line(gate_file.path.name)}`" for o in failed]
            out.append("")
        if m.peer is not None:
            out += _peer_markdown(m, m.peer, gate_file)
    out += [
        "bits/value: what the cache type stores per value (K and V averaged), with what "
        "llama.cpp allocated in parentheses (from its log, which rounds to 0.01 MiB). "
        "KV bytes/token: K + V over all layers. ΔPPL and KLD are against the f16 KV cache "
        "of the same binary on the same tokens.",
        "",
        "![mean KLD against bits per value](kld-vs-bits.png)",
        "",
        "![perplexity](ppl.png)",
        "",
    ]
    return "\n".join(out)


def _peer_markdown(m: ModelReport, p: PeerRuns, gate_file: GateFile) -> list[str]:
    """The peer's table beside ours for one model: per configuration the peer's K/V names,
    bits per value (what the type stores, and what the peer's log says it allocated), KV
    bytes per token, PPL, KLD and same-top against the peer's own f16, and our KLD with the
    peer's / ours."""
    out = [
        f"### Beside it: peer {p.name}",
        "",
        f"{p.title} at {p.commit[:12]}, built with no patches of ours, its programs run with "
        f"{p.env_text}; the same model file, text, windows and options as the table above. "
        "KLD, ΔPPL and same top are against the peer's own f16 run (base logits "
        f"{'reused from the cache' if p.base_cached else 'computed in this run'}); "
        "'ours' repeats this project's mean KLD.",
        "",
        "| config | peer's K/V | bits/value | KV bytes/token | × f16 | PPL | ΔPPL % | mean KLD "
        "| same top p % | ours: mean KLD | peer / ours |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in m.configs:
        row = _row_data(p, gate_file, config)
        r, ours = p.results.get(config), m.results.get(config)
        theirs = p.names.get(config, "–")
        if r is None:
            if config in p.failures:
                what = f"**failed**: {p.failures[config].splitlines()[0]}"
            else:
                what = f"not supported: {p.refused.get(config, 'not run')}"
            cells = [config, theirs, f"{row['bits_per_value']:g}", what, *["–"] * 7]
            out.append("| " + " | ".join(cells) + " |")
            continue
        vs = (
            f"{r.kld.value / ours.kld.value:.2f}"
            if r.kld is not None
            and ours is not None
            and ours.kld is not None
            and ours.kld.value > 0
            else "–"
        )
        out.append(
            "| "
            + " | ".join(
                [
                    config,
                    theirs,
                    *_measured_cells(row, r, p.results.get("f16")),
                    "–" if r.same_top_p is None else _pm(r.same_top_p.value, r.same_top_p.error, 2),
                    "–" if ours is None or ours.kld is None else _pm(ours.kld.value, None, 5),
                    vs,
                ]
            )
            + " |"
        )
    return [*out, ""]


def _peer_json(p: PeerRuns, gate_file: GateFile, configs: list[str]) -> dict[str, Any]:
    return {
        "name": p.name,
        "title": p.title,
        "commit": p.commit,
        "env": dict(p.env),
        "kld_against": "the peer's own f16 run",
        "base": {"cached": p.base_cached, "key": p.base_key},
        "configs": [{**_row_data(p, gate_file, c), "peer_config": p.names.get(c)} for c in configs],
    }


def _est(e: Estimate | None, digits: int = 5) -> str:
    return "–" if e is None else _pm(e.value, e.error, digits)


def _depth_markdown(d: DepthReport, gate_file: GateFile) -> list[str]:
    """One model's KLD at each context length, growth (longest / shortest) and growth relative
    to q4_0's, and its growth() gates."""
    ctxs = d.contexts
    short, long = ctxs[0], ctxs[-1]
    positions = ", ".join(f"c={c}: {d.by_ctx[c].scored_positions}" for c in ctxs)
    out = [
        f"## {d.model}: KLD against context length",
        "",
        f"Mean KLD ± one standard error at each context length, on the same text in this run "
        f"(each shorter context covers the same tokens as the longest). Scored positions per "
        f"number: {positions}. Errors are taken over windows, which spread 3-6 times more "
        "than llama-perplexity's error over tokens says; over tokens (understated) where a "
        f"context has fewer than {windows.MIN_WINDOWS} windows. Growth = KLD at c={long} / "
        f"KLD at c={short} on the same tokens: each window of c={long} against the windows "
        f"of c={short} inside the half it scores, the error a jackknife over the windows of "
        f"c={long}.",
        "",
        "| config | "
        + " | ".join(f"KLD c={c}" for c in ctxs)
        + " | growth | growth ÷ q4_0's | growth gates |",
        "|---|" + "---|" * (len(ctxs) + 3),
    ]
    for c in d.configs:
        mine = [o for o in d.outcomes if c in o.gate.subjects]
        failed = [o for o in mine if not o.passed]
        status = (
            "–"
            if not mine
            else "**FAIL** " + ", ".join(f"line {o.gate.line}" for o in failed)
            if failed
            else f"pass ({len(mine)})"
        )
        growth = d.growth(c)
        out.append(
            f"| {c} | "
            + " | ".join(_est(d.kld(c, x)) for x in ctxs)
            + f" | {_est(growth, 3)} | {'–' if c == 'q4_0' else _est(d.growth_vs(c), 3)} "
            f"| {status} |"
        )
    out.append("")
    out += [f"- `{o.line(gate_file.path.name)}`" for o in d.outcomes]
    out.append("")
    return out


def _beats_q4_0(m: ModelReport, gate_file: GateFile) -> str:
    q4 = m.results.get("q4_0")
    if q4 is None or q4.kld is None:
        return "q4_0 was not measured, so nothing is compared with it."
    winners = [
        f"{c} ({r.kld.value:.4g} at {_bits(gate_file, c):g} bits)"
        for c, r in m.results.items()
        if c != "q4_0" and r.kld is not None and _bits(gate_file, c) <= 4.5
        if r.kld.value < q4.kld.value
    ]
    head = f"At ≤ 4.5 bits per value, beats q4_0's mean KLD ({q4.kld.value:.4g}) outright: "
    return head + (", ".join(winners) if winners else "none")


def _peer_points(ax: Any, m: ModelReport, p: PeerRuns, style: dict[str, tuple[str, str]]) -> None:
    """The peer's mean KLD per configuration as hollow markers (the configuration's colour
    and marker) at the bits per value it allocated: a type that pads the head stores more
    than it names."""
    for c in m.configs:
        r = p.results.get(c)
        if r is None or r.kld is None or r.kld.value <= 0:
            continue
        color, marker = style[c]
        ax.scatter(
            [r.kv.bits_per_value(m.info.kv_values_per_token)],
            [r.kld.value],
            facecolors="none",
            edgecolors=color,
            marker=marker,
            s=80,
            zorder=3,
            label=f"peer {p.name} (hollow, at its allocated bits)",
        )


def plots(directory: Path, models: list[ModelReport], gate_file: GateFile) -> list[Path]:
    """kld-vs-bits.png and ppl.png in ``directory`` (matplotlib); their paths. A peer's
    configurations (``--peer``) appear in kld-vs-bits.png as hollow markers at the bits per
    value its log says it allocated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda y, _: f"{y:g}")

    n = len(models)
    # One marker and colour per configuration, the same in every panel, named in a legend:
    # labels written beside the points collide where several sit near 4-4.5 bits.
    style = _styles(models)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n + 2.0, 4.5), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        for c in m.configs:
            r = m.results.get(c)
            if r is None or r.kld is None or r.kld.value <= 0:
                continue
            color, marker = style[c]
            ax.scatter(
                [_bits(gate_file, c)],
                [r.kld.value],
                color=color,
                marker=marker,
                s=50,
                zorder=3,
                label=c,
            )
        if m.peer is not None:
            _peer_points(ax, m, m.peer, style)
        q4 = m.results.get("q4_0")
        if q4 is not None and q4.kld is not None and q4.kld.value > 0:
            xs = [2.0 + 0.05 * i for i in range(141)]
            line = [q4.kld.value * 4 ** (4.5 - x) for x in xs]
            ax.plot(xs, line, "--", color="grey", lw=1, label="q4_0 line: 4× per bit")
            ax.plot(xs, [0.8 * y for y in line], ":", color="grey", lw=1, label="gate: 0.8×")
        ax.set_yscale("log")
        ax.set_xlabel("bits per value (K and V averaged)")
        ax.set_ylabel("mean KLD vs f16 KV cache")
        ax.set_title(_title(m, models))
        ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.9 / (5.0 * n + 2.0), 1))
    kld_png = directory / "kld-vs-bits.png"
    fig.savefig(kld_png, dpi=110)
    plt.close(fig)

    # Top: PPL with its own error. Bottom: the change against the f16 run with the error of
    # llama.cpp's paired ratio, far smaller because both runs score the same tokens. Both
    # on log scales: a broken configuration (turbo2) would flatten everything else.
    fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7.5), squeeze=False, sharex="col")
    for col, m in enumerate(models):
        top, bottom = axes[0][col], axes[1][col]
        names = [c for c in m.configs if c in m.results]
        xs = range(len(names))
        top.errorbar(
            xs,
            [m.results[c].ppl.value for c in names],
            yerr=[m.results[c].ppl.error for c in names],
            fmt="o",
            capsize=3,
        )
        if "f16" in m.results:
            top.axhline(m.results["f16"].ppl.value, color="grey", lw=1, ls="--", label="f16")
            top.legend(fontsize=8)
        top.set_yscale("log")
        top.yaxis.set_major_formatter(plain)
        top.yaxis.set_minor_formatter(plain)
        top.set_ylabel("perplexity")
        top.set_title(_title(m, models))
        top.grid(True, axis="y", which="both", alpha=0.3)
        f16 = m.results.get("f16")
        paired = [(i, c) for i, c in enumerate(names) if m.results[c].ppl_ratio is not None]
        changes = [ppl_change_pct(m.results[c], f16) or 0.0 for _, c in paired]
        bottom.errorbar(
            [i for i, _ in paired],
            changes,
            yerr=[m.results[c].ppl_ratio.error * 100 for _, c in paired],  # type: ignore[union-attr]
            fmt="o",
            capsize=3,
            color="C1",
        )
        bottom.axhline(0, color="grey", lw=1, ls="--")
        bottom.set_yscale("symlog", linthresh=1.0)
        if changes:  # symlog autoscaling clips the largest point
            bottom.set_ylim(min(-1.0, 2 * min(changes)), max(1.0, 2 * max(changes)))
        bottom.yaxis.set_major_formatter(plain)
        bottom.set_ylabel("PPL change vs f16, %")
        bottom.set_xticks(list(xs), names, rotation=45, ha="right", fontsize=8)
        bottom.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    ppl_png = directory / "ppl.png"
    fig.savefig(ppl_png, dpi=110)
    plt.close(fig)
    return [kld_png, ppl_png]


def _title(m: ModelReport, models: list[ModelReport]) -> str:
    """The model's name, and its context length where the report holds it at several."""
    several = sum(x.pin.name == m.pin.name for x in models) > 1
    return f"{m.pin.name}, c={m.ctx}" if several and m.ctx else m.pin.name


def _styles(models: list[ModelReport]) -> dict[str, tuple[str, str]]:
    """A colour and a marker per configuration other than f16, the same in every plot."""
    order = list(dict.fromkeys(c for m in models for c in m.configs if c != "f16"))
    markers = "osD^vP*Xhp<>"
    return {c: (f"C{i % 10}", markers[i % len(markers)]) for i, c in enumerate(order)}


def depth_plot(directory: Path, depths: list[DepthReport]) -> tuple[Path, list[str]]:
    """kld-vs-ctx.png in ``directory`` (matplotlib): per model, mean KLD (log scale) against
    context length in tokens with one-standard-error bars, one line per configuration, and
    below it each configuration's KLD relative to its own at the shortest context (the growth
    the growth() gates bound). Returns the path and the configurations its legend names;
    the PNG's Description field lists them too. f16 (KLD 0, the base) cannot sit on a log
    scale: a note in the figure says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda y, _: f"{y:g}")
    style = _styles([m for d in depths for m in d.by_ctx.values()])
    n = len(depths)
    fig, axes = plt.subplots(2, n, figsize=(5.5 * n + 2.0, 8.0), squeeze=False, sharex="col")
    named: list[str] = []
    for col, d in enumerate(depths):
        top, bottom = axes[0][col], axes[1][col]
        short = d.contexts[0]
        for c in d.configs:
            points = [(x, d.kld(c, x)) for x in d.contexts]
            points = [(x, e) for x, e in points if e is not None and e.value > 0]
            if c not in style or not points:
                continue
            color, marker = style[c]
            xs = [x for x, _ in points]
            top.errorbar(
                xs,
                [e.value for _, e in points],
                yerr=[e.error for _, e in points],
                color=color,
                marker=marker,
                capsize=3,
                label=c,
            )
            grown = [(x, d.growth_at(c, x)) for x, _ in points if x != short]
            grown = [(x, g) for x, g in grown if g is not None]
            if grown:
                bottom.errorbar(
                    [short, *(x for x, _ in grown)],
                    [1.0, *(g.value for _, g in grown)],
                    yerr=[0.0, *(g.error for _, g in grown)],
                    color=color,
                    marker=marker,
                    capsize=3,
                    label=c,
                )
            if c not in named:
                named.append(c)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(d.contexts, [str(x) for x in d.contexts])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
        top.set_yscale("log")
        top.yaxis.set_major_formatter(plain)
        top.set_ylabel("mean KLD vs f16 KV cache")
        top.set_title(f"{d.model}: KLD against context length")
        bottom.axhline(1.0, color="grey", lw=1, ls="--")
        bottom.set_ylabel(f"KLD / KLD at c={short}")
        bottom.set_xlabel("context length, tokens (scored: second half of each window)")
    handles: dict[str, object] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    legend = fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8)
    fig.text(
        0.99,
        0.02,
        "f16: KLD 0 at every context (the base), not drawn on a log scale",
        ha="right",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1 - 1.9 / (5.5 * n + 2.0), 1))
    path = directory / "kld-vs-ctx.png"
    shown = [t.get_text() for t in legend.get_texts()]
    listed = ["f16"] + shown if any("f16" in c for d in depths for c in d.configs) else shown
    fig.savefig(
        path,
        dpi=110,
        metadata={"Description": "mean KLD against context length: " + ", ".join(listed)},
    )
    plt.close(fig)
    return path, shown


def _depth_json(d: DepthReport) -> dict[str, Any]:
    def est(e: Estimate | None) -> dict[str, float] | None:
        return None if e is None else {"value": e.value, "error": e.error}

    return {
        "model": d.model,
        "contexts": d.contexts,
        "reference_ctx": d.contexts[0],
        "long_ctx": d.contexts[-1],
        "scored_positions": {str(c): d.by_ctx[c].scored_positions for c in d.contexts},
        "seconds": {str(c): d.by_ctx[c].seconds for c in d.contexts},
        "configs": [
            {
                "config": c,
                "kld": {str(x): est(d.kld(c, x)) for x in d.contexts},
                "kld_windows": {str(x): list(d.windows(c, x)) for x in d.contexts},
                "growth": est(d.growth(c)),
                "growth_vs_q4_0": est(d.growth_vs(c)),
            }
            for c in d.configs
        ],
        "gates": [
            {
                "line": o.gate.line,
                "check": o.gate.check,
                "passed": o.passed,
                "detail": o.detail,
                "context": o.context,
            }
            for o in d.outcomes
        ],
    }


def _clean(obj: Any) -> Any:
    """JSON has no NaN or infinity; write them as strings rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write(
    directory: Path,
    header: dict[str, Any],
    models: list[ModelReport],
    gate_file: GateFile,
    depths: list[DepthReport] | None = None,
) -> dict[str, Any]:
    """report.json, report.md and the plots in ``directory``; returns the JSON data. A depth
    suite's ``depths`` add their section, the ``depth`` field and kld-vs-ctx.png."""
    report = dict(header)
    report["models"] = [
        {
            "name": m.pin.name,
            "file": m.pin.file,
            "sha256": m.pin.sha256,
            "wheels": [asdict(w) for w in m.pin.wheels],
            "user_file": None
            if m.user is None
            else {"path": m.user.given, "sha256": m.user.sha256, "bytes": m.user.size},
            "metadata": asdict(m.info),
            "ctx": m.ctx,
            "chunks": m.chunks,
            "scored_positions": m.scored_positions,
            "seconds": m.seconds,
            "llama_cpp": None if m.logged is None else asdict(m.logged),
            "refused": m.refused,
            "base": {"cached": m.base_cached, "key": m.base_key},
            "configs": [_row_data(m, gate_file, c) for c in m.configs],
            "peer": None if m.peer is None else _peer_json(m.peer, gate_file, m.configs),
            "gates": [
                {
                    "line": o.gate.line,
                    "check": o.gate.check,
                    "passed": o.passed,
                    "detail": o.detail,
                    "context": o.context,
                }
                for o in m.outcomes
            ],
        }
        for m in models
    ]
    report["depth"] = [_depth_json(d) for d in depths] if depths else None
    (directory / "report.json").write_text(
        json.dumps(_clean(report), indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    plots(directory, models, gate_file)
    if depths:
        depth_plot(directory, depths)
    (directory / "report.md").write_text(
        markdown(report, models, gate_file, depths), encoding="utf-8"
    )
    return report
