"""Random-weight llama GGUF files for measuring speed on shapes the real models lack.

Speed needs no trained weights (quality does, and uses the real models), only the shape of
the attention and a vocabulary llama.cpp can load. The default shape is the one issue 10
measures the GPU on: 16 layers, n_embd 2048, head_dim 128 with 16 query / 8 KV heads (GQA
2), n_ff 2048, f16 weights: 1.0 GB of weights and 64 KiB of f16 KV cache per token. Other
head sizes keep n_embd and the KV bytes per token (head_dim 64: 32/16 heads; 256: 8/4).
The vocabulary (49,152 tokens, byte-level BPE) is SmolLM2's, copied from its GGUF.

    python -m harness.speed_model tokenizer SmolLM2.gguf tok.json.gz   (~0.5 MB)
    python -m harness.speed_model write tok.json.gz model.gguf [--head-dim 128]
    python -m harness.speed_model truncate model.gguf small.gguf --layers 16

`truncate` keeps the first layers of a real model (its trained weights, its attention), so
the same file can be carried to a GPU machine and compared there with the CPU: quality on
both backends from one file when the whole model is too large to carry.

Run as a module it needs only numpy and gguf-py (llama.cpp's gguf-py/ on PYTHONPATH is
enough), so it also runs on a GPU machine without a package index.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import gguf_py
from harness.errors import HarnessError

TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
)


@dataclass(frozen=True)
class SpeedShape:
    """A llama model's shape. Sizes in values; ``kv_bytes_per_token`` in bytes at f16."""

    head_dim: int = 128
    n_layer: int = 16
    n_embd: int = 2048
    n_ff: int = 2048
    gqa: int = 2
    n_ctx_train: int = 131072

    @property
    def n_head(self) -> int:
        """Query heads: n_embd / head_dim."""
        return self.n_embd // self.head_dim

    @property
    def n_head_kv(self) -> int:
        """KV heads: query heads / GQA ratio."""
        return self.n_head // self.gqa

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of an f16 KV cache per token: K and V, every layer and KV head."""
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * 2

    def __post_init__(self) -> None:
        if self.head_dim not in (64, 128, 256) or self.n_embd % (self.head_dim * self.gqa):
            raise ValueError(
                f"head_dim {self.head_dim} with n_embd {self.n_embd} and GQA {self.gqa} "
                "is not a whole number of KV heads (head_dim must be 64, 128 or 256)"
            )


def export_tokenizer(src: Path, out: Path) -> int:
    """Copy the tokenizer keys of GGUF ``src`` into gzipped JSON ``out``; return the
    vocabulary size (tokens). Raises KeyError when ``src`` lacks one of them."""
    fields = gguf_py.load().GGUFReader(src).fields
    data = {key: fields[key].contents() for key in TOKENIZER_KEYS}
    out.write_bytes(gzip.compress(json.dumps(data).encode(), mtime=0))
    return len(data["tokenizer.ggml.tokens"])


def write_model(tokenizer: Path, out: Path, shape: SpeedShape, seed: int = 0) -> int:
    """Write a llama GGUF of ``shape`` with N(0, 0.02²) f16 weights (unit f32 norms) and the
    tokenizer of ``tokenizer`` (from export_tokenizer); return the file size in bytes."""
    gguf = gguf_py.load()

    tok = json.loads(gzip.decompress(tokenizer.read_bytes()))
    n_vocab = len(tok["tokenizer.ggml.tokens"])
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    s = shape
    w = gguf.GGUFWriter(out, "llama")
    w.add_name(f"turboquant-harness speed model hd{s.head_dim}")
    w.add_context_length(s.n_ctx_train)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layer)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_key_length(s.head_dim)
    w.add_value_length(s.head_dim)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model(tok["tokenizer.ggml.model"])
    w.add_tokenizer_pre(tok["tokenizer.ggml.pre"])
    w.add_token_list(tok["tokenizer.ggml.tokens"])
    w.add_token_types(tok["tokenizer.ggml.token_type"])
    w.add_token_merges(tok["tokenizer.ggml.merges"])
    w.add_bos_token_id(tok["tokenizer.ggml.bos_token_id"])
    w.add_eos_token_id(tok["tokenizer.ggml.eos_token_id"])
    w.add_unk_token_id(tok["tokenizer.ggml.unknown_token_id"])
    w.add_pad_token_id(tok["tokenizer.ggml.padding_token_id"])
    w.add_add_bos_token(tok["tokenizer.ggml.add_bos_token"])
    w.add_add_space_prefix(tok["tokenizer.ggml.add_space_prefix"])

    ones = np.ones(s.n_embd, np.float32)
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    w.add_tensor("token_embd.weight", weight(n_vocab, s.n_embd))
    for i in range(s.n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(q_dim, s.n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_dim, s.n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_dim, s.n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", weight(s.n_embd, q_dim))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(s.n_ff, s.n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(s.n_ff, s.n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weight(s.n_embd, s.n_ff))
    w.add_tensor("output_norm.weight", ones)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out.stat().st_size


def truncate_layers(src: Path, out: Path, n_layer: int) -> int:
    """Copy GGUF ``src`` to ``out`` with only blocks 0 .. n_layer-1 (every key kept, the
    block count changed); return the file size in bytes. Raises ValueError when ``src`` has
    no more than ``n_layer`` blocks."""
    gguf = gguf_py.load()

    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    have = reader.fields[count_key].contents()
    if n_layer <= 0 or n_layer >= have:
        raise ValueError(f"{src} has {have} layers; keep between 1 and {have - 1}")
    writer = gguf.GGUFWriter(out, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = n_layer if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    kept = [
        t
        for t in reader.tensors
        if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < n_layer
    ]
    for t in kept:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in kept:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return out.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.speed_model tokenizer|write|truncate ...``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m harness.speed_model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tokenizer", help="copy a GGUF's tokenizer into gzipped JSON")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("write", help="write a random-weight llama GGUF")
    p.add_argument("tokenizer", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--head-dim", type=int, default=128, choices=(64, 128, 256))
    p = sub.add_parser("truncate", help="keep the first layers of a GGUF model")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--layers", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "tokenizer":
            print(f"{args.out}: {export_tokenizer(args.src, args.out)} tokens")
        elif args.command == "truncate":
            size = truncate_layers(args.src, args.out, args.layers)
            print(f"{args.out}: {size / 2**20:.1f} MiB, {args.layers} layers")
        else:
            shape = SpeedShape(head_dim=args.head_dim)
            size = write_model(args.tokenizer, args.out, shape)
            print(
                f"{args.out}: {size / 1e9:.2f} GB, {shape.n_layer} layers, {shape.n_head}/"
                f"{shape.n_head_kv} heads of {shape.head_dim}, {shape.kv_bytes_per_token} B of "
                "f16 KV per token"
            )
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
