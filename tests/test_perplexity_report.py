"""The report from recorded results: JSON, Markdown table, plots, and the latest link."""

from __future__ import annotations

import json
from pathlib import Path

from harness import gates, report
from harness.config import REPO_ROOT
from harness.llama_log import parse_kld
from harness.models import ModelInfo, load_lock

DATA = Path(__file__).parent / "data" / "perplexity"
MODEL = "smollm2-135m"
INFO = ModelInfo("SmolLM2", "llama", 30, 9, 3, 64, 64, 8192, None, 49152)


def test_report_files_and_table(tmp_path: Path) -> None:
    gate_file = gates.load(REPO_ROOT / "gates.toml")
    pin = load_lock(REPO_ROOT / "models.toml").model(MODEL)
    configs = ["f16", "q8_0", "q4_0", "turbo3"]
    m = report.ModelReport(pin, INFO, configs)
    for c in configs[:3]:
        m.results[c] = parse_kld((DATA / f"{MODEL}-{c}.log").read_text(encoding="utf-8"), c)
    m.failures["turbo3"] = "this llama-perplexity does not support the KV cache type turbo3"
    m.outcomes = gates.evaluate(gate_file, MODEL, configs, m.results)
    header = {
        "created": "2026-11-28T00:00:00+00:00",
        "settings": {"ctx": 512, "chunks": 6, "threads": 2},
        "build": {"upstream": "0" * 40, "series": "1" * 64},
        "text": {"package": "gnu-standards", "version": "v", "sha256": "2" * 64, "bytes": 1},
        "wall_seconds": 1.0,
    }
    root = tmp_path / "reports"
    first = report.new_dir(root)
    report.write(first, header, [m], gate_file)
    assert {p.name for p in first.iterdir()} == {
        "report.json",
        "report.md",
        "kld-vs-bits.png",
        "ppl.png",
    }
    for png in ("kld-vs-bits.png", "ppl.png"):
        assert (first / png).read_bytes().startswith(b"\x89PNG")
    saved = json.loads((first / "report.json").read_text())
    assert saved["settings"]["chunks"] == 6 and saved["models"][0]["sha256"] == pin.sha256
    rows = {r["config"]: r for r in saved["models"][0]["configs"]}
    assert rows["q4_0"]["kv_ratio_to_f16"] < 0.3
    assert "does not support" in rows["turbo3"]["error"]
    assert saved["models"][0]["metadata"]["head_dim_k"] == 64

    md = (first / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| config | bits/value | KV bytes/token | × f16 | PPL")
    assert [line.split(" | ")[0][2:] for line in table[1:]] == configs
    assert "**not measured**" in table[-1]
    assert "beats q4_0's mean KLD" in md

    assert report.link_latest(root, first).resolve() == first.resolve()
    second = report.new_dir(root)
    report.link_latest(root, second)
    assert (root / "latest").resolve() == second.resolve()


def test_an_adapted_cache_type_is_named_in_the_table() -> None:
    """turbo types on heads of 64 are stored as their block-64 variant: the report says so."""
    from types import SimpleNamespace

    from harness.report import _stored_as

    def run(k: str, v: str) -> SimpleNamespace:
        return SimpleNamespace(kv=SimpleNamespace(k_type=k, v_type=v))

    assert _stored_as("turbo3", run("turbo3_64", "turbo3_64")) == (
        "turbo3 (stored turbo3_64/turbo3_64)"
    )
    assert _stored_as("q8_0/turbo3", run("q8_0", "turbo3_64")) == (
        "q8_0/turbo3 (stored q8_0/turbo3_64)"
    )
    assert _stored_as("q4_0", run("q4_0", "q4_0")) == "q4_0"
    assert _stored_as("turbo5/turbo3", run("turbo5", "turbo3")) == "turbo5/turbo3"
