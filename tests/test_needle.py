"""Pass-key retrieval (harness/needle.py): prompt construction, scoring and the gate on
made-up answers, then a real run of llama-server on SmolLM2 and the long text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness import build as build_mod
from harness import corpus, models, needle
from harness.cache_types import CacheConfig
from harness.config import Paths
from harness.errors import ConfigError, GateFailed
from harness.server import Server

REPO = Path(__file__).resolve().parent.parent
PIECES = needle.Pieces(intro=(1, 2), filler=tuple(range(100, 400)), question=(7, 8, 9))


def _spec(**kw: object) -> needle.NeedleSpec:
    base = needle.load_spec(REPO / "gates.toml")
    return needle.NeedleSpec(**{**base.__dict__, **kw})


def test_the_spec_in_gates_toml_reads() -> None:
    spec = needle.load_spec(REPO / "gates.toml")
    assert spec.reference == "q4_0" and set(spec.judged) <= set(spec.configs)
    assert spec.lengths_for("smollm2-135m") and spec.lengths_for("some-user-model")


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ("depths = [0.1, 0.3, 0.5, 0.7, 0.9]", "depths = [0.5, 1.5]"),
        ('reference = "q4_0"', 'reference = "q3_x"'),
        ("n_predict = 8", 'n_predict = "eight"'),
    ],
)
def test_a_bad_needle_table_is_a_config_error(tmp_path: Path, edit: str, says: str) -> None:
    text = (REPO / "gates.toml").read_text(encoding="utf-8")
    assert edit in text
    bad = tmp_path / "gates.toml"
    bad.write_text(text.replace(edit, says), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        needle.load_spec(bad)
    assert err.value.exit_code == 11


def test_keys_are_fixed_five_digit_numbers() -> None:
    assert needle.keys(5, 20) == needle.keys(5, 20) != needle.keys(6, 20)
    assert all(len(k) == 5 and k.isdigit() for k in needle.keys(5, 20))


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_the_prompt_has_the_exact_length_and_the_needle_at_its_depth(depth: float) -> None:
    ids = needle.prompt(PIECES, [-1, -2], 120, depth, 5)
    assert len(ids) == 120 - 5
    f = 120 - 2 - 2 - 3 - 5
    at = ids.index(-1)
    assert at == 2 + round(depth * f) and ids[at + 1] == -2
    assert ids[:2] == [1, 2] and ids[-3:] == [7, 8, 9]
    assert [t for t in ids if t >= 100] == list(range(100, 100 + f))


def test_a_filler_too_short_names_both_counts() -> None:
    with pytest.raises(ConfigError, match="holds 300 tokens; a context of 1000 needs 988"):
        needle.prompt(PIECES, [-1, -2], 1000, 0.5, 5)
    with pytest.raises(ConfigError, match="no room"):
        needle.prompt(PIECES, [-1, -2], 10, 0.5, 5)


def _trial(
    config: str, answer: str, tokens: tuple[int, ...] = (1, 2, 3), depth: float = 0.5
) -> needle.Trial:
    return needle.Trial("m", config, 2048, depth, "86554", answer, tokens)


@pytest.mark.parametrize(
    ("answer", "hit"),
    [
        (" 86554. Remember", True),
        ("86554", True),
        (" 865544.", False),
        (" 8655", False),
        (" the key", False),
    ],
)
def test_exact_retrieval_is_the_key_and_nothing_more(answer: str, hit: bool) -> None:
    assert _trial("f16", answer).hit is hit


def test_scores_count_lost_keys_and_agreement() -> None:
    trials = [
        _trial("f16", " 86554.", (1, 2, 3), 0.1),
        _trial("f16", " 86554.", (1, 2, 3), 0.9),
        _trial("q4_0", " 86554.", (1, 2, 4), 0.1),
        _trial("q4_0", " 12.", (5, 2, 3), 0.9),
        _trial("turbo3", " 1.", (1, 9, 9), 0.1),
        _trial("turbo3", " 2.", (1, 2, 3), 0.9),
    ]
    by = {s.config: s for s in needle.scores(trials)}
    assert (by["f16"].hits, by["f16"].lost, by["f16"].agreement) == (2, 0, 3.0)
    assert (by["q4_0"].hits, by["q4_0"].lost, by["q4_0"].agreement) == (1, 1, 1.0)
    assert (by["turbo3"].hits, by["turbo3"].lost, by["turbo3"].agreement) == (0, 2, 2.0)
    spec = _spec(judged=("turbo3",), slack=0)
    failures = needle.check(list(by.values()), spec)
    assert failures == ["m turbo3: lost 2 of the keys f16 retrieved, q4_0 lost 1 (slack 0)"]
    assert needle.check(list(by.values()), _spec(judged=("turbo3",), slack=1)) == []
    with pytest.raises(GateFailed) as err:
        needle.raise_on_failures(failures)
    assert err.value.exit_code == 21


def test_no_reference_run_fails_the_judged_configuration() -> None:
    trials = [_trial("f16", " 86554."), _trial("turbo3", " 86554.")]
    failures = needle.check(needle.scores(trials), _spec(judged=("turbo3",)))
    assert failures == ["m turbo3: no q4_0 run to compare with"]


def test_the_report_has_every_answer_and_a_picture(tmp_path: Path) -> None:
    trials = [_trial("f16", " 86554."), _trial("turbo3", " 865544.")]
    results = needle.scores(trials)
    needle.write(trials, results, ["x"], tmp_path, {"seed": 1})
    data = json.loads((tmp_path / "needle.json").read_text())
    assert [t["hit"] for t in data["trials"]] == [True, False] and data["failures"] == ["x"]
    assert "miss '865544.'" in (tmp_path / "needle.md").read_text()
    assert (tmp_path / "needle.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def server_bin() -> Path:
    subprocess.run([sys.executable, "-m", "harness", "build", "--state-tools"], check=True)
    paths = Paths.default()
    return build_mod.build_dir(paths, build_mod.BuildOptions()) / "bin" / "llama-server"


@pytest.mark.slow
def test_smollm2_finds_the_key_and_cannot_without_it(server_bin: Path, tmp_path: Path) -> None:
    """A real run at 1024 tokens: f16 retrieves every key; the same prompts with the needle
    left out retrieve none, so a hit is the model reading the needle, not a lucky guess."""
    out = subprocess.run(
        [sys.executable, "-m", "harness", "needle", "--models", "smollm2-135m"]
        + ["--configs", "f16,q4_0,turbo4", "--lengths", "1024"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode in (0, 21), out.stdout[-3000:] + out.stderr[-3000:]
    report = Path(out.stdout.rsplit("wrote ", 1)[1].split()[0]).parent / "needle.json"
    data = json.loads(report.read_text())
    assert len(data["trials"]) == 3 * 5
    f16 = [t for t in data["trials"] if t["config"] == "f16"]
    assert all(t["hit"] for t in f16), f16

    paths = Paths.default()
    lock = models.load_lock(paths.repo / "models.toml")
    model = models.ensure_model(paths, lock.model("smollm2-135m"))
    assert lock.long_text is not None
    text = corpus.ensure_text(paths, lock.long_text).path.read_text(encoding="utf-8")
    with Server(server_bin, model, CacheConfig.parse("f16"), 1024, tmp_path / "s.log", 2) as srv:
        pieces = needle.Pieces(
            tuple(srv.tokenize(needle.INTRO, special=True)),
            tuple(srv.tokenize(text[:20000], special=False)),
            tuple(srv.tokenize(needle.QUESTION, special=False)),
        )
        for t in f16:
            answer, _ = srv.greedy(needle.prompt(pieces, [], 1024, t["depth"], 8), 8)
            assert not needle.Trial("m", "f16", 1024, t["depth"], t["key"], answer, ()).hit
