/*
 * Flash-attention decode for turbo K and/or V caches, reading the blocks directly (no f16
 * copy of the cache): the kernel ggml-cuda's FLASH_ATTN_EXT runs for 1-2 queries per
 * sequence when K or V is a turbo type (patches/0009). K and V may each be any turbo type,
 * q8_0 or f16; head sizes 64 (block-64 types), 128 and 256; any GQA ratio; masks, ALiBi,
 * logit softcap and attention sinks as ggml defines them.
 *
 * Shape of the work. One thread block (128 threads) takes one query column, one KV head and
 * up to TQ_FA_HEADS query heads of its GQA group, so each K and V value is decoded once per
 * KV head, not once per query head. launch_fattn (ggml's fattn-common.cuh) splits the KV
 * length over gridDim.y blocks and combines their partial softmax sums, so one sequence
 * fills the GPU. Per tile of TQ_FA_ROWS KV rows:
 *   1. all threads decode the K and V rows, 8 values per step (whole bytes of each index
 *      plane, the codebook as instruction constants), into shared memory as f16;
 *   2. each warp takes a query head, each lane a row: scores with the query (prescaled,
 *      float, in shared memory), mask/softcap, and the online softmax in registers;
 *   3. each thread owns two output dims of its heads and adds p * V over the tile.
 * Accumulation is float throughout.
 *
 * Needs ggml-cuda's common.cuh and fattn-common.cuh included first (launch_fattn, the
 * kernel signature fattn_kernel_t, warp reductions, get_alibi_slope).
 */
#ifndef TURBOQUANT_CUDA_FATTN_CUH
#define TURBOQUANT_CUDA_FATTN_CUH

#include "turboquant_cuda.cuh"

#define TQ_FA_NTHREADS 128
#define TQ_FA_ROWS 32 /* KV rows per tile: one per lane in the score step */
#define TQ_FA_HEADS 8 /* query heads per block: launch_fattn's ncols2 */

template <int B, int N>
static __device__ __forceinline__ void tq_fa_turbo8(const uint8_t *row, int j0, float v[8])
{
    const uint8_t *blk = row + (j0 / N) * tq_cu_format<B, N>::nbytes;
    tq_cu_decode8<B, N>(blk, j0 % N, tq_cu_block_scale(blk), v);
}

/* Values j0 .. j0+7 (j0 % 8 == 0) of one K or V row of type `type`. */
template <ggml_type type> static __device__ __forceinline__ void tq_fa_load8(const uint8_t *row, int j0, float v[8])
{
    if constexpr (type == GGML_TYPE_TURBO2) {
        tq_fa_turbo8<2, 128>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO3) {
        tq_fa_turbo8<3, 128>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO4) {
        tq_fa_turbo8<4, 128>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO5) {
        tq_fa_turbo8<5, 128>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO2_64) {
        tq_fa_turbo8<2, 64>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO3_64) {
        tq_fa_turbo8<3, 64>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO4_64) {
        tq_fa_turbo8<4, 64>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_TURBO5_64) {
        tq_fa_turbo8<5, 64>(row, j0, v);
    } else if constexpr (type == GGML_TYPE_Q8_0) {
        const uint8_t *blk = row + (j0 / 32) * 34;
        const float d = tq_cu_block_scale(blk);
#pragma unroll
        for (int l = 0; l < 8; l++) {
            v[l] = d * (float)(int8_t)blk[2 + j0 % 32 + l];
        }
    } else if constexpr (type == GGML_TYPE_F16) {
        const uint16_t *h = (const uint16_t *)row + j0; /* rows of f16 are 2-byte aligned */
#pragma unroll
        for (int l = 0; l < 8; l++) {
            v[l] = tq_cu_half_to_float(h[l]);
        }
    } else {
        static_assert(type == GGML_TYPE_COUNT, "no turbo flash-attention decoder for this type");
    }
}

static __device__ __forceinline__ void tq_fa_store8(half *dst, const float v[8])
{
    half2 h[4];
#pragma unroll
    for (int l = 0; l < 4; l++) {
        h[l] = __floats2half2_rn(v[2 * l], v[2 * l + 1]);
    }
    *(uint4 *)dst = *(const uint4 *)h;
}

template <int D, ggml_type type_K, ggml_type type_V>
__launch_bounds__(TQ_FA_NTHREADS)
static __global__ void tq_flash_attn_ext_vec(
        const char * __restrict__ Q,
        const char * __restrict__ K,
        const char * __restrict__ V,
        const char * __restrict__ mask,
        const char * __restrict__ sinks,
        const int  * __restrict__ KV_max,
        float      * __restrict__ dst,
        float2     * __restrict__ dst_meta,
        const float scale,
        const float max_bias,
        const float m0,
        const float m1,
        const uint32_t n_head_log2,
        const float logit_softcap,
        const int32_t ne00, const uint3   ne01, const int32_t ne02, const int32_t ne03,
                            const int32_t nb01, const int32_t nb02, const int32_t nb03,
        const int32_t ne10, const int32_t ne11, const int32_t ne12, const int32_t ne13,
                            const int32_t nb11, const int32_t nb12, const int64_t nb13,
                            const int32_t nb21, const int32_t nb22, const int64_t nb23,
                            const int32_t ne31, const int32_t ne32, const int32_t ne33,
                            const int32_t nb31, const int32_t nb32, const int64_t nb33) {
    ggml_cuda_pdl_lc();
    constexpr int T  = TQ_FA_ROWS;
    constexpr int G  = TQ_FA_HEADS;
    constexpr int NT = TQ_FA_NTHREADS;
    constexpr int NW = NT / WARP_SIZE;
    constexpr int DP = D + 8;      /* padded f16 row: 16-byte rows, lanes on distinct banks */
    constexpr int P2 = D / 2;      /* output dim pairs per head */
    constexpr int S  = NT / P2;    /* heads taken side by side by the block's threads */
    constexpr int HPT = G / S;     /* heads per thread */
    static_assert(D % 64 == 0 && D <= 256 && G % S == 0, "head size 64, 128 or 256");
    static_assert(T == WARP_SIZE, "one KV row per lane");

    __shared__ __align__(16) half  Ks[T * DP];
    __shared__ __align__(16) half  Vs[T * DP];
    __shared__ __align__(16) float Qs[G][D];
    __shared__ float Ps[G][T];
    __shared__ float Ms[G];
    __shared__ float Ls[G];
    __shared__ float As[G];

    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int tid  = warp * WARP_SIZE + lane;

    const int col  = blockIdx.x;
    const int gqa  = ne02 / ne12;
    const int ntz  = (gqa + G - 1) / G;
    const int zt   = blockIdx.z % ntz;
    const int hk   = (blockIdx.z / ntz) % ne12;
    const int seq  = blockIdx.z / (ntz * ne12);
    const int h0   = hk * gqa + zt * G; /* first query head of this block */
    const int ng   = min(G, gqa - zt * G);

    ggml_cuda_pdl_sync();
    for (int i = tid; i < G * D; i += NT) {
        const int g = i / D;
        const int k = i % D;
        float q = 0.0f;
        if (g < ng) {
            q = ((const float *) (Q + nb03 * seq + nb02 * (h0 + g) + nb01 * col))[k] * scale;
        }
        Qs[g][k] = q;
    }
    if (tid < G) {
        Ms[tid] = -FLT_MAX / 2.0f;
        Ls[tid] = 0.0f;
        As[tid] = 1.0f;
    }

    K += nb13 * seq + nb12 * hk;
    V += nb23 * seq + nb22 * hk;
    const half * maskh = mask ? (const half *) (mask + nb33 * (seq % ne33) + nb31 * col) : nullptr;
    const int k_max = KV_max ? KV_max[seq * gridDim.x + blockIdx.x] : ne11;

    float slope[(G + NW - 1) / NW];
#pragma unroll
    for (int w = 0; w < (G + NW - 1) / NW; w++) {
        slope[w] = get_alibi_slope(max_bias, h0 + warp + w * NW, n_head_log2, m0, m1);
    }

    const int pi   = tid % P2;
    const int slot = tid / P2;
    float2 acc[HPT];
#pragma unroll
    for (int h = 0; h < HPT; h++) {
        acc[h] = make_float2(0.0f, 0.0f);
    }
    __syncthreads();

    for (int k0 = blockIdx.y * T; k0 < k_max; k0 += gridDim.y * T) {
        for (int i = tid; i < T * (D / 8); i += NT) {
            const int r  = i / (D / 8);
            const int j0 = (i % (D / 8)) * 8;
            float kv[8];
            float vv[8];
            if (k0 + r < k_max) {
                tq_fa_load8<type_K>((const uint8_t *) (K + (int64_t) (k0 + r) * nb11), j0, kv);
                tq_fa_load8<type_V>((const uint8_t *) (V + (int64_t) (k0 + r) * nb21), j0, vv);
            } else {
#pragma unroll
                for (int l = 0; l < 8; l++) {
                    kv[l] = 0.0f;
                    vv[l] = 0.0f;
                }
            }
            tq_fa_store8(&Ks[r * DP + j0], kv);
            tq_fa_store8(&Vs[r * DP + j0], vv);
        }
        __syncthreads();

#pragma unroll
        for (int w = 0; w < (G + NW - 1) / NW; w++) {
            const int g = warp + w * NW;
            if (g >= ng) {
                continue;
            }
            float s = 0.0f;
#pragma unroll
            for (int k8 = 0; k8 < D / 8; k8++) {
                const uint4 raw = *(const uint4 *) &Ks[lane * DP + 8 * k8];
                const half2 * kh = (const half2 *) &raw;
                const float4 qa = *(const float4 *) &Qs[g][8 * k8];
                const float4 qb = *(const float4 *) &Qs[g][8 * k8 + 4];
                const float2 k01 = __half22float2(kh[0]);
                const float2 k23 = __half22float2(kh[1]);
                const float2 k45 = __half22float2(kh[2]);
                const float2 k67 = __half22float2(kh[3]);
                s += k01.x * qa.x + k01.y * qa.y + k23.x * qa.z + k23.y * qa.w;
                s += k45.x * qb.x + k45.y * qb.y + k67.x * qb.z + k67.y * qb.w;
            }
            if (logit_softcap != 0.0f) {
                s = logit_softcap * tanhf(s);
            }
            if (k0 + lane < k_max) {
                if (maskh) {
                    s += slope[w] * __half2float(maskh[k0 + lane]);
                }
            } else {
                s = -INFINITY;
            }
            const float m_old = Ms[g];
            const float m_new = fmaxf(m_old, warp_reduce_max(s));
            const float p = expf(s - m_new);
            const float p_sum = warp_reduce_sum(p);
            Ps[g][lane] = p;
            if (lane == 0) {
                const float a = expf(m_old - m_new);
                As[g] = a;
                Ls[g] = Ls[g] * a + p_sum;
                Ms[g] = m_new;
            }
        }
        __syncthreads();

#pragma unroll
        for (int h = 0; h < HPT; h++) {
            const int g = slot + h * S;
            if (g < ng) {
                const float a = As[g];
                float2 o = make_float2(acc[h].x * a, acc[h].y * a);
#pragma unroll 8
                for (int r = 0; r < T; r++) {
                    const float p = Ps[g][r];
                    const float2 v = __half22float2(((const half2 *) &Vs[r * DP])[pi]);
                    o.x += p * v.x;
                    o.y += p * v.y;
                }
                acc[h] = o;
            }
        }
        __syncthreads();
    }

    if (sinks && blockIdx.y == 0) {
        if (tid < ng) {
            const float sink  = ((const float *) sinks)[h0 + tid];
            const float m_new = fmaxf(sink, Ms[tid]);
            const float a     = expf(Ms[tid] - m_new);
            Ls[tid] = Ls[tid] * a + expf(sink - m_new);
            Ms[tid] = m_new;
            As[tid] = a;
        }
        __syncthreads();
#pragma unroll
        for (int h = 0; h < HPT; h++) {
            const int g = slot + h * S;
            if (g < ng) {
                acc[h].x *= As[g];
                acc[h].y *= As[g];
            }
        }
    }

#pragma unroll
    for (int h = 0; h < HPT; h++) {
        const int g = slot + h * S;
        if (g < ng) {
            const float inv = gridDim.y == 1 ? 1.0f / Ls[g] : 1.0f;
            const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + g) * gridDim.y + blockIdx.y;
            ((float2 *) (dst + row * D))[pi] = make_float2(acc[h].x * inv, acc[h].y * inv);
        }
    }
    if (gridDim.y != 1 && tid < ng) {
        const int64_t row = (((int64_t) seq * ne01.z + col) * ne02 + h0 + tid) * gridDim.y + blockIdx.y;
        dst_meta[row] = make_float2(Ms[tid], Ls[tid]);
    }
    GGML_UNUSED_VARS(ne00, ne03, ne10, ne13, ne31, ne32, nb32);
}

/* One FLASH_ATTN_EXT with the kernel above; split-KV and the combine as launch_fattn does
 * them for ggml's own kernels. */
template <int D, ggml_type type_K, ggml_type type_V>
void tq_cuda_flash_attn_ext_vec_case(ggml_backend_cuda_context & ctx, ggml_tensor * dst)
{
    launch_fattn<D, 1, TQ_FA_HEADS>(ctx, dst, tq_flash_attn_ext_vec<D, type_K, type_V>,
        TQ_FA_NTHREADS / WARP_SIZE, 0, TQ_FA_ROWS, false, false, false, false);
}

#endif /* TURBOQUANT_CUDA_FATTN_CUH */
