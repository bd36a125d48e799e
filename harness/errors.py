"""One error hierarchy for the harness.

Every failure class has its own process exit code and a one-line hint that tells the user
what to do next. ``harness.cli.main`` maps an escaped error to ``exit_code`` and prints the
message, then the hint, so scripts (and CI) can tell a patch conflict from a build failure.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class; never raised directly."""

    exit_code = 10
    hint = "read the message above; the full log path is printed with it"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.args[0]


class ConfigError(HarnessError):
    """A lock file, option or path given to the harness is wrong."""

    exit_code = 11
    hint = "fix the option or the file named above (`nox -s SESSION -- --help` lists the options)"


class ToolMissing(HarnessError):
    """An external program the harness needs is not installed."""

    exit_code = 12
    hint = "install the named tool (README.md lists what a fresh machine needs)"


class FetchError(HarnessError):
    """Downloading or cloning the pinned upstream failed."""

    exit_code = 13
    hint = "check the network or pass --source PATH to use a local llama.cpp checkout"


class IntegrityError(HarnessError):
    """What was fetched does not match the pin (hash or commit), even after a refetch."""

    exit_code = 14
    hint = "the pin in upstream.toml or the package index disagrees; do not build from it"


class CacheLocked(HarnessError):
    """Another harness run holds the cache lock."""

    exit_code = 15
    hint = "wait for the other run to finish, or remove the stale lock file named above"


class PatchConflict(HarnessError):
    """A patch of the series does not apply to the pinned upstream."""

    exit_code = 16
    hint = (
        "rebase the named patch in build/llama.cpp (git am --3way), then `nox -s patches -- export`"
    )


class StalePatches(HarnessError):
    """patches/ does not match the commits of the work checkout."""

    exit_code = 17
    hint = "run `nox -s patches -- export` and commit the changed files in patches/"


class DirtyCheckout(HarnessError):
    """The work checkout holds changes that applying the series would destroy."""

    exit_code = 18
    hint = "commit your edits in build/llama.cpp and run `nox -s patches -- export`, or stash them"


class BuildError(HarnessError):
    """cmake or ninja failed."""

    exit_code = 19
    hint = "read the compiler error in the log tail above; the full log path is printed with it"


class ParityError(HarnessError):
    """Native code disagrees with the numpy reference."""

    exit_code = 20
    hint = "replay the failing case by its name with `nox -s parity -- -k NAME`"


class GateFailed(HarnessError):
    """A quality gate failed (perplexity, KL divergence, retrieval)."""

    exit_code = 21
    hint = "the failing gate names its line in gates.toml; read the report before relaxing it"


class ModelError(HarnessError):
    """A model or text corpus is missing, corrupt or unreadable."""

    exit_code = 22
    hint = "rerun to refetch it; if it persists, the pinned package changed upstream"


class CommandFailed(HarnessError):
    """An external command failed for a reason no narrower class covers."""

    exit_code = 23


ALL_ERRORS: tuple[type[HarnessError], ...] = (
    ConfigError,
    ToolMissing,
    FetchError,
    IntegrityError,
    CacheLocked,
    PatchConflict,
    StalePatches,
    DirtyCheckout,
    BuildError,
    ParityError,
    GateFailed,
    ModelError,
    CommandFailed,
)


def exit_code_lines() -> list[tuple[int, str, str]]:
    """(exit code, class name, first docstring line) of every failure class, by code: the
    one source of the exit-code list in ``python -m harness --help`` and README.md."""
    return sorted(
        (c.exit_code, c.__name__, (c.__doc__ or "").strip().splitlines()[0]) for c in ALL_ERRORS
    )


def exit_codes_text() -> str:
    """The exit codes as ``--help`` prints them, one class per line."""
    rows = [
        (0, "", "success"),
        (2, "", "usage: an option argparse rejects"),
        (130, "", "interrupted (Ctrl-C)"),
    ]
    rows += exit_code_lines()
    return "exit codes:\n" + "\n".join(
        f"  {code:3d}  {name:15s} {what}" for code, name, what in sorted(rows)
    )


def exit_codes_markdown() -> str:
    """README.md's exit-code table (tests/test_cli_errors.py keeps the README equal to it)."""
    lines = ["| code | class | meaning |", "|---|---|---|"]
    lines += [f"| {code} | {name} | {what} |" for code, name, what in exit_code_lines()]
    return "\n".join(lines)
