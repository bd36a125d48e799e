"""Inter-process locks: an exclusive one, so two runs never write the same cache or checkout,
and a shared one that marks a cache entry in use, so no other run evicts it meanwhile."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.config import environment
from harness.errors import CacheLocked


@contextmanager
def exclusive(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an flock on ``path``; the kernel drops it if the holder dies, so no stale locks.
    Waits up to ``timeout`` seconds (default TQH_LOCK_TIMEOUT, 1800), then raises
    CacheLocked (exit 15)."""
    if timeout is None:
        timeout = environment().lock_timeout_s
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CacheLocked(
                        f"{path} is held by another run (waited {timeout:.0f} s)"
                    ) from None
                if not announced:
                    print(f"waiting for the lock {path} ...", flush=True)
                    announced = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@contextmanager
def in_use(path: Path) -> Iterator[None]:
    """Hold a shared flock on ``path`` (an entry's lock file): any number of runs may use the
    entry at once, and ``unused`` fails for all of them until the last lets go. Waits only
    while an eviction holds the entry (the time of one rmtree)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def unused(path: Path) -> Iterator[bool]:
    """Whether no run holds ``path`` through ``in_use``; while True, none can start to (the
    caller may delete the entry). Never waits."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)
