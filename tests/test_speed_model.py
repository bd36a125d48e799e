"""The speed model's shapes and the truncation's limits (the files themselves are loaded by
llama.cpp in test_llama_build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from harness import models, speed_model
from harness.errors import ToolMissing
from harness.speed_model import SpeedShape, truncate_layers


def test_default_shape_is_the_one_issue_10_measures() -> None:
    s = SpeedShape()
    assert (s.n_head, s.n_head_kv, s.head_dim, s.n_layer) == (16, 8, 128, 16)
    assert s.kv_bytes_per_token == 64 * 1024
    # Other head sizes keep the KV bytes per token, so depths compare across them.
    assert SpeedShape(head_dim=64).kv_bytes_per_token == s.kv_bytes_per_token
    assert (SpeedShape(head_dim=256).n_head, SpeedShape(head_dim=256).n_head_kv) == (8, 4)


@pytest.mark.parametrize("head_dim", [96, 512])
def test_head_sizes_without_a_kernel_are_refused(head_dim: int) -> None:
    with pytest.raises(ValueError, match="head_dim"):
        SpeedShape(head_dim=head_dim)


def _two_layer_gguf(path: Path) -> None:
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(2)
    w.add_embedding_length(8)
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.full(8, i, np.float32))
    w.add_tensor("output_norm.weight", np.ones(8, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_truncation_keeps_the_first_blocks_and_every_key(tmp_path: Path) -> None:
    src, out = tmp_path / "two.gguf", tmp_path / "one.gguf"
    _two_layer_gguf(src)
    truncate_layers(src, out, 1)
    r = gguf.GGUFReader(out)
    assert r.fields["llama.block_count"].contents() == 1
    assert r.fields["llama.embedding_length"].contents() == 8
    assert [t.name for t in r.tensors] == ["blk.0.attn_norm.weight", "output_norm.weight"]
    assert np.array_equal(r.tensors[0].data, np.zeros(8, np.float32))


@pytest.mark.parametrize("layers", [0, 2, 3])
def test_truncation_to_no_fewer_layers_is_refused(tmp_path: Path, layers: int) -> None:
    src = tmp_path / "two.gguf"
    _two_layer_gguf(src)
    with pytest.raises(ValueError, match="keep between 1 and 1"):
        truncate_layers(src, tmp_path / "out.gguf", layers)
    assert not (tmp_path / "out.gguf").exists()


def test_without_gguf_py_the_module_ends_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A machine without a package index may lack gguf (GPU run 16 ended in a traceback):
    # the error names what to install, with ToolMissing's exit code.
    monkeypatch.setitem(sys.modules, "gguf", None)
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF")
    assert speed_model.main(["tokenizer", str(src), str(tmp_path / "tok.json.gz")]) == 12
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install gguf" in err and "gguf-py" in err
    with pytest.raises(ToolMissing, match="gguf-py"):
        models.read_info(src)
