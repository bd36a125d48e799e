"""Sessions of turboquant-harness. Logic lives in harness/; each session is a thin call."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.sessions = ["build", "parity", "perplexity"]
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent


def _install(session: nox.Session, extras: str = "") -> None:
    """Install the project once per pyproject.toml state, so a no-op run stays fast."""
    spec = f".[{extras}]" if extras else "."
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + spec.encode()).hexdigest()
    marker = Path(session.virtualenv.location) / ".tqh-installed"
    if marker.is_file() and marker.read_text() == digest:
        return
    session.install("-e", spec)
    marker.write_text(digest)


def _own_posargs(session: nox.Session) -> list[str]:
    """Posargs are shared by every session of a run; a required session only takes them
    when it was named on the command line (`nox -s parity -- -k x` must not pass `-k x`
    to the build that parity requires)."""
    named = session._runner.global_config.sessions or []
    return list(session.posargs) if session.name in named else []


@nox.session
def build(session: nox.Session) -> None:
    """Fetch the pinned llama.cpp, apply patches/, build tools + kernels. Posargs: `-- --help`."""
    if not _own_posargs(session) and {"-h", "--help"} & set(session.posargs):
        session.skip("the session asked for its --help needs no build")
    _install(session)
    session.run("python", "-m", "harness", "build", *_own_posargs(session))


@nox.session(requires=["build"])
def parity(session: nox.Session) -> None:
    """Check native kernels bit-exactly against reference/. Posargs: `-- --help`."""
    _install(session)
    session.run("python", "-m", "harness", "parity", *session.posargs)


@nox.session(requires=["build"])
def perplexity(session: nox.Session) -> None:
    """Perplexity/KLD gates, report in reports/. Posargs: `-- --quick`, `-- --suite long`
    (512 to 8192 tokens of context, not in the default run), `-- --help`."""
    _install(session)
    session.run("python", "-m", "harness", "perplexity", *session.posargs)


@nox.session(requires=["build"], default=False)
def bench(session: nox.Session) -> None:
    """Speed and KV memory per cache type as ratios to f16 (slow). Posargs: `-- --help`."""
    _install(session)
    session.run("python", "-m", "harness", "bench", *session.posargs)


@nox.session(default=False)
def state(session: nox.Session) -> None:
    """KV cache save/restore for pairs of K/V types (files, sequences, server slots, refusals).
    Posargs: `-- --help`; `-- --configs all` for the 49 pairs."""
    _install(session)
    session.run("python", "-m", "harness", "build", "--state-tools")
    session.run("python", "-m", "harness", "state", *session.posargs)


@nox.session(default=False)
def needle(session: nox.Session) -> None:
    """Pass-key retrieval at depth per cache configuration, gated against q4_0's loss
    (gates.toml [needle]). Posargs: `-- --lengths 2048`, `-- --help`."""
    _install(session)
    session.run("python", "-m", "harness", "build", "--state-tools")
    session.run("python", "-m", "harness", "needle", *session.posargs)


@nox.session(default=False)
def text(session: nox.Session) -> None:
    """The pinned texts into the cache, verified. Posargs: `-- --deb PATH` (no apt-get)."""
    _install(session)
    session.run("python", "-m", "harness", "text", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite. Posargs go to pytest (e.g. `-- -k patches -x`)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint and format-check the Python code. Posargs: none."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def patches(session: nox.Session) -> None:
    """Manage the patch series. Posargs: `apply` | `export` | `check` (default check)."""
    _install(session)
    session.run("python", "-m", "harness", "patches", *(session.posargs or ["check"]))
