"""Peers: other llama.cpp trees (``peers.toml``), built with no patches of ours and measured
beside this project's build through the same sessions (``bench --peer NAME``: llama-bench in
the same interleaved rounds; ``perplexity --peer NAME``: the same configurations through the
peer's llama-perplexity, each against its own f16 base).

A peer is pinned by commit. Its source comes from an archive checked by sha256 (for
machines that cannot reach the peer's git host; looked up in the folders of
``archive_dirs``) or else from its git URL through GitPython, checked out at the commit.
Either way the tree lands in the cache under ``peers/NAME-COMMIT12`` with a marker naming
the commit and the origin, written last, so a half-made tree is never taken for a good one.
The peer is built with the harness's CMake options (``build.BuildOptions``) plus its own
``defines``, in ``build/peers/NAME/BACKEND``, and every program of it runs with its ``env``.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

import git

from harness import build as build_mod
from harness.cache_types import CACHE_TYPES, CacheConfig
from harness.config import Paths
from harness.digest import sha256_file
from harness.errors import ConfigError, FetchError, IntegrityError
from harness.lock import exclusive

MARKER = ".tqh-peer.json"
# Upstream's cache types keep their names in a peer that descends from upstream.
UPSTREAM_TYPES = tuple(t for t in CACHE_TYPES if not t.startswith("turbo"))
PEER_TARGETS = ("llama-perplexity", "llama-bench")


@dataclass(frozen=True)
class Peer:
    """One entry of peers.toml: a name, a one-line title, the git URL and the full commit
    (40 hex digits), the optional archive file name and its sha256, our cache-type names
    mapped to the peer's (``types``), the environment its programs run with, and more CMake
    ``-D`` options."""

    name: str
    title: str
    git_url: str
    commit: str
    archive: str | None = None
    archive_sha256: str | None = None
    types: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    defines: tuple[str, ...] = ()

    def cache_type(self, ours: str) -> str | None:
        """The peer's name for our cache type ``ours``, or None when it has none."""
        mapped = dict(self.types)
        if ours in mapped:
            return mapped[ours]
        return ours if ours in UPSTREAM_TYPES else None

    def config(self, cfg: CacheConfig) -> CacheConfig | None:
        """Our K/V configuration in the peer's names, or None when the peer lacks a type."""
        k, v = self.cache_type(cfg.k), self.cache_type(cfg.v)
        return CacheConfig(k, v) if k and v else None


def load_peers(path: Path) -> dict[str, Peer]:
    """The peers of ``path`` (peers.toml) by name. Raises ConfigError (exit 11) for a missing
    key, a commit that is not 40 hex digits, an archive without its sha256, or a name used
    twice."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        peers: dict[str, Peer] = {}
        for raw in data["peer"]:
            peer = Peer(
                name=raw["name"],
                title=raw["title"],
                git_url=raw["git_url"],
                commit=raw["commit"],
                archive=raw.get("archive"),
                archive_sha256=raw.get("archive_sha256"),
                types=tuple(sorted(raw.get("types", {}).items())),
                env=tuple(sorted(raw.get("env", {}).items())),
                defines=tuple(raw.get("defines", ())),
            )
            if len(peer.commit) != 40 or any(c not in "0123456789abcdef" for c in peer.commit):
                raise ConfigError(f"{path}: peer {peer.name}: commit must be 40 hex digits")
            if peer.archive and len(peer.archive_sha256 or "") != 64:
                raise ConfigError(f"{path}: peer {peer.name}: archive_sha256 must be 64 hex digits")
            if peer.name in peers:
                raise ConfigError(f"{path}: two peers are called {peer.name}")
            peers[peer.name] = peer
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc!r}",
            hint="each [[peer]] needs name, title, git_url and commit (see peers.toml)",
        ) from exc
    return peers


def peer(path: Path, name: str) -> Peer:
    """The peer called ``name`` in ``path``; raises ConfigError listing the known names."""
    peers = load_peers(path)
    if name not in peers:
        raise ConfigError(
            f"no peer called {name!r} in {path}",
            hint=f"known peers: {', '.join(peers) or 'none'}",
        )
    return peers[name]


def _from_archive(p: Peer, archive: Path, dest: Path) -> None:
    digest, _ = sha256_file(archive)
    if digest != p.archive_sha256:
        raise IntegrityError(
            f"{archive} has sha256 {digest}, peers.toml pins {p.archive_sha256} for {p.name}",
            hint="use the archive peers.toml names, or fix its archive_sha256",
        )
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def _from_git(p: Peer, dest: Path) -> None:
    try:
        repo = git.Repo.init(dest)
        repo.git.fetch("--depth=1", "--no-tags", p.git_url, p.commit)
        repo.git.checkout("--detach", "FETCH_HEAD")
        head = repo.head.commit.hexsha
    except git.GitCommandError as exc:
        first = (exc.stderr or str(exc)).strip().splitlines()
        raise FetchError(
            f"cannot fetch commit {p.commit} of peer {p.name} from {p.git_url}: "
            f"{first[-1] if first else exc}",
            hint="check the URL and the commit in peers.toml, or give the archive "
            "(--peer-archives DIR)",
        ) from None
    if head != p.commit:
        raise IntegrityError(f"peer {p.name}: fetched {head}, peers.toml pins {p.commit}")
    shutil.rmtree(dest / ".git")


def ensure_source(paths: Paths, p: Peer, archive_dirs: tuple[Path, ...]) -> Path:
    """The peer's tree in the cache: from its archive when one of ``archive_dirs`` holds it
    (checked by sha256), else from git. Raises IntegrityError (exit 14) for a wrong archive
    or commit and FetchError (exit 13) when git cannot fetch the commit; the cache then
    holds no tree under the final name."""
    dest = paths.cache / "peers" / f"{p.name}-{p.commit[:12]}"
    marker = dest / MARKER
    archive = next(
        (d / p.archive for d in archive_dirs if p.archive and (d / p.archive).is_file()), None
    )
    with exclusive(paths.locks / f"peer-{p.name}.lock"):
        if marker.is_file() and json.loads(marker.read_text())["commit"] == p.commit:
            return dest
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if archive is not None:
                _from_archive(p, archive, tmp)
            else:
                _from_git(p, tmp)
            if not (tmp / "CMakeLists.txt").is_file():
                raise IntegrityError(f"peer {p.name}: its source holds no CMakeLists.txt")
            origin = str(archive) if archive is not None else p.git_url
            (tmp / MARKER).write_text(json.dumps({"commit": p.commit, "origin": origin}))
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build_peer(
    paths: Paths, p: Peer, archive_dirs: tuple[Path, ...], backend: build_mod.Backend
) -> build_mod.BuildResult:
    """Fetch (ensure_source) and build the peer's llama-perplexity and llama-bench with the
    harness's CMake options and the peer's defines, in build/peers/NAME/BACKEND. Raises what
    ensure_source and build.build raise."""
    source = ensure_source(paths, p, archive_dirs)
    options = build_mod.BuildOptions(backend=backend, defines=p.defines, targets=PEER_TARGETS)
    return build_mod.build(
        paths,
        p.commit,
        "no patches",
        options,
        source=source,
        directory=paths.build / "peers" / p.name / backend.value,
    )
