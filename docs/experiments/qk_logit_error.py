"""Attention-logit error of K cache formats on Q and K vectors dumped from a real model.

EXPERIMENT (issue 14), not part of the harness. Input: a directory written by
llama-perplexity with `qk-dump.diff` applied and TQ_DUMP_QK=DIR (q_<layer>.f32 and
k_<layer>.f32: every Q and K row after llama.cpp's Hadamard rotation, float32, head_dim values
per head, heads fastest, then tokens; one chunk of `--ctx` tokens). For each format, every K
row is replaced by its round trip through the reference (reference/formats.py for turbo2..5,
reference/qjl.py's TurboQuant_prod with a signed-Hadamard sketch for qjl3 = 2 + 1 bits and
qjl4 = 3 + 1 bits, ‖r‖ rounded to fp16 as a stored format would), and the attention of
sampled queries over their causal keys (a sliding window where the layer has one) is
compared with the exact one:

  logit error  l̂ − l with l = scale·q·k (scale = 1/√head_dim, nats), its RMS over all
               (query, key) pairs, and the part of it that softmax sees: the error minus its
               mean over the row's keys (a shift of a whole row changes nothing);
  KL           KL(p ‖ p̂) of each query's attention weights, mean over queries (nats);
  top-1        how often the key with the largest weight stays the largest.

`--rotation signs` first undoes llama.cpp's Hadamard rotation and applies H·diag(s) with random
signs s instead (to Q by the same matrix), the rotation the public fork uses; `--rotation
hadamard` (default) keeps llama.cpp's. The mean K row (over tokens) is reported as the share
of K's energy it holds and the share of that mean held by its 4 largest coordinates after
each rotation.

    python docs/experiments/qk_logit_error.py DIR --head-dim 64 --heads 9 --kv-heads 3
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from reference import formats, qjl, rotation  # noqa: E402

FORMATS = ("turbo2", "turbo3", "turbo4", "turbo5", "qjl3", "qjl4")


def round_trip(y: np.ndarray, name: str, block: int, rng: np.random.Generator) -> np.ndarray:
    """float64 decode of float32 rows y (m, head_dim) stored in `name`, block by block."""
    m, d = y.shape
    blocks = y.reshape(m * d // block, block)
    bits = int(name[-1])
    if name.startswith("turbo"):
        idx, d_bits = formats.quantize_with_norm_rule(blocks, bits)
        out = formats.dequantize(idx, d_bits, bits).astype(np.float64)
    else:
        sketch = qjl.HadamardSketch.draw(rng, block)
        code = qjl.encode(blocks, bits, sketch)
        norm16 = code.residual_norm.astype(np.float16).astype(np.float64)
        code = qjl.ProdCode(code.bits, code.indices, code.d_bits, code.qjl_signs, norm16)
        out = qjl.decode(code, sketch)
    return out.reshape(m, d)


def hadamard(x: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform along the last axis (its own inverse)."""
    return rotation.fwht(x.astype(np.float64)) / math.sqrt(x.shape[-1])


def attention_errors(q, k, k_hat, scale, window, positions):
    """Mean KL, RMS logit error, RMS centered error and top-1 agreement over the queries at
    `positions` of one head (q: (tokens, d), k and k_hat: (tokens, d))."""
    kl, err2, cerr2, top, pairs = 0.0, 0.0, 0.0, 0, 0
    for t in positions:
        lo = 0 if window is None else max(0, t - window + 1)
        logits = scale * (k[lo : t + 1] @ q[t])
        approx = scale * (k_hat[lo : t + 1] @ q[t])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p_hat = np.exp(approx - approx.max())
        p_hat /= p_hat.sum()
        kl += float(np.sum(p * (np.log(p + 1e-300) - np.log(p_hat + 1e-300))))
        e = approx - logits
        err2 += float(np.sum(e * e))
        cerr2 += float(np.sum((e - e.mean()) ** 2))
        pairs += e.size
        top += int(np.argmax(p) == np.argmax(p_hat))
    n = len(positions)
    return kl / n, math.sqrt(err2 / pairs), math.sqrt(cerr2 / pairs), top / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, required=True)
    ap.add_argument(
        "--block", type=int, default=None, help="format block (default min(head_dim, 128))"
    )
    ap.add_argument("--window", type=int, default=None, help="sliding window of the SWA layers")
    ap.add_argument(
        "--global-every", type=int, default=0, help="every Nth layer is global (Gemma 3: 6)"
    )
    ap.add_argument("--queries", type=int, default=48, help="sampled query positions per head")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--rotation", choices=("hadamard", "signs"), default="hadamard")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    d = args.head_dim
    block = args.block or min(d, 128)
    names = args.formats.split(",")
    layers = sorted(int(p.stem.split("_")[1]) for p in args.dir.glob("k_*.f32"))
    rng = np.random.default_rng(args.seed)
    signs = rng.choice(np.array([-1.0, 1.0]), d)
    totals = {name: np.zeros(4) for name in names}
    mean_share, top4_share = [], []
    for il in layers:
        k_all = np.fromfile(args.dir / f"k_{il}.f32", np.float32).reshape(-1, args.kv_heads, d)
        q_all = np.fromfile(args.dir / f"q_{il}.f32", np.float32).reshape(-1, args.heads, d)
        if args.rotation == "signs":
            k_all = hadamard(hadamard(k_all) * signs).astype(np.float32)
            q_all = hadamard(hadamard(q_all) * signs).astype(np.float32)
        tokens = k_all.shape[0]
        is_swa = args.window is not None and (
            args.global_every == 0 or (il + 1) % args.global_every != 0
        )
        window = args.window if is_swa else None
        positions = np.linspace(tokens // 8, tokens - 1, args.queries).astype(int)
        for hk in range(args.kv_heads):
            k = k_all[:, hk].astype(np.float64)
            mean = k.mean(axis=0)
            mean_share.append(float(mean @ mean / np.mean(np.sum(k * k, axis=1))))
            top4_share.append(float(np.sort(mean * mean)[-4:].sum() / (mean @ mean)))
        for name in names:
            k_hat = np.stack(
                [round_trip(k_all[:, hk], name, block, rng) for hk in range(args.kv_heads)], axis=1
            )
            for h in range(args.heads):
                hk = h // (args.heads // args.kv_heads)
                totals[name] += attention_errors(
                    q_all[:, h].astype(np.float64),
                    k_all[:, hk].astype(np.float64),
                    k_hat[:, hk],
                    1.0 / math.sqrt(d),
                    window,
                    positions,
                )
    count = len(layers) * args.heads
    print(
        f"# {args.dir} rotation={args.rotation} layers={len(layers)} heads={args.heads} "
        f"queries/head={args.queries} block={block}"
    )
    print(
        f"# mean K row: {np.mean(mean_share):.3f} of K's energy; its 4 largest coordinates "
        f"hold {np.mean(top4_share):.3f} of it"
    )
    print("format\tKL\tlogit_rms\tcentered_rms\ttop1")
    for name in names:
        kl, rms, crms, top = totals[name] / count
        print(f"{name}\t{kl:.5f}\t{rms:.4f}\t{crms:.4f}\t{top:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
