"""Fixtures that build small, real git repositories and sdist-like tarballs to test against."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from harness.config import Paths, SdistPin, UpstreamPin

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
}


def git(cwd: Path, *args: str) -> str:
    import os

    out = subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return out.stdout.strip()


UPSTREAM_FILES = {
    "CMakeLists.txt": "cmake_minimum_required(VERSION 3.16)\nproject(fake C)\n",
    "src/a.c": "".join(f"int a{i}(void) {{ return {i}; }}\n" for i in range(30)),
    "src/b.c": "int b(void) { return 2; }\n",
}


def make_upstream(root: Path, files: dict[str, str] = UPSTREAM_FILES) -> tuple[Path, str]:
    """A non-bare repository with the given files as its first commit, plus a later commit."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "master")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "upstream")
    first = git(root, "rev-parse", "HEAD")
    (root / "src/b.c").write_text("int b(void) { return 3; }\n")
    git(root, "commit", "-q", "-am", "later upstream change")
    return root, first


@dataclass(frozen=True)
class Sandbox:
    paths: Paths
    pin: UpstreamPin
    upstream_dir: Path


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    upstream_dir, commit = make_upstream(tmp_path / "upstream")
    repo = tmp_path / "project"
    (repo / "patches").mkdir(parents=True)
    (repo / "kernels").mkdir()
    (repo / "patches" / "series").write_text("# empty series\n")
    paths = Paths(repo=repo, cache=tmp_path / "cache", build=repo / "build")
    pin = UpstreamPin(
        commit=commit,
        git_url=upstream_dir.as_uri(),
        sdist=SdistPin("fake-llama", "0.0.1", "fake_llama-0.0.1.tar.gz", "0" * 64, "vendor/llama"),
    )
    return Sandbox(paths, pin, upstream_dir)


BACKEND = '''
"""A PEP 517 backend with no requirements, so pip can read the sdist's metadata offline."""
import os


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, "fake_llama-0.0.1.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write("Metadata-Version: 2.1\\nName: fake-llama\\nVersion: 0.0.1\\n")
    return "fake_llama-0.0.1.dist-info"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("this sdist is only downloaded, never built")
'''


def make_sdist(sandbox: Sandbox, index: Path, build_requires: tuple[str, ...] = ()) -> UpstreamPin:
    """A tarball laid out like the llama-cpp-python sdist: upstream as a git submodule.
    ``build_requires`` go into its ``[build-system] requires``."""
    top = index.parent / "sdist-tree" / "fake_llama-0.0.1"
    (top / "vendor" / "llama").mkdir(parents=True)
    gitdir = top / ".git" / "modules" / "vendor" / "llama"
    gitdir.mkdir(parents=True)
    git(gitdir, "init", "-q", "--bare")
    # Like a real submodule: a shallow repository whose HEAD is the pinned commit, with a
    # config that points at a work tree the harness does not use.
    git(gitdir, "fetch", "-q", "--depth=1", sandbox.pin.git_url, sandbox.pin.commit)
    git(gitdir, "update-ref", "HEAD", sandbox.pin.commit)
    git(gitdir, "config", "core.bare", "false")
    git(gitdir, "config", "core.worktree", "../../../../vendor/llama")
    (top / "vendor" / "llama" / ".git").write_text("gitdir: ../../.git/modules/vendor/llama\n")
    (top / "pyproject.toml").write_text(
        textwrap.dedent("""\
        [build-system]
        requires = {requires}
        build-backend = "backend"
        backend-path = ["."]
        """).format(requires=json.dumps(list(build_requires)))
    )
    (top / "backend.py").write_text(BACKEND)
    (top / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: fake-llama\nVersion: 0.0.1\n")
    index.mkdir(parents=True, exist_ok=True)
    tarball = index / "fake_llama-0.0.1.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    return replace(sandbox.pin, sdist=replace(sandbox.pin.sdist, sha256=digest))


@pytest.fixture
def offline_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point pip at a local folder instead of a package index (pip reads PIP_* from env)."""
    index = tmp_path / "index"
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index
