"""Configuration: the upstream pin and the paths every stage uses, built once, frozen."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SdistPin:
    package: str
    version: str
    filename: str
    sha256: str
    subdirectory: str


@dataclass(frozen=True)
class UpstreamPin:
    commit: str
    git_url: str
    sdist: SdistPin
    release: str = ""


def load_pin(path: Path) -> UpstreamPin:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        up = data["upstream"]
        sd = up["sdist"]
        pin = UpstreamPin(
            commit=up["commit"],
            git_url=up["git"]["url"],
            release=up.get("release", ""),
            sdist=SdistPin(
                package=sd["package"],
                version=sd["version"],
                filename=sd["filename"],
                sha256=sd["sha256"].lower(),
                subdirectory=sd["subdirectory"],
            ),
        )
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the upstream pin {path}: {exc!r}") from exc
    if len(pin.commit) != 40 or any(c not in "0123456789abcdef" for c in pin.commit):
        raise ConfigError(f"{path}: upstream.commit must be a full 40-digit hex sha")
    if len(pin.sdist.sha256) != 64:
        raise ConfigError(f"{path}: upstream.sdist.sha256 must be 64 hex digits")
    return pin


def default_cache_dir() -> Path:
    """Outside the work tree, so a fresh clone (and CI) reuses the sdist, repo and ccache."""
    if env := os.environ.get("TQH_CACHE_DIR"):
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "turboquant-harness").resolve()


@dataclass(frozen=True)
class Paths:
    """Where things live. ``cache`` is shared between clones; ``build`` belongs to one clone."""

    repo: Path
    cache: Path
    build: Path

    @classmethod
    def default(cls) -> Paths:
        build = os.environ.get("TQH_BUILD_DIR")
        return cls(
            repo=REPO_ROOT,
            cache=default_cache_dir(),
            build=Path(build).resolve() if build else REPO_ROOT / "build",
        )

    @property
    def pin_file(self) -> Path:
        return self.repo / "upstream.toml"

    @property
    def patches(self) -> Path:
        return self.repo / "patches"

    @property
    def kernels(self) -> Path:
        return self.repo / "kernels"

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def upstream_repos(self) -> Path:
        return self.cache / "upstream"

    @property
    def locks(self) -> Path:
        return self.cache / "locks"

    @property
    def ccache(self) -> Path:
        return self.cache / "ccache"

    @property
    def checkout(self) -> Path:
        """The patched work checkout: upstream base plus one commit per patch."""
        return self.build / "llama.cpp"

    @property
    def logs(self) -> Path:
        return self.build / "logs"
