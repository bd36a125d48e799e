"""``python -m harness perplexity``: fetch inputs, run the suite, gate it, write the report.

The models and text are models.toml's, or the user's own GGUF and text given by path
(``harness.user_files``). A depth suite (``--suite long``, gates.toml's [suite.long]) runs
every model at several context lengths on one text, judges each length by the gates, and the
growth of each configuration's KLD from the shortest to the longest by the ``growth()``
gates. The report is written before any error is raised, so a failing run still leaves the
table that explains it. Runs that could not be made (an unsupported cache
type, a crash, output that does not parse) fail the command with exit 23; configurations
the model's head size rules out (llama.cpp would refuse them) are not run and exit 11;
otherwise failing gates exit 21.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from harness import corpus, gates, models, peers, proc, report, user_files
from harness.build import Backend, kernels_digest
from harness.cache_types import CacheConfig, HeadSizeRefused, block64_allowed, head_size_refusal
from harness.config import Paths
from harness.errors import CommandFailed, ConfigError, HarnessError
from harness.llama_log import ParseError
from harness.lock import exclusive
from harness.patches import Series
from harness.perplexity import BATCH, BaseKey, Runner, RunSettings, build_identity
from harness.user_files import UserFile

SUITES = ("default", "quick", "long")


@dataclass(frozen=True)
class SuiteOptions:
    """The perplexity command's options: a suite of gates.toml (``quick`` or ``suite``) or a
    subset of models and configurations, or the user's own GGUF and text (paths); chunks
    (windows of ``ctx`` tokens, 512 unless given; in the depth suite, windows at the longest
    context, and ``ctx`` replaces that longest context), threads, the binary, and the
    backend."""

    quick: bool = False
    suite: str | None = None  # one of SUITES; None: "quick" when quick is set, else "default"
    models: tuple[str, ...] | None = None
    configs: tuple[str, ...] | None = None
    chunks: int | None = None
    ctx: int | None = None  # tokens per window; None: 512
    # True: models.toml's [long_text], False: its [text], None: the suite's (the depth suite
    # names its own, the others read [text])
    long_text: bool | None = None
    text_file: Path | None = None  # the user's UTF-8 text instead of models.toml's
    model_file: Path | None = None  # the user's GGUF instead of the models of models.toml
    threads: int = 2
    binary: Path | None = None
    backend: str = "cpu"
    # --peer: the peer of peers.toml, built (once) from the first of peer_archives that holds
    # its archive, else from git, unless peer_binary names its llama-perplexity; the same
    # configurations run through it after ours, each against the peer's own f16 base
    peer: peers.Peer | None = None
    peer_archives: tuple[Path, ...] = ()
    peer_binary: Path | None = None

    @property
    def suite_name(self) -> str:
        """The suite of gates.toml to run: ``default`` ([suite]), ``quick`` or ``long``."""
        return self.suite or ("quick" if self.quick else "default")

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


def _text(
    paths: Paths, lock: models.Lock, options: SuiteOptions, suite: gates.Suite
) -> tuple[Path, str, dict[str, object]]:
    """The text the runs read, its sha256, and what the report says of it: the user's file
    (``--text PATH``), models.toml's [long_text] (``--text long``, or a suite whose text is
    ``long``) or its [text]."""
    if options.text_file is not None:
        user = user_files.text_file(paths, options.text_file)
        return (
            user.path,
            user.sha256,
            {"path": user.given, "sha256": user.sha256, "bytes": user.size, "copy": user.path},
        )
    text_pin = lock.text
    long_text = options.long_text if options.long_text is not None else suite.text == "long"
    if long_text:
        if lock.long_text is None:
            raise ConfigError(
                "--text long: models.toml pins no [long_text]",
                hint="add a [long_text] table to models.toml, or leave --text out",
            )
        text_pin = lock.long_text
    text = corpus.ensure_text(paths, text_pin)
    return (
        text.path,
        text.sha256,
        {
            "package": text_pin.package,
            "version": text_pin.version,
            "deb_sha256": text_pin.sha256,
            "member": text_pin.member,
            "sha256": text.sha256,
            "bytes": text.size,
        },
    )


def _models(
    lock: models.Lock, options: SuiteOptions, suite: gates.Suite
) -> list[tuple[models.ModelPin, UserFile | None]]:
    """The models to measure: models.toml's (the options' or the suite's), or the user's
    GGUF alone, checked and hashed, as a pin of its own name, sha256 and size."""
    if options.model_file is None:
        return [(lock.model(name), None) for name in options.models or suite.models]
    user = user_files.model_file(options.model_file)
    name = user_files.model_name(user.given, tuple(m.name for m in lock.models))
    return [(models.ModelPin(name, user.given.name, user.sha256, user.size, ()), user)]


def _refusals(configs: list[str], heads: models.ModelInfo, block64: bool) -> dict[str, str]:
    """The configurations of ``configs`` that llama.cpp will refuse for these heads, each
    with the reason in words."""
    found = {}
    for c in configs:
        if why := head_size_refusal(CacheConfig.parse(c), heads, block64):
            found[c] = why
    return found


def _refused_error(
    reports: list[report.ModelReport], gate_file: gates.GateFile, directory: Path, block64: bool
) -> ConfigError:
    """One line per model with refused configurations: its head sizes, what was refused and
    what was measured instead; the hint names the suite's configurations it can take
    (``block64``: whether llama.cpp may use the turbo types' block-64 variants)."""
    need = (
        "turbo types need heads that are a multiple of 64 values (the block-64 variants) or 128"
        if block64
        else "turbo types need heads that are a multiple of 128 values (LLAMA_TURBO_BLOCK64=0)"
    )
    lines: list[str] = []
    possible: dict[str, list[str]] = {}
    for m in reports:
        if not m.refused:
            continue
        i = m.info
        measured = ", ".join(m.results) or "nothing"
        lines.append(
            f"{m.pin.name}: head size {i.head_dim_k} (K) / {i.head_dim_v} (V) cannot take "
            f"{', '.join(m.refused)}: {need}, q8_0 and q4_0 of 32; measured instead: {measured}"
        )
        possible[m.pin.name] = [
            c for c in gate_file.full.configs if c not in _refusals([c], i, block64)
        ]
    where = f" (report: {directory})"
    message = (
        lines[0] + where
        if len(lines) == 1
        else (
            f"{len(lines)} models cannot take some configurations by head size{where}:\n  "
            + "\n  ".join(lines)
        )
    )
    hint = "; ".join(f"{name}: --configs {','.join(cs)}" for name, cs in possible.items())
    unset = "" if block64 else ", or unset LLAMA_TURBO_BLOCK64"
    return ConfigError(message, hint=f"measure what the model can take ({hint}){unset}")


def _suite(gate_file: gates.GateFile, name: str) -> gates.Suite:
    """The suite of gates.toml called ``name``; raises ConfigError (exit 11) for a name it
    does not know or a depth suite the file lacks."""
    if name == "default":
        return gate_file.full
    if name == "quick":
        return gate_file.quick
    if name == "long":
        if gate_file.long is None:
            raise ConfigError(
                f"--suite long: {gate_file.path.name} has no [suite.long]",
                hint="add a [suite.long] table (models, configs, chunks, contexts), or run "
                "another suite",
            )
        return gate_file.long
    raise ConfigError(f"--suite {name}: no such suite", hint=f"one of {', '.join(SUITES)}")


def _contexts(suite: gates.Suite, options: SuiteOptions, model: str) -> tuple[int, ...]:
    """The context lengths in tokens ``model`` runs at, shortest first: ``--ctx`` (512 when
    not given) for a suite of one length; the depth suite's lengths for the model, the
    longest replaced by ``--ctx`` when given."""
    if not suite.depth:
        return (options.ctx or RunSettings.ctx,)
    lengths = suite.contexts_for(model)
    if options.ctx is None:
        return lengths
    if options.ctx <= lengths[0]:
        raise ConfigError(
            f"--ctx {options.ctx} with --suite long: the longest context must exceed the "
            f"shortest, {lengths[0]} tokens, that growth is measured from",
            hint=f"give --ctx more than {lengths[0]}, or leave it out for the suite's own",
        )
    return (*(n for n in lengths if n < options.ctx), options.ctx)


def window_bytes(ctx: int, vocab: int) -> int:
    """Bytes llama-perplexity holds for one window of ``ctx`` tokens on a vocabulary of
    ``vocab`` tokens, at most (the f16 base run): the float32 logits of the scored second
    half (ctx/2 x vocab x 4; the first half's are never requested), the uint16
    log-probabilities of the whole window it writes (ctx x (vocab rounded up to even + 4) x
    2), the context's output buffer of one batch (BATCH x vocab x 4), and a GiB for the
    model, the KV cache and compute buffers. Measured: Gemma 3 at 4096 peaked at 5.59 GB
    resident (base run) and 4.52 GB (a KLD run); this gives 5.90 GB."""
    logits = ctx // 2 * vocab * 4
    log_probs = ctx * (2 * ((vocab + 1) // 2) + 4) * 2
    return logits + log_probs + BATCH * vocab * 4 + 2**30


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable of ``meminfo`` in bytes; None where there is no such file (not Linux)."""
    try:
        text = meminfo.read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _check_memory(name: str, lengths: tuple[int, ...], vocab: int | None) -> None:
    """Raises ConfigError (exit 11) before anything runs when a window of the longest context
    would not fit in the memory available now, naming both and the longest that fits, rather
    than letting the kernel's OOM killer end the run (or a neighbour's process) later."""
    available = available_bytes()
    if vocab is None or available is None:
        return
    ctx = max(lengths)
    need = window_bytes(ctx, vocab)
    if need <= available:
        return
    per_1024 = window_bytes(1024, vocab) - window_bytes(0, vocab)
    fits = max(available - window_bytes(0, vocab), 0) * 1024 // per_1024 // 512 * 512
    gib = 2**30
    raise ConfigError(
        f"{name} at a context of {ctx} tokens: llama-perplexity holds a whole window's logits "
        f"and log-probabilities, {need / gib:.1f} GiB for {ctx} tokens x a vocabulary of "
        f"{vocab}, and this machine has {available / gib:.1f} GiB available",
        hint=f"give a shorter --ctx (about {fits} tokens fit here), or run on a machine with "
        "more memory",
    )


@dataclass
class _Shared:
    """What every (model, context) measurement of one suite run shares."""

    paths: Paths
    gate_file: gates.GateFile
    text_path: Path
    text_sha256: str
    identity: dict[str, object]
    requested: list[str]
    block64: bool
    order: dict[str, int]
    hints: set[str]

    def ordered(self, configs: set[str]) -> list[str]:
        return sorted(configs, key=lambda c: (self.order.get(c, len(self.order)), c))


def _measure(
    shared: _Shared,
    runner: Runner,
    pin: models.ModelPin,
    user: UserFile | None,
    gguf: Path,
    label: str,
) -> report.ModelReport:
    """One model at the runner's context length: the f16 base, then every configuration the
    request and its gates need, judged by the gates of that length. ``label`` names the
    context in the outcomes of a depth suite ("" otherwise)."""
    settings = runner.settings
    key = BaseKey(pin.sha256, shared.text_sha256, shared.identity, settings.ctx, settings.chunks)
    with runner.base(pin.name, gguf, shared.text_path, key) as (base, base_run, base_cached):
        gate_file, requested = shared.gate_file, shared.requested
        logged = base_run.model
        if user is not None and logged is None:
            raise ParseError(
                f"{pin.name}: the f16 base run logged no `print_info:` lines, so nothing "
                "says what the model is"
            )
        info = logged.info(pin.name) if user is not None else models.cached_info(pin, gguf)
        # llama.cpp's own account of the heads decides what it will refuse
        heads = logged.info(pin.name) if logged is not None else info
        wanted = set(gate_file.required(pin.name, requested)) | {"f16"}
        refused = _refusals(shared.ordered(wanted), heads, shared.block64)
        runnable = [c for c in requested if c not in refused]
        plan = set(gate_file.required(pin.name, runnable)) | {"f16"}
        refused = {c: why for c, why in refused.items() if c in requested or c in plan}
        to_run = [c for c in shared.ordered(plan) if c not in refused]
        where = f"{pin.name}{' ' + label if label else ''}"
        for c, why in refused.items():
            print(f"{where} {c}: not run, llama.cpp would refuse it: {why}", file=sys.stderr)
        added = [c for c in to_run if c not in requested]
        if added:
            print(
                f"{where}: also running {', '.join(added)} (the gates compare with them)",
                file=sys.stderr,
            )
        m = report.ModelReport(pin, info, shared.ordered(plan | set(refused)))
        m.user, m.logged, m.refused = user, logged, dict(refused)
        m.base_key = {**key.__dict__, "digest": key.digest()}
        m.base_cached = base_cached
        m.ctx, m.chunks = settings.ctx, settings.chunks
        m.base_chunks, m.base_seconds = base_run.chunks, base_run.seconds
        for config in to_run:
            try:
                m.results[config] = runner.candidate(
                    pin.name, gguf, shared.text_path, base, CacheConfig.parse(config)
                )
            except HeadSizeRefused as exc:
                m.refused[config] = str(exc).split(": ", 1)[-1]
                print(f"{where} {config}: REFUSED: {exc}", file=sys.stderr)
            except CommandFailed as exc:
                m.failures[config] = str(exc)
                shared.hints.add(exc.hint)
                print(f"{where} {config}: FAILED: {str(exc).splitlines()[0]}", file=sys.stderr)
        judged = [c for c in requested if c not in m.refused]
        outcomes = gates.evaluate(gate_file, pin.name, judged, m.results, settings.ctx)
        m.outcomes = [replace(o, context=label) for o in outcomes]
        return m


def _measure_peer(
    shared: _Shared,
    runner: Runner,
    peer: peers.Peer,
    pin: models.ModelPin,
    gguf: Path,
    ours: report.ModelReport,
) -> report.PeerRuns:
    """The configurations of ``ours`` through the peer's llama-perplexity (the runner's
    binary and environment), under the peer's names for the cache types, each against the
    peer's own f16 base (cached by the peer's build and environment). A type the peer lacks,
    a head size it refuses and a run that fails become cells of the peer's table; none of
    them fails the command (the gates judge our build, not the peer)."""
    settings = runner.settings
    identity = {**build_identity(settings.binary), "env": dict(settings.env)}
    key = BaseKey(pin.sha256, shared.text_sha256, identity, settings.ctx, settings.chunks)
    runs = report.PeerRuns(peer.name, peer.title, peer.commit, settings.env, ours.info)
    runs.base_key = {**key.__dict__, "digest": key.digest()}
    with ExitStack() as stack:
        try:
            base, _, runs.base_cached = stack.enter_context(
                runner.base(pin.name, gguf, shared.text_path, key)
            )
        except HarnessError as exc:
            # e.g. an architecture the peer's llama.cpp predates: every cell says so
            first = str(exc).splitlines()[0]
            print(f"{pin.name} on peer {peer.name}: its f16 base FAILED: {first}", file=sys.stderr)
            runs.failures = {c: f"the peer's f16 base run failed: {exc}" for c in ours.configs}
            return runs
        for config in ours.configs:
            theirs = peer.config(CacheConfig.parse(config))
            if theirs is None:
                runs.refused[config] = f"{peer.name} has no such type"
                continue
            runs.names[config] = theirs.name
            if config not in ours.results:
                runs.refused[config] = "not measured on our side"
                continue
            try:
                runs.results[config] = runner.candidate(
                    pin.name, gguf, shared.text_path, base, theirs
                )
            except HeadSizeRefused as exc:
                runs.refused[config] = str(exc).split(": ", 1)[-1]
            except CommandFailed as exc:
                runs.failures[config] = str(exc)
                print(
                    f"{pin.name} {config} on peer {peer.name}: FAILED: {str(exc).splitlines()[0]}",
                    file=sys.stderr,
                )

    return runs


def _peer_summary(reports: list[report.ModelReport]) -> str:
    """Mean KLD of ours and the peer's per model and configuration, for the console."""
    lines = []
    for m in reports:
        p = m.peer
        if p is None:
            continue
        lines.append(f"{m.pin.name}: mean KLD, ours | peer {p.name} (each against its own f16)")
        for config in m.configs:
            ours, theirs = m.results.get(config), p.results.get(config)
            mine = (
                "–" if ours is None or ours.kld is None else f"{round(ours.kld.value, 5) + 0.0:.5f}"
            )
            if theirs is not None and theirs.kld is not None:
                peer_cell = f"{round(theirs.kld.value, 5) + 0.0:.5f}"
            elif config in p.failures:
                peer_cell = "failed"
            else:
                peer_cell = f"not run: {p.refused.get(config, '?')}"
            lines.append(f"  {config:<16} {mine:>9} | {peer_cell}")
    return "\n".join(lines)


def _depth(
    shared: _Shared, pin: models.ModelPin, by_ctx: dict[int, report.ModelReport]
) -> report.DepthReport:
    """A model's runs at every context of a depth suite, with its growth() gates judged on
    the longest against the shortest."""
    short, long = by_ctx[min(by_ctx)], by_ctx[max(by_ctx)]
    judged = [c for c in shared.requested if c not in long.refused and c not in short.refused]
    outcomes = gates.evaluate_growth(
        shared.gate_file, pin.name, judged, long.results, short.results
    )
    label = f"c={long.ctx} vs c={short.ctx}"
    d = report.DepthReport(pin.name, dict(sorted(by_ctx.items())))
    d.outcomes = [replace(o, context=label) for o in outcomes]
    return d


def _run(paths: Paths, options: SuiteOptions) -> Path:
    started = time.monotonic()
    gate_file = gates.load(paths.repo / "gates.toml")
    suite_name = options.suite_name
    suite = _suite(gate_file, suite_name)
    lock = models.load_lock(paths.repo / "models.toml")
    requested = [CacheConfig.parse(c).name for c in (options.configs or suite.configs)]
    for c in requested:
        cfg = CacheConfig.parse(c)
        if cfg.k not in gate_file.bits or cfg.v not in gate_file.bits:
            raise ConfigError(
                f"--configs {c}: no [bits] entry in gates.toml for its types",
                hint=f"the cache types gates.toml knows: {', '.join(gate_file.bits)}",
            )
    if options.peer is not None and suite.depth:
        raise ConfigError(
            f"--peer with --suite {suite_name}: a peer runs beside one context length",
            hint="give --ctx N (and --text long for a long text) instead of the depth suite",
        )
    binary = _binary(paths, options.binary, options.backend)
    peer_binary = options.peer_binary
    if options.peer is not None and peer_binary is None:
        backend = Backend(options.backend)
        built = peers.build_peer(paths, options.peer, options.peer_archives, backend)
        peer_binary = built.bin / "llama-perplexity"
    settings = RunSettings(
        binary=binary,
        chunks=options.chunks or suite.chunks,
        ctx=options.ctx or RunSettings.ctx,
        threads=options.threads,
        gpu_layers=options.gpu_layers,
    )
    if options.model_file is not None:
        if options.models:
            raise ConfigError(
                "--models and --model-file both say which models to run",
                hint="give one of them: --model-file runs your GGUF instead of models.toml's",
            )
        user_files.check_model(options.model_file)  # before a text is fetched or read
    # then the text: its checks are instant, hashing a user's model may take a while
    text_path, text_sha256, text_header = _text(paths, lock, options, suite)
    subjects = _models(lock, options, suite)
    plans = {pin.name: _contexts(suite, options, pin.name) for pin, _ in subjects}
    for pin, user in subjects:
        if user is None:  # a pinned model's vocabulary is known before it runs
            info = models.cached_info(pin, models.ensure_model(paths, pin))
            _check_memory(pin.name, plans[pin.name], info.vocab_size)
    identity = build_identity(binary)
    version = _version(binary)
    block64 = block64_allowed()
    # f16 first: its run writes (or checks) the base every other run is measured against.
    order = {c: i for i, c in enumerate(("f16", *gate_file.full.configs))}
    shared = _Shared(
        paths, gate_file, text_path, text_sha256, identity, requested, block64, order, set()
    )

    with _report_dir(paths.repo / "reports") as directory:
        reports: list[report.ModelReport] = []
        depths: list[report.DepthReport] = []
        for pin, user in subjects:
            gguf = user.path if user is not None else models.ensure_model(paths, pin)
            lengths = plans[pin.name]
            if not suite.depth:
                runner = Runner(paths, settings, directory / "logs")
                m = _measure(shared, runner, pin, user, gguf, "")
                if options.peer is not None and peer_binary is not None:
                    peer_settings = replace(settings, binary=peer_binary, env=options.peer.env)
                    peer_runner = Runner(
                        paths, peer_settings, directory / "logs" / f"peer-{options.peer.name}"
                    )
                    m.peer = _measure_peer(shared, peer_runner, options.peer, pin, gguf, m)
                reports.append(m)
                continue
            # Longest first: its base run says how many windows the text holds, and every
            # shorter context then runs as many windows as cover the same tokens.
            by_ctx: dict[int, report.ModelReport] = {}
            covered: int | None = None  # tokens the longest context's windows cover
            for ctx in sorted(lengths, reverse=True):
                chunks = settings.chunks if covered is None else max(covered // ctx, 1)
                print(
                    f"{pin.name}: context {ctx}, {chunks} window(s), each number on "
                    f"{chunks * ctx // 2} scored positions",
                    file=sys.stderr,
                )
                runner = Runner(
                    paths, replace(settings, ctx=ctx, chunks=chunks), directory / "logs" / f"c{ctx}"
                )
                m = _measure(shared, runner, pin, user, gguf, f"c={ctx}")
                by_ctx[ctx] = m
                if covered is None:
                    covered = min(m.base_chunks or chunks, chunks) * ctx
            reports += [by_ctx[c] for c in sorted(by_ctx)]
            depths.append(_depth(shared, pin, by_ctx))

        header = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": ["python", "-m", "harness", *sys.argv[1:]],
            "quick": suite_name == "quick",
            "suite": suite_name,
            "host": {"platform": platform.platform(), "python": platform.python_version()},
            "settings": {
                "ctx": None if suite.depth else settings.ctx,
                "batch": 512,
                "chunks": settings.chunks,
                "threads": settings.threads,
                "gpu_layers": settings.gpu_layers,
                "flash_attn": "on",
                "turbo_block64": block64,
                # the depth suite: per model, each context length (tokens) and its windows
                "contexts": {
                    name: {str(m.ctx): m.chunks for m in reports if m.pin.name == name}
                    for name in plans
                }
                if suite.depth
                else None,
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
            "text": text_header,
            "wall_seconds": time.monotonic() - started,
        }
        report.write(directory, header, reports, gate_file, depths)
        latest = report.link_latest(paths.repo / "reports", directory)
        outcomes = [o for m in reports for o in m.outcomes]
        outcomes += [o for d in depths for o in d.outcomes]
        for o in outcomes:
            print(o.line(gate_file.path.name), file=sys.stderr)
        if options.peer is not None:
            print(_peer_summary(reports))
        print(f"report: {directory / 'report.md'} (also {latest / 'report.md'})")

        failed_runs = [
            (m.pin.name + (f" c={m.ctx}" if suite.depth else ""), c, e)
            for m in reports
            for c, e in m.failures.items()
        ]
        if failed_runs:
            gate_note = sum(not o.passed for o in outcomes)
            lines = "\n".join(f"  {name} {c}: {e.splitlines()[0]}" for name, c, e in failed_runs)
            raise CommandFailed(
                f"{len(failed_runs)} configuration run(s) could not be measured ({gate_note} "
                f"gate(s) failed as a result or on their own):\n{lines}\n  report: {directory}",
                hint="; ".join(sorted(shared.hints)) + " (logs: the report's logs/ folder)",
            )
        # one report per model says what its heads refused (every context refuses the same)
        first = list({m.pin.name: m for m in reversed(reports)}.values())[::-1]
        if any(m.refused for m in first):
            raise _refused_error(first, gate_file, directory, block64)
        gates.raise_on_failures(outcomes, gate_file.path.name)
        return directory
