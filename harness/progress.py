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

    def ninja(self, line: str) -> None:
        m = NINJA_STEP.match(line)
        if not m:
            return
        done, total = int(m.group(1)), int(m.group(2))
        elapsed = time.monotonic() - self._start
        eta = elapsed / done * (total - done) if done else 0.0
        width = 30
        bar = "#" * (width * done // total) + "-" * (width - width * done // total)
        self._emit(
            f"{self.label} [{bar}] {done}/{total} {_fmt(elapsed)} elapsed, ~{_fmt(eta)} left",
            force=done == total,
        )

    def done(self, summary: str) -> None:
        if self._shown:
            self.stream.write("\n")
        self.stream.write(f"{self.label}: {summary} in {time.monotonic() - self._start:.1f} s\n")
        self.stream.flush()
