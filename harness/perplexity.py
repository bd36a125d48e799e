"""Run llama-perplexity on the pinned models and text (what it prints is parsed by
``harness.llama_log``).

One f16-KV run per model writes the base logits (``--kl-divergence-base``); every KV-cache
configuration then runs against them with ``--kl-divergence``. The base is cached by
everything that determines it, so a second suite run only pays for the candidates.

Nothing here decides pass or fail (that is ``harness.gates``); but a run that exits non-zero,
or whose log lacks a statistic the gates need, is an error and never a silent pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from harness import proc
from harness.build import STAMP
from harness.cache_types import CacheConfig
from harness.config import Paths, environment
from harness.errors import CommandFailed
from harness.llama_log import (
    RunResult,
    check_base_readable,
    check_cache_type_known,
    check_head_size_accepted,
    check_model_loaded,
    check_text_long_enough,
    parse_base,
    parse_kld,
)
from harness.lock import exclusive, in_use, unused
from harness.progress import Progress

# llama-perplexity logs the KV-cache allocation only at verbosity 4; the gates need it.
VERBOSITY = "4"
BATCH = 512


# --- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """How every llama-perplexity run of a suite is made: the binary, context length in
    tokens, chunks, threads, the optional -ngl and -ub, and environment variables set for
    the binary on top of ours (a peer's switches, peers.toml)."""

    binary: Path
    ctx: int = 512
    chunks: int = 8
    threads: int = 2
    # -ngl; None passes none, so a CPU build runs as it always did.
    gpu_layers: int | None = None
    # -ub; 1 sends every token through the decode kernels (one query per step) instead of the
    # prompt path, at the cost of speed; None keeps llama-perplexity's own.
    ubatch: int | None = None
    env: tuple[tuple[str, str], ...] = ()

    def common(self, model: Path, text: Path) -> list[str | Path]:
        """The llama-perplexity command line every run shares (model, text, context of
        ``ctx`` tokens, ``chunks`` chunks, flash attention on, threads, -ngl, -ub)."""
        # llama-perplexity block-buffers stdout into a pipe, which would hold back the
        # per-chunk rows the progress line counts until the run ends.
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        offload = [] if self.gpu_layers is None else ["-ngl", str(self.gpu_layers)]
        ubatch = [] if self.ubatch is None else ["-ub", str(self.ubatch)]
        return [
            *line_buffered,
            self.binary,
            "-m",
            model,
            "-f",
            text,
            "-c",
            str(self.ctx),
            "-b",
            str(BATCH),
            "-t",
            str(self.threads),
            "-fa",
            "on",
            "--chunks",
            str(self.chunks),
            "-lv",
            VERBOSITY,
            *offload,
            *ubatch,
        ]


def build_identity(binary: Path) -> dict[str, object]:
    """What built ``binary``: the build stamp if there is one, else the files' own hash."""
    stamp = binary.parent.parent / STAMP
    try:
        record = json.loads(stamp.read_text(encoding="utf-8"))
        return {
            "upstream": record["upstream"],
            "series": record["series"],
            "options": record.get("options"),
        }
    except (OSError, ValueError, KeyError):
        h = hashlib.sha256()
        for f in sorted(binary.parent.iterdir()):
            if f.is_file() and not f.is_symlink() and (f == binary or ".so" in f.name):
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        return {"unstamped_binaries": h.hexdigest()}


@dataclass(frozen=True)
class BaseKey:
    """What the cached f16 base logits depend on: model and text (sha256), the build, the
    context length and the number of chunks."""

    model_sha256: str
    text_sha256: str
    build: dict[str, object]
    ctx: int
    chunks: int

    def digest(self) -> str:
        """24 hex digits of the sha256 of the key: the name of its cache entry."""
        blob = json.dumps(self.__dict__, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]


class ChunkProgress:
    """Feeds llama-perplexity's lines to a Progress line: chunk n of N and an ETA."""

    PASS = re.compile(r"([\d.]+) seconds per pass")
    ROW = re.compile(r"^ *(\d+) +[\d.]+ ± ")

    def __init__(self, label: str, chunks: int, expected: float | None) -> None:
        self.progress = Progress(label, every=10.0)
        self.chunks = chunks
        self.per_pass: float | None = None
        self.expected = expected

    def __call__(self, line: str) -> None:
        if m := self.PASS.search(line):
            self.per_pass = float(m.group(1))
        done = int(m.group(1)) if (m := self.ROW.match(line)) else None
        self.progress.steps(done, self.chunks, self._eta(done))

    def _eta(self, done: int | None) -> float | None:
        elapsed = self.progress.elapsed
        if done:
            return elapsed / done * (self.chunks - done)
        if self.per_pass is not None:
            return max(self.per_pass * self.chunks - elapsed, 0.0)
        return None if self.expected is None else max(self.expected - elapsed, 0.0)


class Runner:
    """Runs llama-perplexity one at a time (each run uses every thread it is given)."""

    def __init__(self, paths: Paths, settings: RunSettings, log_dir: Path) -> None:
        self.paths = paths
        self.settings = settings
        self.log_dir = log_dir
        self.seconds_per_chunk: float | None = None

    def _run(
        self, label: str, log: Path, cmd: Sequence[str | Path], model: Path
    ) -> tuple[str, float]:
        """Run ``cmd`` (a llama-perplexity run on ``model``) with a progress line; its output
        and seconds. Raises ConfigError for a text too short for the context, ModelError when
        llama.cpp cannot load ``model``, HeadSizeRefused when it refuses a cache type by head
        size, CommandFailed for any other non-zero exit."""
        log.unlink(missing_ok=True)
        expected = (
            None
            if self.seconds_per_chunk is None
            else self.seconds_per_chunk * self.settings.chunks
        )
        progress = ChunkProgress(label, self.settings.chunks, expected)
        start = time.monotonic()
        result = proc.run(
            cmd,
            env=dict(self.settings.env) or None,
            log=log,
            on_line=progress,
            check=False,
            quiet=True,
            what=label,
        )
        seconds = time.monotonic() - start
        progress.progress.done(f"exit {result.returncode}")
        # llama-perplexity refuses a short text, and a base it cannot open, with exit 0, so
        # these are checked first
        check_text_long_enough(result.output, self.settings.ctx)
        check_base_readable(result.output)
        if result.returncode != 0:
            check_cache_type_known(result.output)
            check_model_loaded(result.output, model)
            check_head_size_accepted(result.output, label)
            tail = "\n".join("    " + t for t in result.output.splitlines()[-15:])
            raise CommandFailed(
                f"{label}: llama-perplexity exited {result.returncode}\n{tail}\n  full log: {log}"
            )
        self.seconds_per_chunk = seconds / max(self.settings.chunks, 1)
        return result.output, seconds

    @contextmanager
    def base(
        self, model_name: str, model: Path, text: Path, key: BaseKey
    ) -> Iterator[tuple[Path, RunResult, bool]]:
        """The f16 base logits for this key, its run (with the model as llama.cpp logged it),
        and whether they came from the cache; held in use until the block ends, so no other
        run evicts them while this one's candidates read them. A run that fails leaves
        nothing in the cache. Raises what ``_run`` raises, and ParseError for output without
        a final estimate."""
        with ExitStack() as stack:
            # The cache is shared by every clone: one run writes (or evicts) a base at a time,
            # and takes its hold before another can evict it.
            with exclusive(self.paths.locks / "kld-base.lock"):
                logits, result, cached = self._base(model_name, model, text, key)
                stack.enter_context(in_use(logits.parent / IN_USE))
            yield logits, result, cached

    def _base(
        self, model_name: str, model: Path, text: Path, key: BaseKey
    ) -> tuple[Path, RunResult, bool]:
        entry = self.paths.cache / "kld-base" / f"{model_name}-{key.digest()}"
        logits, log_copy = entry / "base.kld", entry / "base.log"
        if logits.is_file() and log_copy.is_file():
            print(f"{model_name}: reusing the f16 base logits in {entry}", file=sys.stderr)
            os.utime(entry)  # most recently used: the eviction below keeps it
            result = parse_base(log_copy.read_text(encoding="utf-8"), where=str(log_copy))
            return logits, result, True
        tmp = entry.with_name(entry.name + ".tmp")
        # This run holds the lock every base run takes, so any .tmp here is what an
        # interrupted run left (eviction skips them): remove them all, not just this key's.
        for stale in entry.parent.glob("*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        log = self.log_dir / f"{model_name}-f16-base.log"
        cmd = [
            *self.settings.common(model, text),
            "--kl-divergence-base",
            tmp / "base.kld",
        ]
        try:
            output, seconds = self._run(f"{model_name} f16 (base)", log, cmd, model)
            result = parse_base(output, where=str(log))
            shutil.copyfile(log, tmp / "base.log")
            (tmp / "key.json").write_text(json.dumps(key.__dict__, indent=1), encoding="utf-8")
        except BaseException:
            # a refused text or model, a crash or Ctrl-C: nothing of this run stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
        evict_bases(self.paths.cache / "kld-base", keep=entry)
        return entry / "base.kld", replace(result, seconds=seconds), False

    def candidate(
        self, model_name: str, model: Path, text: Path, base: Path, config: CacheConfig
    ) -> RunResult:
        """One configuration's run with --kl-divergence against the base logits ``base``:
        PPL, KLD and same-top with their errors, KV bytes per token. Raises CommandFailed
        when llama-perplexity fails, ParseError when its output lacks a number, and
        HeadSizeRefused when llama.cpp refuses the cache type for the model's head size."""
        log = self.log_dir / f"{model_name}-{config.name.replace('/', '-')}.log"
        cmd = [
            *self.settings.common(model, text),
            "--kl-divergence-base",
            base,
            "--kl-divergence",
            "-ctk",
            config.k,
            "-ctv",
            config.v,
        ]
        output, seconds = self._run(f"{model_name} {config.name}", log, cmd, model)
        return replace(parse_kld(output, config.name, where=str(log)), seconds=seconds)


# The lock file in a base's directory that runs reading the base hold (lock.in_use).
IN_USE = "in-use.lock"


def evict_bases(root: Path, keep: Path) -> None:
    """Drop the least recently used base logits beyond TQH_KLD_CACHE_GB (default 8), except
    ``keep`` and any base another run holds in use (the cache may then stay over the limit
    until that run ends)."""
    limit = environment().kld_cache_bytes
    entries = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")]

    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())

    total = sum(size(p) for p in entries)
    for p in sorted(entries, key=lambda p: p.stat().st_mtime):
        if total <= limit:
            break
        if p == keep:
            continue
        with unused(p / IN_USE) as free:
            if free:
                total -= size(p)
                shutil.rmtree(p, ignore_errors=True)
