"""Peers (peers.toml): pinned by commit, fetched from an archive or git with clear errors,
built with no patches of ours; the pieces on tiny local trees, the real fork elsewhere."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import cli, peers
from harness.build import Backend
from harness.cache_types import CacheConfig
from harness.config import REPO_ROOT, Paths
from harness.digest import sha256_file
from harness.errors import ConfigError, FetchError, IntegrityError

# A llama.cpp stand-in: the two programs a peer build makes, in bin/ as llama.cpp puts them.
CMAKE = """cmake_minimum_required(VERSION 3.16)
project(tinypeer C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-bench main.c)
add_executable(llama-perplexity main.c)
"""
MAIN = "int main(void) { return 0; }\n"


def _paths(tmp_path: Path) -> Paths:
    return Paths(repo=REPO_ROOT, cache=tmp_path / "cache", build=tmp_path / "build")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def tiny_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "upstream"
    repo.mkdir()
    (repo / "CMakeLists.txt").write_text(CMAKE)
    (repo / "main.c").write_text(MAIN)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "tiny")
    return repo, _git(repo, "rev-parse", "HEAD")


def _archive(tmp_path: Path) -> Path:
    out = tmp_path / "archives" / "tiny.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for name, text in (("CMakeLists.txt", CMAKE), ("main.c", MAIN)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_the_fork_is_pinned_with_its_switches_off() -> None:
    fork = peers.peer(REPO_ROOT / "peers.toml", "fork")
    assert fork.commit == "69d8e4be47243e83b3d0d71e932bc7aa61c644dc"
    assert dict(fork.env) == {"TURBO_AUTO_ASYMMETRIC": "0", "TURBO_LAYER_ADAPTIVE": "0"}
    assert fork.cache_type("turbo3") == "turbo3" and fork.cache_type("q8_0") == "q8_0"
    assert fork.cache_type("turbo5") is None  # the fork has turbo2..4 only
    assert fork.config(CacheConfig("q8_0", "turbo3")) == CacheConfig("q8_0", "turbo3")
    assert fork.config(CacheConfig("turbo5", "turbo3")) is None


@pytest.mark.parametrize(
    ("key", "line", "says"),
    [
        ("commit", 'commit = "69d8e4be4"', "commit must be 40 hex digits"),
        ("archive_sha256", 'archive_sha256 = "abc"', "archive_sha256 must be 64 hex digits"),
        ("git_url", "", "cannot read .*KeyError\\('git_url'\\)"),
    ],
)
def test_a_malformed_peers_file_is_a_config_error(
    tmp_path: Path, key: str, line: str, says: str
) -> None:
    """A short commit, a short sha256 or a missing key: ConfigError naming what is wrong."""
    text = (REPO_ROOT / "peers.toml").read_text()
    lines = [x for x in text.splitlines() if not x.startswith(f"{key} = ")] + [line]
    bad = tmp_path / "peers.toml"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=says):
        peers.load_peers(bad)


def test_an_unknown_peer_is_exit_11_before_anything_builds(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("TQH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TQH_BUILD_DIR", str(tmp_path / "build"))
    assert cli.main(["bench", "--peer", "nosuch"]) == 11
    err = capsys.readouterr().err
    assert "no peer called 'nosuch'" in err and "known peers: fork" in err


def test_source_from_an_archive_is_checked_and_reused(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    p = peers.Peer(
        "tiny", "a tiny tree", "file:///nowhere", "0" * 40, archive.name, sha256_file(archive)[0]
    )
    tree = peers.ensure_source(_paths(tmp_path), p, (tmp_path / "empty", archive.parent))
    assert (tree / "CMakeLists.txt").read_text() == CMAKE
    marker = tree / peers.MARKER
    first = marker.stat().st_mtime_ns
    assert peers.ensure_source(_paths(tmp_path), p, (archive.parent,)) == tree
    assert marker.stat().st_mtime_ns == first  # not extracted again


def test_an_archive_with_another_sha256_is_refused(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    p = peers.Peer("tiny", "a tiny tree", "file:///nowhere", "0" * 40, archive.name, "f" * 64)
    with pytest.raises(IntegrityError, match=f"peers.toml pins {'f' * 64}"):
        peers.ensure_source(_paths(tmp_path), p, (archive.parent,))
    assert not list((tmp_path / "cache" / "peers").iterdir())


def test_a_commit_the_repository_lacks_is_a_fetch_error(tiny_repo, tmp_path: Path) -> None:
    repo, _ = tiny_repo
    p = peers.Peer("tiny", "a tiny tree", str(repo), "1234567" * 5 + "12345")
    with pytest.raises(FetchError, match=f"cannot fetch commit {p.commit} of peer tiny"):
        peers.ensure_source(_paths(tmp_path), p, ())
    assert not list((tmp_path / "cache" / "peers").iterdir())


def test_a_peer_from_git_builds_with_no_patches(tiny_repo, tmp_path: Path) -> None:
    """End to end on a tiny local repository: fetched at its commit (no .git kept), built
    with the harness's options into build/peers/NAME/cpu, the programs in bin/."""
    repo, commit = tiny_repo
    p = peers.Peer("tiny", "a tiny tree", str(repo), commit, defines=("LLAMA_BUILD_SERVER=OFF",))
    result = peers.build_peer(_paths(tmp_path), p, (), Backend.CPU)
    assert result.directory == tmp_path / "build" / "peers" / "tiny" / "cpu"
    assert (result.bin / "llama-bench").is_file() and (result.bin / "llama-perplexity").is_file()
    assert result.record["upstream"] == commit and result.record["kernels_dir"] is None
    source = tmp_path / "cache" / "peers" / f"tiny-{commit[:12]}"
    assert (source / "main.c").is_file() and not (source / ".git").exists()
