"""Throughput of the kernels on one core (tq_bench), as GB/s of float32 data and as a ratio
to memcpy of the same buffer measured beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness import proc

# ---- benchmark --------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One throughput measurement on one core: GB/s of float32 data through a path, and
    the ratio to memcpy of the same buffer measured beside it."""

    path: str
    format: str
    block: int
    op: str
    gbps: float
    memcpy_gbps: float
    x_memcpy: float


BENCH_MIB = 16.0


def run_bench(bin_dir: Path, *, mib: float = BENCH_MIB, seconds: float = 0.3) -> list[BenchRow]:
    """Run tq_bench: encode and decode GB/s of float32 data on one core, each next to memcpy
    of the same buffer timed in alternation with it (kernels/tools/tq_bench.c)."""
    exe = Path(bin_dir) / "tq_bench"
    out = proc.run([exe, str(mib), str(seconds)], what="run tq_bench", quiet=True).output
    rows = []
    for line in out.splitlines()[1:]:
        path, fmt, block, op, gbps, memcpy_gbps, ratio = line.split("\t")
        rows.append(
            BenchRow(path, fmt, int(block), op, float(gbps), float(memcpy_gbps), float(ratio))
        )
    return rows


def format_bench(rows: list[BenchRow], mib: float = BENCH_MIB) -> str:
    """The throughput table, GB/s and x memcpy per format, block and op."""
    lines = [
        f"throughput on one core, {mib:g} MiB of float32 per call, {rows[0].path} path; "
        "GB/s of float32 data, x memcpy = ratio to memcpy of the same buffer",
        f"{'format':<8} {'block':>5} {'encode GB/s':>11} {'x memcpy':>8} "
        f"{'decode GB/s':>11} {'x memcpy':>8} {'memcpy GB/s':>11}",
    ]
    by_key: dict[tuple[str, int], dict[str, BenchRow]] = {}
    for r in rows:
        by_key.setdefault((r.format, r.block), {})[r.op] = r
    for (fmt, block), ops in by_key.items():
        e, d = ops["encode"], ops["decode"]
        lines.append(
            f"{fmt:<8} {block:>5} {e.gbps:>11.2f} {e.x_memcpy:>8.2f} {d.gbps:>11.2f} "
            f"{d.x_memcpy:>8.2f} {(e.memcpy_gbps + d.memcpy_gbps) / 2:>11.2f}"
        )
    return "\n".join(lines)
