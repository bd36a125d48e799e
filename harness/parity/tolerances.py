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
    "the GPU flash-attention kernels' fp16 levels (cuda-fa16, turbo2..4) equal the "
    "reference's float32 levels rounded to fp16 (nearest-even), times d, bit for bit; a NaN "
    "scale as for the -fa decoders"
)
F16_CONVERSION = (
    "the conversion of K/V to f16 for flash attention's tensor-core kernels (cuda-f16) "
    "equals the reference decode rounded to fp16 (nearest-even, overflow to infinity), bit "
    "for bit; a NaN scale gives some NaN"
)
TOLERANCES = {
    "decode": "bit-exact",
    "encode": "bit-exact",
    "rotation": ROTATION_NAN_AS_CLASS,
    "flash-attention decode": FA_DECODE_NAN_AS_CLASS,
    "flash-attention fp16 levels": FA16_DECODE,
    "conversion to f16": F16_CONVERSION,
}

ENCODERS = ("scalar", "simd", "dispatch", "metal", "cuda")
DECODERS = ("scalar", "simd", "dispatch", "metal", "metal-t4", "cuda", "cuda-fa")
# Conversions to f16, checked against the reference decode rounded to fp16 (the GPU runner
# adds cuda-gpu-f16).
F16_CONVERTERS = ("cuda-f16",)
# Decoders of fp16 levels, checked against reference_fp16_levels; formats of at most 4 bits.
FP16_DECODERS = ("cuda-fa16",)
ROTATORS = ("scalar", "simd", "dispatch")
