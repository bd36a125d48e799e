"""The patch series: apply it onto the tagged upstream base, export it back, check it.

``patches/series`` lists the patch files in order. ``apply`` replays them with
``git am --3way`` in a scratch worktree and moves the work checkout (``build/llama.cpp``,
branch ``tq/patched``) to the result only when every patch applied, so a conflict leaves
both the cached upstream and the work checkout exactly as they were. Commits get a fixed
committer and the author's date, so the same series always yields the same commit ids.

``export`` writes one file per commit between ``tq/base`` and HEAD with
``git format-patch --zero-commit --full-index --no-signature --no-stat``: an unchanged commit
gives a byte-identical file. ``check`` fails when the files and the commits disagree.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from harness.config import Paths
from harness.errors import ConfigError, DirtyCheckout, PatchConflict, StalePatches
from harness.upstream import BASE_TAG, Upstream

PATCHED_BRANCH = "tq/patched"
STAMP = "tqh-series.json"
SERIES_HEADER = (
    "# Order in which `nox -s patches -- apply` replays the patches onto the upstream base.\n"
    "# Written by `nox -s patches -- export`; one file name per line.\n"
)
# A fixed committer plus --committer-date-is-author-date makes commit ids reproducible.
COMMITTER_ENV = {
    "GIT_COMMITTER_NAME": "turboquant-harness",
    "GIT_COMMITTER_EMAIL": "harness@turboquant.invalid",
}
FORMAT_PATCH_ARGS = (
    "--zero-commit",
    "--full-index",
    "--no-signature",
    "--no-stat",
    "--no-numbered",
)


@dataclass(frozen=True)
class Series:
    """patches/: the patch files in the order of its ``series`` file."""

    directory: Path
    names: tuple[str, ...]

    @classmethod
    def load(cls, directory: Path) -> Series:
        """Read ``series``; raises ConfigError (exit 11) when it is unreadable or lists a
        file that does not exist."""
        series = directory / "series"
        try:
            lines = series.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read {series}: {exc}") from exc
        names = tuple(
            line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
        )
        missing = [n for n in names if not (directory / n).is_file()]
        if missing:
            raise ConfigError(f"{series} lists missing files: {', '.join(missing)}")
        return cls(directory, names)

    @property
    def files(self) -> list[Path]:
        """The patch files, in order."""
        return [self.directory / n for n in self.names]

    def digest(self) -> str:
        """sha256 of ``series`` and every patch's name and bytes: part of the build record."""
        h = hashlib.sha256((self.directory / "series").read_bytes())
        for f in self.files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Hunk:
    """One hunk of a patch: the file, its ``@@`` header, its line in the patch, and where it
    starts in the old and new file (lines) and how long it is in the new one."""

    file: str
    header: str
    patch_line: int
    old_start: int
    new_start: int
    new_len: int


HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def hunks_of(patch: Path) -> list[Hunk]:
    """Every hunk of a patch file, in order."""
    hunks: list[Hunk] = []
    current = ""
    for no, line in enumerate(patch.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("+++ "):
            current = line[4:].removeprefix("b/")
        elif m := HUNK_RE.match(line):
            hunks.append(
                Hunk(
                    current,
                    line.split(" @@")[0] + " @@",
                    no,
                    int(m.group(1)),
                    int(m.group(3)),
                    int(m.group(4) or 1),
                )
            )
    return hunks


def _stamp_path(repo: git.Repo) -> Path:
    return Path(repo.git_dir) / STAMP


def read_stamp(repo: git.Repo) -> dict[str, str]:
    """What the last apply recorded in the work checkout (base, series digest, head); empty
    when there is no record."""
    try:
        return json.loads(_stamp_path(repo).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_stamp(repo: git.Repo, base: str, series: Series) -> None:
    data = {"base": base, "series": series.digest(), "head": repo.head.commit.hexsha}
    _stamp_path(repo).write_text(json.dumps(data, indent=1), encoding="utf-8")


def open_checkout(paths: Paths, upstream: Upstream) -> git.Repo:
    """The work checkout, cloned from the cache on first use, with ``tq/base`` up to date."""
    if not (paths.checkout / ".git").exists():
        paths.checkout.parent.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.clone_from(str(upstream.repo), paths.checkout, no_checkout=True)
        repo.git.checkout("-B", PATCHED_BRANCH, BASE_TAG)
        return repo
    repo = git.Repo(paths.checkout)
    try:
        base = repo.git.rev_parse("--verify", "--quiet", f"{BASE_TAG}^{{commit}}")
    except git.GitCommandError:
        base = ""
    if base != upstream.commit:
        repo.git.fetch(
            "--force",
            "--depth=1",
            str(upstream.repo),
            f"+refs/tags/{BASE_TAG}:refs/tags/{BASE_TAG}",
        )
    return repo


def _dirty_paths(repo: git.Repo) -> list[str]:
    # --no-optional-locks: a plain status rewrites .git/index when it refreshes stat data,
    # and llama.cpp's CMake watches that file, so a no-op build would re-run CMake.
    out = repo.git.execute(["git", "--no-optional-locks", "status", "--porcelain"])
    return [line for line in out.splitlines() if line.strip()]


def render(repo: git.Repo) -> dict[str, bytes]:
    """The patch files and series that ``export`` would write, by file name."""
    with tempfile.TemporaryDirectory(prefix="tqh-export-") as tmp:
        repo.git.format_patch(*FORMAT_PATCH_ARGS, "-o", tmp, f"{BASE_TAG}..HEAD")
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).glob("*.patch"))}
    files["series"] = (SERIES_HEADER + "".join(n + "\n" for n in files)).encode()
    return files


def _on_disk(directory: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(directory.glob("*.patch"))}
    if (directory / "series").is_file():
        files["series"] = (directory / "series").read_bytes()
    return files


def _refuse_to_lose_work(repo: git.Repo, stamp: dict[str, str], series: Series) -> None:
    dirty = _dirty_paths(repo)
    if dirty:
        shown = "\n".join("    " + d for d in dirty[:10])
        raise DirtyCheckout(f"{repo.working_dir} has uncommitted changes:\n{shown}")
    head = repo.head.commit.hexsha
    if stamp and stamp.get("head") != head and render(repo) != _on_disk(series.directory):
        raise DirtyCheckout(
            f"{repo.working_dir} has commits that are not in patches/ "
            f"(HEAD {head[:12]}, last applied {stamp['head'][:12]})"
        )


def describe_conflict(worktree: Path, series: Series, output: str) -> str:
    """Name the patch, the file, the line and the hunk that failed."""
    failed = re.search(r"Patch failed at (\d+)", output)
    index = int(failed.group(1)) - 1 if failed else 0
    patch = series.files[index] if index < len(series.files) else series.files[-1]
    places: list[tuple[str, int]] = [
        (m.group(1), int(m.group(2))) for m in re.finditer(r"patch failed: (\S+?):(\d+)", output)
    ]
    for m in re.finditer(r"Merge conflict in (\S+)", output):
        target = worktree / m.group(1)
        try:
            lines = target.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        marker = next((i for i, ln in enumerate(lines, 1) if ln.startswith("<<<<<<<")), 0)
        places.append((m.group(1), marker))
    for m in re.finditer(r"error: (\S+): does not exist in index", output):
        places.append((m.group(1), 0))
    hunks = hunks_of(patch)
    rows = []
    for file, line in dict.fromkeys(places):
        candidates = [h for h in hunks if h.file == file]
        hunk = min(
            candidates,
            key=lambda h: min(abs(h.old_start - line), abs(h.new_start - line)),
            default=None,
        )
        where = f"{patch.relative_to(series.directory.parent)}:{hunk.patch_line}" if hunk else ""
        rows.append(f"  {where}: {file}:{line}: hunk {hunk.header if hunk else '?'} does not apply")
    detail = "\n".join(rows) or "  (git gave no file; see the output below)"
    tail = "\n".join("    " + ln for ln in output.strip().splitlines()[-12:])
    return (
        f"patch {patch.name} does not apply to the upstream base:\n{detail}\n  git am said:\n{tail}"
    )


def _apply_in_scratch(repo: git.Repo, base: str, series: Series, scratch_root: Path) -> str:
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix=".apply-") as tmp:
        wt = Path(tmp) / "wt"
        repo.git.worktree("add", "--detach", str(wt), base)
        try:
            scratch = git.Repo(wt)
            if series.files:
                try:
                    scratch.git.am(
                        "--3way",
                        "--keep-non-patch",
                        "--committer-date-is-author-date",
                        *[str(f) for f in series.files],
                        env=COMMITTER_ENV,
                    )
                except git.GitCommandError as exc:
                    message = describe_conflict(wt, series, f"{exc.stdout}\n{exc.stderr}")
                    raise PatchConflict(message) from None
            return scratch.head.commit.hexsha
        finally:
            repo.git.worktree("remove", "--force", str(wt))
            repo.git.worktree("prune")


def apply(paths: Paths, upstream: Upstream, series: Series) -> str:
    """Make the work checkout equal base + series; return its HEAD. No-op when it already is."""
    repo = open_checkout(paths, upstream)
    stamp = read_stamp(repo)
    _refuse_to_lose_work(repo, stamp, series)
    head = repo.head.commit.hexsha
    if stamp.get("base") == upstream.commit and stamp.get("series") == series.digest():
        if stamp.get("head") != head:  # the user's own commits, already exported
            _write_stamp(repo, upstream.commit, series)
        return head
    new_head = _apply_in_scratch(repo, upstream.commit, series, paths.build)
    # Moving the branch rewrites only files that differ, so ninja rebuilds only their users.
    repo.git.checkout("-B", PATCHED_BRANCH, new_head)
    _write_stamp(repo, upstream.commit, series)
    print(
        f"applied {len(series.names)} patch(es) onto {upstream.commit[:12]}: HEAD {new_head[:12]}"
    )
    return new_head


def export(paths: Paths, upstream: Upstream) -> list[str]:
    """Write patches/ from the commits of the work checkout; return the names that changed."""
    if not (paths.checkout / ".git").exists():
        raise ConfigError(f"no work checkout at {paths.checkout}; run `nox -s patches -- apply`")
    repo = open_checkout(paths, upstream)
    dirty = _dirty_paths(repo)
    if dirty:
        raise DirtyCheckout(
            f"{paths.checkout} has uncommitted changes; commit them before exporting:\n"
            + "\n".join("    " + d for d in dirty[:10])
        )
    wanted = render(repo)
    current = _on_disk(paths.patches)
    paths.patches.mkdir(parents=True, exist_ok=True)
    changed = sorted(n for n in set(wanted) | set(current) if wanted.get(n) != current.get(n))
    for name in changed:
        target = paths.patches / name
        if name in wanted:
            target.write_bytes(wanted[name])
        else:
            target.unlink()
    _write_stamp(repo, upstream.commit, Series.load(paths.patches))
    return changed


def check(paths: Paths, upstream: Upstream) -> None:
    """Fail with StalePatches when patches/ is not what ``export`` would write."""
    series = Series.load(paths.patches)
    repo = open_checkout(paths, upstream)
    if not read_stamp(repo):
        apply(paths, upstream, series)
    wanted = render(repo)
    current = _on_disk(paths.patches)
    stale = sorted(n for n in set(wanted) | set(current) if wanted.get(n) != current.get(n))
    if stale:
        raise StalePatches(
            f"patches/ disagrees with the commits in {paths.checkout}: {', '.join(stale)}\n"
            "  (export if your commits there are newer; apply if patches/ is newer)"
        )
