"""The patch series on a small real upstream: apply, export, check, conflicts, dirt."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from conftest import GIT_ENV, Sandbox

from harness import patches
from harness.errors import DirtyCheckout, PatchConflict, StalePatches
from harness.upstream import FetchMode, Upstream, ensure_upstream, is_valid


def _upstream(sb: Sandbox) -> Upstream:
    return ensure_upstream(sb.paths, sb.pin, mode=FetchMode.GIT)


def _commit_in_checkout(sb: Sandbox, edits: dict[str, str], message: str) -> None:
    repo = git.Repo(sb.paths.checkout)
    for name, text in edits.items():
        (sb.paths.checkout / name).write_text(text)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", message, env=GIT_ENV)


@pytest.fixture
def series_of_two(sandbox: Sandbox) -> Sandbox:
    """Two real patches, written by the harness's own export."""
    up = _upstream(sandbox)
    patches.apply(sandbox.paths, up, patches.Series.load(sandbox.paths.patches))
    a = (sandbox.paths.checkout / "src/a.c").read_text()
    _commit_in_checkout(
        sandbox,
        {"src/a.c": a.replace("return 7;", "return 70;")},
        "a: change seven\n\nWhy: a test patch.",
    )
    _commit_in_checkout(
        sandbox,
        {"src/new.c": "int n(void) { return 1; }\n"},
        "add new.c\n\nWhy: a second test patch.",
    )
    assert patches.export(sandbox.paths, up) == [
        "0001-a-change-seven.patch",
        "0002-add-new.c.patch",
        "series",
    ]
    return sandbox


def test_apply_builds_the_checkout_and_is_idempotent(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    git.rmtree(sb.paths.checkout)
    head = patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    assert "return 70;" in (sb.paths.checkout / "src/a.c").read_text()
    assert (sb.paths.checkout / "src/new.c").is_file()
    repo = git.Repo(sb.paths.checkout)
    assert repo.active_branch.name == patches.PATCHED_BRANCH
    assert len(repo.git.rev_list(f"{patches.BASE_TAG}..HEAD").split()) == 2
    mtime = (sb.paths.checkout / "src/a.c").stat().st_mtime_ns
    assert patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches)) == head
    assert (sb.paths.checkout / "src/a.c").stat().st_mtime_ns == mtime


def test_same_series_gives_the_same_commit_ids(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    heads = []
    for _ in range(2):
        git.rmtree(sb.paths.checkout)
        heads.append(patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches)))
    assert heads[0] == heads[1]


def test_export_round_trips_byte_identical(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    before = {p.name: p.read_bytes() for p in sb.paths.patches.iterdir()}
    git.rmtree(sb.paths.checkout)
    patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    assert patches.export(sb.paths, up) == []
    for p in sb.paths.patches.glob("*.patch"):
        p.unlink()
    assert patches.export(sb.paths, up) == ["0001-a-change-seven.patch", "0002-add-new.c.patch"]
    assert {p.name: p.read_bytes() for p in sb.paths.patches.iterdir()} == before
    text = (sb.paths.patches / "0001-a-change-seven.patch").read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    assert "Subject: [PATCH] a: change seven" in text
    assert " | " not in text.split("diff --git")[0]  # no diffstat
    patches.check(sb.paths, up)


def test_check_catches_a_stale_patch(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    patches.check(sb.paths, up)
    repo = git.Repo(sb.paths.checkout)
    (sb.paths.checkout / "src/new.c").write_text("int n(void) { return 2; }\n")
    repo.git.commit("-q", "-a", "--amend", "--no-edit", env=GIT_ENV)
    with pytest.raises(StalePatches) as info:
        patches.check(sb.paths, up)
    assert info.value.exit_code == 17
    assert "0002-add-new.c.patch" in str(info.value)
    assert patches.export(sb.paths, up) == ["0002-add-new.c.patch"]
    patches.check(sb.paths, up)


def test_check_on_a_fresh_clone_applies_first(series_of_two: Sandbox) -> None:
    sb = series_of_two
    git.rmtree(sb.paths.checkout)
    patches.check(sb.paths, _upstream(sb))
    assert (sb.paths.checkout / "src/new.c").is_file()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.parts
    }


def test_conflict_names_patch_file_and_hunk_and_leaves_everything_as_it_was(
    series_of_two: Sandbox,
) -> None:
    sb = series_of_two
    up = _upstream(sb)
    # The first patch now expects a line upstream does not have.
    p1 = sb.paths.patches / "0001-a-change-seven.patch"
    p1.write_text(
        p1.read_text().replace("-int a7(void) { return 7; }", "-int a7(void) { return 8; }")
    )
    repo = git.Repo(sb.paths.checkout)
    head, tree = repo.head.commit.hexsha, _snapshot(sb.paths.checkout)
    with pytest.raises(PatchConflict) as info:
        patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    message = str(info.value)
    assert info.value.exit_code == 16
    assert "0001-a-change-seven.patch" in message
    assert "src/a.c:" in message
    assert "hunk @@ -" in message
    assert "patches/0001-a-change-seven.patch:" in message  # file:line for annotations
    assert repo.head.commit.hexsha == head
    assert _snapshot(sb.paths.checkout) == tree
    assert not repo.is_dirty(untracked_files=True)
    assert repo.git.worktree("list").count("\n") == 0  # the scratch worktree is gone
    assert is_valid(up.repo, sb.pin.commit)


def test_three_way_conflict_in_context_is_reported(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    # Rewrite a patch so its hunk lands on lines it cannot merge with (3-way fallback too).
    p2 = sb.paths.patches / "0002-add-new.c.patch"
    p2.write_text(
        p2.read_text().replace("new file mode 100644", "").replace("--- /dev/null", "--- a/src/b.c")
    )
    with pytest.raises(PatchConflict) as info:
        patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    assert "0002-add-new.c.patch" in str(info.value)


def test_apply_refuses_to_destroy_uncommitted_work(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    (sb.paths.checkout / "src/b.c").write_text("int b(void) { return 42; }\n")
    (sb.paths.patches / "series").write_text("0001-a-change-seven.patch\n")
    with pytest.raises(DirtyCheckout) as info:
        patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    assert info.value.exit_code == 18
    assert "src/b.c" in str(info.value)
    assert "return 42" in (sb.paths.checkout / "src/b.c").read_text()


def test_apply_refuses_to_drop_unexported_commits(series_of_two: Sandbox) -> None:
    sb = series_of_two
    up = _upstream(sb)
    _commit_in_checkout(sb, {"src/b.c": "int b(void) { return 5; }\n"}, "b: five")
    with pytest.raises(DirtyCheckout):
        patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    assert "return 5" in (sb.paths.checkout / "src/b.c").read_text()
