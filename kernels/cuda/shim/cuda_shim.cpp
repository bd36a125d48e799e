/* Runs kernels/cuda on the host: each loop below is what one CUDA launch does, one thread
 * after another, through the same functions ggml-cuda's kernels call. */
#include "shim/turboquant_cuda_shim.h"
#include "shim/turboquant_cuda_rows.cuh"

namespace {

template <int B, int N> void quantize(const float *y, void *dst, int64_t k)
{
    for (int64_t t = 0; t < k / N; t++) {
        tq_cu_row_quantize<B, N>(y, static_cast<uint8_t *>(dst), t);
    }
}

template <int B, int N> void dequantize(const void *src, float *y, int64_t k)
{
    for (int64_t t = 0; t < k / 2; t++) {
        tq_cu_row_dequantize<B, N>(static_cast<const uint8_t *>(src), y, t);
    }
}

template <int B, int N> void decode8(const void *src, float *y, int64_t k)
{
    for (int64_t t = 0; t < k / 8; t++) {
        tq_cu_row_decode8<B, N>(static_cast<const uint8_t *>(src), y, t);
    }
}

template <int B, int N> void decode8_h(const void *src, float *y, int64_t k)
{
    for (int64_t t = 0; t < k / 8; t++) {
        tq_cu_row_decode8_h<B, N>(static_cast<const uint8_t *>(src), y, t);
    }
}

template <int B, int N> void to_f16(const void *src, float *y, int64_t k)
{
    for (int64_t t = 0; t < k / 8; t++) {
        tq_cu_row_to_f16<B, N>(static_cast<const uint8_t *>(src), y, t);
    }
}

template <int B, int N> void decode8_i8(const void *src, float *y, int64_t k)
{
    for (int64_t t = 0; t < k / 8; t++) {
        tq_cu_row_decode8_i8<B, N>(static_cast<const uint8_t *>(src), y, t);
    }
}

} // namespace

/* An entry point of turboquant_cuda_shim.h: check the row, then run fn<B, N> for its format. */
#define TQ_CUDA_SHIM_ENTRY(name, fn, src_t, dst_t)                                              \
    extern "C" int name(int bits, int n, src_t src, dst_t dst, int64_t k)                      \
    {                                                                                          \
        int rc = tq_cu_check_row(bits, n, k);                                                  \
        if (rc == TQ_OK) {                                                                     \
            TQ_CU_FOR_FORMAT(rc, bits, n, fn, src, dst, k);                                    \
        }                                                                                      \
        return rc;                                                                             \
    }

TQ_CUDA_SHIM_ENTRY(tq_cuda_quantize_row, quantize, const float *, void *)
TQ_CUDA_SHIM_ENTRY(tq_cuda_dequantize_row, dequantize, const void *, float *)
TQ_CUDA_SHIM_ENTRY(tq_cuda_dequantize_row_fa, decode8, const void *, float *)
TQ_CUDA_SHIM_ENTRY(tq_cuda_dequantize_row_f16, to_f16, const void *, float *)
TQ_CUDA_SHIM_ENTRY(tq_cuda_dequantize_row_fa16, decode8_h, const void *, float *)

/* Not TQ_CUDA_SHIM_ENTRY: turbo5 has no int8 levels (TQ_ERR_FORMAT before any output). */
extern "C" int tq_cuda_dequantize_row_fa8(int bits, int n, const void *src, float *y, int64_t k)
{
    int rc = bits == 5 ? TQ_ERR_FORMAT : tq_cu_check_row(bits, n, k);
    if (rc == TQ_OK) {
        TQ_CU_FOR_FORMAT(rc, bits, n, decode8_i8, src, y, k);
    }
    return rc;
}
