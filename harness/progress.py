"""Progress displays for the long steps (download, build) on a terminal or in a CI log."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field

NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Progress:
    """One status line: rewritten in place on a TTY, printed every ``every`` s elsewhere."""

    label: str
    every: float = 15.0
    stream = sys.stderr
    _start: float = field(default_factory=time.monotonic)
    _last: float = 0.0
    _shown: bool = False
    _done: int = 0
    _finished: bool = False

    def _emit(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.stream.isatty():
            self.stream.write(f"\r\x1b[2K{text}")
            self.stream.flush()
            self._shown = True
        elif force or now - self._last >= self.every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = now

    def tick(self, line: str = "") -> None:
        """Heartbeat for steps with no measurable progress (pip download)."""
        self._emit(f"{self.label}: {_fmt(time.monotonic() - self._start)} elapsed")

    @property
    def elapsed(self) -> float:
        """Seconds since the step started."""
        return time.monotonic() - self._start

    def ninja(self, line: str) -> None:
        """Feed one line of ninja's output; its ``[n/m]`` moves the bar and the ETA."""
        m = NINJA_STEP.match(line)
        if not m:
            return
        done, total = int(m.group(1)), int(m.group(2))
        self.steps(done, total, self.elapsed / done * (total - done) if done else 0.0)

    def steps(self, done: int | None, total: int, eta: float | None) -> None:
        """``done`` of ``total`` with a bar; ``done=None`` keeps the last count (heartbeat)."""
        if done is not None:
            self._done = done
        done = self._done
        width = 30
        bar = "#" * (width * done // total) + "-" * (width - width * done // total)
        left = "" if eta is None else f", ~{_fmt(eta)} left"
        finished = done == total and not self._finished
        self._finished = self._finished or finished
        self._emit(
            f"{self.label} [{bar}] {done}/{total} {_fmt(self.elapsed)} elapsed{left}",
            force=finished,
        )

    def done(self, summary: str) -> None:
        """End the line with ``summary`` and the step's time in seconds."""
        if self._shown:
            self.stream.write("\n")
        self.stream.write(f"{self.label}: {summary} in {time.monotonic() - self._start:.1f} s\n")
        self.stream.flush()
