"""The user's own model and text (issue 12): checks, hashes, the cache key, the report.

The suite runs here with a stand-in llama-perplexity that replays real SmolLM2 output, so
these take a second; tests/test_llama_build.py runs the real one on a real GGUF.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from harness import cli, suite, user_files
from harness.config import REPO_ROOT, Paths
from harness.errors import ConfigError, ModelError

DATA = Path(__file__).parent / "data" / "perplexity"

FAKE = f"""#!{sys.executable}
import sys
args = sys.argv[1:]
data = {str(DATA)!r}
if "--kl-divergence" not in args:
    open(args[args.index("--kl-divergence-base") + 1], "wb").write(b"logits")
    print(open(data + "/smollm2-135m-f16-base.log").read())
    raise SystemExit(0)
k = args[args.index("-ctk") + 1]
print(open(data + "/smollm2-135m-" + k + ".log").read())
"""


@pytest.fixture
def project(tmp_path: Path) -> Paths:
    """A project with the real gates.toml and models.toml and an empty cache: a user's model
    and text need nothing fetched."""
    repo = tmp_path / "project"
    repo.mkdir()
    for name in ("gates.toml", "models.toml"):
        shutil.copy(REPO_ROOT / name, repo / name)
    return Paths(repo=repo, cache=tmp_path / "cache", build=repo / "build")


@pytest.fixture
def fake_binary(tmp_path: Path) -> Path:
    binary = tmp_path / "fake" / "bin" / "llama-perplexity"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE)
    binary.chmod(0o755)
    return binary


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """Bytes that start like a GGUF: enough for the harness, which leaves the rest to
    llama.cpp (here the stand-in)."""
    path = tmp_path / "My Model.Q4.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 64)
    return path


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "mine.txt"
    path.write_text("Über die Straße: a text of my own, in UTF-8.\n" * 40, encoding="utf-8")
    return path


# --- the files on their own ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "t.txt is empty (0 bytes)"),
        (b" \n\t\n", "t.txt holds only whitespace (4 bytes)"),
        (b"text\0more", "t.txt is not text: it holds a NUL byte at offset 4 (a binary file?)"),
        (b"caf\xe9 au lait", "t.txt is not UTF-8 text: byte 0xe9 at offset 3 is not UTF-8"),
        ("naïve".encode()[:3], "t.txt is not UTF-8 text: byte 0xc3 at offset 2 is not UTF-8"),
    ],
)
def test_text_that_llama_perplexity_cannot_score_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(ModelError) as err:
        user_files.check_text(data, "t.txt")
    assert str(err.value).startswith(says) and err.value.exit_code == 22


def test_a_utf8_text_is_copied_into_the_cache_by_its_sha256(project: Paths, text: Path) -> None:
    first = user_files.text_file(project, text)
    data = text.read_bytes()
    assert (first.sha256, first.size, first.given) == (
        hashlib.sha256(data).hexdigest(),
        len(data),
        text,
    )
    assert first.path == project.cache / "text" / "user" / f"{first.sha256}.txt"
    assert first.path.read_bytes() == data
    text.write_text("another text\n" * 50, encoding="utf-8")  # the user edits it
    second = user_files.text_file(project, text)
    assert second.sha256 != first.sha256 and second.path != first.path
    assert first.path.read_bytes() == data  # what the earlier runs read stays as it was
    assert not list(first.path.parent.glob("*.tmp"))


def test_a_model_file_is_hashed_and_read_in_place(gguf: Path) -> None:
    f = user_files.model_file(gguf)
    assert f.path == f.given == gguf
    assert (f.sha256, f.size) == (hashlib.sha256(gguf.read_bytes()).hexdigest(), 16392)


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"PK\x03\x04rest", "is not a GGUF file: it starts with b'PK\\x03\\x04', a GGUF with"),
        (b"", "is not a GGUF file: it starts with nothing (the file is empty)"),
    ],
)
def test_a_file_that_is_not_gguf_is_refused_by_its_magic(
    tmp_path: Path, head: bytes, says: str
) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(head)
    with pytest.raises(ModelError) as err:
        user_files.model_file(path)
    assert f"model.gguf {says}" in str(err.value) and err.value.exit_code == 22


def test_a_missing_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--model-file .*/nope.gguf: no such file"):
        user_files.model_file(tmp_path / "nope.gguf")
    with pytest.raises(ConfigError, match="--model-file .*: not a file"):
        user_files.model_file(tmp_path)


def test_a_user_model_is_named_by_its_file_and_never_as_a_pinned_one() -> None:
    taken = ("smollm2-135m", "gemma3-270m")
    assert user_files.model_name(Path("/m/My Model.Q4.gguf"), taken) == "My_Model.Q4"
    assert user_files.model_name(Path("/m/smollm2-135m.gguf"), taken) == "smollm2-135m-file"
    assert user_files.model_name(Path("/m/.gguf"), taken) == "model"


# --- the suite with them -------------------------------------------------------------------


def test_the_suite_runs_a_user_model_and_text_and_reports_them(
    project: Paths, fake_binary: Path, gguf: Path, text: Path
) -> None:
    options = suite.SuiteOptions(
        configs=("q8_0",), binary=fake_binary, model_file=gguf, text_file=text, chunks=50
    )
    directory = suite.run(project, options)
    data = json.loads((directory / "report.json").read_text())
    (model,) = data["models"]
    model_sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    text_sha = hashlib.sha256(text.read_bytes()).hexdigest()
    assert model["name"] == "My_Model.Q4"
    assert model["user_file"] == {"path": str(gguf), "sha256": model_sha, "bytes": 16392}
    assert data["text"]["path"] == str(text) and data["text"]["sha256"] == text_sha
    assert data["text"]["bytes"] == len(text.read_bytes())
    # as llama.cpp logged it (the replayed SmolLM2 base run)
    logged = model["llama_cpp"]
    assert (logged["architecture"], logged["layers"], logged["n_gqa"]) == ("llama", 30, [3])
    assert (logged["head_dim_k"], logged["head_dim_v"]) == (64, 64)
    assert (logged["n_head"], logged["n_head_kv"]) == ([9], [3])
    assert model["metadata"]["head_dim_k"] == 64 and model["metadata"]["n_head_kv"] == 3
    # the "*" gates judge a user's model like any other
    assert [g["check"] for g in model["gates"]] == ["kld(q8_0) <= 0.2 * kld(q4_0)"]
    assert model["base"]["key"]["model_sha256"] == model_sha
    assert model["base"]["key"]["text_sha256"] == text_sha
    assert not model["base"]["cached"]
    md = (directory / "report.md").read_text()
    assert f"GGUF {gguf} (16392 bytes, sha256 {model_sha})" in md
    assert "llama.cpp logged: architecture llama, 30 layers, n_head 9, n_head_kv 3, " in md
    assert f"Text: {text}, " in md
    # asked for 50 chunks, the (replayed) text held 6: the report says what the numbers rest on
    assert "The text holds only 6 window(s) of 512 tokens for this model, so each number " in md

    again = json.loads((suite.run(project, options) / "report.json").read_text())
    assert again["models"][0]["base"]["cached"]


@pytest.mark.parametrize("edited", ["text", "model"])
def test_an_edited_file_never_reuses_the_base_logits(
    project: Paths, fake_binary: Path, gguf: Path, text: Path, edited: str
) -> None:
    options = suite.SuiteOptions(
        configs=("q8_0",), binary=fake_binary, model_file=gguf, text_file=text
    )
    before = json.loads((suite.run(project, options) / "report.json").read_text())["models"][0]
    changed = text if edited == "text" else gguf
    changed.write_bytes(changed.read_bytes()[:-1] + b"!")  # same size, another byte
    after = json.loads((suite.run(project, options) / "report.json").read_text())["models"][0]
    assert not after["base"]["cached"]
    assert after["base"]["key"]["digest"] != before["base"]["key"]["digest"]
    assert len(list((project.cache / "kld-base").iterdir())) == 2


def test_configurations_the_head_size_rules_out_are_refused_after_the_report(
    project: Paths,
    fake_binary: Path,
    gguf: Path,
    text: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SmolLM2's heads hold 64 values; with LLAMA_TURBO_BLOCK64=0 llama.cpp refuses every
    turbo type on them. They are not run, the rest is, and the command ends in exit 11."""
    monkeypatch.setenv("LLAMA_TURBO_BLOCK64", "0")
    options = suite.SuiteOptions(
        configs=("q8_0", "turbo3", "q8_0/turbo4"),
        binary=fake_binary,
        model_file=gguf,
        text_file=text,
    )
    with pytest.raises(ConfigError) as err:
        suite.run(project, options)
    message = str(err.value)
    assert err.value.exit_code == 11 and "\n" not in message
    assert message.startswith(
        "My_Model.Q4: head size 64 (K) / 64 (V) cannot take turbo3, q8_0/turbo4: turbo types "
        "need heads that are a multiple of 128 values (LLAMA_TURBO_BLOCK64=0), q8_0 and q4_0 "
        "of 32; measured instead: f16, q8_0, q4_0 (report: "
    )
    assert "--configs f16,q8_0,q4_0" in err.value.hint and "LLAMA_TURBO_BLOCK64" in err.value.hint
    data = json.loads((project.repo / "reports/latest/report.json").read_text())
    rows = {r["config"]: r for r in data["models"][0]["configs"]}
    assert rows["turbo3"]["refused"].startswith("K and V heads of 64 values are not a multiple")
    assert "kld" not in rows["turbo3"] and rows["q8_0"]["kld"]["value"] > 0
    assert data["settings"]["turbo_block64"] is False
    logs = sorted(p.name for p in (project.repo / "reports/latest/logs").iterdir())
    assert not [n for n in logs if "turbo" in n]  # never started


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_binary: Path) -> Path:
    monkeypatch.setenv("TQH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TQH_BUILD_DIR", str(tmp_path / "build"))
    return fake_binary


def _bad(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "code", "says"),
    [
        ("missing model", 11, "error: --model-file {tmp}/nope.gguf: no such file"),
        ("not gguf", 22, "error: --model-file {tmp}/m.gguf is not a GGUF file: it starts with"),
        ("missing text", 11, "error: --text {tmp}/nope.txt: no such file"),
        ("empty text", 22, "error: --text {tmp}/t.txt is empty (0 bytes)"),
        ("binary text", 22, "error: --text {tmp}/t.txt is not text: it holds a NUL byte at"),
        ("latin-1 text", 22, "error: --text {tmp}/t.txt is not UTF-8 text: byte 0xe9 at offset 3"),
        ("both model options", 11, "error: --models and --model-file both say which models"),
    ],
)
def test_each_bad_file_is_one_line_and_its_exit_code(
    isolated: Path, tmp_path: Path, gguf: Path, text: Path, capsys, kind: str, code: int, says: str
) -> None:
    t = tmp_path / "t.txt"
    args = {
        "missing model": lambda: ["--model-file", str(tmp_path / "nope.gguf")],
        "not gguf": lambda: ["--model-file", _bad(tmp_path, "m.gguf", b"\x7fELF....")],
        "missing text": lambda: ["--model-file", str(gguf), "--text", str(tmp_path / "nope.txt")],
        "empty text": lambda: ["--model-file", str(gguf), "--text", _bad(tmp_path, t.name, b"")],
        "binary text": lambda: [
            "--model-file",
            str(gguf),
            "--text",
            _bad(tmp_path, t.name, b"a\0b"),
        ],
        "latin-1 text": lambda: [
            "--model-file",
            str(gguf),
            "--text",
            _bad(tmp_path, t.name, b"caf\xe9!"),
        ],
        "both model options": lambda: ["--model-file", str(gguf), "--models", "smollm2-135m"],
    }[kind]()
    assert cli.main(["perplexity", "--configs", "q8_0", "--bin", str(isolated), *args]) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-2].startswith(says.format(tmp=tmp_path)), err
    assert lines[-1].startswith("hint: ") and "Traceback" not in err
    # refused before anything ran: no base logits, no report folder of its own
    assert not (tmp_path / "cache" / "kld-base").exists()
