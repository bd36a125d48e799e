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

} // namespace

extern "C" int tq_cuda_quantize_row(int bits, int n, const float *y, void *dst, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK) {
        return rc;
    }
    TQ_CU_FOR_FORMAT(rc, bits, n, quantize, y, dst, k);
    return rc;
}

extern "C" int tq_cuda_dequantize_row(int bits, int n, const void *src, float *y, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK) {
        return rc;
    }
    TQ_CU_FOR_FORMAT(rc, bits, n, dequantize, src, y, k);
    return rc;
}

extern "C" int tq_cuda_dequantize_row_fa(int bits, int n, const void *src, float *y, int64_t k)
{
    int rc = tq_cu_check_row(bits, n, k);
    if (rc != TQ_OK) {
        return rc;
    }
    TQ_CU_FOR_FORMAT(rc, bits, n, decode8, src, y, k);
    return rc;
}
