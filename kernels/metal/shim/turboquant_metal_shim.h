/* C API of libturboquant_metal_shim: the Metal header's math run on the host, with the
 * signatures of the matching libturboquant functions, so parity can compare them. */
#ifndef TURBOQUANT_METAL_SHIM_API_H
#define TURBOQUANT_METAL_SHIM_API_H

#include <stdint.h>

#if defined(TQ_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define TQ_SHIM_API __attribute__((visibility("default")))
#else
#define TQ_SHIM_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* quantize_turbo for each block (one GPU thread per block on Metal): set_rows, cpy. */
TQ_SHIM_API int tq_metal_quantize_row(int bits, int n, const float *y, void *dst, int64_t k);

/* dequantize_turbo, 16 values per call: get_rows, cpy, f16 conversion for flash attention. */
TQ_SHIM_API int tq_metal_dequantize_row(int bits, int n, const void *src, float *y, int64_t k);

/* dequantize_turbo_t4, 4 values per call: the flash-attention vec kernels. */
TQ_SHIM_API int tq_metal_dequantize_row_t4(int bits, int n, const void *src, float *y, int64_t k);

#ifdef __cplusplus
}
#endif

#endif /* TURBOQUANT_METAL_SHIM_API_H */
