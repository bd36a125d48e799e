"""Bad input ends with the error class's exit code and one line of hint, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli, parity
from harness.errors import ConfigError


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TQH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TQH_BUILD_DIR", str(tmp_path / "build"))
    exe = tmp_path / "llama-perplexity"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


@pytest.mark.parametrize(
    ("configs", "says"),
    [
        ("a/b/c", "cannot read the KV configuration 'a/b/c'"),
        ("turbo3/", "cannot read the KV configuration 'turbo3/'"),
        ("turbo9", "--configs turbo9: no [bits] entry"),
    ],
)
def test_bad_configs_are_a_config_error(isolated: Path, capsys, configs: str, says: str) -> None:
    code = cli.main(["perplexity", "--configs", configs, "--bin", str(isolated)])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 11
    assert says in err and "Traceback" not in err
    if configs == "turbo9":
        assert "f16, q8_0, q4_0, turbo2, turbo3, turbo4, turbo5" in err


@pytest.mark.parametrize("chunks", ["0", "-3"])
def test_chunks_below_one_are_a_config_error(isolated: Path, capsys, chunks: str) -> None:
    # --chunks 0 used to run the suite's default silently.
    code = cli.main(["perplexity", "--chunks", chunks, "--bin", str(isolated)])
    err = capsys.readouterr().err
    assert code == 11 and f"--chunks {chunks}: a run needs at least one chunk" in err


@pytest.mark.parametrize("ctx", ["10", "-512"])
def test_a_context_below_64_tokens_is_a_config_error(isolated: Path, capsys, ctx: str) -> None:
    code = cli.main(["perplexity", "--ctx", ctx, "--bin", str(isolated)])
    err = capsys.readouterr().err
    assert code == 11 and f"--ctx {ctx}: a context needs at least 64 tokens" in err


def test_a_binary_that_cannot_run_is_a_config_error(isolated: Path, capsys) -> None:
    not_executable = isolated.with_name("data.txt")
    not_executable.write_text("not a program\n")
    code = cli.main(["perplexity", "--configs", "turbo3", "--bin", str(not_executable)])
    err = capsys.readouterr().err
    assert code == 11
    assert "is not executable" in err and "Traceback" not in err


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupted(args: object, paths: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_fetch", interrupted)
    assert cli.main(["fetch"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_git_failure_is_one_line_and_the_command_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import git

    def git_fails(args: object, paths: object) -> None:
        git.Git(tmp_path).rev_parse("--verify", "no-such-commit")  # not a repository

    monkeypatch.setattr(cli, "cmd_fetch", git_fails)
    assert cli.main(["fetch"]) == 23
    err = capsys.readouterr().err
    assert "error: git failed:" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["libggml-base.so", "libggml-base.dylib"])
def test_one_library_finder_knows_linux_and_macos(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    assert parity.library_file(tmp_path, "ggml-base") == tmp_path / name
    with pytest.raises(ConfigError, match="holds no libggml-cpu"):
        parity.library_file(tmp_path, "ggml-cpu")


@pytest.mark.parametrize(
    ("configs", "says"),
    [
        ("f16,turbo9", "unknown cache type 'turbo9' in 'turbo9'"),
        ("q8_0/q3_0", "unknown cache type 'q3_0' in 'q8_0/q3_0'"),
        ("turbo3/", "cannot read the KV configuration 'turbo3/'"),
    ],
)
def test_bad_bench_configs_are_a_config_error(
    isolated: Path, capsys, configs: str, says: str
) -> None:
    """bench --configs is read and checked before anything is built or run."""
    code = cli.main(["bench", "--configs", configs])
    err = capsys.readouterr().err
    assert code == 11 and says in err and "Traceback" not in err


def test_bench_takes_one_model(isolated: Path, capsys) -> None:
    code = cli.main(["bench", "--model-file", str(isolated), "--speed-model", "128"])
    err = capsys.readouterr().err
    assert code == 11 and "--model-file and --speed-model both name the model" in err


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TQH_FETCH", "svn", "TQH_FETCH='svn': upstream comes from `sdist` or `git`"),
        ("TQH_LOCK_TIMEOUT", "soon", "TQH_LOCK_TIMEOUT='soon' is not a non-negative number"),
        ("TQH_LOCK_TIMEOUT", "-5", "TQH_LOCK_TIMEOUT='-5' is not a non-negative number"),
    ],
)
def test_a_bad_environment_variable_is_a_config_error(
    isolated: Path, capsys, monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    """The environment is read in one place (config.environment) and a value the harness
    cannot use names its variable: exit 11, one line, before anything is fetched."""
    monkeypatch.setenv(name, value)
    code = cli.main(["fetch"])
    err = capsys.readouterr().err
    assert code == 11 and says in err and "Traceback" not in err


def test_the_lock_waits_as_long_as_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.errors import CacheLocked
    from harness.lock import exclusive

    monkeypatch.setenv("TQH_LOCK_TIMEOUT", "0.3")
    lock = tmp_path / "lock"
    with exclusive(lock), pytest.raises(CacheLocked, match=r"waited 0 s"), exclusive(lock):
        pass


def test_every_failure_class_has_its_own_code_and_the_readme_lists_them() -> None:
    """One list of exit codes: harness.errors; --help and README.md are generated from it."""
    from harness import errors

    classes = set(errors.HarnessError.__subclasses__())
    assert classes == set(errors.ALL_ERRORS)
    codes = [c.exit_code for c in errors.ALL_ERRORS]
    assert len(set(codes)) == len(codes) and 2 not in codes and 130 not in codes
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert errors.exit_codes_markdown() in readme
    out = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, check=True
    )
    for code, name, _ in errors.exit_code_lines():
        assert f"{code:3d}  {name}" in out.stdout


@pytest.mark.parametrize(
    ("depths", "says"),
    [
        ("0.1,x", "--depths '0.1,x': give fractions of the filler"),
        ("0.5,1.5", "--depths 0.5,1.5: a depth is a fraction of the filler, 0 to 1"),
    ],
)
def test_bad_needle_depths_are_a_config_error(
    isolated: Path, capsys, depths: str, says: str
) -> None:
    code = cli.main(["needle", "--models", "smollm2-135m", "--depths", depths])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 11
    assert says in err and "Traceback" not in err
