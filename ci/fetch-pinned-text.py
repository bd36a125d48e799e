#!/usr/bin/env python3
"""Put the text package pinned in models.toml into the harness cache, from Debian's archive.

`nox -s perplexity` fetches it with `apt-get download`, which cannot work on a CI runner:
Ubuntu's apt serves Ubuntu's own rebuild of the package (other bytes, which the pin
refuses) and macOS has no apt. The harness verifies the hash again when it reads the file.
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.config import default_cache_dir  # noqa: E402  (the repository root, not installed)

ARCHIVE = "https://deb.debian.org/debian/pool/main"


def main() -> int:
    pin = tomllib.loads((ROOT / "models.toml").read_text(encoding="utf-8"))["text"]
    name = f"{pin['package']}_{pin['version']}_all.deb"
    target = default_cache_dir() / "text" / name
    print(f"::group::{name} into {target.parent}")
    try:
        if target.is_file() and _sha256(target.read_bytes()) == pin["sha256"]:
            print(f"{target} is already there and matches the pin")
            return 0
        # Debian's pool is laid out by source package; this one's source has its binary's name.
        url = f"{ARCHIVE}/{pin['package'][0]}/{pin['package']}/{name}"
        print(f"downloading {url}")
        with urllib.request.urlopen(url, timeout=120) as response:
            data = response.read()
        digest = _sha256(data)
        if digest != pin["sha256"]:
            print(
                f"::error title=pinned text::{url} has sha256 {digest}, "
                f"models.toml pins {pin['sha256']}"
            )
            return 1
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(data)
        partial.replace(target)
        print(f"wrote {target} ({len(data)} bytes, sha256 {digest})")
        return 0
    finally:
        print("::endgroup::")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
