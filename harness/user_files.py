"""The user's own model and text, given by path: ``perplexity --model-file`` and ``--text``.

Both are checked before anything runs (a missing path is a ConfigError, exit 11; a file
that is not a GGUF, or a text that is empty, binary or not UTF-8, is a ModelError, exit 22)
and hashed, so the f16 base logits are cached by what the files hold, never by their names:
an edited file gets new base logits. A text is copied into the cache under its sha256 and
the runs read that copy, so every run of a suite reads the bytes the cache key names even
when the original changes meanwhile. A model is read in place (it may be many GB); what
llama.cpp makes of it (architecture, heads, head sizes) comes from its own log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from harness.config import Paths
from harness.digest import sha256_bytes, sha256_file
from harness.errors import ConfigError, ModelError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class UserFile:
    """A file the user named: ``given`` (resolved), ``path`` (what the runs read: the same
    file for a model, the cache's copy for a text), its sha256 (64 hex digits) and its size
    in bytes."""

    given: Path
    path: Path
    sha256: str
    size: int


def _existing(path: Path, option: str, what: str) -> Path:
    """``path`` resolved; raises ConfigError (exit 11) when it is missing or not a file."""
    resolved = path.expanduser().resolve()
    if not resolved.exists():
        raise ConfigError(
            f"{option} {path}: no such file",
            hint=f"give the path of {what} (relative paths start where the command runs)",
        )
    if not resolved.is_file():
        raise ConfigError(f"{option} {path}: not a file", hint=f"give the path of {what}")
    return resolved


def _unreadable(option: str, path: Path, exc: OSError) -> ModelError:
    return ModelError(
        f"{option} {path}: cannot read it ({exc.strerror or exc})",
        hint="check the file's permissions, or copy it somewhere this user can read",
    )


def check_model(path: Path) -> Path:
    """``path`` resolved, once it is a file that starts with the GGUF magic bytes (4 bytes
    read). Raises ConfigError (exit 11) when there is no file at ``path``, and ModelError
    (exit 22) when it cannot be read or starts with other bytes."""
    option = "--model-file"
    resolved = _existing(path, option, "a GGUF model file")
    try:
        with resolved.open("rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise _unreadable(option, path, exc) from exc
    if head != GGUF_MAGIC:
        shown = repr(head) if head else "nothing (the file is empty)"
        raise ModelError(
            f"{option} {path} is not a GGUF file: it starts with {shown}, "
            f"a GGUF with {GGUF_MAGIC!r}",
            hint="give a model in llama.cpp's GGUF format (convert_hf_to_gguf.py in "
            "llama.cpp converts Hugging Face checkpoints)",
        )
    return resolved


def model_file(path: Path) -> UserFile:
    """The GGUF model at ``path``, checked (``check_model``) and hashed; every run reads it
    in place. Raises what ``check_model`` raises, and ModelError (exit 22) when reading it
    fails. Whether llama.cpp can load the rest (a truncated file, an unknown architecture)
    shows in the first run, which then ends in a ModelError with llama.cpp's reason."""
    resolved = check_model(path)
    try:
        digest, size = sha256_file(resolved, f"sha256 of {resolved.name}")
    except OSError as exc:
        raise _unreadable("--model-file", path, exc) from exc
    return UserFile(given=resolved, path=resolved, sha256=digest, size=size)


def model_name(path: Path, taken: tuple[str, ...]) -> str:
    """The name a user model has in logs, cache entries and the report: its file name without
    ``.gguf``, in letters, digits, ``.``, ``_`` and ``-``; ``-file`` is added when that is a
    name of ``taken`` (models.toml's), whose gates for one model must not judge another."""
    stem = path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
    return f"{name}-file" if name in taken else name


def _decode_error(data: bytes, exc: UnicodeDecodeError) -> str:
    bad = data[exc.start : exc.start + 1].hex()
    return f"byte 0x{bad} at offset {exc.start} is not UTF-8 ({exc.reason})"


def check_text(data: bytes, where: str) -> None:
    """Raises ModelError (exit 22) unless ``data`` is text llama-perplexity can score: not
    empty or only whitespace, no NUL byte (a binary file), valid UTF-8. The message names
    ``where`` and the offset (bytes) of the first bad byte."""
    hint = "give a UTF-8 text file (`iconv -t UTF-8` converts other encodings)"
    if not data:
        raise ModelError(f"{where} is empty (0 bytes)", hint="give a text with some prose in it")
    if (nul := data.find(b"\0")) >= 0:
        raise ModelError(
            f"{where} is not text: it holds a NUL byte at offset {nul} (a binary file?)",
            hint=hint,
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(
            f"{where} is not UTF-8 text: {_decode_error(data, exc)}", hint=hint
        ) from None
    if not text.strip():
        raise ModelError(
            f"{where} holds only whitespace ({len(data)} bytes)",
            hint="give a text with some prose in it",
        )


def text_file(paths: Paths, path: Path) -> UserFile:
    """The UTF-8 text at ``path``, checked (``check_text``) and copied into the cache as
    ``text/user/<sha256>.txt`` (written under a temporary name, then renamed), which the runs
    read. Raises ConfigError (exit 11) when there is no file at ``path``, ModelError (exit 22)
    when it cannot be read or is not text."""
    option = "--text"
    resolved = _existing(path, option, "a UTF-8 text file")
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise _unreadable(option, path, exc) from exc
    check_text(data, f"{option} {path}")
    digest = sha256_bytes(data)
    copy = paths.cache / "text" / "user" / f"{digest}.txt"
    if not (copy.is_file() and copy.read_bytes() == data):
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f"{copy.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, copy)
        finally:
            tmp.unlink(missing_ok=True)
    return UserFile(given=resolved, path=copy, sha256=digest, size=len(data))
