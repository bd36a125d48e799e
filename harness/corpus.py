"""The evaluation text: the GNU Coding Standards from Debian's ``gnu-standards`` package.

There is no wikitext in the registries this project may use; this is real English prose
(GFDL), shipped as plain text in a package whose bytes a hash pins. The ``.deb`` is fetched
with ``apt-get download`` (no install, no root needed for the download itself), read with
Python (``ar`` + ``tar.xz``) so no ``dpkg`` is needed, and normalized by fixed rules, so the
same package gives the same bytes on every machine.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.config import Paths
from harness.digest import sha256_bytes
from harness.errors import CommandFailed, ConfigError, IntegrityError, ModelError, ToolMissing


@dataclass(frozen=True)
class TextPin:
    """The pinned text of models.toml: a Debian package (.deb sha256), the member file in
    it, and the size (bytes) and sha256 of the normalized text the runs use."""

    package: str
    version: str
    sha256: str  # of the .deb
    member: str  # path inside the package's data archive
    size: int  # bytes of normalized text the runs use
    text_sha256: str  # of those bytes

    @property
    def deb_name(self) -> str:
        """The .deb file name apt-get download writes."""
        return f"{self.package}_{self.version}_all.deb"


@dataclass(frozen=True)
class Text:
    """The normalized text file in the cache, verified: path, sha256, size in bytes."""

    path: Path
    sha256: str
    size: int
    pin: TextPin


def deb_member(deb: bytes, member: str) -> bytes:
    """One file of a .deb: an ``ar`` archive whose ``data.tar.*`` holds the package tree."""
    if not deb.startswith(b"!<arch>\n"):
        raise ModelError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are 2-byte aligned
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                for info in tar.getmembers():
                    if info.name.lstrip("./") == member.lstrip("./") and info.isfile():
                        extracted = tar.extractfile(info)
                        assert extracted is not None
                        return extracted.read()
            raise ModelError(f"{member} is not in the package's data archive")
    raise ModelError("the package has no data archive")


HEADING_RULE = re.compile(r"^[*=\-.]{3,}$")
WHITESPACE = re.compile(r"\s+")


def normalize(raw: str) -> str:
    """Paragraphs on one line each, separated by a blank line, texinfo rules dropped.

    The table of contents is skipped (the body starts at the title underlined with
    asterisks) so the text is prose, not a list of headings.
    """
    lines = raw.splitlines()
    start = next(
        (i for i in range(len(lines) - 1) if lines[i + 1].startswith("***") and lines[i].strip()),
        0,
    )
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines[start:]:
        if HEADING_RULE.match(line.strip()):
            continue
        if line.strip():
            current.append(line)
            continue
        if current:
            paragraphs.append(WHITESPACE.sub(" ", " ".join(current)).strip())
            current = []
    if current:
        paragraphs.append(WHITESPACE.sub(" ", " ".join(current)).strip())
    return "\n\n".join(paragraphs) + "\n"


def cut(text: str, size: int) -> bytes:
    """The first ``size`` bytes or fewer, ending at a paragraph or word boundary."""
    data = text.encode("utf-8")
    if len(data) <= size:
        return data
    head = data[:size]
    end = head.rfind(b"\n\n")
    if end < size // 2:
        end = head.rfind(b" ")
    return head[:end].rstrip() + b"\n"


def extract(deb: bytes, pin: TextPin) -> bytes:
    """The pinned member of ``deb``, gunzipped if needed, normalized and cut to ``pin.size``
    bytes; raises ModelError when the member is missing."""
    raw = deb_member(deb, pin.member)
    if pin.member.endswith(".gz"):
        raw = gzip.decompress(raw)
    return cut(normalize(raw.decode("utf-8")), pin.size)


def _download(pin: TextPin, directory: Path, log: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / pin.deb_name
    if target.is_file():
        return target
    try:
        apt = proc.which("apt-get")
    except ToolMissing as exc:
        raise ModelError(
            f"apt-get is not available to fetch the text package {pin.package}={pin.version}",
            hint=f"on a non-Debian machine, copy {pin.deb_name} (sha256 {pin.sha256}) from a "
            f"Debian mirror into {directory}",
        ) from exc
    cmd = [apt, "download", f"{pin.package}={pin.version}"]
    what = f"download the text package {pin.package}={pin.version}"
    try:
        proc.run(cmd, cwd=directory, log=log, what=what)
    except CommandFailed:
        # A fresh machine has no package lists yet; root can fetch them, others are told to.
        if os.geteuid() != 0:
            raise ModelError(
                f"apt-get could not {what}",
                hint="run `sudo apt-get update`, then rerun",
            ) from None
        proc.run([apt, "update"], log=log, what="update the package lists")
        proc.run(cmd, cwd=directory, log=log, error=ModelError, what=what)
    if not target.is_file():
        raise ModelError(f"apt-get did not leave {target.name} in {directory}")
    return target


def add_deb(paths: Paths, pin: TextPin, given: Path) -> Path:
    """Put the pinned package ``given`` (the .deb, or a folder holding ``pin.deb_name``) into
    the cache's text/, where ensure_text finds it instead of calling apt-get: for machines
    without apt (macOS) and CI runners whose apt serves another build of the package.
    Raises ConfigError (exit 11) when there is no such file and IntegrityError (exit 14)
    when its sha256 is not the pin's; the cache is then left as it was."""
    deb = given / pin.deb_name if given.is_dir() else given
    if not deb.is_file():
        raise ConfigError(
            f"--deb {given}: no file {deb.name} there",
            hint=f"give the path of {pin.deb_name} (`apt-get download "
            f"{pin.package}={pin.version}` on a Debian machine writes it)",
        )
    data = deb.read_bytes()
    digest = sha256_bytes(data)
    if digest != pin.sha256:
        raise IntegrityError(
            f"{deb} has sha256 {digest}, models.toml pins {pin.sha256} for {pin.deb_name}",
            hint="take the package from Debian itself (another distribution's rebuild has "
            "other bytes)",
        )
    target = paths.cache / "text" / pin.deb_name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def ensure_text(paths: Paths, pin: TextPin) -> Text:
    """The normalized text file in the cache, made afresh from the verified package."""
    directory = paths.cache / "text"
    out = directory / f"{pin.package}-{pin.version}-{pin.size}.txt"
    log = paths.logs / "text.log"
    for attempt in (1, 2):
        deb = _download(pin, directory, log)
        digest = sha256_bytes(deb.read_bytes())
        if digest == pin.sha256:
            break
        deb.unlink()
        if attempt == 2:
            raise ModelError(
                f"{pin.deb_name} has sha256 {digest}, the pin in models.toml says {pin.sha256}"
            )
    text = extract(deb.read_bytes(), pin)
    digest = sha256_bytes(text)
    if digest != pin.text_sha256:
        raise ModelError(
            f"the normalized text of {pin.deb_name} has sha256 {digest}, the pin says "
            f"{pin.text_sha256}: the extraction rules changed",
            hint="if harness/corpus.py changed on purpose, update text_sha256 in models.toml",
        )
    if out.is_file() and out.read_bytes() == text:
        return Text(out, digest, len(text), pin)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(text)
    shutil.move(tmp, out)
    return Text(out, digest, len(text), pin)
