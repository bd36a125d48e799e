"""numpy reference for the TurboQuant block formats (see reference/SPEC.md).

rotation: the float32 randomized Walsh-Hadamard rotation; codebook: Lloyd-Max levels;
formats: bit-exact quantize/pack/unpack/encode/decode; qjl: TurboQuant_prod; measure: the
distortion table; gen_tables: writes kernels/src/turboquant_tables.h.
"""
