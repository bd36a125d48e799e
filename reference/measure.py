"""Measured distortion of the turbo formats on random unit vectors, against theory.

``mse_table``: each row rotates random unit vectors, quantizes them with every norm rule,
decodes, rotates back and reports E‖x − x̂‖² with its standard error, next to the Lloyd-Max
optimum (the expectation of the "plain" rule, which scales by the true norm) and the paper's
bound (√3·π/2)·4^−b.

``qjl_table``: inner-product error of the b-bit MSE quantizer against TurboQuant_prod at the
same b (b−1 bits + QJL) with either sketch. ``python -m reference.measure`` prints both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reference import codebook, formats, qjl, rotation
from reference.formats import Format, NormRule

NORM_RULES: tuple[NormRule, ...] = ("lsq", "plain", "corrected")
DEFAULT_VECTORS = 16384
DEFAULT_SEED = 20260401


@dataclass(frozen=True)
class MseRow:
    fmt: Format
    mse: dict[str, float]  # norm rule -> mean ‖x − x̂‖²
    stderr: dict[str, float]
    optimum: float  # Lloyd-Max expected MSE for the exact density, true-norm scale
    bound: float  # (√3·π/2)·4^−b

    @property
    def ratio(self) -> float:
        return self.mse["lsq"] / self.optimum


def paper_bound(bits: int) -> float:
    return math.sqrt(3) * math.pi / 2 * 4.0**-bits


def unit_vectors(rows: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((rows, n))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure_format(fmt: Format, x: np.ndarray) -> MseRow:
    y = rotation.forward(x)
    mse, stderr = {}, {}
    for rule in NORM_RULES:
        idx, d_bits = formats.quantize_with_norm_rule(y, fmt.bits, rule)
        x_hat = rotation.inverse(formats.dequantize(idx, d_bits, fmt.bits))
        err = np.sum((x_hat.astype(np.float64) - x) ** 2, axis=1)
        mse[rule] = float(err.mean())
        stderr[rule] = float(err.std(ddof=1) / math.sqrt(len(err)))
    return MseRow(
        fmt, mse, stderr, codebook.expected_mse(fmt.bits, fmt.block), paper_bound(fmt.bits)
    )


def mse_table(vectors: int = DEFAULT_VECTORS, seed: int = DEFAULT_SEED) -> list[MseRow]:
    """One row per format in FORMATS, each on its own ``vectors`` random unit vectors."""
    rng = np.random.default_rng(seed)
    return [
        measure_format(f, unit_vectors(vectors, f.block, rng)) for f in formats.FORMATS.values()
    ]


def format_mse_table(rows: list[MseRow]) -> str:
    head = (
        f"{'format':<10} {'bits':>4} {'n':>4} {'lsq (format)':>13} {'±se':>8} {'optimum':>9} "
        f"{'ratio':>6} {'bound':>8} {'plain':>9} {'corrected':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.fmt.name:<10} {r.fmt.bits:>4} {r.fmt.block:>4} {r.mse['lsq']:>13.6f} "
            f"{r.stderr['lsq']:>8.1e} {r.optimum:>9.6f} {r.ratio:>6.4f} {r.bound:>8.5f} "
            f"{r.mse['plain']:>9.6f} {r.mse['corrected']:>9.6f}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class QjlRow:
    n: int
    bits: int
    # n · E[(estimate − ⟨q, y⟩)²] for unit keys and independent unit queries
    mse_only: float
    prod_gaussian: float
    prod_hadamard: float


def qjl_table(pairs: int = 4000, seed: int = DEFAULT_SEED, batch: int = 500) -> list[QjlRow]:
    """One row per (n, bits), n in (128, 64), bits 2..5; a fresh sketch for every pair."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (128, 64):
        for bits in (2, 3, 4, 5):
            y = rotation.forward(unit_vectors(pairs, n, rng))
            q = rotation.forward(unit_vectors(pairs, n, rng)).astype(np.float64)
            true = np.sum(q * y, axis=1, dtype=np.float64)
            idx, d_bits = formats.quantize_with_norm_rule(y, bits)
            err = {"mse": np.sum(q * formats.dequantize(idx, d_bits, bits), axis=1) - true}
            for name, kind in (("gaussian", qjl.GaussianSketch), ("hadamard", qjl.HadamardSketch)):
                parts = []
                for start in range(0, pairs, batch):
                    rows_here = slice(start, start + batch)
                    sketch = kind.draw(rng, n, rows=len(true[rows_here]))
                    code = qjl.encode(y[rows_here], bits, sketch)
                    parts.append(qjl.inner_product(q[rows_here], code, sketch) - true[rows_here])
                err[name] = np.concatenate(parts)
            scaled = {k: n * float(np.mean(v**2)) for k, v in err.items()}
            rows.append(QjlRow(n, bits, scaled["mse"], scaled["gaussian"], scaled["hadamard"]))
    return rows


def format_qjl_table(rows: list[QjlRow]) -> str:
    head = f"{'n':>4} {'bits':>4} {'mse only':>10} {'prod gauss':>11} {'prod hadamard':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.n:>4} {r.bits:>4} {r.mse_only:>10.4g} {r.prod_gaussian:>11.4g} "
            f"{r.prod_hadamard:>14.4g}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_mse_table(mse_table()))
    print()
    print("n · E[(estimate − <q, y>)^2], unit keys, independent unit queries")
    print(format_qjl_table(qjl_table()))
