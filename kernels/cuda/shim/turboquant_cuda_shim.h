/* C API of the CUDA math's two runners, with the signatures of the matching libturboquant
 * functions so parity can compare them with the reference:
 *   libturboquant_cuda_shim   the functions compiled for the host (C++17, no GPU needed);
 *   libturboquant_cuda_gpu    the same functions run as CUDA kernels on the GPU.
 * Rows are k floats (k a multiple of n) in host memory; blocks are k/n * nbytes bytes.
 * Each returns TQ_OK, TQ_ERR_FORMAT (no format (bits, n)) or TQ_ERR_LENGTH; the GPU
 * runner also TQ_ERR_DEVICE (-100) when a CUDA call fails. */
#ifndef TURBOQUANT_CUDA_SHIM_API_H
#define TURBOQUANT_CUDA_SHIM_API_H

#include <stdint.h>

#if defined(TQ_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define TQ_CUDA_API __attribute__((visibility("default")))
#else
#define TQ_CUDA_API
#endif

#define TQ_ERR_DEVICE (-100)

#ifdef __cplusplus
extern "C" {
#endif

/* tq_cu_quantize_ggml, one block per thread: SET_ROWS and CPY from f32. */
TQ_CUDA_API int tq_cuda_quantize_row(int bits, int n, const float *y, void *dst, int64_t k);

/* GPU runner only: tq_cu_set_rows, one warp per block (SET_ROWS), rows in order. */
TQ_CUDA_API int tq_cuda_quantize_row_warp(int bits, int n, const float *y, void *dst, int64_t k);

/* tq_cu_dequantize_ggml, values (i, i + n/2) per call: GET_ROWS, CPY, the f16/f32
 * conversions. */
TQ_CUDA_API int tq_cuda_dequantize_row(int bits, int n, const void *src, float *y, int64_t k);

/* tq_cu_staged::decode8, 8 values per call from a staged block through the codebook table:
 * the flash-attention decode (a NaN scale gives some NaN). */
TQ_CUDA_API int tq_cuda_dequantize_row_fa(int bits, int n, const void *src, float *y, int64_t k);

/* tq_cu_staged::decode8_f16, 8 values per call as fp16 (returned widened to float): the
 * conversion of K/V to f16 before flash attention's tensor-core kernels (tq_cu_to_f16, which
 * the GPU runner launches as ggml-cuda does). */
TQ_CUDA_API int tq_cuda_dequantize_row_f16(int bits, int n, const void *src, float *y, int64_t k);

/* tq_cu_staged::bits8 + levels8_h, levels8x2_h or levels8p_h (by thread), 8 values per
 * call: the fp16 levels the GPU flash-attention kernels take straight from the index bits,
 * times d in float; turbo2..5. */
TQ_CUDA_API int tq_cuda_dequantize_row_fa16(int bits, int n, const void *src, float *y, int64_t k);

/* tq_cu_staged::bits8 + levels8x2_i8, 8 values per call: the int8 levels the GPU
 * flash-attention kernel's K * Q product takes where a row is one block, times its step
 * and d in float; turbo2..4 (turbo5: TQ_ERR_FORMAT). */
TQ_CUDA_API int tq_cuda_dequantize_row_fa8(int bits, int n, const void *src, float *y, int64_t k);

#ifdef __cplusplus
}
#endif

#endif /* TURBOQUANT_CUDA_SHIM_API_H */
