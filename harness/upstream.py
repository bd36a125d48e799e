"""Fetch the pinned upstream llama.cpp into a verified git repository in the cache.

Three sources end in the same thing: a bare repository ``<cache>/upstream/<commit>.git``
holding the upstream tree as one (shallow) commit, tagged ``tq/base``:

- ``sdist`` (default, offline-friendly): ``pip download`` the pinned llama-cpp-python sdist,
  check its sha256, and fetch the commit from the shallow git submodule it ships;
- ``git``: fetch the pinned commit from a git URL;
- ``--source PATH``: fetch the commit checked out in a local clone (developers' own trees).

The repository is imported under a temporary name and renamed into place only once it is
verified, so an interrupted run never leaves a half-written cache under the real name. A
marker records a fingerprint of the object files; when it no longer matches (edited or
truncated files) ``git fsck`` decides, and a repository that fails is fetched again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import git

from harness import proc
from harness.config import Paths, UpstreamPin
from harness.digest import sha256_file
from harness.errors import ConfigError, FetchError, IntegrityError
from harness.lock import exclusive
from harness.progress import Progress

BASE_TAG = "tq/base"
MARKER = "tqh-complete.json"


class FetchMode(Enum):
    """Where the pinned commit comes from: the registry sdist (offline) or its git URL."""

    SDIST = "sdist"
    GIT = "git"


@dataclass(frozen=True)
class Upstream:
    """A verified upstream commit in the cache."""

    commit: str
    repo: Path
    origin: str


def _fingerprint(repo: Path) -> list[list[object]]:
    """Name, size and mtime of every file git stores data in: cheap to compare on each run."""
    rows: list[list[object]] = []
    for sub in ("objects", "refs", "packed-refs", "shallow", "HEAD"):
        root = repo / sub
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            rows.append([f.relative_to(repo).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def _write_marker(repo: Path, commit: str, origin: str, sdist_sha256: str | None) -> None:
    """Record what was verified: the commit, where it came from (with the sha256 of the sdist
    it was imported from, if any), and the fingerprint of the object files."""
    data = {
        "commit": commit,
        "origin": origin,
        "sdist_sha256": sdist_sha256,
        "fingerprint": _fingerprint(repo),
    }
    (repo / MARKER).write_text(json.dumps(data, indent=1), encoding="utf-8")


def _tagged_commit(repo: Path) -> str | None:
    try:
        return git.Repo(repo).git.rev_parse("--verify", "--quiet", f"{BASE_TAG}^{{commit}}")
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def is_valid(repo: Path, commit: str) -> bool:
    """True when ``repo`` is a complete, unmodified import of ``commit``."""
    try:
        marker = json.loads((repo / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("commit") != commit:
        return False
    if marker.get("fingerprint") == _fingerprint(repo):
        return _tagged_commit(repo) == commit
    # Something under the repository changed since it was verified: let git judge the
    # content before trusting it, and record the new fingerprint if it is sound.
    try:
        git.Repo(repo).git.fsck("--full", "--strict", "--no-dangling", "--no-progress")
    except git.GitCommandError:
        return False
    if _tagged_commit(repo) != commit:
        return False
    _write_marker(repo, commit, marker.get("origin", "?"), marker.get("sdist_sha256"))
    return True


def _check_sdist_pin(repo: Path, pin: UpstreamPin) -> None:
    """Raise IntegrityError when the cached import came from an sdist other than the pinned
    one: a changed sha256 in upstream.toml must not pass unnoticed because the commit is
    cached already."""
    recorded = json.loads((repo / MARKER).read_text(encoding="utf-8")).get("sdist_sha256")
    if recorded is not None and recorded != pin.sdist.sha256:
        raise IntegrityError(
            f"upstream.toml pins the sdist sha256 {pin.sdist.sha256}, but the cached upstream "
            f"{pin.commit[:12]} was imported from {pin.sdist.filename} with sha256 {recorded}",
            hint="restore the sha256 in upstream.toml; a new upstream pins a new commit too",
        )


def _import_commit(
    dest: Path, url: str, commit: str, origin: str, sdist_sha256: str | None = None
) -> None:
    """Fetch exactly ``commit`` from ``url`` into a new bare repository at ``dest``."""
    repo = git.Repo.init(dest, bare=True)
    try:
        repo.git.fetch("--depth=1", "--no-tags", url, commit)
    except git.GitCommandError as exc:
        raise FetchError(f"fetching {commit} from {url} failed:\n{exc.stderr.strip()}") from exc
    fetched = repo.git.rev_parse("FETCH_HEAD^{commit}")
    if fetched != commit:
        raise IntegrityError(f"{url} gave commit {fetched}, the pin says {commit}")
    repo.git.tag(BASE_TAG, commit)
    repo.git.fsck("--full", "--strict", "--no-dangling", "--no-progress")
    _write_marker(dest, commit, origin, sdist_sha256)


def _download_sdist(paths: Paths, pin: UpstreamPin, log: Path) -> Path:
    """Return the verified sdist, downloading it (again) when absent or corrupt. A cached file
    that does not match the pin is replaced only by a download that does: when the pin is the
    wrong one (a typo), the download fails the check too and the file stays as it was."""
    sd = pin.sdist
    target = paths.downloads / sd.filename
    if target.is_file():
        if sha256_file(target)[0] == sd.sha256:
            return target
        print(f"{target} does not match its pinned sha256; fetching it again", file=sys.stderr)
    paths.downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.downloads, prefix=f".partial-{pin.commit}-") as tmp:
        progress = Progress(f"downloading {sd.package}=={sd.version}")
        proc.pip_download(
            [f"{sd.package}=={sd.version}"],
            Path(tmp),
            sdist=True,
            log=log,
            on_line=progress.tick,
            error=FetchError,
            what="pip download of the sdist",
        )
        got = Path(tmp) / sd.filename
        if not got.is_file():
            raise FetchError(f"pip download did not produce {sd.filename} (see {log})")
        digest, _ = sha256_file(got)
        if digest != sd.sha256:
            kept = f"; {target} is kept as it was" if target.is_file() else ""
            raise IntegrityError(
                f"{sd.package}=={sd.version} has sha256 {digest}, the pin says {sd.sha256}{kept}"
            )
        os.replace(got, target)
        progress.done("verified sha256")
    return target


def _extract_submodule_git(sdist: Path, subdirectory: str, dest: Path) -> Path:
    """Unpack only the submodule's git directory from the sdist; return its path."""
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        top = names[0].split("/", 1)[0]
        prefix = f"{top}/.git/modules/{subdirectory}/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise IntegrityError(f"{sdist.name} holds no git metadata under {prefix}")
        tar.extractall(dest, members=members, filter="data")
    gitdir = dest / prefix
    # The submodule's config points at a work tree we did not unpack; git refuses to serve
    # a repository whose work tree is missing, so make it the bare repository it now is.
    cfg = str(gitdir / "config")
    git.Git().config("--file", cfg, "--unset", "core.worktree")
    git.Git().config("--file", cfg, "core.bare", "true")
    return gitdir


def _local_head(source: Path) -> str:
    try:
        repo = git.Repo(source)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
        raise ConfigError(f"--source {source} is not a git checkout of llama.cpp") from exc
    if repo.is_dirty(untracked_files=False):
        print(
            f"warning: {source} has uncommitted changes; the base is its HEAD commit only",
            file=sys.stderr,
        )
    return repo.head.commit.hexsha


def ensure_upstream(
    paths: Paths,
    pin: UpstreamPin,
    *,
    mode: FetchMode = FetchMode.SDIST,
    git_url: str | None = None,
    source: Path | None = None,
) -> Upstream:
    """Return the cached upstream repository for the pin (or ``source``), fetching if needed."""
    if source is not None:
        commit, url, origin = _local_head(source), str(source.resolve()), f"local {source}"
    elif mode is FetchMode.GIT:
        url = git_url or pin.git_url
        commit, origin = pin.commit, f"git {url}"
    else:
        commit, url = pin.commit, ""
        origin = f"sdist {pin.sdist.package}=={pin.sdist.version}"
    repo_dir = paths.upstream_repos / f"{commit}.git"
    log = paths.logs / "fetch.log"
    from_sdist = mode is FetchMode.SDIST and source is None
    with exclusive(paths.locks / f"upstream-{commit}.lock"):
        # Under this commit's lock no other run writes its temporary folders: any left are
        # from a run that was killed (a SIGKILL skips the cleanup of TemporaryDirectory).
        for stale in (
            *paths.upstream_repos.glob(f".partial-{commit}-*"),
            *paths.downloads.glob(f".partial-{commit}-*"),
        ):
            shutil.rmtree(stale, ignore_errors=True)
        if is_valid(repo_dir, commit):
            if from_sdist:
                _check_sdist_pin(repo_dir, pin)
            return Upstream(commit, repo_dir, origin)
        if repo_dir.exists():
            print(f"{repo_dir} is incomplete or corrupt; fetching it again", file=sys.stderr)
            shutil.rmtree(repo_dir)
        paths.upstream_repos.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            dir=paths.upstream_repos, prefix=f".partial-{commit}-"
        ) as tmp:
            staging = Path(tmp) / "repo.git"
            sdist_sha256 = None
            if from_sdist:
                sdist = _download_sdist(paths, pin, log)
                url = str(_extract_submodule_git(sdist, pin.sdist.subdirectory, Path(tmp) / "x"))
                sdist_sha256 = pin.sdist.sha256
            _import_commit(staging, url, commit, origin, sdist_sha256)
            os.replace(staging, repo_dir)
    print(f"upstream {commit[:12]} ({origin}) verified in {repo_dir}", file=sys.stderr)
    return Upstream(commit, repo_dir, origin)
