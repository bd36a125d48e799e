/*
 * The turbo block types and the function shapes ggml-cuda's kernel templates take
 * (set-rows.cu, getrows.cu, convert.cu, cpy.cu of ggml-cuda):
 *
 *   tq_cu_quantize_ggml<B, N>(x, blk)          set_rows: one thread quantizes one block
 *   tq_cu_dequantize_ggml<B, N>(vx, ib, iqs, v) dequantize_kernel_t with qr = 2: values iqs
 *                                              and iqs + N/2 of block ib (get_rows, the
 *                                              conversions to f16/f32 for flash attention)
 *   tq_cu_cpy_blck_f32_turbo<B, N>(src, dst)   cpy f32 -> turbo, one block
 *   tq_cu_cpy_blck_turbo<B, N, T>(src, dst)   cpy turbo -> f32 or f16 (T), one block
 *
 * A block is plain bytes, so its struct has byte alignment and sizeof == nbytes (34 .. 82),
 * and ggml's pointer arithmetic over blocks stays right. Compiled by nvcc inside ggml-cuda
 * and, through shim/cuda_shim.cpp, as C++17 by `nox -s parity`, which checks these exact
 * functions against the reference.
 */
#ifndef TURBOQUANT_CUDA_GGML_CUH
#define TURBOQUANT_CUDA_GGML_CUH

#include "turboquant_cuda.cuh"

#ifndef __CUDACC__
/* The one CUDA vector type the adapters' shapes use. */
struct float2 {
    float x, y;
};
#endif

template <int B, int N> struct block_tq_cu {
    uint8_t qs[tq_cu_format<B, N>::nbytes];
};
static_assert(sizeof(block_tq_cu<3, 128>) == 50, "a turbo block is its bytes, unpadded");

template <int B, int N> TQ_CU_HD void tq_cu_quantize_ggml(const float *x, block_tq_cu<B, N> *blk)
{
    tq_cu_quantize_block<B, N>(x, blk->qs);
}

template <int B, int N>
TQ_CU_HD void tq_cu_dequantize_ggml(const void *vx, const int64_t ib, const int iqs, float2 &v)
{
    const uint8_t *blk = ((const block_tq_cu<B, N> *)vx)[ib].qs;
    v.x = tq_cu_decode_one<B, N>(blk, iqs);
    v.y = tq_cu_decode_one<B, N>(blk, iqs + N / 2);
}

template <int B, int N> TQ_CU_HD void tq_cu_cpy_blck_f32_turbo(const char *src, char *dst)
{
    tq_cu_quantize_block<B, N>((const float *)src, (uint8_t *)dst);
}

TQ_CU_HD void tq_cu_store(float *dst, float v)
{
    *dst = v;
}

#ifdef __CUDACC__
__device__ __forceinline__ void tq_cu_store(half *dst, float v)
{
    *dst = __float2half_rn(v);
}
#endif

template <int B, int N, typename dst_t> TQ_CU_HD void tq_cu_cpy_blck_turbo(const char *src, char *dst)
{
    const uint8_t *blk = (const uint8_t *)src;
    dst_t *y = (dst_t *)dst;
    for (int j = 0; j < N; j++) {
        tq_cu_store(y + j, tq_cu_decode_one<B, N>(blk, j));
    }
}

#endif /* TURBOQUANT_CUDA_GGML_CUH */
