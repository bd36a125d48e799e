"""The GitHub workflows, their problem matcher and the ci/ scripts they call.

GitHub runs the workflows; what can be checked without it is checked here: the linters
(zizmor, and actionlint where it is installed), that every `run:` step is a nox session
people use or a script in ci/, that actions are pinned, that the problem matcher reads a
real PatchConflict, and the ci/ scripts' own logic on stand-in builds.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import git
import pytest
import yaml
from conftest import GIT_ENV, Sandbox

from harness import patches
from harness.config import REPO_ROOT
from harness.errors import PatchConflict
from harness.upstream import FetchMode, ensure_upstream

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
MATCHER = REPO_ROOT / ".github" / "problem-matchers" / "patch-conflict.json"
ADD_MATCHER = f"::add-matcher::{MATCHER.relative_to(REPO_ROOT).as_posix()}"
SHELL_OPERATORS = ("&&", "||", ";", "|", "`", "$(", ">", "<")


def _tool(name: str) -> str | None:
    """The tool next to this interpreter (the nox session's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _workflow(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _steps(path: Path) -> list[tuple[str, dict]]:
    return [(job, step) for job, spec in _workflow(path)["jobs"].items() for step in spec["steps"]]


def _commands(step: dict) -> list[str]:
    """The commands of a `run:` step, one per logical line."""
    text = step.get("run", "").replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _nox_sessions() -> set[str]:
    tree = ast.parse((REPO_ROOT / "noxfile.py").read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if isinstance(target, ast.Attribute) and target.attr == "session":
                given = [k.value for k in (call.keywords if call else []) if k.arg == "name"]
                names.add(given[0].value if given else node.name)
    return names


def test_the_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == ["pr.yml", "release.yml"]


def test_zizmor_finds_nothing() -> None:
    zizmor = _tool("zizmor")
    if zizmor is None:
        pytest.fail("zizmor is missing: it comes with the test extra (pip install -e '.[test]')")
    out = subprocess.run(
        [zizmor, "--offline", "--no-progress", "--color", "never", *map(str, WORKFLOWS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN")},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_finds_nothing() -> None:
    actionlint = _tool("actionlint")
    assert actionlint is not None, "actionlint comes with the test extra of pyproject.toml"
    out = subprocess.run(
        [actionlint, "-no-color", *map(str, WORKFLOWS)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_run_step_is_a_nox_session_or_a_ci_script() -> None:
    sessions = _nox_sessions()
    assert {"build", "tests", "parity", "perplexity", "lint"} <= sessions
    wrong = []
    for path in WORKFLOWS:
        for job, step in _steps(path):
            for command in _commands(step):
                where = f"{path.name} {job}: {command}"
                if "${{" in command or any(op in command for op in SHELL_OPERATORS):
                    wrong.append(f"{where} (an expression or a shell operator)")
                    continue
                words = shlex.split(command)
                if words in (["python", "-m", "pip", "install", "nox"], ["echo", ADD_MATCHER]):
                    continue
                if words[:2] == ["nox", "-s"] and len(words) > 2:
                    if words[2] not in sessions:
                        wrong.append(f"{where} (no session {words[2]} in noxfile.py)")
                    elif words[3:4] not in ([], ["--"]):
                        wrong.append(f"{where} (nox options beyond -s SESSION -- ARGS)")
                    continue
                script = REPO_ROOT / words[0]
                if words[0].startswith("ci/") and script.is_file():
                    if not os.access(script, os.X_OK):
                        wrong.append(f"{where} ({words[0]} is not executable)")
                    continue
                wrong.append(f"{where} (neither a nox session nor a script in ci/)")
    assert not wrong, "\n".join(wrong)


def test_the_workflows_run_what_the_readme_promises() -> None:
    def runs(name: str) -> dict[str, list[str]]:
        jobs: dict[str, list[str]] = {}
        for job, step in _steps(REPO_ROOT / ".github" / "workflows" / name):
            jobs.setdefault(job, []).extend(_commands(step))
        return jobs

    pr = runs("pr.yml")
    assert pr["lint"][-1] == "nox -s lint"
    assert [c for c in pr["linux"] if c.startswith("nox")] == [
        "nox -s text -- --deb text",
        "nox -s build",
        "nox -s tests",
        "nox -s parity",
        "nox -s perplexity -- --quick",
    ]
    assert "ci/install-debian-deps.sh" in pr["linux"]
    # the pinned text comes from Debian's container, never from the runner's (Ubuntu) apt
    linux = pr["linux"]
    assert linux.index("ci/debian-text-deb.sh text") < linux.index("nox -s text -- --deb text")
    assert linux.index("nox -s text -- --deb text") < linux.index("nox -s build")

    release = runs("release.yml")
    hosted = [c for c in release["macos"] if c.startswith("nox")]
    assert hosted.pop(0) == "nox -s text -- --deb text"
    assert hosted[0].startswith("nox -s build -- --backend metal ")
    assert "-D GGML_METAL_EMBED_LIBRARY=OFF" in hosted[0] and "--target ggml-metal-lib" in hosted[0]
    assert hosted[2:] == ["nox -s parity", "nox -s perplexity -- --quick"]
    assert any(
        c.startswith("ci/package-tools.sh --require-relocatable build/metal ")
        for c in release["macos"]
    )
    assert [c for c in release["metal"] if not c.startswith("echo")][1:] == [
        "nox -s text -- --deb text",
        "nox -s build -- --backend metal",
        "ci/backend-ops.sh build/metal MTL0",
        "nox -s perplexity -- --backend metal",
    ]
    assert release["text"] == ["ci/debian-text-deb.sh text"]
    assert "nox -s text -- --deb text" in release["macos"]
    wf = _workflow(REPO_ROOT / ".github" / "workflows" / "release.yml")
    assert wf["jobs"]["macos"]["needs"] == ["text"] and wf["jobs"]["metal"]["needs"] == ["text"]
    assert wf["jobs"]["metal"]["runs-on"] == ["self-hosted", "macOS", "ARM64", "metal"]
    assert wf["jobs"]["macos"]["runs-on"] == "macos-14"
    assert wf["jobs"]["publish"]["needs"] == ["macos", "metal"]
    # PyYAML reads the `on:` key as True.
    assert wf[True] == {"push": {"tags": ["v*"]}}


def test_the_matcher_is_added_before_anything_builds() -> None:
    for path in WORKFLOWS:
        jobs: dict[str, list[str]] = {}
        for job, step in _steps(path):
            jobs.setdefault(job, []).extend(_commands(step))
        for job, commands in jobs.items():
            builds = [
                i
                for i, c in enumerate(commands)
                if re.match(r"nox -s (build|parity|perplexity|tests)\b", c)
            ]
            if builds:
                added = [i for i, c in enumerate(commands) if c == f'echo "{ADD_MATCHER}"']
                assert added and added[0] < builds[0], f"{path.name} {job}"


def test_permissions_are_granted_per_job() -> None:
    for path in WORKFLOWS:
        wf = _workflow(path)
        assert wf["permissions"] == {}, path.name
        for job, spec in wf["jobs"].items():
            grants = spec.get("permissions")
            assert isinstance(grants, dict) and grants, f"{path.name} {job}"
            writes = {k for k, v in grants.items() if v == "write"}
            assert writes <= ({"contents"} if job == "publish" else set()), f"{path.name} {job}"


def test_every_checkout_keeps_no_credentials() -> None:
    checkouts = [
        (path.name, job, step)
        for path in WORKFLOWS
        for job, step in _steps(path)
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    assert checkouts
    for name, job, step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, f"{name} {job}"


def test_every_action_is_pinned_to_a_commit_with_its_version() -> None:
    pinned = re.compile(r"^\s*(?:- )?uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)$")
    seen: dict[str, set[tuple[str, str]]] = {}
    for path in WORKFLOWS:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if "uses:" in ln]
        steps = [s for _, s in _steps(path) if "uses" in s]
        assert len(lines) == len(steps), path.name
        for line in lines:
            m = pinned.match(line)
            assert m, f"{path.name}: {line.strip()}"
            seen.setdefault(m.group(1), set()).add((m.group(2), m.group(3)))
    # One commit per action: two pins of the same action would be two versions to keep.
    assert all(len(pins) == 1 for pins in seen.values()), seen


# --- the problem matcher ---------------------------------------------------------------------


def _real_conflict(sb: Sandbox) -> str:
    """The message of a PatchConflict from applying a real series that no longer fits."""
    up = ensure_upstream(sb.paths, sb.pin, mode=FetchMode.GIT)
    patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    repo = git.Repo(sb.paths.checkout)
    a = sb.paths.checkout / "src/a.c"
    a.write_text(a.read_text().replace("return 7;", "return 70;"))
    repo.git.commit("-q", "-am", "a: change seven\n\nWhy: a test patch.", env=GIT_ENV)
    assert patches.export(sb.paths, up) == ["0001-a-change-seven.patch", "series"]
    patch = sb.paths.patches / "0001-a-change-seven.patch"
    patch.write_text(
        patch.read_text().replace("-int a7(void) { return 7; }", "-int a7(void) { return 8; }")
    )
    with pytest.raises(PatchConflict) as info:
        patches.apply(sb.paths, up, patches.Series.load(sb.paths.patches))
    return str(info.value)


def test_the_matcher_turns_a_real_conflict_into_file_and_line(sandbox: Sandbox) -> None:
    (spec,) = json.loads(MATCHER.read_text(encoding="utf-8"))["problemMatcher"]
    (pattern,) = spec["pattern"]
    assert spec["severity"] == "error"
    regexp = re.compile(pattern["regexp"])
    message = _real_conflict(sandbox)

    hits = [m for m in map(regexp.search, message.splitlines()) if m]
    assert len(hits) == 1, message
    hit = hits[0]
    file, line = hit.group(pattern["file"]), int(hit.group(pattern["line"]))
    assert file == "patches/0001-a-change-seven.patch"
    patch_lines = (sandbox.paths.repo / file).read_text().splitlines()
    assert patch_lines[line - 1].startswith("@@ -"), "the line is the hunk's header"
    assert re.fullmatch(
        r"src/a\.c:\d+: hunk @@ -\S+ \+\S+ @@ does not apply", hit.group(pattern["message"])
    )


# --- the ci/ scripts ------------------------------------------------------------------------

FAKE_BACKEND_OPS = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Stand-in test-backend-ops: prints what the real one prints in $FAKE_MODE for the
    # device named by -b.
    dev=$3
    op=$5
    echo "Testing 2 devices"
    echo
    if [ "$FAKE_MODE" = no-device ]; then
        echo "Backend 1/1: CPU"
        echo "  Skipping"
        echo "1/1 backends passed"
        exit 0
    fi
    echo "Backend 1/2: $dev"
    echo "ggml_metal_device_init: - the tensor API is not supported in this environment - disabling"
    echo "  Device description: a GPU"
    echo
    echo "  $op(type=turbo3,ne=[256,5,1,1]): OK"
    if [ "$FAKE_MODE" = unsupported ]; then
        echo "  $op(type=turbo2_64,ne=[128,5,1,1]): not supported [$dev] "
    fi
    if [ "$FAKE_MODE" = listed ] && [ "$op" = FLASH_ATTN_EXT ]; then
        echo "  $op(hsk=128,type_K=turbo3,type_V=f16,permute=[0,1,2,3]): not supported [$dev] "
    fi
    if [ "$FAKE_MODE" = empty ]; then
        echo "  0/0 tests passed"
    else
        echo "  1/1 tests passed"
    fi
    echo "  Backend $dev: OK"
    echo "Backend 2/2: CPU"
    echo "  Skipping"
    echo "2/2 backends passed"
    """)


def _backend_ops(tmp_path: Path, device: str, mode: str) -> subprocess.CompletedProcess[str]:
    """ci/backend-ops.sh on a build folder whose test-backend-ops is FAKE_BACKEND_OPS in mode."""
    fake = tmp_path / "build" / "bin" / "test-backend-ops"
    fake.parent.mkdir(parents=True)
    fake.write_text(FAKE_BACKEND_OPS)
    fake.chmod(0o755)
    return subprocess.run(
        [REPO_ROOT / "ci" / "backend-ops.sh", tmp_path / "build", device],
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_MODE": mode},
        timeout=60,
    )


@pytest.mark.parametrize("device", ["MTL0", "CUDA0"])
@pytest.mark.parametrize(
    ("mode", "status", "says"),
    [
        ("ok", 0, "every turbo case"),
        ("no-device", 1, "no device {device}"),
        ("unsupported", 1, "1 case(s) not supported on {device}"),
        ("empty", 1, "no turbo case ran"),
    ],
)
def test_backend_ops_fails_unless_every_turbo_case_ran(
    tmp_path: Path, mode: str, status: int, says: str, device: str
) -> None:
    out = _backend_ops(tmp_path, device, mode)
    assert out.returncode == status, out.stdout + out.stderr
    assert says.format(device=device) in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("device", "status", "says"),
    [
        ("MTL0", 0, "1 case(s) not supported on MTL0, as"),
        ("CUDA0", 1, "1 case(s) not supported on CUDA0"),
    ],
)
def test_backend_ops_allows_only_the_listed_unsupported_cases(
    tmp_path: Path, device: str, status: int, says: str
) -> None:
    # ci/backend-ops-unsupported.txt lists turbo K with an f16 V as Metal's, not CUDA's
    out = _backend_ops(tmp_path, device, "listed")
    assert out.returncode == status, out.stdout + out.stderr
    assert says in out.stdout + out.stderr


LIBRARY = 'const char *tq_fake_version(void) { return "fake 1.0"; }\n'
PROGRAM = textwrap.dedent("""\
    #include <stdio.h>
    const char *tq_fake_version(void);
    int main(void) { printf("version: %s\\n", tq_fake_version()); return 0; }
    """)


def _fake_build(root: Path, rpath: str) -> Path:
    """A build directory like `nox -s build` leaves, whose llama-perplexity needs a library."""
    cc = shutil.which("cc")
    if cc is None or sys.platform != "linux" or shutil.which("readelf") is None:
        pytest.skip("needs cc and readelf on Linux")
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (root / "lib.c").write_text(LIBRARY)
    (root / "main.c").write_text(PROGRAM)
    lib = bin_dir / "libtqfake.so.1"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wl,-soname,libtqfake.so.1", "-o", lib, root / "lib.c"],
        check=True,
    )
    (bin_dir / "libtqfake.so").symlink_to(lib.name)
    subprocess.run(
        [
            cc,
            "-o",
            bin_dir / "llama-perplexity",
            root / "main.c",
            f"-L{bin_dir}",
            "-ltqfake",
            f"-Wl,-rpath,{rpath}",
        ],
        check=True,
    )
    for name in ("llama-bench", "test-backend-ops"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "mul_mm.air").write_text("Metal intermediate")
    (root / "tqh-configure.json").write_text('{"options": {"backend": "cpu"}}\n')
    return root


def test_package_tools_packs_a_tarball_that_runs_where_it_is_unpacked(tmp_path: Path) -> None:
    build = _fake_build(tmp_path / "build", "$ORIGIN")
    output = tmp_path / "dist" / "tools-test.tar.gz"
    out = subprocess.run(
        [REPO_ROOT / "ci" / "package-tools.sh", "--require-relocatable", build, output],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "version: fake 1.0" in out.stdout
    with tarfile.open(output) as tar:
        names = set(tar.getnames())
        assert tar.getmember("tools-test/bin/libtqfake.so").issym()
        tar.extractall(tmp_path / "unpacked", filter="tar")
    assert {
        "tools-test/tqh-configure.json",
        "tools-test/bin/llama-perplexity",
        "tools-test/bin/llama-bench",
        "tools-test/bin/test-backend-ops",
        "tools-test/bin/libtqfake.so.1",
    } <= names
    assert "tools-test/bin/mul_mm.air" not in names
    shutil.rmtree(build)  # what an absolute rpath would still have found
    ran = subprocess.run(
        [tmp_path / "unpacked" / "tools-test" / "bin" / "llama-perplexity"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.stdout == "version: fake 1.0\n"


def test_package_tools_refuses_absolute_rpaths_when_asked(tmp_path: Path) -> None:
    build = _fake_build(tmp_path / "build", str(tmp_path / "build" / "bin"))
    output = tmp_path / "dist" / "tools-test.tar.gz"
    script = REPO_ROOT / "ci" / "package-tools.sh"
    strict = subprocess.run(
        [script, "--require-relocatable", build, output], capture_output=True, text=True, timeout=60
    )
    assert strict.returncode == 1
    assert "not relocatable" in strict.stderr and "llama-perplexity" in strict.stderr
    assert not output.exists()
    lenient = subprocess.run([script, build, output], capture_output=True, text=True, timeout=60)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "::warning title=package-tools::not relocatable" in lenient.stderr
    assert output.is_file()
