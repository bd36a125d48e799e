"""Checking cases against the reference: per-row mismatches (bit for bit, NaN as a class
where tolerances.py says so), per-case results and the per-format table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.parity.binding import Kernels
from harness.parity.cases import Case, CaseSpec, Op
from harness.parity.tolerances import ROTATORS, TILE_PATHS, TILE_QUERIES, TILE_ROWS
from harness.progress import Progress
from reference import codebook, rotation
from reference import formats as ref
from reference.formats import Format


def reference_fp16_levels(blocks: np.ndarray, fmt: Format) -> np.ndarray:
    """What the GPU flash-attention kernels decode from blocks (vectors x nbytes bytes):
    vectors x block float32 values d * float(fp16(C[idx])), the reference's float32 levels
    rounded to fp16 (nearest-even) and multiplied by the fp16 scale d in float32."""
    indices, d_bits = ref.unpack(blocks, fmt)
    levels = ref.float32_levels(fmt.bits, fmt.block).astype(np.float16).astype(np.float32)
    scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
    return scale[:, None] * levels[indices]


def reference_int8_levels(blocks: np.ndarray, fmt: Format) -> np.ndarray:
    """What the GPU flash-attention kernel's K * Q product decodes from blocks of turbo2..4
    (vectors x nbytes bytes): vectors x block float32 values d * (s * i8[idx]), where the
    reference's float32 levels L are rounded to int8, i8 = rint(L * (127 / L[-1])), and
    s = L[-1] / 127, all in float32 as the kernel computes them."""
    indices, d_bits = ref.unpack(blocks, fmt)
    levels = ref.float32_levels(fmt.bits, fmt.block)
    top = levels[-1]
    i8 = np.rint(levels * (np.float32(127) / top)).astype(np.float32)
    step = top / np.float32(127)
    scale = np.asarray(d_bits, np.uint16).view(np.float16).astype(np.float32)
    return scale[:, None] * (step * i8)[indices]


# ---- checks -----------------------------------------------------------------------------


def _row_mismatches(a: np.ndarray, b: np.ndarray, *, nan_as_class: bool = False) -> np.ndarray:
    """Boolean per row: does a differ from b in any bit (NaN matching NaN if asked)?"""
    if a.dtype == np.float32:
        diff = a.view(np.uint32) != b.view(np.uint32)
        if nan_as_class:
            diff &= ~(np.isnan(a) & np.isnan(b))
    else:
        diff = a != b
    return diff.reshape(len(a), -1).any(axis=1)


def _max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    finite = np.isfinite(a) & np.isfinite(b)
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(a[finite].astype(np.float64) - b[finite])))


@dataclass
class CaseResult:
    """One case checked: vectors, mismatched vectors in all and per path, the largest
    |native - reference| and the squared error for the MSE column."""

    name: str
    op: Op
    block: int
    format: str | None
    vectors: int
    mismatched_vectors: int
    mismatches: dict[str, int]  # path -> mismatched vectors
    max_abs_error: float
    first_row: int | None = None
    sq_error: float = 0.0  # sum over stats rows of |y - y_hat|² / |y|²
    stats_rows: int = 0


def tile_dot_reference(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """dot(x_r, q_j) for rows x (rows x k float32) and queries q (nq x k float32) as the
    library sums: float32 products into 8 lanes (lane l takes elements 8i + l), the lanes
    reduced as ((0+4)+(2+6))+((1+5)+(3+7)), chunks of 512 floats added in order: nq x rows."""
    rows, k = x.shape
    total = np.zeros((q.shape[0], rows), np.float32)
    for c in range(0, k, 512):
        acc = np.zeros((q.shape[0], rows, 8), np.float32)
        for i in range(c, min(c + 512, k), 8):
            acc = acc + q[:, None, i : i + 8] * x[None, :, i : i + 8]
        lane = [acc[..., m] for m in range(8)]
        tree = ((lane[0] + lane[4]) + (lane[2] + lane[6])) + (
            (lane[1] + lane[5]) + (lane[3] + lane[7])
        )
        total = total + tree
    return total


def tile_mad_reference(x: np.ndarray, w: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """acc_j + w[j, r] * x_r for rows r in order, rows of weight 0 skipped, float32 (x: rows
    x k, w: nq x rows, acc: nq x k)."""
    out = acc.copy()
    for r in range(x.shape[0]):
        live = w[:, r] != 0.0
        out[live] = out[live] + w[live, r, None] * x[r]
    return out


def _tile_mismatches(
    kernels: Kernels, fmt: Format, blocks: np.ndarray, want: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Per-row mismatches of the tile dot (every row against TILE_QUERIES queries) and the
    tile multiply-add (tiles of TILE_ROWS rows, one accumulator per tile and query) on each
    path, against float32 arithmetic on the reference decode ``want``."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((TILE_QUERIES, fmt.block)).astype(np.float32)
    dot_want = tile_dot_reference(want, q)
    bad = {}
    for path in TILE_PATHS:
        got = kernels.tile(path, "dot", fmt, blocks, q)
        bad[f"{path}-tile-dot"] = np.any(
            (got.view(np.uint32) != dot_want.view(np.uint32))
            & ~(np.isnan(got) & np.isnan(dot_want)),
            axis=0,
        )
    mad_bad = {path: np.zeros(len(blocks), bool) for path in TILE_PATHS}
    for t0 in range(0, len(blocks), TILE_ROWS):
        t1 = min(t0 + TILE_ROWS, len(blocks))
        w = rng.random((TILE_QUERIES, t1 - t0)).astype(np.float32)
        w[rng.random(w.shape) < 0.25] = 0.0  # masked rows
        acc = rng.standard_normal((TILE_QUERIES, fmt.block)).astype(np.float32)
        expect = tile_mad_reference(want[t0:t1], w, acc)
        for path in TILE_PATHS:
            got = kernels.tile(path, "mad", fmt, blocks[t0:t1], w, acc)
            same = (got.view(np.uint32) == expect.view(np.uint32)) | (
                np.isnan(got) & np.isnan(expect)
            )
            if not same.all():
                mad_bad[path][t0:t1] = True
    bad.update({f"{path}-tile-mad": m for path, m in mad_bad.items()})
    return bad


def check_case(case: Case, kernels: Kernels, pool: ThreadPoolExecutor) -> CaseResult:
    """Run every native path on one case and compare it with the reference."""
    bad: dict[str, np.ndarray] = {}
    max_err = 0.0
    sq_error, stats_rows = 0.0, 0
    # Special values overflow and turn into NaN on purpose here; numpy need not warn.
    with np.errstate(all="ignore"):
        if case.op == "rotate":
            for direction, fn in (("forward", rotation.forward), ("inverse", rotation.inverse)):
                want = fn(case.data)
                for path in ROTATORS:
                    got = kernels.rotate(path, direction, case.data)
                    bad[f"{path}-{direction}"] = _row_mismatches(got, want, nan_as_class=True)
                    max_err = max(max_err, _max_abs_error(got, want))
        else:
            fmt = case.fmt
            assert fmt is not None
            if case.op == "encode":
                # The Metal shim is the slow path: it runs while numpy computes the reference.
                metal = pool.submit(kernels.encode, "metal", fmt, case.data)
                blocks = ref.encode(case.data, fmt)
                for path in kernels.encoders:
                    got = (
                        metal.result() if path == "metal" else kernels.encode(path, fmt, case.data)
                    )
                    bad[f"{path}-encode"] = _row_mismatches(got, blocks)
            else:
                blocks = case.data
            want = ref.decode(blocks, fmt)
            for path in kernels.decoders:
                got = kernels.decode(path, fmt, blocks)
                bad[f"{path}-decode"] = _row_mismatches(
                    got, want, nan_as_class=path.endswith("-fa")
                )
                max_err = max(max_err, _max_abs_error(got, want))
            bad.update(_tile_mismatches(kernels, fmt, blocks, want, seed=len(blocks)))
            want_f16 = want.astype(np.float16).astype(np.float32)
            for path in kernels.f16_converters:
                got = kernels.decode(path, fmt, blocks)
                bad[f"{path}-decode"] = _row_mismatches(got, want_f16, nan_as_class=True)
            want16 = reference_fp16_levels(blocks, fmt)
            for path in kernels.fp16_decoders:
                got = kernels.decode(path, fmt, blocks)
                bad[f"{path}-decode"] = _row_mismatches(got, want16, nan_as_class=True)
            if fmt.bits <= 4:
                want8 = reference_int8_levels(blocks, fmt)
                for path in kernels.int8_decoders:
                    got = kernels.decode(path, fmt, blocks)
                    bad[f"{path}-decode"] = _row_mismatches(got, want8, nan_as_class=True)
            if case.stats:
                y = case.data.astype(np.float64)
                err = np.sum((y - want) ** 2, axis=1) / np.sum(y * y, axis=1)
                sq_error, stats_rows = float(np.sum(err)), len(y)
    any_bad = np.logical_or.reduce(list(bad.values()))
    rows = np.nonzero(any_bad)[0]
    return CaseResult(
        name=case.name,
        op=case.op,
        block=case.block,
        format=case.fmt.name if case.fmt else None,
        vectors=len(case.data),
        mismatched_vectors=len(rows),
        mismatches={k: int(v.sum()) for k, v in bad.items()},
        max_abs_error=max_err,
        first_row=int(rows[0]) if len(rows) else None,
        sq_error=sq_error,
        stats_rows=stats_rows,
    )


@dataclass
class FormatRow:
    """One line of the parity table."""

    format: str
    block: int
    vectors: int = 0
    mismatches: int = 0
    max_abs_error: float = 0.0
    mse: float | None = None
    theory: float | None = None
    sq_error: float = field(default=0.0, repr=False)
    stats_rows: int = field(default=0, repr=False)

    def add(self, r: CaseResult) -> None:
        """Fold one case into the format's totals and its MSE."""
        self.vectors += r.vectors
        self.mismatches += r.mismatched_vectors
        self.max_abs_error = max(self.max_abs_error, r.max_abs_error)
        self.sq_error += r.sq_error
        self.stats_rows += r.stats_rows
        if self.stats_rows:
            self.mse = self.sq_error / self.stats_rows


def format_table(rows: list[FormatRow]) -> str:
    """The per-format table: vectors, mismatches, max |Δ|, MSE against theory."""
    head = (
        f"{'format':<10} {'block':>5} {'vectors':>9} {'mismatches':>10} {'max |Δ|':>8} "
        f"{'MSE':>9} {'theory':>9} {'ratio':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mse = f"{r.mse:9.5f}" if r.mse is not None else f"{'-':>9}"
        theory = f"{r.theory:9.5f}" if r.theory is not None else f"{'-':>9}"
        ratio = f"{r.mse / r.theory:6.3f}" if r.mse is not None and r.theory else f"{'-':>6}"
        lines.append(
            f"{r.format:<10} {r.block:>5} {r.vectors:>9} {r.mismatches:>10} "
            f"{r.max_abs_error:>8.2g} {mse} {theory} {ratio}"
        )
    return "\n".join(lines)


def run_checks(
    lib_dir: Path, specs: Sequence[CaseSpec], *, gpu: bool = False
) -> tuple[list[FormatRow], list[CaseResult], str]:
    """Check each case (on the GPU runner too with ``gpu``); return the table rows, every
    case's result and the SIMD path."""
    kernels = Kernels(lib_dir, gpu=gpu)
    rows: dict[tuple[str, int], FormatRow] = {}
    results = []
    progress = Progress("parity")
    with ThreadPoolExecutor(max_workers=1) as pool:
        for i, spec in enumerate(specs):
            case = spec.make()
            r = check_case(case, kernels, pool)
            results.append(r)
            key = (case.fmt.name if case.fmt else "rotation", case.block)
            if key not in rows:
                theory = codebook.expected_mse(case.fmt.bits, case.block) if case.fmt else None
                rows[key] = FormatRow(key[0], key[1], theory=theory)
            rows[key].add(r)
            if r.mismatched_vectors:
                print(f"\nMISMATCH {case.name}: {r.mismatches}", file=sys.stderr, flush=True)
            # Progress draws its bar from ninja's "[done/total]" prefix.
            progress.ninja(f"[{i + 1}/{len(specs)}]")
    failed = sum(1 for r in results if r.mismatched_vectors)
    progress.done(f"{len(results)} cases, {failed} with mismatches")
    return list(rows.values()), results, kernels.simd_path
