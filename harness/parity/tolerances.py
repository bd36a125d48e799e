"""What parity compares how: every path is compared bit for bit except where a rule here
says otherwise (each rule says why), and the names of the paths each check runs. The tests
import these instead of repeating them."""

from __future__ import annotations

# The tolerances, in one place. Everything not named here is compared bit for bit.
ROTATION_NAN_AS_CLASS = (
    "rotation outputs that are NaN match any NaN: IEEE 754 does not fix which NaN an "
    "operation on two NaN operands returns, and a + b may be computed as b + a"
)
FA_DECODE_NAN_AS_CLASS = (
    "the flash-attention decoders (-fa) decode a NaN scale to some NaN: they multiply "
    "without a NaN test, and a GPU multiply returns its canonical NaN, not the scale's"
)
FA16_DECODE = (
    "the GPU flash-attention kernels' fp16 levels (cuda-fa16, turbo2..5) equal the "
    "reference's float32 levels rounded to fp16 (nearest-even), times d, bit for bit; a NaN "
    "scale as for the -fa decoders"
)
FA8_DECODE = (
    "the GPU flash-attention kernel's int8 K levels (cuda-fa8, turbo2..4) equal the "
    "reference's float32 levels L rounded to int8 steps of L[-1]/127 (rint(L * (127 / "
    "L[-1])) in float32), times that step, times d, in float32, bit for bit; a NaN scale "
    "as for the -fa decoders"
)
F16_CONVERSION = (
    "the conversion of K/V to f16 for flash attention's tensor-core kernels (cuda-f16) "
    "equals the reference decode rounded to fp16 (nearest-even, overflow to infinity), bit "
    "for bit; a NaN scale gives some NaN"
)
TILE_ORDER = (
    "flash attention's decode over a tile of rows for a GQA group (tile-dot: K * Q, "
    "tile-mad: P * V) equals float32 arithmetic on the reference decode in the library's "
    "stated order (dot: 8 lanes, the lane tree, 512-float chunks; mad: one multiply, one add "
    "per value, rows in order), bit for bit; NaN as a class"
)
TOLERANCES = {
    "decode": "bit-exact",
    "encode": "bit-exact",
    "rotation": ROTATION_NAN_AS_CLASS,
    "flash-attention decode": FA_DECODE_NAN_AS_CLASS,
    "flash-attention fp16 levels": FA16_DECODE,
    "flash-attention int8 levels": FA8_DECODE,
    "conversion to f16": F16_CONVERSION,
    "tile dot and multiply-add": TILE_ORDER,
}

ENCODERS = ("scalar", "simd", "dispatch", "metal", "cuda")
DECODERS = ("scalar", "simd", "dispatch", "metal", "metal-t4", "cuda", "cuda-fa")
# Conversions to f16, checked against the reference decode rounded to fp16 (the GPU runner
# adds cuda-gpu-f16).
F16_CONVERTERS = ("cuda-f16",)
# Decoders of fp16 levels, checked against reference_fp16_levels; formats of at most 4 bits.
FP16_DECODERS = ("cuda-fa16",)
# Decoders of int8 levels, checked against reference_int8_levels; formats of at most 4 bits.
INT8_DECODERS = ("cuda-fa8",)
ROTATORS = ("scalar", "simd", "dispatch")
TILE_PATHS = ("scalar", "simd", "dispatch")
TILE_ROWS = 16  # rows per tile-mad call: ggml's GGML_FA_DECODE_TILE
TILE_QUERIES = 3  # query heads per KV head (SmolLM2's GQA ratio; the AVX2 path takes 4 at a time)
