"""``python -m harness perplexity``: fetch inputs, run the suite, gate it, write the report.

The report is written before any error is raised, so a failing run still leaves the table
that explains it. Runs that could not be made (an unsupported cache type, a crash, output
that does not parse) fail the command with exit 23; otherwise failing gates exit 21.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import corpus, gates, models, proc, report
from harness.build import kernels_digest
from harness.config import Paths
from harness.errors import CommandFailed, ConfigError, HarnessError
from harness.lock import exclusive
from harness.patches import Series
from harness.perplexity import BaseKey, CacheConfig, Runner, RunSettings, build_identity


@dataclass(frozen=True)
class SuiteOptions:
    """The perplexity command's options: gates.toml's quick suite or a subset of models and
    configurations, chunks (windows of ``ctx`` tokens, 512 unless given), threads, the
    binary, and the backend."""

    quick: bool = False
    models: tuple[str, ...] | None = None
    configs: tuple[str, ...] | None = None
    chunks: int | None = None
    ctx: int | None = None  # tokens per window; None: 512
    long_text: bool = False  # models.toml's [long_text] instead of [text]
    threads: int = 2
    binary: Path | None = None
    backend: str = "cpu"

    @property
    def gpu_layers(self) -> int | None:
        """-ngl for the backend: None on the CPU, 99 (every layer) on a GPU."""
        # 99 is more layers than any model has: every layer and its KV cache on the GPU.
        return None if self.backend == "cpu" else 99


def _binary(paths: Paths, given: Path | None, backend: str) -> Path:
    binary = given or paths.build / backend / "bin" / "llama-perplexity"
    if not binary.is_file():
        build = "nox -s build" + ("" if backend == "cpu" else f" -- --backend {backend}")
        raise ConfigError(
            f"{binary} does not exist",
            hint=f"build it first: `{build}` (the perplexity session builds only the CPU one)",
        )
    if not os.access(binary, os.X_OK):
        raise ConfigError(
            f"{binary} is not executable",
            hint="give --bin the llama-perplexity program of a llama.cpp build",
        )
    return binary.resolve()


def _version(binary: Path) -> str:
    out = proc.run([binary, "--version"], check=False, quiet=True).output
    return " ".join(line.strip() for line in out.splitlines() if line.strip())


def _gates_edited(paths: Paths, gate_path: Path) -> bool | None:
    """Whether ``gate_path`` differs from its committed version at HEAD (a loosened gate must
    show in the report as more than another hash); None outside a git checkout."""
    relative = gate_path.resolve().relative_to(paths.repo.resolve()).as_posix()
    try:
        out = proc.run(
            ["git", "-C", paths.repo, "show", f"HEAD:{relative}"], check=False, quiet=True
        )
    except HarnessError:
        return None
    if out.returncode != 0:
        return None
    edited = out.output != gate_path.read_text(encoding="utf-8")
    if edited:
        print(
            f"warning: {relative} differs from the committed file; the report says so",
            file=sys.stderr,
        )
    return edited


def _patches_digest(paths: Paths) -> str | None:
    try:
        return Series.load(paths.patches).digest()
    except HarnessError:
        return None


def run(paths: Paths, options: SuiteOptions) -> Path:
    """Run the suite; return the report directory. Raises after writing the report."""
    if options.binary is not None:
        return _run(paths, options)
    # `build` holds this lock while it rewrites build/: holding it here keeps a build from
    # swapping the binaries halfway through a suite, which would mix two builds in a report.
    with exclusive(paths.build / ".lock"):
        return _run(paths, options)


@contextmanager
def _report_dir(root: Path) -> Iterator[Path]:
    """A new report folder under ``root``; removed again when the run ends before writing any
    file into it (Ctrl-C or a failing model download), kept else: its logs are what the error
    message points to."""
    directory = report.new_dir(root)
    try:
        yield directory
    except BaseException:
        if not any(p.is_file() for p in directory.rglob("*")):
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _run(paths: Paths, options: SuiteOptions) -> Path:
    started = time.monotonic()
    gate_file = gates.load(paths.repo / "gates.toml")
    suite = gate_file.quick if options.quick else gate_file.full
    lock = models.load_lock(paths.repo / "models.toml")
    model_names = options.models or suite.models
    pins = [lock.model(name) for name in model_names]
    requested = [CacheConfig.parse(c).name for c in (options.configs or suite.configs)]
    for c in requested:
        cfg = CacheConfig.parse(c)
        if cfg.k not in gate_file.bits or cfg.v not in gate_file.bits:
            raise ConfigError(
                f"--configs {c}: no [bits] entry in gates.toml for its types",
                hint=f"the cache types gates.toml knows: {', '.join(gate_file.bits)}",
            )
    binary = _binary(paths, options.binary, options.backend)
    settings = RunSettings(
        binary=binary,
        chunks=options.chunks or suite.chunks,
        ctx=options.ctx or RunSettings.ctx,
        threads=options.threads,
        gpu_layers=options.gpu_layers,
    )
    text_pin = lock.text
    if options.long_text:
        if lock.long_text is None:
            raise ConfigError(
                "--text long: models.toml pins no [long_text]",
                hint="add a [long_text] table to models.toml, or leave --text out",
            )
        text_pin = lock.long_text
    text = corpus.ensure_text(paths, text_pin)
    identity = build_identity(binary)
    version = _version(binary)

    with _report_dir(paths.repo / "reports") as directory:
        runner = Runner(paths, settings, directory / "logs")
        reports: list[report.ModelReport] = []
        hints: set[str] = set()
        for pin in pins:
            gguf = models.ensure_model(paths, pin)
            info = models.cached_info(pin, gguf)
            # f16 first: its run writes (or checks) the base every other run is measured against.
            order = {c: i for i, c in enumerate(("f16", *gate_file.full.configs))}
            configs = sorted(
                set(gate_file.required(pin.name, requested)) | {"f16"},
                key=lambda c: (order.get(c, len(order)), c),
            )
            added = [c for c in configs if c not in requested]
            if added:
                print(
                    f"{pin.name}: also running {', '.join(added)} (the gates compare with them)",
                    file=sys.stderr,
                )
            m = report.ModelReport(pin, info, configs)
            key = BaseKey(pin.sha256, text.sha256, identity, settings.ctx, settings.chunks)
            m.base_key = {**key.__dict__, "digest": key.digest()}
            base, _, m.base_cached = runner.base(pin.name, gguf, text.path, key)
            for config in configs:
                try:
                    m.results[config] = runner.candidate(
                        pin.name, gguf, text.path, base, CacheConfig.parse(config)
                    )
                except CommandFailed as exc:
                    m.failures[config] = str(exc)
                    hints.add(exc.hint)
                    print(
                        f"{pin.name} {config}: FAILED: {str(exc).splitlines()[0]}", file=sys.stderr
                    )
            m.outcomes = gates.evaluate(gate_file, pin.name, requested, m.results)
            reports.append(m)

        header = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": ["python", "-m", "harness", *sys.argv[1:]],
            "quick": options.quick,
            "host": {"platform": platform.platform(), "python": platform.python_version()},
            "settings": {
                "ctx": settings.ctx,
                "batch": 512,
                "chunks": settings.chunks,
                "threads": settings.threads,
                "gpu_layers": settings.gpu_layers,
                "flash_attn": "on",
            },
            "binary": {"path": str(binary), "version": version},
            "build": identity,
            "patches_digest": _patches_digest(paths),
            "kernels_digest": kernels_digest(paths) if paths.kernels.is_dir() else None,
            "gates": {
                "path": gate_file.path.name,
                "sha256": gate_file.sha256,
                "edited": _gates_edited(paths, gate_file.path),
            },
            "text": {
                "package": text_pin.package,
                "version": text_pin.version,
                "deb_sha256": text_pin.sha256,
                "member": text_pin.member,
                "sha256": text.sha256,
                "bytes": text.size,
            },
            "wall_seconds": time.monotonic() - started,
        }
        report.write(directory, header, reports, gate_file)
        latest = report.link_latest(paths.repo / "reports", directory)
        outcomes = [o for m in reports for o in m.outcomes]
        for o in outcomes:
            print(o.line(gate_file.path.name), file=sys.stderr)
        print(f"report: {directory / 'report.md'} (also {latest / 'report.md'})")

        failed_runs = [(m.pin.name, c, e) for m in reports for c, e in m.failures.items()]
        if failed_runs:
            gate_note = sum(not o.passed for o in outcomes)
            lines = "\n".join(f"  {name} {c}: {e.splitlines()[0]}" for name, c, e in failed_runs)
            raise CommandFailed(
                f"{len(failed_runs)} configuration run(s) could not be measured ({gate_note} "
                f"gate(s) failed as a result or on their own):\n{lines}\n  report: {directory}",
                hint="; ".join(sorted(hints)) + " (logs: the report's logs/ folder)",
            )
        gates.raise_on_failures(outcomes, gate_file.path.name)
        return directory
