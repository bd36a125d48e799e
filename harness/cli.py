"""Command line of the harness: ``python -m harness COMMAND``; the nox sessions call this.

Each failure class of ``harness.errors`` has its own exit code; ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import git

from harness import bench, corpus, models, needle, parity, patches, peers, state, suite, user_files
from harness import build as build_mod
from harness.cache_types import CacheConfig
from harness.config import Paths, environment, load_pin
from harness.errors import CommandFailed, ConfigError, HarnessError, exit_codes_text
from harness.lock import exclusive
from harness.parity import ggml as parity_ggml
from harness.upstream import FetchMode, Upstream, ensure_upstream


def _add_source_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("upstream source (default: the pinned sdist, offline-friendly)")
    g.add_argument(
        "--fetch",
        choices=[m.value for m in FetchMode],
        help="where the pinned commit comes from: the llama-cpp-python sdist (pip) or git "
        "(default: env TQH_FETCH, else sdist)",
    )
    g.add_argument("--git-url", help="override the git URL of upstream.toml (e.g. a mirror)")
    g.add_argument(
        "--source",
        type=Path,
        help="use the commit checked out in this local llama.cpp clone as the base",
    )


def _add_peer_options(p: argparse.ArgumentParser, how: str) -> None:
    p.add_argument(
        "--peer",
        metavar="NAME",
        help="also build (once) and measure the peer NAME of peers.toml, no patches of "
        f"ours: {how}",
    )
    p.add_argument(
        "--peer-archives",
        type=Path,
        metavar="DIR",
        help="a folder holding peer archives (also TQH_PEER_ARCHIVES and ../shared/peers)",
    )


def _upstream(args: argparse.Namespace, paths: Paths) -> Upstream:
    pin = load_pin(paths.pin_file)
    return ensure_upstream(
        paths,
        pin,
        mode=FetchMode(args.fetch or environment().fetch),
        git_url=args.git_url,
        source=args.source,
    )


def cmd_build(args: argparse.Namespace, paths: Paths) -> None:
    """`build`: fetch upstream, apply patches/ under the build lock, build the targets."""
    backend = build_mod.Backend(args.backend)
    default_targets = build_mod.BuildOptions.targets + (
        build_mod.CUDA_KERNEL_TARGETS if backend is build_mod.Backend.CUDA else ()
    )
    options = build_mod.BuildOptions(
        backend=backend,
        build_type=args.build_type,
        native=not args.no_native,
        cuda_architectures=args.cuda_arch,
        defines=tuple(args.define),
        targets=tuple(args.target)
        or (build_mod.STATE_TARGETS if args.state_tools else default_targets),
        jobs=args.jobs,
    )
    upstream = _upstream(args, paths)
    with exclusive(paths.build / ".lock"):
        series = patches.Series.load(paths.patches)
        patches.apply(paths, upstream, series)
        result = build_mod.build(paths, upstream.commit, series.digest(), options)
    print(f"built {', '.join(options.targets)} in {result.directory}")


def cmd_patches(args: argparse.Namespace, paths: Paths) -> None:
    """`patches apply|export|check`: the series against the work checkout."""
    upstream = _upstream(args, paths)
    with exclusive(paths.build / ".lock"):
        if args.action == "apply":
            head = patches.apply(paths, upstream, patches.Series.load(paths.patches))
            print(f"{paths.checkout} is at {head[:12]} (branch {patches.PATCHED_BRANCH})")
        elif args.action == "export":
            changed = patches.export(paths, upstream)
            print("patches/: " + (", ".join(changed) + " written" if changed else "unchanged"))
        else:
            patches.check(paths, upstream)
            print("patches/ matches the work checkout")


def cmd_fetch(args: argparse.Namespace, paths: Paths) -> None:
    """`fetch`: the pinned upstream into the cache, verified; prints its commit and place."""
    up = _upstream(args, paths)
    print(f"{up.commit} ({up.origin}) in {up.repo}")


def _built(paths: Paths, backend: str = "cpu") -> build_mod.BuildResult:
    """The build of ``backend`` that `build` made; the later stages never build on their own."""
    options = build_mod.BuildOptions(backend=build_mod.Backend(backend))
    directory = build_mod.build_dir(paths, options)
    if not (directory / build_mod.STAMP).is_file() or not (directory / "bin").is_dir():
        flag = "" if backend == "cpu" else f" -- --backend {backend}"
        raise ConfigError(f"no build in {directory}; run `nox -s build{flag}` first")
    return build_mod.BuildResult(directory, 0, False)


def _report_path(paths: Paths, stem: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return paths.repo / "reports" / f"{stem}-{stamp}.json"


def cmd_parity(args: argparse.Namespace, paths: Paths) -> None:
    """`parity`: the kernels, then the built ggml, against reference/; raises ParityError."""
    built = _built(paths, args.backend)
    parity.run_parity(
        built.kernels,
        vectors=args.vectors,
        filter=args.k,
        json_out=_report_path(paths, "parity"),
        bench=not args.no_bench,
        gpu=args.backend == "cuda",
    )
    if args.k is None:
        parity_ggml.run_ggml_parity(
            built.bin, paths.checkout / "ggml/include/ggml.h", vectors=args.ggml_vectors
        )


def _peer_archive_dirs(args: argparse.Namespace, paths: Paths) -> tuple[Path, ...]:
    """Where peer archives are looked for: --peer-archives, TQH_PEER_ARCHIVES, and the
    ``shared/peers`` folder beside the repository."""
    given = [args.peer_archives] if args.peer_archives else []
    return (*given, *environment().peer_archives, paths.repo.parent / "shared" / "peers")


def cmd_bench(args: argparse.Namespace, paths: Paths) -> None:
    """`bench`: llama-bench ratios to f16 (beside a peer's with --peer), a JSON report, the
    KV memory gate."""
    configs = CacheConfig.parse_list(args.configs)
    given = [
        o for o, v in (("--model-file", args.model_file), ("--speed-model", args.speed_model)) if v
    ]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} both name the model", hint="give one of them")
    peer = peers.peer(paths.repo / "peers.toml", args.peer) if args.peer else None
    built = _built(paths, args.backend)
    lock = models.load_lock(paths.repo / "models.toml")
    if args.model_file:
        model = user_files.check_model(args.model_file)
    elif args.speed_model:
        model = bench.speed_model_file(paths, lock, args.speed_model)
    else:
        model = models.ensure_model(paths, lock.model(args.model))
    plan = bench.BenchPlan(
        model=model,
        configs=configs,
        depths=tuple(int(d) for d in args.depths.split(",")),
        n_prompt=args.pp,
        n_gen=args.tg,
        rounds=args.rounds,
        threads=args.threads,
        gpu_layers=None if args.backend == "cpu" else 99,
    )
    sides = [bench.Side("ours", built.bin, plan)]
    unsupported: list[str] = []
    if peer is not None:
        backend = build_mod.Backend(args.backend)
        peer_bin = peers.build_peer(paths, peer, _peer_archive_dirs(args, paths), backend).bin
        mapped = [(c, peer.config(c)) for c in configs]
        unsupported = [c.name for c, m in mapped if m is None]
        peer_configs = tuple(m for _, m in mapped if m is not None)
        sides.append(
            bench.Side(peer.name, peer_bin, replace(plan, configs=peer_configs, env=peer.env))
        )
    results = bench.run_bench(sides, paths.logs / "bench.log")
    text, missed = bench.table(results["ours"], plan, args.backend)
    print(
        f"\nllama-bench on {model.name}, {args.backend} ({plan.rounds} interleaved rounds, "
        f"medians; ratio to f16: median, range over the rounds)\n{text}"
    )
    for line in missed:
        print(f"speed target missed: {line}")
    extra: dict[str, object] = {}
    if peer is not None:
        peer_text, _ = bench.table(results[peer.name], sides[1].plan, "peer")
        env = " ".join(f"{k}={v}" for k, v in peer.env) or "no environment"
        print(
            f"\npeer {peer.name}: {peer.title} at {peer.commit[:12]} ({env}), the same rounds, "
            f"ratios to its own f16\n{peer_text}"
        )
        for name in unsupported:
            print(f"| {name} | not supported by {peer.name} |")
        extra = {
            "peer": {"name": peer.name, "title": peer.title, "commit": peer.commit},
            "unsupported": unsupported,
        }
    out = _report_path(paths, "bench")
    bench.write_json(sides, results, out, **extra)
    print(f"wrote {out} and {bench.plot(sides, results, out.with_suffix('.png'))}")
    bench.check_memory(results["ours"])


TEXT_KEYWORDS = ("pinned", "long")


def cmd_perplexity(args: argparse.Namespace, paths: Paths) -> None:
    """`perplexity`: the suite of gates.toml (or the options' subset) and its report."""

    def names(value: str | None) -> tuple[str, ...] | None:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None

    if args.ctx is not None and args.ctx < 64:
        raise ConfigError(
            f"--ctx {args.ctx}: a context needs at least 64 tokens",
            hint="give --ctx a context length in tokens such as 4096, or leave it out for 512",
        )
    if args.chunks is not None and args.chunks < 1:
        raise ConfigError(
            f"--chunks {args.chunks}: a run needs at least one chunk",
            hint="give --chunks a positive number, or leave it out for the suite's own",
        )

    if args.quick and args.suite not in (None, "quick"):
        raise ConfigError(
            f"--quick and --suite {args.suite} name two suites",
            hint="give one of them (--quick is --suite quick)",
        )
    # `pinned` and `long` name models.toml's texts; anything else is a path (./long for a
    # file called long); none given: the suite's own (the long suite reads `long`)
    text_file = None if args.text in (None, *TEXT_KEYWORDS) else Path(args.text)
    suite.run(
        paths,
        suite.SuiteOptions(
            quick=args.quick,
            suite=args.suite,
            models=names(args.models),
            configs=names(args.configs),
            chunks=args.chunks,
            ctx=args.ctx,
            long_text=None if args.text is None else args.text == "long",
            text_file=text_file,
            model_file=args.model_file,
            threads=args.threads,
            binary=args.bin,
            backend=args.backend,
            peer=peers.peer(paths.repo / "peers.toml", args.peer) if args.peer else None,
            peer_archives=_peer_archive_dirs(args, paths),
        ),
    )


def cmd_text(args: argparse.Namespace, paths: Paths) -> None:
    """`text`: the pinned texts of models.toml in the cache, verified: with --deb from a
    package file given by path (CI runners, machines without apt), else with apt-get."""
    lock = models.load_lock(paths.repo / "models.toml")
    if args.deb:
        print(f"added {corpus.add_deb(paths, lock.text, args.deb)}")
    for pin in (lock.text, lock.long_text):
        if pin is not None:
            text = corpus.ensure_text(paths, pin)
            print(f"{text.path} ({text.size} bytes, sha256 {text.sha256})")


def cmd_state(args: argparse.Namespace, paths: Paths) -> None:
    """`state`: the save/restore checks, a table and a JSON report; raises GateFailed."""
    lock = models.load_lock(paths.repo / "models.toml")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if args.configs == "all":
        configs = state.all_configs()
    elif args.configs == "default":
        configs = state.DEFAULT_CONFIGS
    else:
        configs = tuple(c.strip() for c in args.configs.split(",") if c.strip())
    parsed = [CacheConfig.parse(c) for c in configs]
    bin_dir = args.bin_dir or _built(paths).bin
    missing = [t for t in build_mod.STATE_TARGETS if not (bin_dir / t).is_file()]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not built in {bin_dir}",
            hint="run `nox -s state` (it builds them) or `python -m harness build --state-tools`",
        )
    pins = [lock.model(n) for n in names]
    chosen = [(p.name, models.ensure_model(paths, p)) for p in pins]
    text = corpus.ensure_text(paths, lock.text)
    started = time.monotonic()
    result = state.run(
        bin_dir,
        chosen,
        parsed,
        text.path,
        paths.logs,
        server=not args.no_server,
        threads=args.threads,
        on_step=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(f"\n{state.table(result)}\n({time.monotonic() - started:.0f} s)")
    out = _report_path(paths, "state")
    state.write_json(result, out)
    print(f"wrote {out}")
    state.check(result)


_N = TypeVar("_N", int, float)


def _numbers(value: str, kind: Callable[[str], _N], option: str, what: str) -> tuple[_N, ...]:
    """The comma-separated numbers of ``value``; raises ConfigError (exit 11) naming the
    option and ``what`` to give when one does not read as ``kind``."""
    try:
        return tuple(kind(v) for v in value.split(","))
    except ValueError as exc:
        raise ConfigError(f"{option} {value!r}: {what}") from exc


def cmd_needle(args: argparse.Namespace, paths: Paths) -> None:
    """`needle`: pass-key retrieval at depth per configuration, a report; raises GateFailed."""
    spec = needle.load_spec(paths.repo / "gates.toml")
    lock = models.load_lock(paths.repo / "models.toml")
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else spec.models
    configs = CacheConfig.parse_list(args.configs or ",".join(spec.configs))
    if args.lengths:
        given = _numbers(args.lengths, int, "--lengths", "give token counts, e.g. 2048,8192")
        lengths = {n: given for n in names}
    else:
        lengths = {n: spec.lengths_for(n) for n in names}
    if args.depths:
        depths = _numbers(
            args.depths, float, "--depths", "give fractions of the filler, e.g. 0.1,0.5,0.9"
        )
        if not all(0.0 <= d <= 1.0 for d in depths):
            raise ConfigError(
                f"--depths {args.depths}: a depth is a fraction of the filler, 0 to 1",
                hint="e.g. --depths 0.1,0.5,0.9",
            )
        spec = replace(spec, depths=depths)
    bin_dir = args.bin_dir or _built(paths).bin
    server_bin = bin_dir / "llama-server"
    if not server_bin.is_file():
        raise ConfigError(
            f"llama-server not built in {bin_dir}",
            hint="run `python -m harness build --state-tools` (`nox -s needle` does)",
        )
    if lock.long_text is None:
        raise ConfigError("models.toml pins no [long_text] for the filler")
    text = corpus.ensure_text(paths, lock.long_text)
    chosen = [(n, models.ensure_model(paths, lock.model(n))) for n in names]
    started = time.monotonic()
    trials = needle.run(
        server_bin,
        chosen,
        configs,
        spec,
        lengths,
        text.path.read_text(encoding="utf-8"),
        paths.logs,
        args.threads,
        on_step=lambda s: print(s, file=sys.stderr, flush=True),
    )
    results = needle.scores(trials)
    failures = needle.check(results, spec)
    out = _report_path(paths, "needle").with_suffix("")
    meta = {
        "command": sys.argv,
        "lengths": lengths,
        "depths": spec.depths,
        "n_predict": spec.n_predict,
        "seed": spec.seed,
        "text_sha256": text.sha256,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    needle.write(trials, results, failures, out, meta)
    print(f"\n{needle.table(trials, results)}\n({meta['wall_seconds']:.0f} s)")
    print(f"wrote {out}/needle.md")
    needle.raise_on_failures(failures)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m harness``: one subcommand per stage."""
    top = argparse.ArgumentParser(
        prog="python -m harness",
        description=__doc__,
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("text", help="put the pinned texts of models.toml into the cache, verified")
    p.add_argument(
        "--deb",
        type=Path,
        help="the pinned package file (or a folder holding it) instead of apt-get: for "
        "machines without apt and runners whose apt serves another build",
    )
    p.set_defaults(func=cmd_text)

    p = sub.add_parser("fetch", help="fetch and verify the pinned upstream into the cache")
    _add_source_options(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("build", help="fetch, apply patches/, build the tools and kernels")
    _add_source_options(p)
    p.add_argument(
        "--backend",
        choices=[b.value for b in build_mod.Backend],
        default="cpu",
        help="ggml backend to build (metal on macOS, cuda needs nvcc)",
    )
    p.add_argument("--build-type", default="Release", help="CMAKE_BUILD_TYPE")
    p.add_argument(
        "--no-native",
        action="store_true",
        help="portable binaries instead of -march=native (release artifacts)",
    )
    p.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES for --backend cuda")
    p.add_argument(
        "-D",
        "--define",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="extra CMake cache entry (repeatable); part of the configuration record",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        help="build only this target (repeatable; default: tools and kernels)",
    )
    p.add_argument(
        "--state-tools",
        action="store_true",
        help=f"build what `state` runs ({', '.join(build_mod.STATE_TARGETS)}) instead",
    )
    p.add_argument("-j", "--jobs", type=int, help="parallel build jobs (default: ninja's)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("patches", help="apply, export or check the patch series")
    p.add_argument("action", choices=["apply", "export", "check"])
    _add_source_options(p)
    p.set_defaults(func=cmd_patches)

    p = sub.add_parser(
        "perplexity",
        help="perplexity and KL-divergence gates on the pinned models; writes reports/",
        description="Run llama-perplexity with each KV-cache configuration against the f16 "
        "base, check gates.toml, write reports/<UTC time>/ (reports/latest is the newest). "
        "Defaults (models, configurations, chunks) come from [suite] in gates.toml.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the [suite.quick] of gates.toml: SmolLM2 only, fewer chunks and configurations "
        "(about 3 minutes on 2 cores)",
    )
    p.add_argument(
        "--suite",
        choices=suite.SUITES,
        help="the suite of gates.toml to run: default ([suite]), quick ([suite.quick]) or long "
        "([suite.long], not in the default run): every model at 512 and at a long context "
        "(SmolLM2 8192, Gemma 3 16384) on the long text, the gates at each length, and the "
        "growth of each configuration's KLD from 512 to the long context against q4_0's",
    )
    p.add_argument("--models", help="comma-separated model names from models.toml")
    p.add_argument(
        "--model-file",
        type=Path,
        metavar="PATH.gguf",
        help="your own GGUF model (any llama.cpp loads) instead of models.toml's, through the "
        "same configurations and gates; the report records its sha256, size, and its "
        "architecture, layers, heads and head sizes as llama.cpp logged them",
    )
    p.add_argument(
        "--configs",
        help="comma-separated KV configurations: TYPE or K/V (e.g. f16,q4_0,q8_0/turbo3)",
    )
    p.add_argument(
        "--chunks",
        type=int,
        help="chunks (windows of --ctx tokens) per run; with --suite long, windows at the "
        "longest context (each shorter context runs as many as cover the same tokens)",
    )
    p.add_argument(
        "--ctx",
        type=int,
        help="context length in tokens (default 512); llama-perplexity scores the second half "
        "of each window, so a number rests on chunks x ctx/2 positions; f16 base logits are "
        "cached per context length; with --suite long, the long context of every model",
    )
    p.add_argument(
        "--text",
        metavar="pinned|long|PATH",
        help="pinned (the default, but long for --suite long): the first 32 KB of the GNU "
        "Coding Standards (7,516 SmolLM2 tokens); long: all of it (212 KB, about 54K SmolLM2 "
        "and 51K Gemma 3 tokens), for --ctx beyond 3,758; or the path of your own UTF-8 text "
        "(at least 2 x --ctx tokens; ./long for a file called long)",
    )
    p.add_argument("--threads", type=int, default=2, help="llama-perplexity threads (default 2)")
    p.add_argument(
        "--backend",
        choices=[b.value for b in build_mod.Backend],
        default="cpu",
        help="run build/BACKEND/bin/llama-perplexity (`nox -s build -- --backend BACKEND` "
        "makes it); metal and cuda offload every layer (-ngl 99)",
    )
    p.add_argument("--bin", type=Path, help="llama-perplexity to run (default: build/BACKEND/bin)")
    _add_peer_options(
        p,
        "the same configurations through its llama-perplexity after ours (one context length; "
        "KLD against its own f16 run), its table beside ours in the report",
    )
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("parity", help="check the kernels and the built ggml against reference/")
    p.add_argument(
        "-k",
        metavar="PATTERN",
        help="only the kernel cases whose name matches (glob); replays one case",
    )
    p.add_argument(
        "--vectors",
        type=int,
        default=parity.DEFAULT_VECTORS,
        help="random vectors per format and block for the kernels",
    )
    p.add_argument(
        "--ggml-vectors",
        type=int,
        default=100_000,
        help="random vectors per turbo type pushed through the built ggml",
    )
    p.add_argument("--no-bench", action="store_true", help="skip the throughput benchmark")
    p.add_argument(
        "--backend",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: check build/cuda, and run the CUDA math on the GPU as well",
    )
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("bench", help="llama-bench speed and KV memory per cache type, vs f16")
    p.add_argument("--model", default="smollm2-135m", help="model name from models.toml")
    p.add_argument("--model-file", type=Path, help="your own GGUF instead of --model")
    p.add_argument(
        "--speed-model",
        type=int,
        choices=[64, 128, 256],
        metavar="HEAD_DIM",
        help="issue 10's random-weight llama of this head size (16 layers, n_embd 2048, GQA "
        "2, f16, 1.0 GB; written once into the cache) instead of --model",
    )
    p.add_argument(
        "--configs",
        default=bench.DEFAULT_CONFIGS,
        help="comma-separated KV configurations, TYPE (K and V alike) or K/V; f16 is added "
        "first when missing",
    )
    p.add_argument(
        "--backend",
        choices=[b.value for b in build_mod.Backend],
        default="cpu",
        help="run build/BACKEND/bin/llama-bench (`nox -s build -- --backend BACKEND`); metal "
        "and cuda offload every layer (-ngl 99)",
    )
    _add_peer_options(p, "interleaved with ours in the same rounds; its ratios are to its own f16")
    p.add_argument("--depths", default="0,4096", help="KV depths to measure at")
    p.add_argument("--pp", type=int, default=512, help="prompt tokens (pp test)")
    p.add_argument("--tg", type=int, default=128, help="generated tokens (tg test)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "state",
        help="KV cache save/restore for pairs of K/V types (files, sequences, server slots)",
        description=state.__doc__.split("\n\n")[0] if state.__doc__ else None,
    )
    p.add_argument(
        "--models", default="smollm2-135m,gemma3-270m", help="comma-separated models.toml names"
    )
    p.add_argument(
        "--configs",
        default="default",
        help="`default` (every symmetric pair and 8 asymmetric ones), `all` (the 49 pairs of "
        f"{','.join(state.TYPES)}) or comma-separated TYPE or K/V",
    )
    p.add_argument("--no-server", action="store_true", help="test-save-load-state only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bin-dir", type=Path, help="folder of the programs (default: build/cpu/bin)")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser(
        "needle",
        help="pass-key retrieval at depth per KV-cache configuration, against f16",
        description=needle.__doc__.split("\n\n")[0] if needle.__doc__ else None,
    )
    p.add_argument("--models", help="comma-separated models.toml names (default: [needle])")
    p.add_argument("--configs", help="comma-separated TYPE or K/V (default: [needle]; f16 added)")
    p.add_argument("--lengths", help="comma-separated context lengths in tokens, every model")
    p.add_argument(
        "--depths",
        help="comma-separated depths of the needle as fractions of the filler, 0 to 1 "
        "(default: [needle] of gates.toml)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bin-dir", type=Path, help="folder of llama-server (default: build/cpu/bin)")
    p.set_defaults(func=cmd_needle)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a HarnessError ends in its message, its hint and its exit code."""
    args = parser().parse_args(argv)
    paths = Paths.default()
    try:
        args.func(args, paths)
    except HarnessError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        print(f"hint: {exc.hint}", file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            first = str(exc).splitlines()[0]
            print(f"::error title={type(exc).__name__}::{first}", file=sys.stderr)
        return exc.exit_code
    except git.GitError as exc:
        # GitPython's errors are outside the hierarchy; one that escapes a module still ends
        # like a failed external command: one line, the command class's exit code.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"\nerror: git failed: {first}", file=sys.stderr)
        print(f"hint: {CommandFailed.hint}", file=sys.stderr)
        return CommandFailed.exit_code
    except KeyboardInterrupt:
        # Locks are released by their context managers on the way out; caches are written
        # through temporary names, so nothing half-written is left under a final name.
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0
