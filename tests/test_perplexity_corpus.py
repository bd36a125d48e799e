"""The evaluation text: fixed normalization rules, and the pinned package gives pinned bytes."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from harness.config import REPO_ROOT, Paths
from harness.corpus import TextPin, cut, deb_member, ensure_text, extract, normalize
from harness.errors import ModelError
from harness.models import load_lock

RAW = """Title
1 Chapter
  1.1 Section

Title
*****

First paragraph, wrapped
over   two lines.

1.1 Section
===========

   Indented	second
paragraph.
"""


def test_normalize_drops_contents_and_rules_and_joins_paragraphs() -> None:
    assert normalize(RAW) == (
        "Title\n\nFirst paragraph, wrapped over two lines.\n\n1.1 Section\n\n"
        "Indented second paragraph.\n"
    )


def test_cut_ends_at_a_paragraph_or_a_word() -> None:
    text = "alpha beta gamma\n\ndelta epsilon zeta eta theta\n"
    assert cut(text, 1000) == text.encode()
    assert cut(text, 24) == b"alpha beta gamma\n"
    assert cut("one two three four five six", 16) == b"one two three\n"


def _deb(files: dict[str, bytes]) -> bytes:
    """A minimal Debian package: ar archive with a data.tar.xz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buf.getvalue())]
    out = b"!<arch>\n"
    for name, body in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n"
        out += header.encode() + body + (b"\n" if len(body) % 2 else b"")
    return out


def test_deb_member_reads_the_data_archive() -> None:
    deb = _deb({"usr/share/doc/x/a.txt": b"hello", "usr/share/doc/x/b.txt": b"odd"})
    assert deb_member(deb, "usr/share/doc/x/b.txt") == b"odd"
    with pytest.raises(ModelError, match="not in the package"):
        deb_member(deb, "usr/share/doc/x/c.txt")
    with pytest.raises(ModelError, match="not a Debian package"):
        deb_member(b"PK\x03\x04", "a")


@pytest.fixture(scope="module")
def pin() -> TextPin:
    return load_lock(REPO_ROOT / "models.toml").text


def test_pinned_text_is_extracted_to_the_same_bytes_twice(pin: TextPin) -> None:
    """Fetches the pinned .deb with apt-get into the cache when it is not there yet."""
    paths = Paths.default()
    text = ensure_text(paths, pin)
    deb = (paths.cache / "text" / pin.deb_name).read_bytes()
    assert hashlib.sha256(deb).hexdigest() == pin.sha256
    first, second = extract(deb, pin), extract(deb, pin)
    assert first == second == text.path.read_bytes()
    assert hashlib.sha256(first).hexdigest() == pin.text_sha256
    assert len(first) <= pin.size
    assert first.startswith(b"GNU Coding Standards\n\nThe GNU coding standards, last updated")
    assert first.decode("ascii").isascii()


def _isolated_cli(tmp_path, monkeypatch):
    from harness import cli

    monkeypatch.setenv("TQH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TQH_BUILD_DIR", str(tmp_path / "build"))
    return cli


def test_text_from_a_given_deb_needs_no_apt(tmp_path, monkeypatch, capsys) -> None:
    """`python -m harness text --deb PATH` (what CI runs): the pinned package by path goes
    into the cache and both pinned texts come out of it, with apt-get nowhere on PATH."""
    lock = load_lock(REPO_ROOT / "models.toml")
    deb = Paths.default().cache / "text" / lock.text.deb_name
    if not deb.is_file():
        ensure_text(Paths.default(), lock.text)  # apt-get download, once per machine
    given = tmp_path / "given"
    given.mkdir()
    (given / deb.name).write_bytes(deb.read_bytes())
    cli = _isolated_cli(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    assert cli.main(["text", "--deb", str(given)]) == 0
    out = capsys.readouterr().out
    assert (
        f"sha256 {lock.text.text_sha256}" in out and f"sha256 {lock.long_text.text_sha256}" in out
    )
    assert (tmp_path / "cache" / "text" / deb.name).read_bytes() == deb.read_bytes()


def test_text_refuses_a_deb_that_is_not_the_pin(tmp_path, monkeypatch, capsys) -> None:
    """Another build of the package (e.g. Ubuntu's) is refused with exit 14, and nothing is
    put into the cache; a path with no package is exit 11."""
    lock = load_lock(REPO_ROOT / "models.toml")
    other = tmp_path / lock.text.deb_name
    other.write_bytes(b"!<arch>\nnot debian's bytes\n")
    cli = _isolated_cli(tmp_path, monkeypatch)
    assert cli.main(["text", "--deb", str(other)]) == 14
    err = capsys.readouterr().err
    assert f"models.toml pins {lock.text.sha256}" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "text").exists() or not any(
        (tmp_path / "cache" / "text").iterdir()
    )
    assert cli.main(["text", "--deb", str(tmp_path / "nowhere")]) == 11
    assert f"no file {'nowhere'}" in capsys.readouterr().err
