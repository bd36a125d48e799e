"""Retrieval at depth (issue 12): a pass key hidden in a long filler of real text and asked
for at the end, answered greedily by llama-server under each KV-cache configuration.

A trial's prompt is built from token ids, so its length is exact: INTRO, then ``a`` filler
tokens, NEEDLE (which states the key), the rest of ``f`` filler tokens, QUESTION; ``f`` fills
the context length (tokens) less the pieces and the ``n_predict`` answer tokens, and
``a = round(depth x f)``. The filler is models.toml's [long_text] (the GNU Coding Standards),
the keys are 5-digit numbers drawn from ``seed``. Each trial is scored by exact retrieval
(the answer starts with the key, no digit after it) and by agreement with f16's answer
(leading greedy tokens equal to f16's, of ``n_predict``). Small models miss keys on their
own, so the gate is relative: per model, a judged configuration may miss at most as many of
the keys f16 retrieved as the reference (q4_0) misses, plus ``slack``. Settings: gates.toml
[needle].
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.cache_types import CacheConfig
from harness.errors import ConfigError, GateFailed
from harness.progress import Progress
from harness.server import Server

INTRO = (
    "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the pass key.\n\n"
)
NEEDLE = "\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n"
QUESTION = "\n\nWhat is the pass key? The pass key is"
BASE = "f16"


@dataclass(frozen=True)
class NeedleSpec:
    """gates.toml's [needle]: models, configurations, context lengths in tokens per model
    (``*``: any other), depths as fractions of the filler, answer tokens, the key seed, and
    the gate (``judged`` configurations against ``reference``, ``slack`` keys)."""

    models: tuple[str, ...]
    configs: tuple[str, ...]
    lengths: dict[str, tuple[int, ...]]
    depths: tuple[float, ...]
    n_predict: int
    seed: int
    reference: str
    judged: tuple[str, ...]
    slack: int

    def lengths_for(self, model: str) -> tuple[int, ...]:
        """The context lengths in tokens ``model`` runs at; raises ConfigError when [needle]
        names none for it and has no ``*`` entry."""
        found = self.lengths.get(model) or self.lengths.get("*")
        if not found:
            raise ConfigError(
                f"gates.toml [needle] names no lengths for {model}",
                hint='add it (or "*") to [needle] lengths, or give --lengths',
            )
        return found


def load_spec(path: Path) -> NeedleSpec:
    """Read [needle] of gates.toml; raises ConfigError (exit 11) on a missing table or a
    value of the wrong kind, naming the key."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))["needle"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read [needle] of {path}: {exc}") from exc
    where = f"{path.name} [needle]"
    try:
        spec = NeedleSpec(
            models=tuple(str(m) for m in table["models"]),
            configs=tuple(str(c) for c in table["configs"]),
            lengths={str(k): tuple(int(n) for n in v) for k, v in table["lengths"].items()},
            depths=tuple(float(d) for d in table["depths"]),
            n_predict=int(table["n_predict"]),
            seed=int(table["seed"]),
            reference=str(table["reference"]),
            judged=tuple(str(c) for c in table["judged"]),
            slack=int(table["slack"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: missing or malformed key {exc}") from exc
    if not all(0.0 <= d <= 1.0 for d in spec.depths) or not spec.depths:
        raise ConfigError(f"{where}: depths are fractions of the filler, from 0 to 1")
    if any(n < 256 for v in spec.lengths.values() for n in v) or spec.n_predict < 1:
        raise ConfigError(f"{where}: lengths of 256 tokens or more, n_predict of 1 or more")
    CacheConfig.parse_list(",".join([*spec.configs, spec.reference, *spec.judged]))
    return spec


def keys(seed: int, count: int) -> list[str]:
    """``count`` 5-digit pass keys, the same for every configuration and run."""
    rng = random.Random(seed)
    return [str(rng.randrange(10000, 100000)) for _ in range(count)]


@dataclass(frozen=True)
class Pieces:
    """The token ids of one model's prompt pieces: INTRO (with its BOS where the model wants
    one), the filler, and QUESTION; the needle is tokenized per key."""

    intro: tuple[int, ...]
    filler: tuple[int, ...]
    question: tuple[int, ...]


def prompt(
    pieces: Pieces, needle: Sequence[int], length: int, depth: float, n_predict: int
) -> list[int]:
    """The token ids of one trial, ``length - n_predict`` of them, the needle after
    ``round(depth x f)`` of the ``f`` filler tokens. Raises ConfigError when the filler is
    shorter than ``f`` or ``length`` leaves no room for it."""
    fixed = len(pieces.intro) + len(needle) + len(pieces.question) + n_predict
    f = length - fixed
    if f < 1:
        raise ConfigError(
            f"a context of {length} tokens leaves no room for filler ({fixed} are fixed)"
        )
    if f > len(pieces.filler):
        raise ConfigError(
            f"the filler text holds {len(pieces.filler)} tokens; a context of {length} needs {f}",
            hint="give shorter --lengths",
        )
    a = round(depth * f)
    return [*pieces.intro, *pieces.filler[:a], *needle, *pieces.filler[a:f], *pieces.question]


@dataclass(frozen=True)
class Trial:
    """One greedy answer: model, configuration, context length (tokens), depth (fraction of
    the filler), key, the answer's text and token ids, and whether it starts with the key."""

    model: str
    config: str
    length: int
    depth: float
    key: str
    answer: str
    tokens: tuple[int, ...]

    @property
    def hit(self) -> bool:
        """Exact retrieval: the answer, leading spaces aside, starts with the key and no
        further digit follows it (``865544`` is not ``86554``)."""
        return re.match(rf"\s*{re.escape(self.key)}(?!\d)", self.answer) is not None


def agreement(trial: Trial, base: Trial) -> int:
    """How many leading greedy tokens ``trial`` shares with ``base`` (f16's answer)."""
    n = 0
    for a, b in zip(trial.tokens, base.tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


def run(
    server_bin: Path,
    models: Sequence[tuple[str, Path]],
    configs: Sequence[CacheConfig],
    spec: NeedleSpec,
    lengths: dict[str, tuple[int, ...]],
    text: str,
    log_dir: Path,
    threads: int,
    on_step: Callable[[str], None] = lambda s: None,
) -> list[Trial]:
    """Every trial: per model, one llama-server per configuration (context: the longest
    length), each (length, depth) asked once. Raises CommandFailed when a server does not
    start or answers an error, ConfigError when the text is too short."""
    trials = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for name, model in models:
        grid = [(n, d) for n in lengths[name] for d in spec.depths]
        key_of = dict(zip(grid, keys(spec.seed, len(grid)), strict=True))
        pieces: Pieces | None = None
        needles: dict[str, list[int]] = {}
        for config in configs:
            log = log_dir / f"needle-{name}-{config.name.replace('/', '-')}.log"
            on_step(f"{name} {config.name}: {len(grid)} trials up to {max(lengths[name])} tokens")
            with Server(server_bin, model, config, max(lengths[name]), log, threads) as srv:
                if pieces is None:
                    pieces = Pieces(
                        tuple(srv.tokenize(INTRO, special=True)),
                        tuple(srv.tokenize(text, special=False)),
                        tuple(srv.tokenize(QUESTION, special=False)),
                    )
                    needles = {
                        k: srv.tokenize(NEEDLE.format(key=k), special=False)
                        for k in key_of.values()
                    }
                # a trial's time grows with its prompt, so the ETA counts prompt tokens
                progress = Progress(f"{name} {config.name}", every=10.0)
                total, done = sum(n for n, _ in grid), 0
                for i, ((n, d), key) in enumerate(key_of.items()):
                    ids = prompt(pieces, needles[key], n, d, spec.n_predict)
                    answer, toks = srv.greedy(ids, spec.n_predict)
                    trials.append(Trial(name, config.name, n, d, key, answer, tuple(toks)))
                    done += n
                    progress.steps(i + 1, len(grid), progress.elapsed / done * (total - done))
                hits = sum(t.hit for t in trials[-len(grid) :])
                progress.done(f"{hits} of {len(grid)} keys retrieved")
    return trials


@dataclass(frozen=True)
class Score:
    """One model and configuration over its trials: keys retrieved, keys f16 retrieved that
    this one missed (``lost``), and mean agreement with f16 in tokens."""

    model: str
    config: str
    trials: int
    hits: int
    lost: int
    agreement: float


def scores(trials: Sequence[Trial]) -> list[Score]:
    """A Score per model and configuration, in the order first seen; raises ConfigError when
    a model has no f16 trials to compare with."""
    base = {(t.model, t.length, t.depth): t for t in trials if t.config == BASE}
    out: dict[tuple[str, str], list[Trial]] = {}
    for t in trials:
        out.setdefault((t.model, t.config), []).append(t)
    result = []
    for (model, config), ts in out.items():
        refs = [base.get((t.model, t.length, t.depth)) for t in ts]
        if any(r is None for r in refs):
            raise ConfigError(f"{model}: retrieval needs the {BASE} trials to compare with")
        result.append(
            Score(
                model,
                config,
                len(ts),
                sum(t.hit for t in ts),
                sum(r.hit and not t.hit for t, r in zip(ts, refs, strict=True)),
                sum(agreement(t, r) for t, r in zip(ts, refs, strict=True)) / len(ts),
            )
        )
    return result


def check(results: Sequence[Score], spec: NeedleSpec) -> list[str]:
    """The failed gate lines: a judged configuration that lost more keys than the reference
    plus ``slack`` on the same model. Configurations that did not run are not judged, a
    missing reference fails every judged configuration of that model."""
    by = {(s.model, s.config): s for s in results}
    failures = []
    for s in results:
        if s.config not in spec.judged:
            continue
        ref = by.get((s.model, spec.reference))
        if ref is None:
            failures.append(f"{s.model} {s.config}: no {spec.reference} run to compare with")
        elif s.lost > ref.lost + spec.slack:
            failures.append(
                f"{s.model} {s.config}: lost {s.lost} of the keys f16 retrieved, "
                f"{spec.reference} lost {ref.lost} (slack {spec.slack})"
            )
    return failures


def table(trials: Sequence[Trial], results: Sequence[Score]) -> str:
    """Markdown: per model, keys retrieved and lost against f16 and mean agreement, then
    the grid of answers (one line per length and depth)."""
    lines = []
    for model in dict.fromkeys(s.model for s in results):
        ours = [s for s in results if s.model == model]
        n = ours[0].trials
        lines += [
            f"### {model}",
            "",
            f"| config | retrieved (of {n}) | lost vs f16 | agreement with f16 (tokens) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {s.config} | {s.hits} | {s.lost} | {s.agreement:.2f} |" for s in ours]
        configs = [s.config for s in ours]
        lines += ["", "| length | depth | key | " + " | ".join(configs) + " |"]
        lines.append("|---|---|---|" + "---|" * len(configs))
        cells = {(t.config, t.length, t.depth): t for t in trials if t.model == model}
        for length, depth in dict.fromkeys((t.length, t.depth) for t in trials if t.model == model):
            row = [cells[(c, length, depth)] for c in configs]
            marks = [("ok " if t.hit else "miss ") + repr(t.answer.strip()[:12]) for t in row]
            lines.append(f"| {length} | {depth:.2f} | {row[0].key} | " + " | ".join(marks) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(trials: Sequence[Trial], path: Path) -> None:
    """needle.png: per model and configuration a grid of depth (x) by context length (y),
    the cell's shade the agreement with f16 (tokens), a cross where the key was missed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_names = list(dict.fromkeys(t.model for t in trials))
    configs = list(dict.fromkeys(t.config for t in trials))
    base = {(t.model, t.length, t.depth): t for t in trials if t.config == BASE}
    fig, axes = plt.subplots(
        len(model_names),
        len(configs),
        figsize=(2.2 * len(configs), 2.2 * len(model_names) + 0.6),
        squeeze=False,
    )
    for i, model in enumerate(model_names):
        ours = [t for t in trials if t.model == model]
        lengths = sorted({t.length for t in ours})
        depths = sorted({t.depth for t in ours})
        for j, config in enumerate(configs):
            ax = axes[i][j]
            grid = [[0.0] * len(depths) for _ in lengths]
            for t in ours:
                if t.config != config:
                    continue
                y, x = lengths.index(t.length), depths.index(t.depth)
                grid[y][x] = agreement(t, base[(model, t.length, t.depth)]) / max(len(t.tokens), 1)
                if not t.hit:
                    ax.text(x, y, "x", ha="center", va="center", color="red", fontsize=12)
            ax.imshow(grid, vmin=0, vmax=1, cmap="Greens", origin="lower", aspect="auto")
            ax.set_xticks(range(len(depths)), [f"{d:.1f}" for d in depths], fontsize=7)
            ax.set_yticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
            ax.set_title(f"{model}\n{config}", fontsize=8)
            if i == len(model_names) - 1:
                ax.set_xlabel("depth", fontsize=7)
            if j == 0:
                ax.set_ylabel("context (tokens)", fontsize=7)
    fig.suptitle("pass-key retrieval: shade = agreement with f16, x = key missed", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(
    trials: Sequence[Trial],
    results: Sequence[Score],
    failures: Sequence[str],
    directory: Path,
    meta: dict,
) -> None:
    """needle.json (every trial, score and failure, with ``meta``), needle.md and needle.png
    into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        **meta,
        "trials": [asdict(t) | {"hit": t.hit} for t in trials],
        "scores": [asdict(s) for s in results],
        "failures": list(failures),
    }
    (directory / "needle.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    verdict = "\n".join(f"- FAIL {f}" for f in failures) or "- every gate held"
    (directory / "needle.md").write_text(
        f"# Pass-key retrieval\n\n{verdict}\n\n{table(trials, results)}\n![grid](needle.png)\n",
        encoding="utf-8",
    )
    plot(trials, directory / "needle.png")


def raise_on_failures(failures: Sequence[str]) -> None:
    """Raise GateFailed (exit 21) listing ``failures``, if any."""
    if failures:
        raise GateFailed(
            "retrieval gate failed: " + "; ".join(failures),
            hint="gates.toml [needle] holds the rule; the report shows every answer",
        )
