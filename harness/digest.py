"""SHA-256 of files and bytes: the one digest helper of the harness (pins, caches, reports)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.progress import Progress

CHUNK = 4 << 20  # bytes read per step: a model file can be many GB


def sha256_bytes(data: bytes) -> str:
    """The sha256 of ``data`` as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, label: str | None = None) -> tuple[str, int]:
    """The sha256 (64 hex digits) and size in bytes of the file ``path``, read in 4 MiB
    steps, behind a progress line named ``label`` when one is given. Raises OSError when the
    file cannot be read."""
    h = hashlib.sha256()
    total = max(path.stat().st_size, 1)
    progress = Progress(label, every=10.0) if label else None
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            done += len(block)
            if progress:
                eta = progress.elapsed / done * (total - done)
                progress.steps(min(done * 100 // total, 100), 100, eta)
    if progress:
        progress.done(f"{done / 2**20:.1f} MiB")
    return h.hexdigest(), done
