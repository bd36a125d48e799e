"""Fetching the pinned upstream: real git, real pip, real tarballs made by the tests."""

from __future__ import annotations

import multiprocessing
import shutil
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import git
import pytest
from conftest import Sandbox, make_sdist

from harness import cli
from harness.errors import CacheLocked, ConfigError, FetchError, IntegrityError
from harness.lock import exclusive
from harness.upstream import BASE_TAG, MARKER, FetchMode, ensure_upstream, is_valid


def _commits(repo: Path) -> list[str]:
    return git.Repo(repo).git.rev_list("--all").split()


def test_git_fetch_from_file_url(sandbox: Sandbox) -> None:
    up = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    assert up.commit == sandbox.pin.commit
    assert up.repo == sandbox.paths.upstream_repos / f"{sandbox.pin.commit}.git"
    assert git.Repo(up.repo).git.rev_parse(f"{BASE_TAG}^{{commit}}") == sandbox.pin.commit
    # Only the pinned commit, not the later upstream history.
    assert _commits(up.repo) == [sandbox.pin.commit]
    assert not list(sandbox.paths.upstream_repos.glob(".partial-*"))


def test_git_fetch_of_unknown_commit_fails(sandbox: Sandbox) -> None:
    pin = replace(sandbox.pin, commit="1" * 40)
    with pytest.raises(FetchError) as info:
        ensure_upstream(sandbox.paths, pin, mode=FetchMode.GIT)
    assert info.value.exit_code == 13
    assert not (sandbox.paths.upstream_repos / f"{'1' * 40}.git").exists()


def test_sdist_is_downloaded_verified_and_imported(sandbox: Sandbox, offline_index: Path) -> None:
    pin = make_sdist(sandbox, offline_index)
    up = ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST)
    assert up.commit == pin.commit
    assert _commits(up.repo) == [pin.commit]
    assert (sandbox.paths.downloads / pin.sdist.filename).is_file()
    assert is_valid(up.repo, pin.commit)


def _build_requirement(index: Path) -> str:
    """``tqh-helper 1.0`` in the index as a wheel and as an sdist whose build always fails,
    like cmake, which ships wheels and builds from source for 45 minutes."""
    import zipfile

    name = "tqh_helper-1.0"
    meta = "Metadata-Version: 2.1\nName: tqh-helper\nVersion: 1.0\n"
    with zipfile.ZipFile(index / f"{name}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{name}.dist-info/METADATA", meta)
        whl.writestr(
            f"{name}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        whl.writestr(f"{name}.dist-info/RECORD", "")
    tree = index.parent / "helper-tree" / name
    tree.mkdir(parents=True)
    (tree / "PKG-INFO").write_text(meta)
    (tree / "setup.py").write_text("raise SystemExit('built from source')\n")
    with tarfile.open(index / f"{name}.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=name)
    return "tqh-helper==1.0"


def test_sdist_fetch_builds_nothing_from_source_but_the_pin(
    sandbox: Sandbox, offline_index: Path
) -> None:
    # pip prepares the sdist's metadata in an isolated environment; `--no-binary :all:`
    # would build this requirement from its sdist there (and fail), a wheel is what it
    # must take.
    offline_index.mkdir(parents=True)
    pin = make_sdist(sandbox, offline_index, build_requires=(_build_requirement(offline_index),))
    up = ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST)
    assert up.commit == pin.commit


def test_sdist_with_wrong_hash_is_refused(sandbox: Sandbox, offline_index: Path) -> None:
    pin = make_sdist(sandbox, offline_index)
    bad = replace(pin, sdist=replace(pin.sdist, sha256="f" * 64))
    with pytest.raises(IntegrityError) as info:
        ensure_upstream(sandbox.paths, bad)
    assert info.value.exit_code == 14
    assert "f" * 64 in str(info.value)
    # Nothing unverified is kept under a name a later run would trust.
    assert not (sandbox.paths.downloads / pin.sdist.filename).exists()
    assert not (sandbox.paths.upstream_repos / f"{pin.commit}.git").exists()


def test_a_changed_sdist_pin_is_checked_against_the_cached_upstream(
    sandbox: Sandbox, offline_index: Path
) -> None:
    # Issue 11: 64 zeros in upstream.toml built without a word once the commit was cached.
    pin = make_sdist(sandbox, offline_index)
    up = ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST)
    typo = replace(pin, sdist=replace(pin.sdist, sha256="0" * 64))
    with pytest.raises(IntegrityError, match=f"pins the sdist sha256 {'0' * 64}") as info:
        ensure_upstream(sandbox.paths, typo, mode=FetchMode.SDIST)
    assert info.value.exit_code == 14 and pin.sdist.sha256 in str(info.value)
    assert is_valid(up.repo, pin.commit)
    assert ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST).repo == up.repo


def test_a_wrong_pin_never_deletes_the_good_cached_sdist(
    sandbox: Sandbox, offline_index: Path
) -> None:
    # Issue 11: with only the sdist cached, a typo in the pin deleted the valid file first.
    pin = make_sdist(sandbox, offline_index)
    up = ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST)
    shutil.rmtree(up.repo)
    cached = sandbox.paths.downloads / pin.sdist.filename
    before = cached.read_bytes()
    typo = replace(pin, sdist=replace(pin.sdist, sha256="0" * 64))
    with pytest.raises(IntegrityError, match="is kept as it was"):
        ensure_upstream(sandbox.paths, typo, mode=FetchMode.SDIST)
    assert cached.read_bytes() == before
    assert not list(sandbox.paths.downloads.glob(".partial-*"))


def test_what_a_killed_import_left_is_removed_by_the_next_run(
    sandbox: Sandbox, offline_index: Path
) -> None:
    # Issue 11: a SIGKILL during the import left upstream/.partial-* (41 MB) forever.
    pin = make_sdist(sandbox, offline_index)
    left = [
        sandbox.paths.upstream_repos / f".partial-{pin.commit}-killed",
        sandbox.paths.downloads / f".partial-{pin.commit}-killed",
    ]
    for d in left:
        d.mkdir(parents=True)
        (d / "half").write_bytes(b"x" * 1000)
    ensure_upstream(sandbox.paths, pin, mode=FetchMode.SDIST)
    assert not any(d.exists() for d in left)
    assert not list(sandbox.paths.upstream_repos.glob(".partial-*"))


def test_corrupt_download_is_fetched_again(sandbox: Sandbox, offline_index: Path) -> None:
    pin = make_sdist(sandbox, offline_index)
    sandbox.paths.downloads.mkdir(parents=True)
    (sandbox.paths.downloads / pin.sdist.filename).write_bytes(b"truncated download")
    up = ensure_upstream(sandbox.paths, pin)
    assert is_valid(up.repo, pin.commit)
    from harness.digest import sha256_file

    assert sha256_file(sandbox.paths.downloads / pin.sdist.filename)[0] == pin.sdist.sha256


def test_edited_cache_is_detected_and_refetched(sandbox: Sandbox) -> None:
    up = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    objects = sorted(p for p in (up.repo / "objects").rglob("*") if p.is_file())
    victim = max(objects, key=lambda p: p.stat().st_size)
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert not is_valid(up.repo, sandbox.pin.commit)
    again = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    assert is_valid(again.repo, sandbox.pin.commit)
    assert _commits(again.repo) == [sandbox.pin.commit]


def test_incomplete_cache_is_refetched(sandbox: Sandbox) -> None:
    up = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    (up.repo / MARKER).unlink()  # what an interrupted import leaves behind
    assert not is_valid(up.repo, sandbox.pin.commit)
    again = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    assert is_valid(again.repo, sandbox.pin.commit)


def test_unchanged_cache_is_not_refetched(sandbox: Sandbox) -> None:
    up = ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    before = (up.repo / MARKER).stat().st_mtime_ns
    ensure_upstream(sandbox.paths, sandbox.pin, mode=FetchMode.GIT)
    assert (up.repo / MARKER).stat().st_mtime_ns == before


def test_local_source_uses_its_head(sandbox: Sandbox) -> None:
    up = ensure_upstream(sandbox.paths, sandbox.pin, source=sandbox.upstream_dir)
    head = git.Repo(sandbox.upstream_dir).head.commit.hexsha
    assert up.commit == head != sandbox.pin.commit
    assert is_valid(up.repo, head)


def test_source_that_is_not_a_checkout_is_a_config_error(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ensure_upstream(sandbox.paths, sandbox.pin, source=tmp_path / "nowhere")


def _hold(path: str, seconds: float, ready) -> None:
    with exclusive(Path(path)):
        ready.set()
        time.sleep(seconds)


def test_second_run_waits_for_the_lock_then_gives_up(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "x.lock"
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(lock), 3.0, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(CacheLocked) as info, exclusive(lock, timeout=0.5):
            pass
        assert info.value.exit_code == 15
    finally:
        holder.join()
    with exclusive(lock, timeout=0.5):  # released when the holder exits
        pass


def test_cli_maps_errors_to_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TQH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TQH_BUILD_DIR", str(tmp_path / "build"))
    code = cli.main(["fetch", "--source", str(tmp_path / "not-a-checkout")])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 11
    assert "error: --source" in err
    assert "hint:" in err
