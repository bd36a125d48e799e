"""Gate logic on recorded llama-perplexity results: passes, failures, line numbers, grammar."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import gates
from harness.config import REPO_ROOT
from harness.errors import ConfigError, GateFailed
from harness.llama_log import RunResult, parse_kld

DATA = Path(__file__).parent / "data" / "perplexity"
MODEL = "smollm2-135m"
RECORDED = ["f16", "q8_0", "q4_0"]


@pytest.fixture(scope="module")
def results() -> dict[str, RunResult]:
    return {
        c: parse_kld((DATA / f"{MODEL}-{c}.log").read_text(encoding="utf-8"), c) for c in RECORDED
    }


@pytest.fixture(scope="module")
def real() -> gates.GateFile:
    return gates.load(REPO_ROOT / "gates.toml")


def _line_of(path: Path, check: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip().startswith("check") and check in line:
            return number
    raise AssertionError(f"{check!r} not in {path}")


def test_recorded_upstream_results_pass_the_real_gates(real, results) -> None:
    outcomes = gates.evaluate(real, MODEL, RECORDED, results)
    assert outcomes, "the real gates.toml has gates for f16, q8_0 and q4_0 on SmolLM2"
    assert all(o.passed for o in outcomes), [o.line() for o in outcomes if not o.passed]
    gates.raise_on_failures(outcomes)


def test_a_failing_configuration_names_its_gate_line(real, results) -> None:
    """q4_0's numbers presented as q8_0: the q8_0 limits must catch them."""
    swapped = dict(results, q8_0=results["q4_0"])
    outcomes = gates.evaluate(real, MODEL, RECORDED, swapped)
    failed = [o for o in outcomes if not o.passed]
    assert failed and all("q8_0" in o.gate.subjects for o in failed)
    with pytest.raises(GateFailed) as err:
        gates.raise_on_failures(outcomes)
    assert err.value.exit_code == 21
    for o in failed:
        assert o.gate.line == _line_of(real.path, o.gate.check)
        assert f"gates.toml:{o.gate.line} [{MODEL}]" in str(err.value)
        assert "does not hold" in str(err.value)


GATES = """\
[suite]
models = ["m"]
configs = ["f16", "q8_0", "q4_0", "turbo4", "q8_0/turbo3"]
chunks = 2

[suite.quick]
models = ["m"]
configs = ["f16"]
chunks = 1

[bits]
f16 = 16.0
q8_0 = 8.5
q4_0 = 4.5
turbo3 = 3.125
turbo4 = 4.125

[[gate]]
# a comment between the header and the check
models = ["m"]
check = "kld(q8_0) <= 0.5 * kld(q4_0)"

[[gate]]
check = "kld(turbo4) <= 0.8 * kld(q4_0) * 4 ** (4.5 - bits(turbo4))"

[[gate]]
models = "other-model"
check = "kld(q4_0) <= 0"

[[gate]]
check = "kld(q8_0/turbo3) <= 0.8 * kld(q4_0) * 4 ** (4.5 - bits(q8_0/turbo3))"

[[gate]]
check = "dppl(q4_0) <= -100"
"""


def _file(tmp_path: Path, text: str = GATES) -> gates.GateFile:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    return gates.load(path)


def test_lines_subjects_and_references(tmp_path: Path) -> None:
    g = _file(tmp_path)
    assert [x.line for x in g.gates] == [21, 24, 28, 31, 34]
    assert g.gates[1].subjects == ["turbo4"] and g.gates[1].references == ["turbo4", "q4_0"]
    assert g.gates[3].subjects == ["q8_0/turbo3"]
    assert g.required("m", ["turbo4"]) == ["turbo4", "q4_0"]
    assert [x.line for x in g.for_model("m")] == [21, 24, 31, 34]


def test_all_gates_are_evaluated_and_every_failure_is_listed(tmp_path: Path, results) -> None:
    g = _file(tmp_path)
    requested = ["f16", "q8_0", "q4_0", "turbo4", "q8_0/turbo3"]
    outcomes = gates.evaluate(g, "m", requested, results)
    by_line = {o.gate.line: o for o in outcomes}
    assert by_line[21].passed
    assert not by_line[24].passed and "turbo4 was not measured" in by_line[24].detail
    assert "q8_0/turbo3 was not measured" in by_line[31].detail
    assert not by_line[34].passed and "does not hold" in by_line[34].detail
    with pytest.raises(GateFailed) as err:
        gates.raise_on_failures(outcomes)
    message = str(err.value)
    assert "3 of 4 gate(s) failed" in message
    for line in (24, 31, 34):
        assert f"gates.toml:{line} [m]" in message


def test_gates_of_configurations_not_requested_are_not_checked(tmp_path: Path, results) -> None:
    outcomes = gates.evaluate(_file(tmp_path), "m", ["f16", "q8_0", "q4_0"], results)
    assert sorted(o.gate.line for o in outcomes) == [21, 34]


def test_the_per_bit_rule(tmp_path: Path, results) -> None:
    """4 ** (4.5 - 4.125) = 1.68: turbo4 may have 1.35x q4_0's KLD; the average bits of an
    asymmetric pair set its line."""
    g = _file(tmp_path)
    q4 = results["q4_0"].kld.value
    fake = dict(results, turbo4=results["q4_0"])
    (o,) = [o for o in gates.evaluate(g, "m", ["turbo4"], fake) if o.gate.line == 24]
    assert o.passed and f"{q4 * 0.8 * 4**0.375:.4g}" in o.detail
    pair = dict(results, **{"q8_0/turbo3": results["q4_0"]})
    (o,) = [o for o in gates.evaluate(g, "m", ["q8_0/turbo3"], pair) if o.gate.line == 31]
    assert not o.passed and f"{q4 * 0.8 * 4 ** (4.5 - 5.8125):.4g}" in o.detail


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("__import__('os').system('true') < 1", "unknown metric"),
        ("kld(q4_0).real < 1", "not part of the gate grammar"),
        ("kld(q4_0) < 1 < 2", "one comparison"),
        ("kld(q4_0) == 1", "compare with <, <=, > or >="),
        ("kld(q4_0, q8_0) < 1", "exactly one configuration"),
        ("kld(q4_0) <", "cannot parse"),
        ("1 < kld(q4_0)", "names no configuration"),
        ("kld(q4_1) < 1", "no [bits] entry"),
        ("kld(q4_0) % 2 < 1", "not allowed"),
    ],
)
def test_the_grammar_refuses_anything_else(tmp_path: Path, check: str, message: str) -> None:
    text = GATES + f'\n[[gate]]\ncheck = "{check}"\n'
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        _file(tmp_path, text)
    assert err.value.exit_code == 11
    if "cannot parse" not in message:
        assert "gates.toml:37" in str(err.value)


def test_the_real_gate_file_loads_and_covers_every_default_configuration(real) -> None:
    assert real.full.configs[0] == "f16"
    assert set(real.quick.configs) <= set(real.full.configs)
    for model in real.full.models:
        subjects = {s for g in real.for_model(model) for s in g.subjects}
        assert subjects >= set(real.full.configs), model
