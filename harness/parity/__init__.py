"""Parity of the native kernels with the numpy reference (``nox -s parity``).

For every format (turbo2..turbo5 at blocks 128 and 64) and every case:

- the packed bytes of every encoder (libturboquant's scalar, SIMD and dispatching paths, and
  the Metal and CUDA headers' math through their host shims) equal
  ``reference.formats.encode``, bit for bit, which covers the indices and the fp16 scale;
- the floats of every decoder (the same paths, plus the Metal 4-value path and the CUDA
  flash-attention path) equal ``reference.formats.decode`` of those bytes, bit for bit;
- with ``gpu=True`` (``--backend cuda``), the same CUDA functions run on the GPU
  (libturboquant_cuda_gpu) and are held to the same rules;
- the rotation (scalar, SIMD, dispatching) equals ``reference.rotation``, bit for bit, NaN
  compared as a class (``ROTATION_NAN_AS_CLASS`` says why).

Cases are seeded random chunks (Gaussian, Gaussian with outlier channels, rotated outlier
data, Gaussian at extreme scales) and an adversarial set built to hit exact midpoints,
fp16 rounding edges and every special value. A case's name carries all its parameters
(``turbo3/n128/gaussian/seed=4/m=32768``): the same name regenerates the same data, so
``filter`` replays one case. Any mismatch raises ParityError naming the first failing case.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from harness.errors import ConfigError, ParityError
from harness.parity.binding import Kernels, library_file
from harness.parity.cases import (
    ADVERSARIAL_KINDS,
    DEFAULT_VECTORS,
    Case,
    CaseSpec,
    adversarial_rows,
    exact_ties,
    generate_cases,
    random_case,
    scale_of,
    select,
    write_selftest_cases,
)
from harness.parity.checks import (
    CaseResult,
    FormatRow,
    format_table,
    reference_fp16_levels,
    reference_int8_levels,
    run_checks,
)
from harness.parity.throughput import BenchRow, format_bench, run_bench
from harness.parity.tolerances import (
    DECODERS,
    ENCODERS,
    F16_CONVERTERS,
    FP16_DECODERS,
    INT8_DECODERS,
    ROTATORS,
    TOLERANCES,
)
from reference import formats as ref

__all__ = [
    "ADVERSARIAL_KINDS",
    "DECODERS",
    "DEFAULT_VECTORS",
    "ENCODERS",
    "F16_CONVERTERS",
    "FP16_DECODERS",
    "INT8_DECODERS",
    "ROTATORS",
    "TOLERANCES",
    "BenchRow",
    "Case",
    "CaseResult",
    "CaseSpec",
    "FormatRow",
    "Kernels",
    "adversarial_rows",
    "exact_ties",
    "format_bench",
    "format_table",
    "generate_cases",
    "library_file",
    "random_case",
    "ref",
    "reference_fp16_levels",
    "reference_int8_levels",
    "run_bench",
    "run_checks",
    "run_parity",
    "scale_of",
    "select",
    "write_selftest_cases",
]

# ---- entry points -----------------------------------------------------------------------


def run_parity(
    lib_dir: Path,
    *,
    vectors: int = DEFAULT_VECTORS,
    filter: str | None = None,
    json_out: Path,
    bench: bool = True,
    gpu: bool = False,
) -> None:
    """Check every case (or those matching ``filter``), print the table and the throughput
    benchmark, write everything to ``json_out``; raise ParityError on any mismatch.
    ``gpu`` adds the CUDA functions run on the GPU (libturboquant_cuda_gpu in ``lib_dir``)."""
    lib_dir = Path(lib_dir)
    specs = list(select(generate_cases(vectors), filter))
    if not specs:
        names = [s.name for s in generate_cases(vectors)]
        examples = ", ".join(names[:: max(1, len(names) // 4)][:4])
        raise ConfigError(
            f"no parity case matches {filter!r}",
            hint=f"-k takes a glob over case names such as {examples} ({len(names)} in all)",
        )
    rows, results, simd_path = run_checks(lib_dir, specs, gpu=gpu)
    where = ", CUDA on the GPU" if gpu else ""
    print(f"\nparity against reference/ (SIMD path: {simd_path}{where})")
    for check, rule in TOLERANCES.items():
        print(f"  {check}: {rule}")
    print(format_table(rows))
    bench_rows = run_bench(lib_dir) if bench and filter is None else []
    if bench_rows:
        print()
        print(format_bench(bench_rows))
    failed = [r for r in results if r.mismatched_vectors]
    report = {
        "simd_path": simd_path,
        "gpu": gpu,
        "vectors_per_format": vectors,
        "filter": filter,
        "tolerances": TOLERANCES,
        "table": [asdict(r) for r in rows],
        "bench": [asdict(r) for r in bench_rows],
        "cases": [asdict(r) for r in results],
        "first_failure": failed[0].name if failed else None,
    }
    json_out = Path(json_out)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if failed:
        first = failed[0]
        paths = ", ".join(k for k, v in first.mismatches.items() if v)
        raise ParityError(
            f"{len(failed)} case(s) disagree with the reference; first: {first.name} "
            f"(row {first.first_row}; paths: {paths}); details in {json_out}"
        )
