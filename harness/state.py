"""Saving and restoring a KV cache, checked for pairs of K and V cache types on real models.

Three checks per model and configuration, all through the patched llama.cpp's own programs:

- ``test-save-load-state`` (upstream's test; patches 0010-0011 make it run with quantized
  caches): 9 tests, namely whole-context state files, per-sequence states through host and
  device buffers, sequence copies into non-contiguous cells, byte-identical round trips, and a
  corrupted state that must fail and leave nothing behind. A configuration passes when every
  test after the baseline prints PASS and the program exits 0.
- llama-server's slot endpoints: ``PROMPT_TOKENS`` tokens of the pinned text and
  ``N_PREDICT`` greedy tokens; save the slot, erase, restore, save again. The two slot files
  must be byte-identical, the restored cache must be reused (the next request evaluates 1
  prompt token), and its greedy text must equal that of the same request sent again before
  the save, on the cache that was never saved. Whether it also equals the first request's
  text is recorded, not required: that request computed
  its last prompt token inside a batch of the whole prompt, and llama.cpp's CPU attention
  does not give bit-identical logits for a token computed alone and inside a batch, f16
  included (docs/measurements.md, 2026-11-29).
- A state saved under one configuration and restored under another is refused with one
  error line naming both types: by llama-server (HTTP 400, nothing restored, the server up)
  and by llama-completion's ``--prompt-cache`` (exit 1, the file unchanged).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache_types import CacheConfig
from harness.errors import CommandFailed, GateFailed
from harness.server import Server, cache_args

TYPES = ("f16", "q8_0", "q4_0", "turbo2", "turbo3", "turbo4", "turbo5")
# Every symmetric configuration, upstream's own asymmetric one, and asymmetric ones with a
# turbo type on one side or both (the configurations the issue found broken among them).
DEFAULT_CONFIGS = (
    *TYPES,
    "q8_0/q4_0",
    "q8_0/turbo3",
    "turbo3/q8_0",
    "f16/turbo3",
    "q4_0/turbo4",
    "turbo4/turbo3",
    "turbo5/turbo3",
    "turbo2/turbo5",
)
# Saved under the first configuration, restored under the second with the environment given:
# K differs, V differs, and the attention rotation differs (the types alike; patch 0013).
ROTATION_OFF = {"LLAMA_ATTN_ROT_DISABLE": "1"}
MISMATCHES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("q8_0/turbo3", "turbo3/turbo3", {}),
    ("turbo4/turbo3", "turbo4/turbo4", {}),
    ("q8_0/turbo3", "q8_0/turbo3", ROTATION_OFF),
)
SAVE_LOAD_TESTS = 9
PROMPT_TOKENS = 400
N_PREDICT = 32
CTX = 2048
# llama-kv-cache.cpp's refusals: "the saved state holds a q8_0 K cache, this context has
# turbo3 (layer 0): ..." (patch 0012), "the saved state holds K/V rotated/rotated by the
# attention rotation, this context's are unrotated/unrotated: ..." (patch 0013)
REFUSAL = re.compile(
    r"the saved state holds (?:an? \S+ [KV] cache, this context has|K/V \S+ by the attention)"
)


def all_configs() -> tuple[str, ...]:
    """Every K/V pair of ``TYPES``: 49 configurations."""
    return tuple(CacheConfig(k, v).name for k, v in itertools.product(TYPES, TYPES))


@dataclass(frozen=True)
class SaveLoadResult:
    """One run of test-save-load-state: which of its tests printed PASS, which did not."""

    model: str
    config: str
    returncode: int
    passed: tuple[str, ...]
    failed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Exit 0 and all ``SAVE_LOAD_TESTS`` tests passed (fewer means the program stopped)."""
        return self.returncode == 0 and not self.failed and len(self.passed) == SAVE_LOAD_TESTS


@dataclass(frozen=True)
class SlotResult:
    """One slot save/restore through llama-server; token counts in tokens."""

    model: str
    config: str
    prompt_tokens: int
    files_identical: bool
    evaluated_after_restore: int
    same_as_never_saved: bool
    same_as_first: bool  # recorded, not gated (see the module docstring)

    @property
    def ok(self) -> bool:
        """Byte-identical slot files, 1 token evaluated after the restore, the unsaved answer."""
        return (
            self.files_identical and self.evaluated_after_restore == 1 and self.same_as_never_saved
        )


@dataclass(frozen=True)
class MismatchResult:
    """A state saved under ``saved`` and restored under ``loaded`` by ``tool``."""

    model: str
    tool: str
    saved: str
    loaded: str
    refused: bool  # the tool reported failure (HTTP 400, or a non-zero exit)
    message: str  # the error line naming both types, "" if none was logged
    nothing_loaded: bool  # server: the next request evaluated the whole prompt; cli: file kept

    @property
    def ok(self) -> bool:
        """Refused, with the line naming both sides logged, and nothing of the state kept."""
        return self.refused and bool(self.message) and self.nothing_loaded


def parse_save_load(output: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of the tests of test-save-load-state's output that passed and that did not.

    Each test opens with ``=== Test N: name ===`` and ends with a ``PASS`` line when it
    passes; the baseline (test 1) prints its tokens instead and counts as passed when a later
    test started, since every later test compares against it."""
    passed: list[str] = []
    failed: list[str] = []
    current: str | None = None
    current_passed = False
    lines = output.splitlines()
    headers = [re.fullmatch(r"=== Test \d+: (.+) ===", line.strip()) for line in lines]
    n_headers = sum(1 for h in headers if h)
    for line, header in zip(lines, headers, strict=True):
        if header:
            if current is not None:
                (passed if current_passed else failed).append(current)
            current, current_passed = header.group(1), False
            if not passed and not failed and n_headers > 1:
                current_passed = True  # the baseline
        elif current is not None and line.strip().startswith("PASS"):
            current_passed = True
    if current is not None:
        (passed if current_passed else failed).append(current)
    return tuple(passed), tuple(failed)


def run_save_load(
    binary: Path, model: Path, name: str, config: CacheConfig, prompt: Path, log: Path, threads: int
) -> SaveLoadResult:
    """test-save-load-state with ``config`` on ``model`` and the prompt file ``prompt``; the
    files it writes go to a temporary folder. A failing test is a result, not an exception;
    raises ToolMissing when ``binary`` does not exist."""
    with tempfile.TemporaryDirectory(prefix="tqh-state-") as tmp:
        out = proc.run(
            [
                binary,
                "-m",
                model,
                "-f",
                prompt,
                # the test decodes the whole prompt in one batch, and without -b its batch
                # is smaller than PROMPT_TOKENS (common_prompt_batch_decode asserts)
                "-b",
                str(CTX),
                *cache_args(config),
                "-t",
                str(threads),
            ],
            cwd=Path(tmp),
            log=log,
            check=False,
            quiet=True,
        )
    passed, failed = parse_save_load(out.output)
    return SaveLoadResult(name, config.name, out.returncode, passed, failed)


def slot_server(
    binary: Path,
    model: Path,
    config: CacheConfig,
    slots: Path,
    log: Path,
    threads: int,
    env: dict[str, str] | None = None,
) -> Server:
    """A llama-server of ``CTX`` tokens whose slot 0 can be saved to and restored from
    ``slots``: the whole sliding-window cache kept (a restored prompt can be reused) and no
    host-memory prompt cache (reuse after a restore comes from the slot alone)."""
    extra = ["--swa-full", "--cache-ram", "0", "--slot-save-path", str(slots)]
    return Server(binary, model, config, CTX, log, threads, env=env, extra=extra)


def run_slot_roundtrip(
    binary: Path, model: Path, name: str, config: CacheConfig, text: str, log: Path, threads: int
) -> SlotResult:
    """Save, erase, restore and save again slot 0 of a llama-server with ``config``, around
    ``PROMPT_TOKENS`` tokens of ``text`` and ``N_PREDICT`` greedy tokens. Raises
    CommandFailed when the server does not start or a slot action is refused."""
    with tempfile.TemporaryDirectory(prefix="tqh-slots-") as tmp:
        slots = Path(tmp)
        with slot_server(binary, model, config, slots, log, threads) as srv:
            toks = srv.tokens(text, PROMPT_TOKENS)
            first, _ = srv.complete(toks, N_PREDICT)
            # the reference: the same request again on the cache that was never saved, which
            # evaluates the last prompt token alone as the request after the restore does
            never_saved, _ = srv.complete(toks, N_PREDICT)
            for action, filename in (
                ("save", "a.bin"),
                ("erase", ""),
                ("restore", "a.bin"),
                ("save", "b.bin"),
            ):
                status, data = srv.slot(action, filename)
                if status != 200:
                    raise CommandFailed(
                        f"slot {action} answered {status}: {data}", hint=f"read {log}"
                    )
            restored, evaluated = srv.complete(toks, N_PREDICT)
        identical = (slots / "a.bin").read_bytes() == (slots / "b.bin").read_bytes()
    return SlotResult(
        name,
        config.name,
        len(toks),
        identical,
        evaluated,
        restored == never_saved,
        restored == first,
    )


def _refusal(log_text: str) -> str:
    """The refusal in ``log_text``, from "the saved state holds" to the end of its line."""
    m = REFUSAL.search(log_text)
    if m is None:
        return ""
    end = log_text.find("\n", m.end())
    return log_text[m.start() : end if end != -1 else None].strip()


def _label(config: CacheConfig, env: dict[str, str]) -> str:
    """``config``'s name, and the environment it ran with if any (``q8_0 X=1``)."""
    return " ".join([config.name, *(f"{k}={v}" for k, v in env.items())])


def run_server_mismatch(
    binary: Path,
    model: Path,
    name: str,
    saved: CacheConfig,
    loaded: CacheConfig,
    text: str,
    log: Path,
    threads: int,
    env: dict[str, str],
) -> MismatchResult:
    """A slot saved by a server with ``saved``, restored by one with ``loaded`` and ``env``."""
    with tempfile.TemporaryDirectory(prefix="tqh-slots-") as tmp:
        slots = Path(tmp)
        with slot_server(binary, model, saved, slots, log, threads) as srv:
            toks = srv.tokens(text, PROMPT_TOKENS)
            srv.complete(toks, 1)
            srv.slot("save", "a.bin")
        start = log.stat().st_size
        with slot_server(binary, model, loaded, slots, log, threads, env) as srv:
            status, _ = srv.slot("restore", "a.bin")
            _, evaluated = srv.complete(toks, 1)
        message = _refusal(log.read_text(errors="replace")[start:])
    return MismatchResult(
        name,
        "llama-server",
        saved.name,
        _label(loaded, env),
        status == 400,
        message,
        evaluated == len(toks),
    )


def run_cli_mismatch(
    binary: Path,
    model: Path,
    name: str,
    saved: CacheConfig,
    loaded: CacheConfig,
    prompt: Path,
    log: Path,
    threads: int,
    env: dict[str, str],
) -> MismatchResult:
    """llama-completion's ``--prompt-cache`` written under ``saved``, read under ``loaded``."""

    def completion(config: CacheConfig, cache: Path, env: dict[str, str]) -> proc.Completed:
        return proc.run(
            [
                binary,
                "-m",
                model,
                "-f",
                prompt,
                "-n",
                "4",
                "-no-cnv",
                "--temp",
                "0",
                *cache_args(config),
                "--prompt-cache",
                cache,
                "-t",
                str(threads),
            ],
            log=log,
            env=env,
            check=False,
            quiet=True,
        )

    with tempfile.TemporaryDirectory(prefix="tqh-cache-") as tmp:
        cache = Path(tmp) / "prompt.bin"
        first = completion(saved, cache, {})
        if first.returncode != 0 or not cache.is_file():
            raise CommandFailed(
                f"llama-completion did not write its prompt cache (exit {first.returncode})",
                hint=f"read {log}",
            )
        before = hashlib.sha256(cache.read_bytes()).hexdigest()
        second = completion(loaded, cache, env)
        kept = hashlib.sha256(cache.read_bytes()).hexdigest() == before
    return MismatchResult(
        name,
        "llama-completion",
        saved.name,
        _label(loaded, env),
        second.returncode != 0,
        _refusal(second.output),
        kept,
    )


@dataclass(frozen=True)
class StateRun:
    """The results of one ``harness state`` run."""

    save_load: tuple[SaveLoadResult, ...]
    slots: tuple[SlotResult, ...]
    mismatches: tuple[MismatchResult, ...]

    @property
    def failures(self) -> list[str]:
        """One line per failed check, naming the model, the configuration and what failed."""
        out = [
            f"test-save-load-state {r.model} {r.config}: "
            + (f"failed {', '.join(r.failed)}" if r.failed else f"exit {r.returncode}")
            for r in self.save_load
            if not r.ok
        ]
        out += [f"slot round trip {r.model} {r.config}: {r}" for r in self.slots if not r.ok]
        out += [
            f"{r.tool} {r.model} {r.saved} -> {r.loaded}: {r}" for r in self.mismatches if not r.ok
        ]
        return out


def table(run: StateRun) -> str:
    """Markdown tables of the run, one row per model and configuration."""
    lines = [
        "| model | K/V | test-save-load-state | slot files identical | restored cache reused | "
        "= never saved | = first request (not gated) |",
        "|---|---|---|---|---|---|---|",
    ]
    slots = {(r.model, r.config): r for r in run.slots}
    yes = {True: "yes", False: "**no**"}
    for r in run.save_load:
        s = slots.get((r.model, r.config))
        sl = f"{len(r.passed)}/{SAVE_LOAD_TESTS}" + (
            "" if r.ok else f" **{', '.join(r.failed) or r.returncode}**"
        )
        cells = (
            [
                yes[s.files_identical],
                f"{s.evaluated_after_restore} token(s) evaluated",
                yes[s.same_as_never_saved],
                "yes" if s.same_as_first else "no",
            ]
            if s
            else ["-"] * 4
        )
        lines.append(f"| {r.model} | {r.config} | {sl} | " + " | ".join(cells) + " |")
    if run.mismatches:
        lines += [
            "",
            "| model | tool | saved | restored into | refused | message | nothing loaded |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in run.mismatches:
            lines.append(
                f"| {m.model} | {m.tool} | {m.saved} | {m.loaded} | {yes[m.refused]} | "
                f"{m.message or '**none**'} | {yes[m.nothing_loaded]} |"
            )
    ok = sum(r.ok for r in run.save_load)
    lines += ["", f"test-save-load-state: {ok}/{len(run.save_load)} configurations pass all tests"]
    if run.slots:
        lines.append(f"slot round trips: {sum(r.ok for r in run.slots)}/{len(run.slots)} pass")
    return "\n".join(lines)


def run(
    bin_dir: Path,
    models: Sequence[tuple[str, Path]],
    configs: Sequence[CacheConfig],
    text_file: Path,
    logs: Path,
    *,
    server: bool = True,
    threads: int = 2,
    on_step: Callable[[str], None] | None = None,
) -> StateRun:
    """Every check for every model and configuration; ``text_file`` gives the prompts.

    Writes the programs' output to ``logs``/state-*.log; raises nothing for a failed check
    (``StateRun.failures`` lists them) and CommandFailed when a program cannot run at all."""
    step = on_step or (lambda _: None)
    text = text_file.read_text(encoding="utf-8")
    save_load: list[SaveLoadResult] = []
    slots: list[SlotResult] = []
    mismatches: list[MismatchResult] = []
    with tempfile.TemporaryDirectory(prefix="tqh-prompt-") as tmp:
        prompt = Path(tmp) / "prompt.txt"
        # about PROMPT_TOKENS tokens of real text for the programs that read a file
        prompt.write_text(text[: PROMPT_TOKENS * 4], encoding="utf-8")
        for (name, model), config in itertools.product(models, configs):
            step(f"{name} {config.name}: test-save-load-state")
            save_load.append(
                run_save_load(
                    bin_dir / "test-save-load-state",
                    model,
                    name,
                    config,
                    prompt,
                    logs / "state-save-load.log",
                    threads,
                )
            )
            if server:
                step(f"{name} {config.name}: llama-server slots")
                slots.append(
                    run_slot_roundtrip(
                        bin_dir / "llama-server",
                        model,
                        name,
                        config,
                        text,
                        logs / "state-server.log",
                        threads,
                    )
                )
        if server:
            for (name, model), (saved, loaded, env) in itertools.product(models, MISMATCHES):
                a, b = CacheConfig.parse(saved), CacheConfig.parse(loaded)
                step(f"{name} {saved} -> {_label(b, env)}: refused")
                mismatches.append(
                    run_server_mismatch(
                        bin_dir / "llama-server",
                        model,
                        name,
                        a,
                        b,
                        text,
                        logs / "state-server.log",
                        threads,
                        env,
                    )
                )
                mismatches.append(
                    run_cli_mismatch(
                        bin_dir / "llama-completion",
                        model,
                        name,
                        a,
                        b,
                        prompt,
                        logs / "state-cli.log",
                        threads,
                        env,
                    )
                )
    return StateRun(tuple(save_load), tuple(slots), tuple(mismatches))


def write_json(result: StateRun, path: Path) -> None:
    """The run as JSON: the three lists of results, field names as in the dataclasses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "save_load": [asdict(r) for r in result.save_load],
        "slots": [asdict(r) for r in result.slots],
        "mismatches": [asdict(r) for r in result.mismatches],
    }
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def check(result: StateRun) -> None:
    """Raises GateFailed (exit 21) listing every failed check."""
    if result.failures:
        raise GateFailed(
            f"{len(result.failures)} state checks failed:\n  " + "\n  ".join(result.failures),
            hint="read logs/state-*.log; a restore that differs from the saved state is a bug",
        )
