/* What one GPU thread does for each entry point of turboquant_cuda_shim.h, shared by the
 * host runner (a loop over threads) and the GPU runner (a kernel launch). */
#ifndef TURBOQUANT_CUDA_ROWS_CUH
#define TURBOQUANT_CUDA_ROWS_CUH

#include "turboquant.h"
#include "turboquant_cuda_ggml.cuh"

/* Thread t of quantize: block t. */
template <int B, int N> TQ_CU_HD void tq_cu_row_quantize(const float *y, uint8_t *dst, int64_t t)
{
    tq_cu_quantize_ggml<B, N>(y + t * N, (block_tq_cu<B, N> *)dst + t);
}

/* Thread t of dequantize: values iqs and iqs + N/2 of block t / (N/2). */
template <int B, int N> TQ_CU_HD void tq_cu_row_dequantize(const uint8_t *src, float *y, int64_t t)
{
    const int64_t ib = t / (N / 2);
    const int iqs = (int)(t % (N / 2));
    float2 v;
    tq_cu_dequantize_ggml<B, N>(src, ib, iqs, v);
    y[ib * N + iqs] = v.x;
    y[ib * N + iqs + N / 2] = v.y;
}

/* Thread t of the flash-attention decode: values 8*(t % (N/8)) .. +7 of block t / (N/8),
 * staged and decoded through the codebook table as the flash-attention kernel does. */
template <int B, int N> TQ_CU_HD void tq_cu_row_decode8(const uint8_t *src, float *y, int64_t t)
{
    typedef tq_cu_staged<B, N> S;
    const int64_t ib = t / (N / 8);
    const int j0 = (int)(t % (N / 8)) * 8;
    const uint8_t *blk = src + ib * S::NB;
    alignas(16) uint8_t sb[S::SB];
    for (int i = 0; i < S::NB; i++) {
        sb[S::OFF + i] = blk[i];
    }
    float lut[S::NLUT];
    for (int k = 0; k < S::NLUT; k++) {
        lut[k] = S::lut_entry(k);
    }
    S::decode8(sb, j0, lut, y + ib * N + j0);
}

/* Thread t of the GPU flash-attention kernels' decode of turbo2..5: values 8*(t % (N/8))
 * .. +7 of block t / (N/8) as fp16 levels from the index bits (bits8, then by t % 5:
 * levels8x2_h with the block as both rows, row a's words or row b's put back in order;
 * levels8_h; levels8p_h (B <= 4; else levels8_h again) with the block as row a and
 * indices 0 as row b, or the other way round, the block's halves taken), then d * level in
 * float as the output product scales them. */
template <int B, int N> TQ_CU_HD void tq_cu_row_decode8_h(const uint8_t *src, float *y, int64_t t)
{
    typedef tq_cu_staged<B, N> S;
    if constexpr (S::H8) {
        const int64_t ib = t / (N / 8);
        const int j0 = (int)(t % (N / 8)) * 8;
        const uint8_t *blk = src + ib * S::NB;
        typename S::hlut ht;
        S::hlut_init(ht);
        uint32_t lo;
        uint32_t hi;
        S::bits8(blk, j0, lo, hi);
        uint32_t h[3][4];
        S::levels8x2_h(lo, hi, lo, hi, ht, h[0], h[1]);
        S::levels8_h(lo, hi, ht, h[2]);
        const int w = (int)(t % 5);
        const float d = tq_cu_block_scale(blk);
        if constexpr (S::PAIRED) {
            if (w >= 3) {
                uint32_t p[8];
                if (w == 3) {
                    S::levels8p_h(lo, hi, 0u, 0u, ht, p);
                } else {
                    S::levels8p_h(0u, 0u, lo, hi, ht, p);
                }
                for (int v = 0; v < 8; v++) {
                    y[ib * N + j0 + v] = d * tq_cu_half_to_float((uint16_t)(p[v] >> (w == 3 ? 0 : 16)));
                }
                return;
            }
        }
        for (int u = 0; u < 4; u++) {
            for (int e = 0; e < 2; e++) {
                const int k = w < 3 ? w : 2;
                const float level = tq_cu_half_to_float((uint16_t)(h[k][u] >> (16 * e)));
                y[ib * N + j0 + (k < 2 ? S::pfirst(u) + S::PSTEP * e : 2 * u + e)] = d * level;
            }
        }
    }
}

/* Thread t of the GPU flash-attention kernel's int8 K levels (turbo2..4, a row of one
 * block): values 8*(t % (N/8)) .. +7 of block t / (N/8) through bits8 and levels8x2_i8, the
 * block as row a (t even) or row b (t odd) and indices 0 as the other, then
 * d * (i8_step * i8) in float. Nothing for a format without int8 levels (turbo5). */
template <int B, int N> TQ_CU_HD void tq_cu_row_decode8_i8(const uint8_t *src, float *y, int64_t t)
{
    typedef tq_cu_staged<B, N> S;
    if constexpr (S::I8) {
        const int64_t ib = t / (N / 8);
        const int j0 = (int)(t % (N / 8)) * 8;
        const uint8_t *blk = src + ib * S::NB;
        typename S::i8lut t8;
        S::i8lut_init(t8);
        uint32_t lo;
        uint32_t hi;
        S::bits8(blk, j0, lo, hi);
        uint32_t w[2][2];
        if (t % 2 == 0) {
            S::levels8x2_i8(lo, hi, 0u, 0u, t8, w[0], w[1]);
        } else {
            S::levels8x2_i8(0u, 0u, lo, hi, t8, w[1], w[0]);
        }
        const float d = tq_cu_block_scale(blk);
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < 4; i++) {
                const float level = S::i8_step() * (float)(int8_t)(uint8_t)(w[0][k] >> (8 * i));
                y[ib * N + j0 + S::i8val(k, i)] = d * level;
            }
        }
    }
}

/* Thread t of the conversion to f16 (tq_cu_k_to_f16): values 8*(t % (N/8)) .. +7 of block
 * t / (N/8) as fp16, widened back to float (exactly) for the comparison. */
template <int B, int N> TQ_CU_HD void tq_cu_row_to_f16(const uint8_t *src, float *y, int64_t t)
{
    typedef tq_cu_staged<B, N> S;
    const int64_t ib = t / (N / 8);
    const int j0 = (int)(t % (N / 8)) * 8;
    float lut[S::NLUT];
    for (int k = 0; k < S::NLUT; k++) {
        lut[k] = S::lut_entry(k);
    }
    uint32_t h[4];
    S::decode8_f16(src + ib * S::NB, j0, lut, h);
    for (int l = 0; l < 8; l++) {
        y[ib * N + j0 + l] = tq_cu_half_to_float((uint16_t)(h[l / 2] >> (16 * (l % 2))));
    }
}

/* TQ_OK for a format with tables and a whole number of blocks, else the error code. */
inline int tq_cu_check_row(int bits, int n, int64_t k)
{
    if (bits < 2 || bits > 5 || (n != 64 && n != 128)) {
        return TQ_ERR_FORMAT;
    }
    return k < 0 || k % n != 0 ? TQ_ERR_LENGTH : TQ_OK;
}

/* fn<B, N>(args...) for a format (bits, n) with tables; TQ_ERR_FORMAT otherwise. */
#define TQ_CU_FOR_FORMAT(rc, bits, n, fn, ...)                                                  \
    do {                                                                                       \
        rc = TQ_OK;                                                                            \
        if ((n) == 64 && (bits) == 2) fn<2, 64>(__VA_ARGS__);                                  \
        else if ((n) == 64 && (bits) == 3) fn<3, 64>(__VA_ARGS__);                             \
        else if ((n) == 64 && (bits) == 4) fn<4, 64>(__VA_ARGS__);                             \
        else if ((n) == 64 && (bits) == 5) fn<5, 64>(__VA_ARGS__);                             \
        else if ((n) == 128 && (bits) == 2) fn<2, 128>(__VA_ARGS__);                           \
        else if ((n) == 128 && (bits) == 3) fn<3, 128>(__VA_ARGS__);                           \
        else if ((n) == 128 && (bits) == 4) fn<4, 128>(__VA_ARGS__);                           \
        else if ((n) == 128 && (bits) == 5) fn<5, 128>(__VA_ARGS__);                           \
        else rc = TQ_ERR_FORMAT;                                                               \
    } while (0)

#endif /* TURBOQUANT_CUDA_ROWS_CUH */
