"""``gates.toml``: what the perplexity suite runs and the limits its results must meet.

A gate is one comparison over the measured metrics of one run, e.g.::

    kld(turbo4) <= 0.8 * kld(q4_0) * 4 ** (4.5 - bits(turbo4))
    dppl(q8_0) <= 0.5

``METRIC(CONFIG)`` reads a metric of a configuration measured in the same run (``CONFIG`` is
a cache type, or ``K/V`` for an asymmetric pair); numbers, ``+ - * / **`` and parentheses
do the rest. The expression is parsed with Python's ``ast`` and only these nodes are
accepted, so a gate file can never run code. The configurations on the left-hand side are
the gate's subjects: it is checked when they are part of the run, and the configurations
it compares them with are added to the run.

Every gate keeps the line number of its ``check`` in the file; a failure names it.

A gate may name the context lengths it judges (``contexts = [512]``: limits measured at one
length); without that key it judges a run at any length. ``growth(CONFIG)`` is the one
metric that reads two runs of a depth suite (``[suite.long]``): a configuration's mean KLD at
the model's longest context divided by its mean KLD at the shortest, on the same text in the
same run. Gates that read it are judged once per model in such a suite and never elsewhere.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness import windows
from harness.cache_types import CacheConfig
from harness.errors import ConfigError, GateFailed
from harness.llama_log import RunResult, ppl_change_pct

COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
ARITH: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


class Unmeasured(Exception):
    """A metric the gate needs is not in the results (the run failed or was not made)."""


def _metric_table(
    bits: Mapping[str, float],
    results: Mapping[str, RunResult],
    reference: Mapping[str, RunResult] | None = None,
) -> dict[str, Callable[[RunResult, str], float]]:
    def need(value: float | None, what: str) -> float:
        if value is None:
            raise Unmeasured(what)
        return value

    def percentile(label: str) -> Callable[[RunResult, str], float]:
        def read(r: RunResult, c: str) -> float:
            if label not in r.kld_percentiles:
                raise Unmeasured(f"this llama-perplexity prints no {label} KLD row for {c}")
            return r.kld_percentiles[label]

        return read

    def nominal(_: RunResult | None, c: str) -> float:
        cfg = CacheConfig.parse(c)
        try:
            return (bits[cfg.k] + bits[cfg.v]) / 2
        except KeyError as exc:
            raise Unmeasured(f"no [bits] entry for {exc.args[0]}") from None

    def growth(r: RunResult, c: str) -> float:
        if reference is None:
            raise Unmeasured("growth needs two context lengths (the depth suite, --suite long)")
        if c not in reference:
            raise Unmeasured(f"{c} was not measured at the shorter context")
        long = need(r.kld and r.kld.value, f"mean KLD of {c}")
        short = reference[c]
        plain = long / need(short.kld and short.kld.value, f"mean KLD of {c} at {short.ctx}")
        same_tokens = windows.growth(r, short)  # the report's growth, window by window
        return plain if same_tokens is None else same_tokens.value

    return {
        "kld": lambda r, c: need(r.kld and r.kld.value, f"mean KLD of {c}"),
        "kld_p99": percentile("99.0%"),
        "kld_max": percentile("Maximum"),
        "ppl": lambda r, c: r.ppl.value,
        "dppl": lambda r, c: need(ppl_change_pct(r, results.get("f16")), "f16 (dppl's base)"),
        "rms_dp": lambda r, c: need(r.rms_dp and r.rms_dp.value, f"RMS Δp of {c}"),
        "same_top": lambda r, c: need(r.same_top_p and r.same_top_p.value, f"same top p of {c}"),
        "kv_bytes": lambda r, c: r.kv.bytes_per_token,
        "bits": nominal,
        "growth": growth,
    }


METRICS = (
    "kld",
    "kld_p99",
    "kld_max",
    "ppl",
    "dppl",
    "rms_dp",
    "same_top",
    "kv_bytes",
    "bits",
    "growth",
)


def _config_arg(node: ast.expr, where: str) -> str:
    """``q4_0``, ``q8_0/turbo3`` or ``"q8_0/turbo3"`` as written inside ``metric(...)``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return CacheConfig.parse(node.value).name
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div)
        and isinstance(node.left, ast.Name)
        and isinstance(node.right, ast.Name)
    ):
        return f"{node.left.id}/{node.right.id}"
    raise ConfigError(f"{where}: a metric takes a configuration name, not {ast.unparse(node)}")


def _configs_in(node: ast.AST, where: str) -> list[str]:
    found: list[str] = []
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id != "bits":
            c = _config_arg(n.args[0], where)
            if c not in found:
                found.append(c)
    return found


def _validate(node: ast.AST, where: str) -> None:
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            if not (isinstance(n.func, ast.Name) and n.func.id in METRICS):
                raise ConfigError(f"{where}: unknown metric {ast.unparse(n.func)}; use {METRICS}")
            if len(n.args) != 1 or n.keywords:
                raise ConfigError(f"{where}: {n.func.id}() takes exactly one configuration")
            _config_arg(n.args[0], where)
        elif isinstance(n, ast.Compare) and any(type(op) not in COMPARE for op in n.ops):
            raise ConfigError(f"{where}: compare with <, <=, > or >=")
        elif (isinstance(n, ast.BinOp) and type(n.op) not in ARITH) or (
            isinstance(n, ast.UnaryOp) and not isinstance(n.op, ast.USub | ast.UAdd)
        ):
            raise ConfigError(f"{where}: operator {ast.unparse(n)} is not allowed")
        elif isinstance(n, ast.Constant) and not isinstance(n.value, int | float | str):
            raise ConfigError(f"{where}: constant {n.value!r} is not allowed")
        elif not isinstance(
            n,
            ast.Expression
            | ast.Compare
            | ast.Call
            | ast.BinOp
            | ast.UnaryOp
            | ast.Constant
            | ast.Name
            | ast.Load
            | ast.operator
            | ast.unaryop
            | ast.cmpop,
        ):
            raise ConfigError(f"{where}: {ast.unparse(n)} is not part of the gate grammar")


@dataclass(frozen=True)
class Gate:
    """One [[gate]] of gates.toml: its line, its check (a comparison of configurations'
    KLD, PPL or same-top, per bit or not, or of their KLD growth with context), the models
    it applies to, the parsed check, and the context lengths in tokens it judges (None:
    any)."""

    line: int
    check: str
    models: tuple[str, ...]  # ("*",) for every model
    tree: ast.Compare
    contexts: tuple[int, ...] | None = None

    @property
    def depth(self) -> bool:
        """Whether the check reads ``growth()``: judged across two context lengths of a depth
        suite, once per model, not on a run of one length."""
        return any(
            isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "growth"
            for n in ast.walk(self.tree)
        )

    def judges_ctx(self, ctx: int | None) -> bool:
        """Whether the gate judges a run at ``ctx`` tokens of context (None: unknown, judged)."""
        return self.contexts is None or ctx is None or ctx in self.contexts

    @property
    def subjects(self) -> list[str]:
        """The configurations the check judges (its left-hand side)."""
        return _configs_in(self.tree.left, f"gates.toml:{self.line}")

    @property
    def references(self) -> list[str]:
        """Every configuration the check reads, references included."""
        return _configs_in(self.tree, f"gates.toml:{self.line}")

    def applies_to(self, model: str) -> bool:
        """Whether the gate judges ``model`` (``*`` judges every model)."""
        return "*" in self.models or model in self.models


@dataclass(frozen=True)
class Suite:
    """[suite], [suite.quick] or [suite.long] of gates.toml: models, configurations, and
    chunks (windows of 512 tokens; in a depth suite, windows at each model's longest
    context). A depth suite also names its text (``pinned`` or ``long``) and the context
    lengths in tokens each model runs at (the key ``*``: models it does not list)."""

    models: tuple[str, ...]
    configs: tuple[str, ...]
    chunks: int
    text: str | None = None
    contexts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def depth(self) -> bool:
        """Whether the suite runs every model at several context lengths."""
        return bool(self.contexts)

    def contexts_for(self, model: str) -> tuple[int, ...]:
        """The context lengths in tokens ``model`` runs at, shortest first; raises
        ConfigError (exit 11) when the suite names none for it and has no ``*`` entry."""
        found = self.contexts.get(model) or self.contexts.get("*")
        if not found:
            raise ConfigError(
                f"the depth suite names no context lengths for {model}",
                hint='add it (or "*") to the contexts of [suite.long] in gates.toml, or give --ctx',
            )
        return found


@dataclass(frozen=True)
class GateFile:
    """gates.toml read and checked: its sha256, both suites, bits per value of each cache
    type, and the gates."""

    path: Path
    sha256: str
    full: Suite
    quick: Suite
    bits: dict[str, float]
    gates: tuple[Gate, ...]
    long: Suite | None = None  # [suite.long], the depth suite, where the file has one

    def for_model(self, model: str) -> list[Gate]:
        """The gates that judge ``model``."""
        return [g for g in self.gates if g.applies_to(model)]

    def required(self, model: str, configs: list[str]) -> list[str]:
        """``configs`` plus what their gates compare them with, in a stable order."""
        out = list(configs)
        for g in self.for_model(model):
            if all(s in configs for s in g.subjects):
                out += [c for c in g.references if c not in out]
        return out


GATE_HEADER = re.compile(r"^\s*\[\[\s*gate\s*\]\]")
CHECK_KEY = re.compile(r"^\s*check\s*=")


def _check_lines(text: str) -> list[int]:
    """Line of the ``check =`` of each ``[[gate]]`` table, in file order (tomllib has none)."""
    lines: list[int] = []
    in_gate = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            in_gate = bool(GATE_HEADER.match(line))
            if in_gate:
                lines.append(0)
        elif in_gate and CHECK_KEY.match(line):
            lines[-1] = number
    return lines


def _suite(table: Mapping[str, object], where: str) -> Suite:
    try:
        return Suite(
            models=tuple(table["models"]),  # type: ignore[arg-type]
            configs=tuple(CacheConfig.parse(c).name for c in table["configs"]),  # type: ignore[attr-defined]
            chunks=int(table["chunks"]),  # type: ignore[arg-type]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: needs models, configs and chunks ({exc!r})") from exc


def _depth_suite(table: Mapping[str, object], where: str) -> Suite:
    """[suite.long]: a suite plus its text and each model's context lengths (at least two,
    each at least 64 tokens; stored shortest first)."""
    base = _suite(table, where)
    text = table.get("text", "long")
    if text not in ("pinned", "long"):
        raise ConfigError(f'{where}: text = {text!r}; use "pinned" or "long"')
    raw = table.get("contexts")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: needs contexts = {{ MODEL = [512, LONG], ... }}")
    contexts: dict[str, tuple[int, ...]] = {}
    for model, lengths in raw.items():
        if (
            not isinstance(lengths, list)
            or len(lengths) < 2
            or not all(isinstance(n, int) and n >= 64 for n in lengths)
            or len(set(lengths)) != len(lengths)
        ):
            raise ConfigError(
                f"{where}: contexts.{model} = {lengths!r}; give two or more different context "
                "lengths of at least 64 tokens, e.g. [512, 8192]"
            )
        contexts[str(model)] = tuple(sorted(lengths))
    for model in base.models:
        if model not in contexts and "*" not in contexts:
            raise ConfigError(f"{where}: contexts names no context lengths for {model}")
    return Suite(base.models, base.configs, base.chunks, str(text), contexts)


def load(path: Path) -> GateFile:
    """Read gates.toml; raises ConfigError (exit 11) naming the line of a gate it cannot
    parse, or the file when it cannot be read."""
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    suite = data.get("suite", {})
    full = _suite(suite, f"{path.name} [suite]")
    quick = _suite(suite.get("quick", {}), f"{path.name} [suite.quick]")
    long = _depth_suite(suite["long"], f"{path.name} [suite.long]") if "long" in suite else None
    bits = {str(k): float(v) for k, v in data.get("bits", {}).items()}
    rows = data.get("gate", [])
    lines = _check_lines(raw.decode("utf-8"))
    if len(lines) != len(rows):
        raise ConfigError(f"{path}: found {len(lines)} [[gate]] headers for {len(rows)} gates")
    gates = []
    for row, line in zip(rows, lines, strict=True):
        where = f"{path.name}:{line}"
        if not line or "check" not in row:
            raise ConfigError(f'{where}: every [[gate]] needs a one-line `check = "..."`')
        models = row.get("models", ["*"])
        if isinstance(models, str):
            models = [models]
        contexts = row.get("contexts")
        if contexts is not None and (
            not isinstance(contexts, list)
            or not contexts
            or not all(isinstance(n, int) and n > 0 for n in contexts)
        ):
            raise ConfigError(f"{where}: contexts = {contexts!r}; give context lengths in tokens")
        try:
            tree = ast.parse(row["check"], mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"{where}: cannot parse {row['check']!r}: {exc.msg}") from exc
        _validate(tree, where)
        body = tree.body
        if not (isinstance(body, ast.Compare) and len(body.ops) == 1):
            raise ConfigError(f"{where}: a check is one comparison (<, <=, >, >=)")
        gate = Gate(
            line,
            row["check"],
            tuple(models),
            body,
            None if contexts is None else tuple(contexts),
        )
        if not gate.subjects:
            raise ConfigError(f"{where}: the left-hand side names no configuration")
        if gate.depth and contexts is not None:
            raise ConfigError(
                f"{where}: a growth() gate compares two context lengths; it takes no contexts"
            )
        for c in gate.references:
            cfg = CacheConfig.parse(c)
            if cfg.k not in bits or cfg.v not in bits:
                raise ConfigError(f"{where}: {c} uses a type with no [bits] entry")
        gates.append(gate)
    for c in (*full.configs, *quick.configs, *(long.configs if long else ())):
        cfg = CacheConfig.parse(c)
        if cfg.k not in bits or cfg.v not in bits:
            raise ConfigError(f"{path.name} [suite]: {c} uses a type with no [bits] entry")
    digest = hashlib.sha256(raw).hexdigest()
    return GateFile(path, digest, full, quick, bits, tuple(gates), long)


@dataclass(frozen=True)
class Outcome:
    """One gate judged on one model: passed or not, with the numbers that decided it."""

    gate: Gate
    model: str
    passed: bool
    detail: str
    context: str = ""  # which run of a depth suite, e.g. "c=8192" or "c=8192 vs c=512"

    def line(self, path_name: str = "gates.toml") -> str:
        """``ok`` or ``FAIL``, where the gate is, its check and the numbers, on one line."""
        status = "ok  " if self.passed else "FAIL"
        run = f"{self.model}, {self.context}" if self.context else self.model
        where = f"{path_name}:{self.gate.line} [{run}]"
        return f"{status} {where} {self.gate.check}: {self.detail}"


class _Evaluator:
    def __init__(
        self,
        results: Mapping[str, RunResult],
        bits: Mapping[str, float],
        reference: Mapping[str, RunResult] | None = None,
    ) -> None:
        self.results = results
        self.metrics = _metric_table(bits, results, reference)

    def value(self, node: ast.expr) -> float:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.UnaryOp):
            v = self.value(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            return ARITH[type(node.op)](self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            config = _config_arg(node.args[0], "gate")
            read = self.metrics[node.func.id]
            if node.func.id == "bits":
                return read(None, config)  # type: ignore[arg-type]
            if config not in self.results:
                raise Unmeasured(f"{config} was not measured")
            return read(self.results[config], config)
        raise AssertionError(f"unvalidated node {ast.dump(node)}")


def _fmt(x: float) -> str:
    return f"{x + 0.0:.4g}"  # + 0.0 turns -0.0 into 0.0


def evaluate(
    gate_file: GateFile,
    model: str,
    requested: list[str],
    results: Mapping[str, RunResult],
    ctx: int | None = None,
) -> list[Outcome]:
    """Check every gate of ``model`` whose subjects were requested on ``results``, a run at
    ``ctx`` tokens of context (None: judged by every gate); never stop early. Gates limited
    to other context lengths, and ``growth()`` gates, are not judged here."""
    gates = [g for g in gate_file.for_model(model) if not g.depth and g.judges_ctx(ctx)]
    return _judge(gates, model, requested, _Evaluator(results, gate_file.bits))


def evaluate_growth(
    gate_file: GateFile,
    model: str,
    requested: list[str],
    long: Mapping[str, RunResult],
    short: Mapping[str, RunResult],
) -> list[Outcome]:
    """Check the ``growth()`` gates of ``model`` whose subjects were requested: ``long`` holds
    the runs at the model's longest context, ``short`` those at its shortest, on the same
    text in the same suite run; the other metrics read ``long``."""
    gates = [g for g in gate_file.for_model(model) if g.depth]
    return _judge(gates, model, requested, _Evaluator(long, gate_file.bits, short))


def _judge(gates: list[Gate], model: str, requested: list[str], ev: _Evaluator) -> list[Outcome]:
    out = []
    for g in gates:
        if not all(s in requested for s in g.subjects):
            continue
        try:
            lhs = ev.value(g.tree.left)
            rhs = ev.value(g.tree.comparators[0])
        except Unmeasured as exc:
            out.append(Outcome(g, model, False, f"not measured: {exc}"))
            continue
        except (ArithmeticError, ValueError) as exc:
            out.append(Outcome(g, model, False, f"cannot evaluate: {exc}"))
            continue
        op = type(g.tree.ops[0])
        ok = COMPARE[op](lhs, rhs)
        verdict = "holds" if ok else "does not hold"
        out.append(Outcome(g, model, ok, f"{_fmt(lhs)} {SYMBOL[op]} {_fmt(rhs)} {verdict}"))
    return out


def raise_on_failures(outcomes: list[Outcome], path_name: str = "gates.toml") -> None:
    """Raises GateFailed (exit 21) listing every failed outcome, one line each."""
    failed = [o for o in outcomes if not o.passed]
    if failed:
        lines = "\n".join("  " + o.line(path_name) for o in failed)
        raise GateFailed(f"{len(failed)} of {len(outcomes)} gate(s) failed:\n{lines}")
