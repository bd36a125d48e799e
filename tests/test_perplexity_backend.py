"""`perplexity --backend`: which build's llama-perplexity runs, and the GPU offload it gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli, suite
from harness.config import Paths
from harness.errors import ConfigError
from harness.perplexity import RunSettings


def test_cli_passes_the_backend_to_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[suite.SuiteOptions] = []
    monkeypatch.setattr(suite, "run", lambda paths, options: seen.append(options))
    assert cli.main(["perplexity", "--quick", "--backend", "metal"]) == 0
    assert cli.main(["perplexity", "--quick"]) == 0
    assert [(o.backend, o.gpu_layers) for o in seen] == [("metal", 99), ("cpu", None)]


def test_gpu_layers_reach_the_command_line_only_when_set(tmp_path: Path) -> None:
    model, text = tmp_path / "m.gguf", tmp_path / "t.txt"
    gpu = RunSettings(binary=tmp_path / "llama-perplexity", gpu_layers=99).common(model, text)
    cpu = RunSettings(binary=tmp_path / "llama-perplexity").common(model, text)
    assert gpu[gpu.index("-ngl") + 1] == "99"
    assert "-ngl" not in cpu


def test_the_backend_picks_its_build_directory(tmp_path: Path) -> None:
    paths = Paths(repo=tmp_path, cache=tmp_path / "cache", build=tmp_path / "build")
    binary = paths.build / "metal" / "bin" / "llama-perplexity"
    with pytest.raises(ConfigError) as err:
        suite._binary(paths, None, "metal")
    assert str(binary) in str(err.value)
    assert "nox -s build -- --backend metal" in err.value.hint
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    binary.chmod(0o755)
    assert suite._binary(paths, None, "metal") == binary.resolve()
    given = tmp_path / "elsewhere"
    given.write_text("")
    given.chmod(0o755)
    assert suite._binary(paths, given, "metal") == given.resolve()
