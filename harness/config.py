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
    """The registry sdist that carries upstream offline: package, version, file name, its
    sha256 (64 hex digits) and the folder inside it that holds llama.cpp."""

    package: str
    version: str
    filename: str
    sha256: str
    subdirectory: str


@dataclass(frozen=True)
class UpstreamPin:
    """upstream.toml: the llama.cpp commit (40 hex digits), its git URL, the sdist that ships
    it, and the upstream release name."""

    commit: str
    git_url: str
    sdist: SdistPin
    release: str = ""


def load_pin(path: Path) -> UpstreamPin:
    """Read and check upstream.toml; raises ConfigError (exit 11) for a missing key or a
    malformed commit or sha256."""
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


@dataclass(frozen=True)
class Environment:
    """The harness's environment variables, read in one place (``environment()``), with
    their defaults: TQH_FETCH (where upstream comes from: ``sdist`` or ``git``),
    TQH_LOCK_TIMEOUT (seconds a run waits for another's lock, 1800), TQH_KLD_CACHE_GB (GiB
    of cached f16 base logits kept, 8), CCACHE_MAXSIZE (ccache's size limit, ``2G``) and
    TQH_PEER_ARCHIVES (folders holding peer archives, separated like PATH).
    TQH_CACHE_DIR and TQH_BUILD_DIR are read by ``Paths.default``."""

    fetch: str = "sdist"
    lock_timeout_s: float = 1800.0
    kld_cache_bytes: float = 8 * 2**30
    ccache_maxsize: str = "2G"
    peer_archives: tuple[Path, ...] = ()


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise ConfigError(
            f"{name}={text!r} is not a non-negative number",
            hint=f"set {name} to a number such as {default:g}, or unset it",
        )
    return value


def environment() -> Environment:
    """Environment from the process environment; raises ConfigError (exit 11) naming the
    variable when one holds a value the harness cannot use."""
    fetch = os.environ.get("TQH_FETCH", Environment.fetch)
    if fetch not in ("sdist", "git"):
        raise ConfigError(
            f"TQH_FETCH={fetch!r}: upstream comes from `sdist` or `git`",
            hint="set TQH_FETCH to sdist or git, or unset it",
        )
    return Environment(
        fetch=fetch,
        lock_timeout_s=_env_number("TQH_LOCK_TIMEOUT", Environment.lock_timeout_s),
        kld_cache_bytes=_env_number("TQH_KLD_CACHE_GB", 8) * 2**30,
        ccache_maxsize=os.environ.get("CCACHE_MAXSIZE", Environment.ccache_maxsize),
        peer_archives=tuple(
            Path(d).expanduser()
            for d in os.environ.get("TQH_PEER_ARCHIVES", "").split(os.pathsep)
            if d
        ),
    )


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
        """This clone, the shared cache (TQH_CACHE_DIR or ~/.cache/turboquant-harness) and
        build/ (or TQH_BUILD_DIR)."""
        build = os.environ.get("TQH_BUILD_DIR")
        return cls(
            repo=REPO_ROOT,
            cache=default_cache_dir(),
            build=Path(build).resolve() if build else REPO_ROOT / "build",
        )

    @property
    def pin_file(self) -> Path:
        """upstream.toml of this clone."""
        return self.repo / "upstream.toml"

    @property
    def patches(self) -> Path:
        """The patch series (patches/*.patch and series)."""
        return self.repo / "patches"

    @property
    def kernels(self) -> Path:
        """The kernel sources (C, Metal, CUDA) that the build injects."""
        return self.repo / "kernels"

    @property
    def downloads(self) -> Path:
        """Fetched sdists, shared between clones."""
        return self.cache / "downloads"

    @property
    def upstream_repos(self) -> Path:
        """Verified upstream trees, one per commit, shared between clones."""
        return self.cache / "upstream"

    @property
    def locks(self) -> Path:
        """Lock files that keep two runs from filling one cache entry at once."""
        return self.cache / "locks"

    @property
    def ccache(self) -> Path:
        """The compiler cache, outside the clone so a fresh clone builds from it."""
        return self.cache / "ccache"

    @property
    def checkout(self) -> Path:
        """The patched work checkout: upstream base plus one commit per patch."""
        return self.build / "llama.cpp"

    @property
    def logs(self) -> Path:
        """Full logs of the external commands of this clone's runs."""
        return self.build / "logs"
