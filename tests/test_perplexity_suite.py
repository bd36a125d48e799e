"""The suite end to end, with a stand-in llama-perplexity that replays recorded outputs.

The real runs take minutes and belong to `nox -s perplexity`; this checks the plumbing:
base caching, the order of runs, gates, the report, and how failures end the command.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from harness import suite
from harness.config import REPO_ROOT, Paths
from harness.errors import CommandFailed, ConfigError, GateFailed

DATA = Path(__file__).parent / "data" / "perplexity"

FAKE = f"""#!{sys.executable}
import sys
args = sys.argv[1:]
data = {str(DATA)!r}
if "--kl-divergence" not in args:
    open(args[args.index("--kl-divergence-base") + 1], "wb").write(b"logits")
    print(open(data + "/smollm2-135m-f16-base.log").read())
    raise SystemExit(0)
k, v = args[args.index("-ctk") + 1], args[args.index("-ctv") + 1]
if "turbo3" in (k, v):
    print('error while handling argument "-ctk": Unsupported cache type: turbo3')
    raise SystemExit(1)
print(open(data + "/smollm2-135m-" + k + ".log").read())
"""


@pytest.fixture
def project(tmp_path: Path) -> Paths:
    """A project copy whose cache borrows the real models and text (fetched if missing)."""
    repo = tmp_path / "project"
    repo.mkdir()
    for name in ("gates.toml", "models.toml"):
        shutil.copy(REPO_ROOT / name, repo / name)
    real = Paths.default()
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("models", "text"):
        (real.cache / sub).mkdir(parents=True, exist_ok=True)
        (cache / sub).symlink_to(real.cache / sub)
    return Paths(repo=repo, cache=cache, build=repo / "build")


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    return _script(tmp_path / "fake" / "bin" / "llama-perplexity", FAKE)


@pytest.mark.slow
def test_suite_writes_the_report_and_reuses_the_base(project: Paths, fake_binary: Path) -> None:
    options = suite.SuiteOptions(
        models=("smollm2-135m",), configs=("q4_0", "q8_0"), binary=fake_binary
    )
    directory = suite.run(project, options)
    data = json.loads((directory / "report.json").read_text())
    (model,) = data["models"]
    assert [c["config"] for c in model["configs"]] == ["f16", "q8_0", "q4_0"]
    assert model["base"]["cached"] is False
    assert model["gates"] and all(g["passed"] for g in model["gates"])
    assert (project.repo / "reports" / "latest" / "report.md").is_file()
    assert sorted(p.name for p in (directory / "logs").iterdir()) == [
        "smollm2-135m-f16-base.log",
        "smollm2-135m-f16.log",
        "smollm2-135m-q4_0.log",
        "smollm2-135m-q8_0.log",
    ]

    again = suite.run(project, options)
    assert json.loads((again / "report.json").read_text())["models"][0]["base"]["cached"]


@pytest.mark.slow
def test_an_unsupported_type_fails_the_run_after_the_report(
    project: Paths, fake_binary: Path
) -> None:
    options = suite.SuiteOptions(
        models=("smollm2-135m",), configs=("f16", "turbo3"), binary=fake_binary
    )
    with pytest.raises(CommandFailed) as err:
        suite.run(project, options)
    assert err.value.exit_code == 23
    assert "smollm2-135m turbo3: this llama-perplexity does not support" in str(err.value)
    assert "turbo types arrive with the TurboQuant patch series" in err.value.hint
    md = (project.repo / "reports" / "latest" / "report.md").read_text()
    assert "| turbo3 | 3.125 | – |" in md and "**not measured**" in md
    # q4_0 was added because the turbo3 gate compares with it.
    assert "| q4_0 | 4.5 (4.49) |" in md


@pytest.mark.slow
def test_a_failing_gate_exits_21(project: Paths, fake_binary: Path) -> None:
    gates_toml = project.repo / "gates.toml"
    gates_toml.write_text(
        gates_toml.read_text().replace(
            'check = "kld(q8_0) <= 0.008"', 'check = "kld(q8_0) <= 0.001"'
        )
    )
    options = suite.SuiteOptions(models=("smollm2-135m",), configs=("q8_0",), binary=fake_binary)
    with pytest.raises(GateFailed) as err:
        suite.run(project, options)
    assert err.value.exit_code == 21
    assert "kld(q8_0) <= 0.001: 0.003869 <= 0.001 does not hold" in str(err.value)


@pytest.mark.slow
def test_a_run_stopped_before_any_log_leaves_no_report_folder(
    project: Paths, fake_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(suite.models, "ensure_model", interrupted)
    options = suite.SuiteOptions(models=("smollm2-135m",), configs=("q8_0",), binary=fake_binary)
    with pytest.raises(KeyboardInterrupt):
        suite.run(project, options)
    reports = project.repo / "reports"
    assert not reports.exists() or not any(reports.iterdir())


@pytest.mark.slow
def test_a_base_run_cleans_what_an_interrupted_one_left(project: Paths, fake_binary: Path) -> None:
    stale = project.cache / "kld-base" / "smollm2-135m-0123456789abcdef01234567.tmp"
    stale.mkdir(parents=True)
    (stale / "base.kld").write_bytes(b"half of the logits")
    options = suite.SuiteOptions(models=("smollm2-135m",), configs=("q8_0",), binary=fake_binary)
    suite.run(project, options)
    assert not list((project.cache / "kld-base").glob("*.tmp"))


@pytest.mark.slow
def test_an_edited_gate_file_is_flagged_in_the_report(project: Paths, fake_binary: Path) -> None:
    import subprocess

    from conftest import GIT_ENV

    env = {**__import__("os").environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "gates.toml"], ["commit", "-q", "-m", "gates"]):
        subprocess.run(["git", *args], cwd=project.repo, check=True, env=env)
    options = suite.SuiteOptions(models=("smollm2-135m",), configs=("q8_0",), binary=fake_binary)
    as_committed = suite.run(project, options)
    assert json.loads((as_committed / "report.json").read_text())["gates"]["edited"] is False
    assert "differs from the committed file" not in (as_committed / "report.md").read_text()

    gates_toml = project.repo / "gates.toml"
    gates_toml.write_text(
        gates_toml.read_text().replace('check = "kld(q8_0) <= 0.008"', 'check = "kld(q8_0) <= 1"')
    )
    loosened = suite.run(project, options)
    assert json.loads((loosened / "report.json").read_text())["gates"]["edited"] is True
    assert "gates.toml differs from the committed file" in (loosened / "report.md").read_text()


# Ours: every type a recorded log (the turbo types replay q8_0's). The peer: the same logs,
# but only with its switch in the environment, and its "tq4" (our turbo4) crashes.
FAKE_OURS = FAKE.replace(
    'if "turbo3" in (k, v):', 'k = "q8_0" if k.startswith("turbo") else k\nif False:'
)
FAKE_PEER = FAKE.replace(
    "args = sys.argv[1:]",
    'args = sys.argv[1:]\nimport os\nif os.environ.get("PEER_SWITCH") != "on":\n'
    '    raise SystemExit("the peer ran without its environment")',
).replace('if "turbo3" in (k, v):', 'if "tq4" in (k, v):')


@pytest.mark.slow
def test_a_peer_runs_the_same_configurations_beside_ours(project: Paths, tmp_path: Path) -> None:
    """--peer: the peer's own base (its build and environment in the key), our cache types
    under its names, "not supported" for a type it lacks, a crash as a failed cell that does
    not fail the command, and its table beside ours in report.md and report.json."""
    from harness.peers import Peer

    ours = _script(tmp_path / "ours" / "bin" / "llama-perplexity", FAKE_OURS)
    theirs = _script(tmp_path / "peer" / "bin" / "llama-perplexity", FAKE_PEER)
    peer = Peer(
        "tiny",
        "a stand-in peer",
        "https://example.invalid/tiny",
        "0" * 40,
        types=(("turbo4", "tq4"),),
        env=(("PEER_SWITCH", "on"),),
    )
    options = suite.SuiteOptions(
        models=("smollm2-135m",),
        configs=("q8_0", "turbo4", "turbo5"),
        binary=ours,
        peer=peer,
        peer_binary=theirs,
    )
    directory = suite.run(project, options)
    data = json.loads((directory / "report.json").read_text())
    (model,) = data["models"]
    rows = {r["config"]: r for r in model["peer"]["configs"]}
    assert model["peer"]["env"] == {"PEER_SWITCH": "on"}
    assert model["peer"]["base"]["key"]["build"]["env"] == {"PEER_SWITCH": "on"}
    assert model["peer"]["base"]["key"]["digest"] != model["base"]["key"]["digest"]
    assert rows["q8_0"]["peer_config"] == "q8_0" and rows["q8_0"]["kld"]["value"] == 0.003869
    assert rows["turbo4"]["peer_config"] == "tq4"
    assert "does not support the KV cache type" in rows["turbo4"]["error"]
    assert rows["turbo5"]["error"] == "refused: tiny has no such type"
    md = (directory / "report.md").read_text()
    assert "### Beside it: peer tiny" in md and "run with PEER_SWITCH=on" in md
    assert "| turbo5 | – | 5.125 | not supported: tiny has no such type |" in md
    assert "| turbo4 | tq4 | 4.125 | **failed**:" in md
    logs = sorted(p.name for p in (directory / "logs" / "peer-tiny").iterdir())
    assert "smollm2-135m-f16-base.log" in logs and "smollm2-135m-tq4.log" in logs


@pytest.mark.slow
def test_a_peer_beside_the_depth_suite_is_refused(project: Paths, fake_binary: Path) -> None:
    from harness.peers import Peer

    peer = Peer("tiny", "a stand-in peer", "https://example.invalid/tiny", "0" * 40)
    options = suite.SuiteOptions(suite="long", binary=fake_binary, peer=peer)
    with pytest.raises(ConfigError, match="a peer runs beside one context length") as err:
        suite.run(project, options)
    assert err.value.exit_code == 11
    assert not (project.build / "peers").exists()


@pytest.mark.slow
def test_a_peer_whose_base_fails_fills_its_table_with_the_reason(
    project: Paths, fake_binary: Path, tmp_path: Path
) -> None:
    """A peer that cannot even run the f16 base (here: it crashes on start) gives a failed
    cell per configuration naming the base run, and our results and gates stand."""
    from harness.peers import Peer

    broken = _script(
        tmp_path / "broken" / "bin" / "llama-perplexity",
        f"#!{sys.executable}\nraise SystemExit('segmentation fault')\n",
    )
    peer = Peer("tiny", "a stand-in peer", "https://example.invalid/tiny", "0" * 40)
    options = suite.SuiteOptions(
        models=("smollm2-135m",),
        configs=("q8_0",),
        binary=fake_binary,
        peer=peer,
        peer_binary=broken,
    )
    directory = suite.run(project, options)
    (model,) = json.loads((directory / "report.json").read_text())["models"]
    assert all(g["passed"] for g in model["gates"])
    errors = {r["config"]: r["error"] for r in model["peer"]["configs"]}
    assert set(errors) == {"f16", "q8_0", "q4_0"}
    assert all(e.startswith("the peer's f16 base run failed:") for e in errors.values())
